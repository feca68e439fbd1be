//! Caller identities: the value of a caller header (a user id, often an
//! email) is hashed before it reaches a store, a log line or a usage record.

use std::fmt;

use sha2::{Digest, Sha256};

/// A hashed caller: the first 128 bits of SHA-256 over a per-installation
/// key and the header value. Shown as 32 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CallerId([u8; 16]);

impl CallerId {
    /// The raw 16 bytes.
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// Reads the 32 hex digits `Display` writes (a usage record's
    /// `caller_hash`).
    pub fn from_hex(text: &str) -> Option<CallerId> {
        let bytes = text.as_bytes();
        if bytes.len() != 32 {
            return None;
        }
        let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
        let mut id = [0u8; 16];
        for (i, pair) in bytes.chunks(2).enumerate() {
            id[i] = digit(pair[0])? << 4 | digit(pair[1])?;
        }
        Some(CallerId(id))
    }
}

impl fmt::Display for CallerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for CallerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CallerId({self})")
    }
}

/// Hashes caller header values with a key. Every sidecar sharing a store
/// must use the same key, or the same caller gets different budgets; the
/// key makes the ids useless for looking up a guessed user name by
/// hashing it elsewhere (without the key, a short id such as an email
/// could be confirmed by hashing candidates).
#[derive(Clone)]
pub struct CallerHasher {
    prefix: Sha256,
}

impl CallerHasher {
    /// A hasher keyed with `key` (may be empty: then ids are plain
    /// truncated SHA-256, still never the value itself).
    pub fn new(key: &[u8]) -> CallerHasher {
        let mut prefix = Sha256::new();
        // Length first, so (key, value) pairs cannot be shifted into each other.
        prefix.update((key.len() as u64).to_be_bytes());
        prefix.update(key);
        CallerHasher { prefix }
    }

    /// The id of the caller named `value`.
    pub fn hash(&self, value: &str) -> CallerId {
        let digest = self
            .prefix
            .clone()
            .chain_update(value.as_bytes())
            .finalize();
        let mut id = [0u8; 16];
        id.copy_from_slice(&digest[..16]);
        CallerId(id)
    }
}

impl fmt::Debug for CallerHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CallerHasher(***)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyed_and_stable() {
        let a = CallerHasher::new(b"k1");
        let b = CallerHasher::new(b"k2");
        assert_eq!(a.hash("alice@example.com"), a.hash("alice@example.com"));
        assert_ne!(a.hash("alice@example.com"), b.hash("alice@example.com"));
        assert_ne!(a.hash("alice"), a.hash("bob"));
        let shown = a.hash("alice@example.com").to_string();
        assert_eq!(shown.len(), 32);
        assert_eq!(
            CallerId::from_hex(&shown),
            Some(a.hash("alice@example.com"))
        );
        assert_eq!(CallerId::from_hex("zz"), None);
        assert!(!shown.contains("alice"));
    }
}
