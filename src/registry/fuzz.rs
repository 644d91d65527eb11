//! Bounded fuzzing of what clients send the registry: random and mutated request targets go
//! through the router, random and mutated manifests through the validator, random `Range` and
//! `Content-Range` values through their parsers. Nothing may panic, and whatever the router
//! accepts must carry a valid name and digest. A fixed seed keeps runs reproducible.

use super::manifest::{self, tests::image};
use super::reference::{validate_name, Digest};
use super::routes::{self, Action};
use crate::fuzzing::Rng;

const RUNS: usize = 20_000;

/// Replaces, inserts or deletes a few bytes, favouring the characters paths are made of.
fn mutate(rng: &mut Rng, v: &mut Vec<u8>) {
    const ALPHABET: &[u8] = b"/:%._-?&=azAZ09\0\xff ";
    for _ in 0..=rng.below(4) {
        let b = if rng.below(2) == 0 { ALPHABET[rng.below(ALPHABET.len())] } else { rng.next() as u8 };
        match rng.below(3) {
            0 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] = b;
            }
            1 => {
                let i = rng.below(v.len() + 1);
                v.insert(i, b);
            }
            _ if !v.is_empty() => {
                let i = rng.below(v.len());
                v.remove(i);
            }
            _ => {}
        }
    }
}

const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

fn valid_targets() -> Vec<String> {
    vec![
        "/v2/".into(),
        "/v2/_catalog?n=2&last=a".into(),
        "/v2/a/b/tags/list?n=1".into(),
        "/v2/a/manifests/latest".into(),
        format!("/v2/a/b/c/manifests/{D}"),
        format!("/v2/a/blobs/{D}"),
        "/v2/a/blobs/uploads/".into(),
        format!("/v2/a/blobs/uploads/?digest={D}"),
        format!("/v2/a/blobs/uploads/?mount={D}&from=x/y"),
        format!("/v2/a/blobs/uploads/0123abcd?digest={}", D.replace(':', "%3A")),
    ]
}

/// Whatever the router accepts names a valid repository and (where it has one) digest.
fn check_accepted(a: &Action) {
    let name = match a {
        Action::CheckApi | Action::Catalog(_) => return,
        Action::ListTags { name, .. }
        | Action::GetManifest { name, .. }
        | Action::PutManifest { name, .. }
        | Action::StartUpload { name, .. }
        | Action::UploadStatus { name, .. }
        | Action::PatchUpload { name, .. }
        | Action::CancelUpload { name, .. } => name,
        Action::GetBlob { name, digest, .. } | Action::FinishUpload { name, digest, .. } => {
            assert!(Digest::parse(&digest.to_string()).is_ok());
            name
        }
    };
    assert!(validate_name(name).is_ok(), "router accepted name {name:?}");
    assert!(!name.split('/').any(|c| c == ".." || c == "." || c.is_empty()), "{name:?}");
}

#[test]
fn random_and_mutated_targets_never_panic_the_router() {
    let mut rng = Rng::new(0x9e37_79b9_7f4a_7c15);
    let methods = ["GET", "HEAD", "PUT", "POST", "PATCH", "DELETE", "OPTIONS", ""];
    let targets = valid_targets();
    for _ in 0..RUNS {
        let method = rng.pick(&methods);
        let mut t = targets[rng.below(targets.len())].clone().into_bytes();
        mutate(&mut rng, &mut t);
        let t = String::from_utf8_lossy(&t);
        if let Ok(a) = routes::parse(method, &t) {
            check_accepted(&a);
        }
        let junk: Vec<u8> = (0..rng.below(80)).map(|_| rng.next() as u8).collect();
        let _ = routes::parse(method, &String::from_utf8_lossy(&junk));
    }
}

#[test]
fn random_and_mutated_manifests_never_panic_the_validator() {
    let mut rng = Rng::new(0x2545_f491_4f6c_dd1d);
    let (c, l) = (Digest::of(b"{}"), Digest::of(b"l"));
    let seeds = [
        image(&c, 2, &[(&l, 1)]),
        serde_json::json!({ "schemaVersion": 2, "mediaType": manifest::OCI_INDEX,
            "manifests": [{ "digest": D, "size": 3, "platform": {"os": "linux"} }] })
        .to_string()
        .into_bytes(),
    ];
    let types = [manifest::OCI_MANIFEST, manifest::OCI_INDEX, manifest::DOCKER_MANIFEST, manifest::DOCKER_LIST, "text/plain", ""];
    for _ in 0..RUNS {
        let mut m = seeds[rng.below(seeds.len())].clone();
        mutate(&mut rng, &mut m);
        let ct = rng.pick(&types);
        if let Ok(checked) = manifest::check(Some(ct).filter(|c| !c.is_empty()), &m) {
            assert!(!checked.media_type.is_empty());
        }
        let junk: Vec<u8> = (0..rng.below(120)).map(|_| rng.next() as u8).collect();
        let _ = manifest::check(Some(ct), &junk);
    }
}

#[test]
fn random_header_values_never_panic() {
    let mut rng = Rng::new(0xdead_beef_cafe_f00d);
    let seeds = ["bytes=0-9", "bytes=-5", "bytes=7-", "0-99", "bytes 0-99/100"];
    for _ in 0..RUNS {
        let mut v = rng.pick(&seeds).as_bytes().to_vec();
        mutate(&mut rng, &mut v);
        let v = String::from_utf8_lossy(&v);
        let total = rng.next() % 200;
        if let Some((a, b)) = super::ranges::parse_range(&v, total) {
            assert!(a <= b && b < total, "{v} of {total} gave {a}-{b}");
        }
        let sent = (rng.below(2) == 0).then(|| rng.next() % 200);
        if let Ok(n) = super::ranges::chunk_length(&v, total, sent) {
            assert!(n > 0 && sent.map_or(true, |s| s == n), "{v} at {total} with {sent:?} gave {n}");
        }
    }
}
