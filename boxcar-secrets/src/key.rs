//! Environment key pairs: X25519 secret keys held in wiping wrappers, public keys and their key ids.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use sha2::{Digest as _, Sha256};
use zeroize::Zeroizing;

use crate::error::KeyError;

/// Length in bytes of an X25519 key, public or secret.
pub const KEY_LEN: usize = 32;

/// A short, public identifier of a key pair: the first 8 bytes of SHA-256 of the
/// public key, printed as 16 lower-case hex digits.
///
/// Every sealed value carries the key id of the key it was sealed to, so `check`
/// can tell a value sealed to another key without holding any secret.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId([u8; 8]);

impl KeyId {
    /// Parses the 16-hex-digit text form.
    pub fn parse(text: &str) -> Option<KeyId> {
        if text.len() != 16 || !text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return None;
        }
        let mut out = [0u8; 8];
        for (i, chunk) in text.as_bytes().chunks(2).enumerate() {
            let hex = std::str::from_utf8(chunk).ok()?;
            out[i] = u8::from_str_radix(hex, 16).ok()?;
        }
        Some(KeyId(out))
    }

    fn of(public: &[u8; KEY_LEN]) -> KeyId {
        let digest = Sha256::digest(public);
        let mut out = [0u8; 8];
        out.copy_from_slice(&digest[..8]);
        KeyId(out)
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

/// The public half of an environment's key pair; safe to publish.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    inner: crypto_box::PublicKey,
    id: KeyId,
}

impl PublicKey {
    /// Builds a public key from its 32 bytes.
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> PublicKey {
        PublicKey { id: KeyId::of(&bytes), inner: crypto_box::PublicKey::from(bytes) }
    }

    /// Parses standard base64 (RFC 4648 with padding) of exactly 32 bytes.
    pub fn from_base64(text: &str) -> Result<PublicKey, KeyError> {
        let bytes = B64.decode(text.trim()).map_err(|_| KeyError::Base64)?;
        let bytes: [u8; KEY_LEN] = bytes.try_into().map_err(|v: Vec<u8>| KeyError::Length { found: v.len() })?;
        Ok(PublicKey::from_bytes(bytes))
    }

    /// The standard base64 text form, as stored in `public_key`.
    pub fn to_base64(&self) -> String {
        B64.encode(self.inner.as_bytes())
    }

    /// The key id that sealed values and messages use to name this key.
    pub fn key_id(&self) -> KeyId {
        self.id
    }

    /// The raw 32 bytes.
    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        self.inner.as_bytes()
    }

    #[cfg(feature = "seal")]
    pub(crate) fn inner(&self) -> &crypto_box::PublicKey {
        &self.inner
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.id)
    }
}

/// The secret half of an environment's key pair.
///
/// `crypto_box::SecretKey` wipes its scalar on drop, but every move of it leaves
/// a stale copy behind; it is boxed here once, at construction, and never moved
/// again. Every buffer that held the encoded key on the way in is a
/// `Zeroizing` one. `Debug` shows only the key id.
pub struct SecretKey {
    inner: Box<crypto_box::SecretKey>,
    public: PublicKey,
}

impl SecretKey {
    /// Builds a secret key from its 32 bytes; the caller's buffer is wiped on drop.
    pub fn from_bytes(bytes: Zeroizing<[u8; KEY_LEN]>) -> SecretKey {
        let inner = Box::new(crypto_box::SecretKey::from_bytes(*bytes));
        // Derived once here: crypto_box derives it again on every unseal, which
        // doubles the cost of opening a value (see `sealed::open_box`).
        let public = PublicKey::from_bytes(*inner.public_key().as_bytes());
        SecretKey { inner, public }
    }

