//! Bounded fuzzing of [`FastAnswers::answer`], the code that reads client bytes before hickory
//! does: random byte strings and mutated queries must never panic, and whatever the fast path
//! answers must be a query hickory reads too, answered with a well-formed reply carrying
//! exactly the zone's records for it. Everything else is passed on. Seeded (`fastrand`) so every
//! run feeds the same datagrams.

use std::collections::HashMap;

use hickory_server::proto::op::{Edns, Message, MessageType, ResponseCode};
use hickory_server::proto::rr::{Name, RData, RecordType};

use super::tests::{query_message, table, zone};
use super::FastAnswers;

const RUNS: usize = 30_000;

/// The zone's records by lowercased owner and type: what an answer must hold.
type Expected = HashMap<(Name, RecordType), Vec<RData>>;

fn expected() -> Expected {
    let mut map: Expected = HashMap::new();
    for record in zone()
        .zones()
        .unwrap()
        .iter()
        .flat_map(|z| z.records.clone())
    {
        let set = map
            .entry((record.name().to_lowercase(), record.record_type()))
            .or_default();
        if !set.contains(record.data()) {
            set.push(record.data().clone());
        }
    }
    map
}

/// Datagrams answered and passed on.
#[derive(Debug, Default)]
struct Count {
    answered: usize,
    passed_on: usize,
}

/// Feeds `query` and checks the invariants.
fn feed(fast: &FastAnswers, expected: &Expected, query: &[u8], count: &mut Count) {
    let mut out = Vec::new();
    if !fast.answer(query, &mut out) {
        count.passed_on += 1;
        return;
    }
    count.answered += 1;
    let request = Message::from_vec(query)
        .unwrap_or_else(|e| panic!("answered what hickory cannot read ({e}): {query:02x?}"));
    let reply = Message::from_vec(&out)
        .unwrap_or_else(|e| panic!("reply does not parse ({e}): {out:02x?} to {query:02x?}"));
    assert_eq!(reply.id(), request.id());
    assert_eq!(reply.message_type(), MessageType::Response);
    assert_eq!(reply.response_code(), ResponseCode::NoError);
    assert!(reply.authoritative());
    assert_eq!(reply.recursion_desired(), request.recursion_desired());
    assert_eq!(reply.queries(), request.queries());
    let question_len = query.len()
        - if request.extensions().is_some() {
            11
        } else {
            0
        };
    assert_eq!(
        out[12..question_len],
        query[12..question_len],
        "question echoed as sent"
    );
    let asked = &request.queries()[0];
    let want = &expected[&(asked.name().to_lowercase(), asked.query_type())];
    let got: Vec<RData> = reply.answers().iter().map(|r| r.data().clone()).collect();
    assert_eq!(&got, want, "{asked}");
    assert!(reply.answers().iter().all(|r| r.name() == asked.name()));
    assert_eq!(reply.extensions().is_some(), request.extensions().is_some());
}

/// Queries for every name and type the table holds, some with EDNS, plus names it does not.
fn seeds(expected: &Expected) -> Vec<Vec<u8>> {
    let mut seeds = Vec::new();
    for (i, (name, kind)) in expected.keys().enumerate() {
        let mut q = query_message(i as u16, &name.to_ascii(), *kind);
        if i % 2 == 0 {
            let mut edns = Edns::new();
            edns.set_max_payload(1232);
            q.set_edns(edns);
        }
        seeds.push(q.to_vec().unwrap());
    }
    for name in ["node09.kvci.", "example.com.", "kvci."] {
        seeds.push(query_message(7, name, RecordType::A).to_vec().unwrap());
    }
    seeds
}

#[test]
fn random_datagrams_never_panic() {
    let mut rng = fastrand::Rng::with_seed(0x5eed_d0d0_cafe_f00d);
    let (fast, expected) = (table(), expected());
    let mut count = Count::default();
    for run in 0..RUNS {
        let len = rng.usize(..600);
        let mut datagram: Vec<u8> = std::iter::repeat_with(|| rng.u8(..)).take(len).collect();
        // Most runs get a query-like header (QR clear, one question), so parsing goes deeper.
        if run % 4 != 0 && datagram.len() >= 12 {
            datagram[2] &= 0x01;
            datagram[4..12].copy_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
        }
        feed(&fast, &expected, &datagram, &mut count);
    }
    eprintln!("random datagrams: {count:?}");
    assert!(count.passed_on > 0);
}

#[test]
fn mutated_queries_never_panic_and_answers_stay_right() {
    let mut rng = fastrand::Rng::with_seed(0x2545_f491_4f6c_dd1d);
    let (fast, expected) = (table(), expected());
    let seeds = seeds(&expected);
    let mut count = Count::default();
    for seed in &seeds {
        feed(&fast, &expected, seed, &mut count);
    }
    assert_eq!(
        count.answered,
        expected.len(),
        "every seed for a table name is answered"
    );
    for run in 0..RUNS {
        let mut q = seeds[rng.usize(..seeds.len())].clone();
        match run % 5 {
            // Flip a few bytes anywhere.
            0 => {
                for _ in 0..1 + rng.usize(..4) {
                    let at = rng.usize(..q.len());
                    q[at] ^= rng.u8(1..);
                }
            }
            // Cut short, or add bytes after the end.
            1 => {
                if rng.bool() {
                    q.truncate(rng.usize(..q.len()));
                } else {
                    let extra = rng.usize(1..16);
                    q.extend(std::iter::repeat_with(|| rng.u8(..)).take(extra));
                }
            }
            // Flip the case of letters in the question: still answered.
            2 => {
                for b in &mut q[12..] {
                    if b.is_ascii_alphabetic() && rng.bool() {
                        *b ^= 0x20;
                    }
                }
            }
            // Random header flags and counts over a valid question.
            3 => {
                q[2] = rng.u8(..);
                q[3] = rng.u8(..);
                let at = 4 + 2 * rng.usize(..4);
                q[at + 1] = rng.u8(..3);
            }
            // A random byte inside the question or the OPT record.
            _ => {
                let at = 12 + rng.usize(..q.len() - 12);
                q[at] = rng.u8(..);
            }
        }
        feed(&fast, &expected, &q, &mut count);
    }
    eprintln!("mutated queries: {count:?}");
    assert!(
        count.answered > RUNS / 10 && count.passed_on > RUNS / 10,
        "{count:?}"
    );
}
