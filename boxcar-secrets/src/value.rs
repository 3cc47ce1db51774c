//! Opened secret values: plaintext held in a wiping buffer, never printed.

use std::fmt;

use zeroize::Zeroizing;

/// The plaintext of one opened secret.
///
/// The bytes are wiped when the value is dropped. `Debug` prints a placeholder;
/// there is no `Display`. Reading the plaintext takes an explicit
/// `expose_*` call, so every use site is easy to find.
pub struct SecretValue {
    bytes: Zeroizing<Vec<u8>>,
}

impl SecretValue {
    pub(crate) fn new(bytes: Zeroizing<Vec<u8>>) -> SecretValue {
        SecretValue { bytes }
    }

    /// The plaintext bytes.
    pub fn expose_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The plaintext as UTF-8, or `None` when it is not valid UTF-8.
    pub fn expose_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.bytes).ok()
    }

    /// Length of the plaintext in bytes (not secret: `verify` prints it).
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Whether the plaintext is empty.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretValue(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_is_redacted() {
        let v = SecretValue::new(Zeroizing::new(b"hunter2".to_vec()));
        assert_eq!(format!("{v:?}"), "SecretValue(<redacted>)");
        assert_eq!(v.expose_str(), Some("hunter2"));
        assert_eq!(v.len(), 7);
    }
}