    /// Parses standard base64 of exactly 32 bytes. One trailing newline (`\n` or
    /// `\r\n`) is tolerated, because files and `$(cat key)` add one; any other
    /// surrounding text is an error.
    pub fn from_base64(text: &str) -> Result<SecretKey, KeyError> {
        let text = text.strip_suffix('\n').unwrap_or(text);
        let text = text.strip_suffix('\r').unwrap_or(text);
        if text.is_empty() {
            return Err(KeyError::Empty);
        }
        // Decode into a fixed, wiped buffer rather than a `Vec` that could be
        // reallocated (leaving copies) as it grows. 33 bytes is what the base64
        // engine needs as room for 44 characters.
        let mut buf = Zeroizing::new([0u8; KEY_LEN + 3]);
        let len = B64.decode_slice(text.as_bytes(), &mut buf[..]).map_err(|e| match e {
            base64::DecodeSliceError::OutputSliceTooSmall => KeyError::Length { found: text.len() * 3 / 4 },
            base64::DecodeSliceError::DecodeError(_) => KeyError::Base64,
        })?;
        if len != KEY_LEN {
            return Err(KeyError::Length { found: len });
        }
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        bytes.copy_from_slice(&buf[..KEY_LEN]);
        Ok(SecretKey::from_bytes(bytes))
    }

    /// Generates a fresh key pair from the operating system's random source.
    #[cfg(feature = "seal")]
    pub fn generate() -> SecretKey {
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut bytes[..]);
        SecretKey::from_bytes(bytes)
    }

    /// The base64 text form, for writing a key file. Only key management needs this.
    #[cfg(feature = "seal")]
    pub fn to_base64(&self) -> Zeroizing<String> {
        let bytes = Zeroizing::new(self.inner.to_bytes());
        Zeroizing::new(B64.encode(&bytes[..]))
    }

    /// The matching public key (derived once, at construction).
    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }

    /// The key id of the matching public key.
    pub fn key_id(&self) -> KeyId {
        self.public.key_id()
    }

    pub(crate) fn inner(&self) -> &crypto_box::SecretKey {
        &self.inner
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey(key id {}, <redacted>)", self.public.key_id())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 7748 section 6.1: Alice's key pair.
    const ALICE_SK: &str = "dwdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LCo=";
    const ALICE_PK_HEX: &str = "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a";

    #[test]
    fn derives_rfc7748_public_key() {
        let sk = SecretKey::from_base64(ALICE_SK).unwrap();
        let hex: String = sk.public_key().as_bytes().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, ALICE_PK_HEX);
    }

    #[test]
    fn key_id_round_trips_and_is_sha256_prefix() {
        let sk = SecretKey::from_base64(ALICE_SK).unwrap();
        let id = sk.key_id();
        let digest = Sha256::digest(sk.public_key().as_bytes());
        let expected: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(id.to_string(), expected);
        assert_eq!(KeyId::parse(&id.to_string()), Some(id));
        assert_eq!(KeyId::parse("ABCDEF0123456789"), None);
        assert_eq!(KeyId::parse("abc"), None);
    }

    #[test]
    fn secret_key_intake_tolerates_one_newline_only() {
        assert!(SecretKey::from_base64(&format!("{ALICE_SK}\n")).is_ok());
        assert!(SecretKey::from_base64(&format!("{ALICE_SK}\r\n")).is_ok());
        assert!(matches!(SecretKey::from_base64(&format!("{ALICE_SK}\n\n")), Err(KeyError::Base64)));
        assert!(matches!(SecretKey::from_base64(&format!(" {ALICE_SK}")), Err(KeyError::Base64)));
        assert!(matches!(SecretKey::from_base64(""), Err(KeyError::Empty)));
        assert!(matches!(SecretKey::from_base64("AAAA"), Err(KeyError::Length { found: 3 })));
        let long = B64.encode([7u8; 48]);
        assert!(matches!(SecretKey::from_base64(&long), Err(KeyError::Length { .. })));
        assert!(matches!(PublicKey::from_base64("AAAA"), Err(KeyError::Length { found: 3 })));
        assert!(matches!(PublicKey::from_base64("not base64!"), Err(KeyError::Base64)));
    }

    #[test]
    fn debug_never_shows_key_bytes() {
        let sk = SecretKey::from_base64(ALICE_SK).unwrap();
        let dbg = format!("{sk:?}");
        assert!(!dbg.contains(ALICE_SK));
        assert!(dbg.contains(&sk.key_id().to_string()));
    }
}
