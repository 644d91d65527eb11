//! What a client may name: repositories (the spec's regex, slashes allowed), tags and digests
//! (`sha256:` + 64 lowercase hex only). Pure checks, used before anything touches the disk, so
//! no name can ever become a path outside the registry.

use std::fmt;

use super::errors::{Code, RegistryError, Result};

/// Longest repository name accepted (the reference implementation's limit).
pub const MAX_NAME: usize = 255;
/// Longest tag (the spec's regex allows 128 characters).
pub const MAX_TAG: usize = 128;

/// Checks a repository name against the spec:
/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*`.
pub fn validate_name(name: &str) -> Result<()> {
    let bad = || RegistryError::new(Code::NameInvalid, format!("invalid repository name {name:?}"));
    if name.is_empty() || name.len() > MAX_NAME {
        return Err(bad());
    }
    if name.split('/').all(component_ok) {
        Ok(())
    } else {
        Err(bad())
    }
}

/// One path component: alphanumeric runs joined by `.`, `_`, `__` or any number of `-`.
fn component_ok(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

/// Checks a tag: `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`.
pub fn validate_tag(tag: &str) -> Result<()> {
    let b = tag.as_bytes();
    let first_ok = b.first().is_some_and(|&x| x.is_ascii_alphanumeric() || x == b'_');
    let rest_ok = b.iter().all(|&x| x.is_ascii_alphanumeric() || matches!(x, b'_' | b'.' | b'-'));
    if first_ok && rest_ok && b.len() <= MAX_TAG {
        Ok(())
    } else {
        Err(RegistryError::new(Code::TagInvalid, format!("invalid tag {tag:?}")))
    }
}

/// A sha256 digest, validated: the only algorithm kvci stores.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Digest {
    hex: String,
}

impl Digest {
    /// Parses `sha256:<64 lowercase hex>`; other algorithms are refused by name.
    pub fn parse(s: &str) -> Result<Digest> {
        let Some((algo, hex)) = s.split_once(':') else {
            return Err(RegistryError::new(Code::DigestInvalid, format!("invalid digest {s:?}: expected sha256:<hex>")));
        };
        if algo != "sha256" {
            return Err(RegistryError::new(Code::DigestInvalid, format!("unsupported digest algorithm {algo:?}: only sha256")));
        }
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return Err(RegistryError::new(Code::DigestInvalid, format!("invalid digest {s:?}: expected 64 lowercase hex digits")));
        }
        Ok(Digest { hex: hex.to_string() })
    }

    /// The digest of finished sha256 output.
    pub fn from_sha256(bytes: &[u8]) -> Digest {
        Digest { hex: bytes.iter().map(|b| format!("{b:02x}")).collect() }
    }

    /// The digest of `data`.
    pub fn of(data: &[u8]) -> Digest {
        use sha2::Digest as _;
        Digest::from_sha256(&sha2::Sha256::digest(data))
    }

    /// The 64 hex digits (a file name in the blob store).
    pub fn hex(&self) -> &str {
        &self.hex
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

/// A manifest reference: a tag or a digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reference {
    /// A tag (`latest`).
    Tag(String),
    /// A digest (`sha256:…`).
    Digest(Digest),
}

impl Reference {
    /// A digest when it has a colon (tags cannot), else a tag.
    pub fn parse(s: &str) -> Result<Reference> {
        if s.contains(':') {
            Digest::parse(s).map(Reference::Digest)
        } else {
            validate_tag(s).map(|_| Reference::Tag(s.to_string()))
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reference::Tag(t) => f.write_str(t),
            Reference::Digest(d) => d.fmt(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn names_follow_the_spec_regex() {
        for ok in ["a", "library/busybox", "a/b/c", "my-app", "my--app", "a.b", "a_b", "a__b", "0x/9", "kubevirt/virt-launcher"] {
            assert!(validate_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "A", "a/", "/a", "a//b", "-a", "a-", "a___b", "a..b", "a._b", "a/../b", "..", "a b", "ä", "a/_b", "a:b"] {
            assert_eq!(validate_name(bad).unwrap_err().code, Code::NameInvalid, "{bad}");
        }
        assert!(validate_name(&"a".repeat(MAX_NAME)).is_ok());
        assert!(validate_name(&"a".repeat(MAX_NAME + 1)).is_err());
    }

    #[test]
    fn tags_follow_the_spec_regex() {
        for ok in ["latest", "v1.2.3", "_x", "A-b_c.d", &"t".repeat(128)] {
            assert!(validate_tag(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".x", "-x", "a/b", "a:b", &"t".repeat(129)] {
            assert!(validate_tag(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn digests_are_sha256_lowercase_hex() {
        let d = Digest::parse(&format!("sha256:{HEX}")).unwrap();
        assert_eq!(d.hex(), HEX);
        assert_eq!(d.to_string(), format!("sha256:{HEX}"));
        assert_eq!(Digest::of(b""), d);
        let sha512 = Digest::parse(&format!("sha512:{HEX}{HEX}")).unwrap_err();
        assert!(sha512.message.contains("unsupported digest algorithm"), "{sha512}");
        for bad in [HEX.to_string(), format!("sha256:{}", &HEX[1..]), format!("sha256:{}", HEX.to_uppercase()), format!("sha256:{HEX}0"), "sha256:".into(), format!("sha256:../{}", &HEX[3..])] {
            assert_eq!(Digest::parse(&bad).unwrap_err().code, Code::DigestInvalid, "{bad}");
        }
    }

    #[test]
    fn references_are_tags_or_digests() {
        assert_eq!(Reference::parse("v1").unwrap(), Reference::Tag("v1".into()));
        assert!(matches!(Reference::parse(&format!("sha256:{HEX}")).unwrap(), Reference::Digest(_)));
        assert_eq!(Reference::parse("sha256:zz").unwrap_err().code, Code::DigestInvalid);
        assert_eq!(Reference::parse("..").unwrap_err().code, Code::TagInvalid);
    }
}
