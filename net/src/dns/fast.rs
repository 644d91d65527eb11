//! The fast path for the cluster's own names: a plain UDP query for an A, AAAA or PTR record the
//! zones hold is answered from a table of pre-encoded answers, without hickory's per-request
//! task, message objects and catalog lookup. Everything else — other names and types, unknown
//! names in the zones (NXDOMAIN), EDNS options, several questions, odd header bits, TCP — is
//! not answered here and goes to hickory unchanged.
//!
//! The query is read with hickory-proto's decoders (header, then question); only the optional
//! EDNS record is matched as one fixed 11-byte layout. An answer is what hickory's catalog
//! sends for the same query (the tests compare them): the question echoed byte for byte (its
//! case too), AA set, RD and CD copied, RA clear, and with EDNS an OPT record as hickory's.

use std::collections::HashMap;

use hickory_server::proto::op::{Header, MessageType, OpCode, Query};
use hickory_server::proto::rr::{DNSClass, Record, RecordType};
use hickory_server::proto::serialize::binary::{
    BinDecodable, BinDecoder, BinEncodable, BinEncoder,
};

use super::records::Zone;
use super::DnsError;

/// A wire name is at most 255 bytes (RFC 1035 section 2.3.4); a key adds the query type.
const MAX_KEY: usize = 255 + 2;

/// An answer must fit a plain (non-EDNS) UDP reply, or hickory would have truncated it.
const MAX_UDP: usize = 512;

/// Header, longest question, and an OPT record: the reply bytes around the answer records.
const MAX_OVERHEAD: usize = 12 + 255 + 4 + 11;

/// Compression pointer to offset 12, the question's name (RFC 1035 section 4.1.4): every answer
/// is owned by the name asked for.
const OWNER_IS_QUESTION: [u8; 2] = [0xc0, 12];

/// Header flags of an answer: QR, opcode QUERY, AA. RD and CD are copied from the query.
const QR_AA: u8 = 0x84;
const RD: u8 = 0x01;
const CD: u8 = 0x10;

/// Pre-encoded answers for the cluster's own names.
#[derive(Debug, Default)]
pub struct FastAnswers {
    /// Lowercased wire name, then the big-endian query type → the answer section.
    table: HashMap<Box<[u8]>, Answer>,
}

#[derive(Debug)]
struct Answer {
    count: u16,
    records: Vec<u8>,
}

impl FastAnswers {
    /// The table for `zones` ([`super::ClusterZone::zones`]): their A, AAAA and PTR records by
    /// owner and type. Other record types are left out (hickory answers them).
    pub fn new(zones: &[Zone]) -> Result<FastAnswers, DnsError> {
        let mut sets: HashMap<Box<[u8]>, Vec<Vec<u8>>> = HashMap::new();
        for record in zones.iter().flat_map(|z| &z.records) {
            let kind = record.record_type();
            if !matches!(kind, RecordType::A | RecordType::AAAA | RecordType::PTR) {
                continue;
            }
            let failed = || DnsError::Record {
                zone: "fast path".into(),
                record: record.name().to_string(),
            };
            let mut key = record
                .name()
                .to_lowercase()
                .to_bytes()
                .map_err(|_| failed())?;
            key.extend_from_slice(&u16::from(kind).to_be_bytes());
            let encoded = encode(record).ok_or_else(failed)?;
            let set = sets.entry(key.into()).or_default();
            // hickory keeps one copy of a record listed twice; so does the table.
            if !set.contains(&encoded) {
                set.push(encoded);
            }
        }
        let table = sets
            .into_iter()
            .filter_map(|(key, set)| {
                let answer = Answer {
                    count: u16::try_from(set.len()).ok()?,
                    records: set.concat(),
                };
                // Too long for a plain UDP reply: left to hickory, which truncates.
                (answer.records.len() + MAX_OVERHEAD <= MAX_UDP).then_some((key, answer))
            })
            .collect();
        Ok(FastAnswers { table })
    }

