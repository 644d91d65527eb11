//! Image names in the store: `REPO:TAG`, where `REPO` alone means `REPO:latest`. Every command
//! that takes an image name parses it here, so a name can never be a path and has one spelling.

use std::fmt;
use std::str::FromStr;

/// The tag a name without one gets.
pub const DEFAULT_TAG: &str = "latest";

/// A validated image name, always with its tag.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ImageName {
    repo: String,
    tag: String,
}

/// Why a string is not an image name.
#[derive(Debug, thiserror::Error)]
pub enum NameError {
    /// The part before `:`.
    #[error(
        "invalid image name {0:?}: a name is 1-64 of a-z, 0-9, '.', '_' and '-', starting with a letter or digit, \
         optionally followed by :TAG (it is never a path)"
    )]
    Repo(String),
    /// The part after `:`.
    #[error("invalid tag in image name {0:?}: a tag is 1-128 of A-Z, a-z, 0-9, '.', '_' and '-', not starting with '.' or '-'")]
    Tag(String),
}

impl ImageName {
    /// `repo:tag`, both checked.
    pub fn new(repo: &str, tag: &str) -> Result<ImageName, NameError> {
        let whole = || format!("{repo}:{tag}");
        if !valid_repo(repo) {
            return Err(NameError::Repo(whole()));
        }
        if !valid_tag(tag) {
            return Err(NameError::Tag(whole()));
        }
        Ok(ImageName { repo: repo.into(), tag: tag.into() })
    }

    /// Parses `REPO` or `REPO:TAG`.
    pub fn parse(s: &str) -> Result<ImageName, NameError> {
        let (repo, tag) = s.split_once(':').unwrap_or((s, DEFAULT_TAG));
        if !valid_repo(repo) {
            return Err(NameError::Repo(s.into()));
        }
        if !valid_tag(tag) {
            return Err(NameError::Tag(s.into()));
        }
        Ok(ImageName { repo: repo.into(), tag: tag.into() })
    }

    /// The part before the tag (`tiny`).
    pub fn repo(&self) -> &str {
        &self.repo
    }

    /// The tag (`latest`).
    pub fn tag(&self) -> &str {
        &self.tag
    }
}

fn valid_repo(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.as_bytes()[0].is_ascii_alphanumeric()
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-'))
}

fn valid_tag(s: &str) -> bool {
    (1..=128).contains(&s.len())
        && !s.starts_with(['.', '-'])
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

impl fmt::Display for ImageName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.repo, self.tag)
    }
}

impl FromStr for ImageName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ImageName::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_without_tag_means_latest() {
        assert_eq!(ImageName::parse("tiny").unwrap().to_string(), "tiny:latest");
        assert_eq!(ImageName::parse("tiny").unwrap(), ImageName::parse("tiny:latest").unwrap());
        assert_eq!(ImageName::parse("k8s-1.34:2511_1").unwrap().to_string(), "k8s-1.34:2511_1");
    }

    #[test]
    fn paths_and_odd_names_are_refused() {
        for bad in [
            "/tmp/v", "../manifests/tiny", "a/b", "./x", ".hidden", "-x", "", ":t", "x:", "x:../y", "x:a/b", "x:.t", "X", "x y",
            "x:t:u", "tiny\0", &"a".repeat(65),
        ] {
            assert!(ImageName::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn errors_say_which_part_is_wrong() {
        assert!(matches!(ImageName::parse("A"), Err(NameError::Repo(_))));
        assert!(matches!(ImageName::parse("a:b/c"), Err(NameError::Tag(_))));
        assert!(ImageName::parse("/tmp/v").unwrap_err().to_string().contains("never a path"));
    }
}
