//! Layer ids: sha256 over named inputs, each length-prefixed so that no two different input
//! lists can hash alike by shifting bytes from one entry to the next.

use sha2::{Digest, Sha256};

/// Accumulates `(name, bytes)` inputs of a layer.
#[derive(Default)]
pub struct LayerDigest(Sha256);

impl LayerDigest {
    /// Adds one named input.
    pub fn feed(&mut self, name: &str, data: &[u8]) {
        self.0.update((name.len() as u64).to_le_bytes());
        self.0.update(name.as_bytes());
        self.0.update((data.len() as u64).to_le_bytes());
        self.0.update(data);
    }

    /// The id, as lowercase hex.
    pub fn finish(self) -> String {
        format!("{:x}", self.0.finalize())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boundaries_matter() {
        let id = |parts: &[(&str, &[u8])]| {
            let mut d = LayerDigest::default();
            for (n, b) in parts {
                d.feed(n, b);
            }
            d.finish()
        };
        assert_ne!(id(&[("a", b"bc")]), id(&[("ab", b"c")]));
        assert_eq!(id(&[("a", b"x")]), id(&[("a", b"x")]));
    }
}