    /// Number of (name, type) pairs answered here.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Whether no name is answered here.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// Writes the reply to `query` into `out` and returns true, or returns false (leaving `out`
    /// unspecified) when the query is not one this path answers.
    pub fn answer(&self, query: &[u8], out: &mut Vec<u8>) -> bool {
        let Some(q) = Parsed::read(query) else {
            return false;
        };
        let mut buf = [0u8; MAX_KEY];
        let Some(key) = buf.get_mut(..q.name.len() + 2) else {
            return false;
        };
        let (name, kind) = key.split_at_mut(q.name.len());
        name.copy_from_slice(q.name);
        // Length bytes (below 64) are never letters; a compression pointer never matches a key.
        name.make_ascii_lowercase();
        kind.copy_from_slice(&q.kind.to_be_bytes());
        let Some(answer) = self.table.get(&*key) else {
            return false;
        };

        out.clear();
        out.extend_from_slice(&q.header.id().to_be_bytes());
        let rd = if q.header.recursion_desired() { RD } else { 0 };
        let cd = if q.header.checking_disabled() { CD } else { 0 };
        out.extend_from_slice(&[QR_AA | rd, cd, 0, 1]);
        out.extend_from_slice(&answer.count.to_be_bytes());
        out.extend_from_slice(&[0, 0, 0, u8::from(q.payload.is_some())]);
        out.extend_from_slice(q.question);
        out.extend_from_slice(&answer.records);
        if let Some(payload) = q.payload {
            // As hickory's catalog: its payload size no less than 512, version 0, DO set.
            let [hi, lo] = payload.max(MAX_UDP as u16).to_be_bytes();
            out.extend_from_slice(&[0, 0, 41, hi, lo, 0, 0, 0x80, 0, 0, 0]);
        }
        true
    }
}

/// The parts of a query the fast path looks at.
struct Parsed<'q> {
    header: Header,
    /// The question section as sent.
    question: &'q [u8],
    /// The question's name as sent (wire format, any case).
    name: &'q [u8],
    kind: u16,
    /// The client's EDNS payload size, if it sent an OPT record.
    payload: Option<u16>,
}

impl<'q> Parsed<'q> {
    /// `None` for anything but one IN-class question in a standard query with no other records
    /// than an option-less version-0 OPT.
    fn read(query: &'q [u8]) -> Option<Parsed<'q>> {
        let mut decoder = BinDecoder::new(query);
        let header = Header::read(&mut decoder).ok()?;
        let plain = header.message_type() == MessageType::Query
            && header.op_code() == OpCode::Query
            && !header.truncated()
            && header.query_count() == 1
            && header.answer_count() == 0
            && header.name_server_count() == 0
            && header.additional_count() <= 1;
        if !plain {
            return None;
        }
        let start = decoder.index();
        let question = Query::read(&mut decoder).ok()?;
        if question.query_class() != DNSClass::IN {
            return None;
        }
        let end = decoder.index();
        let payload = match (header.additional_count(), query.get(end..)?) {
            (0, []) => None,
            // OPT at the root: payload size, extended RCODE 0, version 0, any flags, no options.
            (1, [0, 0, 41, hi, lo, 0, 0, _, _, 0, 0]) => Some(u16::from_be_bytes([*hi, *lo])),
            _ => return None,
        };
        Some(Parsed {
            header,
            question: query.get(start..end)?,
            name: query.get(start..end.checked_sub(4)?)?,
            kind: u16::from(question.query_type()),
            payload,
        })
    }
}

/// `record` as an answer: owner pointing at the question, then type, class, TTL and RDATA.
fn encode(record: &Record) -> Option<Vec<u8>> {
    let mut rdata = Vec::new();
    record.data().emit(&mut BinEncoder::new(&mut rdata)).ok()?;
    let mut out = OWNER_IS_QUESTION.to_vec();
    out.extend_from_slice(&u16::from(record.record_type()).to_be_bytes());
    out.extend_from_slice(&u16::from(record.dns_class()).to_be_bytes());
    out.extend_from_slice(&record.ttl().to_be_bytes());
    out.extend_from_slice(&u16::try_from(rdata.len()).ok()?.to_be_bytes());
    out.extend_from_slice(&rdata);
    Some(out)
}

#[cfg(test)]
mod fuzz;
#[cfg(test)]
mod tests;
