//! A string that must never reach a log line, and its constant-time comparison.

use std::fmt;

use subtle::ConstantTimeEq;

/// A secret value (password, token): its `Debug` and `Display` are redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for the few places that must hand it on
    /// (a client's credentials, a mode-0600 file).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether `candidate` equals the secret, in time that depends only on the
    /// secret's length.
    pub fn matches(&self, candidate: &[u8]) -> bool {
        constant_time_eq(self.0.as_bytes(), candidate)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Compares `expected` with `given`: every byte of `expected` is looked at
/// whatever `given` is, so neither the content nor the length leak through timing
/// beyond the length of `expected`.
fn constant_time_eq(expected: &[u8], given: &[u8]) -> bool {
    let same_len = (expected.len() as u64).ct_eq(&(given.len() as u64));
    let mut same = subtle::Choice::from(1);
    for (i, e) in expected.iter().enumerate() {
        let g = given.get(i).copied().unwrap_or(!e);
        same &= e.ct_eq(&g);
    }
    (same & same_len).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_are_redacted() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "Secret(***)");
        assert_eq!(format!("{s}"), "***");
    }

    #[test]
    fn matches_only_the_same_bytes() {
        let s = Secret::new("token-123");
        assert!(s.matches(b"token-123"));
        assert!(!s.matches(b"token-124"));
        assert!(!s.matches(b"token-12"));
        assert!(!s.matches(b"token-1234"));
        assert!(!s.matches(b""));
        assert!(Secret::new("").matches(b""));
        assert!(!Secret::new("").matches(b"x"));
    }
}
