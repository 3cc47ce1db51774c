//! Environment key pairs: X25519 secret keys held in wiping wrappers, public keys and their key ids.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use curve25519_dalek::MontgomeryPoint;
use sha2::{Digest as _, Sha256};
use zeroize::Zeroizing;

use crate::error::KeyError;

/// Length in bytes of an X25519 key, public or secret.
pub const KEY_LEN: usize = 32;

/// The canonical encodings of the X25519 points of small order (libsodium's
/// list less its non-canonical entries, which [`is_canonical`] refuses first):
/// 0, 1, the two points of order 8, and p - 1.
const SMALL_ORDER: [[u8; KEY_LEN]; 5] = [
    [0; KEY_LEN],
    [1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
    [
        0xe0, 0xeb, 0x7a, 0x7c, 0x3b, 0x41, 0xb8, 0xae, 0x16, 0x56, 0xe3, 0xfa, 0xf1, 0x9f, 0xc4, 0x6a, 0xda, 0x09,
        0x8d, 0xeb, 0x9c, 0x32, 0xb1, 0xfd, 0x86, 0x62, 0x05, 0x16, 0x5f, 0x49, 0xb8, 0x00,
    ],
    [
        0x5f, 0x9c, 0x95, 0xbc, 0xa3, 0x50, 0x8c, 0x24, 0xb1, 0xd0, 0xb1, 0x55, 0x9c, 0x83, 0xef, 0x5b, 0x04, 0x44,
        0x5c, 0xc4, 0x58, 0x1c, 0x8e, 0x86, 0xd8, 0x22, 0x4e, 0xdd, 0xd0, 0x9f, 0x11, 0x57,
    ],
    [
        0xec, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f,
    ],
];

/// Whether `u` (little-endian) is below p = 2^255 - 19 with bit 255 clear:
/// the one encoding of its field element.
fn is_canonical(u: &[u8; KEY_LEN]) -> bool {
    // p is 0xed, then thirty 0xff, then 0x7f. Compare from the top byte down.
    match u[31].cmp(&0x7f) {
        std::cmp::Ordering::Less => true,
        std::cmp::Ordering::Greater => false,
        std::cmp::Ordering::Equal => u[1..31].iter().any(|&b| b != 0xff) || u[0] < 0xed,
    }
}

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

    pub(crate) fn of(public: &[u8; KEY_LEN]) -> KeyId {
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
    /// Builds a public key from its 32 bytes, refusing what libsodium refuses
    /// to seal to: a non-canonical encoding (bit 255 set, or u at or above
    /// p = 2^255 - 19) and a point of small order, whose shared secret with
    /// any key is all zeros, so that anyone can open what is sealed to it.
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Result<PublicKey, KeyError> {
        if !is_canonical(&bytes) {
            return Err(KeyError::NonCanonical);
        }
        if SMALL_ORDER.contains(&bytes) {
            return Err(KeyError::SmallOrder);
        }
        Ok(PublicKey::trusted(bytes))
    }

    /// A public key computed from a secret key, which is canonical and of
    /// large order by construction.
    fn trusted(bytes: [u8; KEY_LEN]) -> PublicKey {
        PublicKey { id: KeyId::of(&bytes), inner: crypto_box::PublicKey::from(bytes) }
    }

    /// Parses standard base64 (RFC 4648 with padding) of exactly 32 bytes,
    /// with space, tab, CR and LF ignored around it (docs/FORMAT.md, the
    /// base64 table), then checks the key as [`PublicKey::from_bytes`] does.
    pub fn from_base64(text: &str) -> Result<PublicKey, KeyError> {
        let bytes = B64.decode(around_key(text)).map_err(|_| KeyError::Base64)?;
        let bytes: [u8; KEY_LEN] = bytes.try_into().map_err(|v: Vec<u8>| KeyError::Length { found: v.len() })?;
        PublicKey::from_bytes(bytes)
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
/// Held as its 32 bytes in a wiping buffer, boxed once at construction and
/// never moved again, rather than as a `crypto_box::SecretKey`: that type's
/// scalar is wiped on drop, but it is moved by value on the way in and its
/// stale copies are not. Every buffer that held the encoded key on the way in
/// is a `Zeroizing` one. `Debug` shows only the key id.
pub struct SecretKey {
    bytes: Box<Zeroizing<[u8; KEY_LEN]>>,
    public: PublicKey,
}

impl SecretKey {
    /// Builds a secret key from its 32 bytes; the caller's buffer is wiped on drop.
    pub fn from_bytes(bytes: Zeroizing<[u8; KEY_LEN]>) -> SecretKey {
        let mut boxed = Box::new(Zeroizing::new([0u8; KEY_LEN]));
        boxed.copy_from_slice(&bytes[..]);
        // Derived once here: opening a value needs it for the nonce.
        let public = PublicKey::trusted(MontgomeryPoint::mul_base_clamped(**boxed).to_bytes());
        SecretKey { bytes: boxed, public }
    }

    /// Parses standard base64 of exactly 32 bytes. One trailing newline (`\n` or
    /// `\r\n`) is tolerated, because files and `$(cat key)` add one; any other
    /// surrounding text is an error.
    pub fn from_base64(text: &str) -> Result<SecretKey, KeyError> {
        SecretKey::from_base64_bytes(text.as_bytes())
    }

    /// [`SecretKey::from_base64`] of bytes that may not be text.
    pub fn from_base64_bytes(text: &[u8]) -> Result<SecretKey, KeyError> {
        let text = text.strip_suffix(b"\n").unwrap_or(text);
        let text = text.strip_suffix(b"\r").unwrap_or(text);
        if text.is_empty() {
            return Err(KeyError::Empty);
        }
        // Decode into a fixed, wiped buffer rather than a `Vec` that could be
        // reallocated (leaving copies) as it grows. 33 bytes is what the base64
        // engine needs as room for 44 characters.
        let mut buf = Zeroizing::new([0u8; DECODE_ROOM]);
        let len = B64.decode_slice(text, &mut buf[..]).map_err(|e| match e {
            base64::DecodeSliceError::OutputSliceTooSmall => KeyError::Length { found: decoded_len(text) },
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

    /// The key file's text: the base64 key and a newline, 45 bytes in a
    /// wiping buffer. [`crate::write_key_file`] writes it; only key management
    /// and tests need it.
    #[cfg(feature = "seal")]
    pub fn to_key_file_text(&self) -> Zeroizing<[u8; KEY_FILE_LEN]> {
        let mut out = Zeroizing::new([0u8; KEY_FILE_LEN]);
        let written = B64.encode_slice(&self.bytes[..], &mut out[..BASE64_LEN]);
        debug_assert_eq!(written, Ok(BASE64_LEN));
        out[BASE64_LEN] = b'\n';
        out
    }

    /// The base64 text form, for handing the key on (a `SECRET_KEY` value,
    /// an engine secret). Only key management and tests need this.
    #[cfg(feature = "seal")]
    pub fn to_base64(&self) -> Zeroizing<String> {
        let text = self.to_key_file_text();
        let mut out = Zeroizing::new(String::with_capacity(BASE64_LEN));
        out.push_str(std::str::from_utf8(&text[..BASE64_LEN]).unwrap_or_default());
        out
    }

    /// The matching public key (derived once, at construction).
    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }

    /// The key id of the matching public key.
    pub fn key_id(&self) -> KeyId {
        self.public.key_id()
    }

    pub(crate) fn bytes(&self) -> &Zeroizing<[u8; KEY_LEN]> {
        &self.bytes
    }
}

/// Length of a key file: 44 base64 characters and a newline.
pub const KEY_FILE_LEN: usize = BASE64_LEN + 1;
/// Length of a 32-byte key in padded base64.
const BASE64_LEN: usize = 44;
/// Room the base64 decoder needs for 44 characters (it writes whole 3-byte groups).
const DECODE_ROOM: usize = 33;

/// How many bytes standard base64 `text` (too long for a key) stands for.
fn decoded_len(text: &[u8]) -> usize {
    let padding = text.iter().rev().take_while(|&&b| b == b'=').count();
    (text.len() * 3 / 4).saturating_sub(padding)
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey(key id {}, <redacted>)", self.public.key_id())
    }
}

/// A key's text without the white space docs/FORMAT.md lets a file put
/// around it: space, tab, CR and LF, and nothing else (not a form feed, not a
/// no-break space, which `str::trim` would also take away).
pub(crate) fn around_key(text: &str) -> &str {
    text.trim_matches([' ', '\t', '\r', '\n'])
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

    /// p = 2^255 - 19 with its low byte (0xed) replaced by `low`.
    fn near_p(low: u8) -> [u8; KEY_LEN] {
        let mut u = [0xff; KEY_LEN];
        u[0] = low;
        u[31] = 0x7f;
        u
    }

    #[test]
    fn public_keys_are_canonical_and_of_large_order() {
        // Every small-order point is refused as such, also written with bit
        // 255 set or as u + p, which are refused for their encoding first.
        for u in SMALL_ORDER {
            assert_eq!(PublicKey::from_bytes(u), Err(KeyError::SmallOrder), "{u:02x?}");
            let mut high = u;
            high[31] |= 0x80;
            assert_eq!(PublicKey::from_bytes(high), Err(KeyError::NonCanonical), "{high:02x?}");
        }
        // 0 + p and 1 + p: the non-canonical twins of two small-order points.
        assert_eq!(PublicKey::from_bytes(near_p(0xed)), Err(KeyError::NonCanonical));
        assert_eq!(PublicKey::from_bytes(near_p(0xee)), Err(KeyError::NonCanonical));
        assert_eq!(PublicKey::from_bytes([0xff; KEY_LEN]), Err(KeyError::NonCanonical));
        // Next to p: p - 1 is of small order, p - 2 is an ordinary u.
        assert_eq!(PublicKey::from_bytes(near_p(0xec)), Err(KeyError::SmallOrder));
        assert!(PublicKey::from_bytes(near_p(0xeb)).is_ok());
        // The top byte decides alone when it is below 0x7f, and a lower byte
        // below 0xff makes any low byte canonical.
        let mut u = near_p(0xff);
        u[31] = 0x7e;
        assert!(PublicKey::from_bytes(u).is_ok());
        let mut u = near_p(0xff);
        u[17] = 0xfe;
        assert!(PublicKey::from_bytes(u).is_ok());
        // Each small-order point really is one: a clamped scalar kills it.
        for u in SMALL_ORDER {
            assert_eq!(MontgomeryPoint(u).mul_clamped([0x5a; KEY_LEN]).to_bytes(), [0; KEY_LEN]);
        }
        // Real keys pass, and the base64 form is checked the same way.
        let sk = SecretKey::from_base64(ALICE_SK).unwrap();
        assert_eq!(PublicKey::from_bytes(*sk.public_key().as_bytes()).as_ref(), Ok(sk.public_key()));
        assert_eq!(PublicKey::from_base64(&B64.encode([0u8; KEY_LEN])), Err(KeyError::SmallOrder));
        assert_eq!(PublicKey::from_base64(&B64.encode([0xff; KEY_LEN])), Err(KeyError::NonCanonical));
    }

    #[test]
    fn key_file_text_is_the_base64_key_and_a_newline() {
        let sk = SecretKey::from_base64(ALICE_SK).unwrap();
        assert_eq!(&sk.to_key_file_text()[..], format!("{ALICE_SK}\n").as_bytes());
        assert_eq!(&*sk.to_base64(), ALICE_SK);
        let again = SecretKey::from_base64_bytes(&sk.to_key_file_text()[..]).unwrap();
        assert_eq!(again.public_key(), sk.public_key());
    }

    #[test]
    fn too_long_keys_say_how_long_they_are() {
        for len in [33usize, 34, 35, 48, 64, 100] {
            let text = B64.encode(vec![7u8; len]);
            assert_eq!(SecretKey::from_base64(&text).unwrap_err(), KeyError::Length { found: len }, "{len}");
        }
        assert_eq!(decoded_len(b"AAAAAAAA"), 6);
        assert_eq!(decoded_len(b"AAAAAA=="), 4);
    }

    #[test]
    fn debug_shows_ids_only() {
        let sk = SecretKey::from_base64(ALICE_SK).unwrap();
        assert_eq!(format!("{:?}", sk.key_id()), "KeyId(300c9c9603b92a4b)");
        assert_eq!(format!("{:?}", sk.public_key()), "PublicKey(300c9c9603b92a4b)");
        assert_eq!(format!("{sk:?}"), "SecretKey(key id 300c9c9603b92a4b, <redacted>)");
    }

    #[test]
    fn debug_never_shows_key_bytes() {
        let sk = SecretKey::from_base64(ALICE_SK).unwrap();
        let dbg = format!("{sk:?}");
        assert!(!dbg.contains(ALICE_SK));
        assert!(dbg.contains(&sk.key_id().to_string()));
    }
}
