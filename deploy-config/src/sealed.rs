//! The sealed-value format, version 1: text form, framed plaintext, sealing and opening.
//!
//! `docs/FORMAT.md` is the specification; this module is its reference
//! implementation. In short:
//!
//! ```text
//! sealed:v1:<key id>:<base64 of crypto_box_seal(frame, public key)>
//! frame = 0x01 || len(env) || env || len(name) || name || value
//! ```

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use crypto_box::aead::Aead as _;
use zeroize::Zeroizing;

use crate::error::{OpenError, ParseError};
use crate::key::{KEY_LEN, KeyId, SecretKey};
use crate::names::{MAX_ENV_LEN, MAX_NAME_LEN, check_env_name, check_secret_name};
use crate::value::SecretValue;

/// The prefix every sealed value starts with, before its version.
pub const PREFIX: &str = "sealed:";
/// The only format version this library reads and writes.
pub const VERSION: u8 = 1;
/// Largest value that can be sealed, in bytes.
pub const MAX_VALUE_LEN: usize = 64 * 1024;

/// Bytes `crypto_box_seal` adds: the ephemeral public key and the Poly1305 tag.
const SEAL_OVERHEAD: usize = KEY_LEN + 16;

/// A sealed value's text form, parsed but not opened.
#[derive(Clone, PartialEq, Eq)]
pub struct SealedValue {
    key_id: KeyId,
    sealed: Vec<u8>,
}

impl SealedValue {
    /// Parses `sealed:v1:<key id>:<base64>`. Needs no key.
    pub fn parse(text: &str) -> Result<SealedValue, ParseError> {
        let Some(rest) = text.strip_prefix(PREFIX) else {
            return Err(ParseError::NotSealed);
        };
        // The version is checked before the shape, so a future version with
        // another layout is reported as a version this build does not know.
        let mut parts = rest.splitn(3, ':');
        let version = parts.next().unwrap_or_default();
        if rest.is_empty() {
            return Err(ParseError::Shape);
        }
        if version != "v1" {
            return Err(ParseError::UnknownVersion { found: version.chars().take(16).collect() });
        }
        let (Some(key_id), Some(body)) = (parts.next(), parts.next()) else {
            return Err(ParseError::Shape);
        };
        let key_id = KeyId::parse(key_id).ok_or(ParseError::KeyId)?;
        let sealed = B64.decode(body).map_err(|_| ParseError::Base64)?;
        // The shortest frame is version, two lengths and one byte of each name.
        if sealed.len() < SEAL_OVERHEAD + 5 {
            return Err(ParseError::TooShort { found: sealed.len() });
        }
        Ok(SealedValue { key_id, sealed })
    }

    /// The id of the key this value says it was sealed to.
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }

    /// Opens the value with `key` and checks that it was sealed for this
    /// environment and name. The key id is compared first, so a value sealed to
    /// another key is reported as such rather than as tampering.
    pub fn open(&self, key: &SecretKey, env: &str, name: &str) -> Result<SecretValue, OpenError> {
        if self.key_id != key.key_id() {
            return Err(OpenError::KeyIdMismatch { value: self.key_id, key: key.key_id() });
        }
        let frame = open_box(key, &self.sealed).ok_or(OpenError::Decrypt)?;
        let (sealed_env, sealed_name, value) = unframe(&frame)?;
        if sealed_env != env || sealed_name != name {
            return Err(OpenError::Context {
                sealed_env: sealed_env.to_owned(),
                sealed_name: sealed_name.to_owned(),
                env: env.to_owned(),
                name: name.to_owned(),
            });
        }
        Ok(SecretValue::new(Zeroizing::new(value.to_vec())))
    }
}

impl fmt::Display for SealedValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PREFIX}v{VERSION}:{}:{}", self.key_id, B64.encode(&self.sealed))
    }
}

impl fmt::Debug for SealedValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SealedValue(v{VERSION}, key id {}, {} bytes)", self.key_id, self.sealed.len())
    }
}

/// Seals `value` for environment `env` and secret `name` to `public`.
#[cfg(feature = "seal")]
pub fn seal(
    public: &crate::key::PublicKey,
    env: &str,
    name: &str,
    value: &[u8],
) -> Result<SealedValue, crate::error::SealError> {
    use crate::error::SealError;
    check_env_name(env).map_err(|problem| SealError::EnvName { env: env.to_owned(), problem })?;
    check_secret_name(name).map_err(|problem| SealError::SecretName { name: name.to_owned(), problem })?;
    if value.len() > MAX_VALUE_LEN {
        return Err(SealError::TooLong { found: value.len() });
    }
    let frame = frame(env, name, value);
    let sealed = public.inner().seal(&mut rand_core::OsRng, &frame).map_err(|_| SealError::Encrypt)?;
    Ok(SealedValue { key_id: public.key_id(), sealed })
}

/// Builds the framed plaintext. The names were checked by the caller, so both
/// lengths fit in one byte.
#[cfg(feature = "seal")]
fn frame(env: &str, name: &str, value: &[u8]) -> Zeroizing<Vec<u8>> {
    let mut frame = Zeroizing::new(Vec::with_capacity(3 + env.len() + name.len() + value.len()));
    frame.push(VERSION);
    frame.push(env.len() as u8);
    frame.extend_from_slice(env.as_bytes());
    frame.push(name.len() as u8);
    frame.extend_from_slice(name.as_bytes());
    frame.extend_from_slice(value);
    frame
}

/// Splits a framed plaintext into environment, name and value.
fn unframe(frame: &[u8]) -> Result<(&str, &str, &[u8]), OpenError> {
    let bad = |why: &'static str| OpenError::Frame { why };
    let (&version, rest) = frame.split_first().ok_or(bad("empty plaintext"))?;
    if version != VERSION {
        return Err(bad("inner version byte is not 1"));
    }
    let (env, rest) = take_name(rest, MAX_ENV_LEN).ok_or(bad("environment name length out of range"))?;
    let (name, value) = take_name(rest, MAX_NAME_LEN).ok_or(bad("secret name length out of range"))?;
    let env = std::str::from_utf8(env).map_err(|_| bad("environment name is not UTF-8"))?;
    let name = std::str::from_utf8(name).map_err(|_| bad("secret name is not UTF-8"))?;
    if check_env_name(env).is_err() || check_secret_name(name).is_err() {
        return Err(bad("sealed names are not valid names"));
    }
    if value.len() > MAX_VALUE_LEN {
        return Err(bad("value longer than 64 KiB"));
    }
    Ok((env, name, value))
}

fn take_name(bytes: &[u8], max: usize) -> Option<(&[u8], &[u8])> {
    let (&len, rest) = bytes.split_first()?;
    let len = usize::from(len);
    if len == 0 || len > max || rest.len() < len {
        return None;
    }
    Some(rest.split_at(len))
}

/// `crypto_box_seal_open`, composed from crypto_box's own primitives.
///
/// `crypto_box::SecretKey::unseal` derives the recipient's public key on every
/// call, a second scalar multiplication that doubles the cost of an open (about
/// 200 µs against libsodium's 73 µs on our machines). `SecretKey` derives it
/// once, so this does the one Diffie-Hellman the construction needs: nonce =
/// BLAKE2b-192(ephemeral pk || recipient pk), then XSalsa20-Poly1305 with the
/// shared key. Equivalence with `unseal` and with libsodium is tested.
fn open_box(key: &SecretKey, sealed: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    use blake2::Digest as _;
    if sealed.len() < SEAL_OVERHEAD {
        return None;
    }
    let (ephemeral, ciphertext) = sealed.split_at(KEY_LEN);
    let ephemeral: [u8; KEY_LEN] = ephemeral.try_into().ok()?;
    let ephemeral = crypto_box::PublicKey::from(ephemeral);
    let mut hasher = blake2::Blake2b::<crypto_box::aead::consts::U24>::new();
    hasher.update(ephemeral.as_bytes());
    hasher.update(key.public_key().as_bytes());
    let nonce = hasher.finalize();
    let salsa = crypto_box::SalsaBox::new(&ephemeral, key.inner());
    salsa.decrypt(&nonce, ciphertext).ok().map(Zeroizing::new)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::PublicKey;

    fn pair() -> SecretKey {
        SecretKey::generate()
    }

    #[test]
    fn round_trip() {
        let sk = pair();
        let sealed = seal(sk.public_key(), "production", "telegram_token", b"123:abc").unwrap();
        let text = sealed.to_string();
        assert!(text.starts_with(&format!("sealed:v1:{}:", sk.key_id())));
        let parsed = SealedValue::parse(&text).unwrap();
        assert_eq!(parsed, sealed);
        let value = parsed.open(&sk, "production", "telegram_token").unwrap();
        assert_eq!(value.expose_bytes(), b"123:abc");
    }

    #[test]
    fn open_box_agrees_with_crypto_box_unseal() {
        let sk = pair();
        for len in [0usize, 1, 31, 32, 33, 1000] {
            let msg = vec![0xa5u8; len];
            let sealed = sk.public_key().inner().seal(&mut rand_core::OsRng, &msg).unwrap();
            let ours = open_box(&sk, &sealed).unwrap();
            let theirs = sk.inner().unseal(&sealed).unwrap();
            assert_eq!(&ours[..], &theirs[..]);
            assert_eq!(&ours[..], &msg[..]);
        }
    }

    #[test]
    fn context_is_checked() {
        let sk = pair();
        let sealed = seal(sk.public_key(), "staging", "db_password", b"x").unwrap();
        let err = sealed.open(&sk, "production", "db_password").unwrap_err();
        assert_eq!(
            err.to_string(),
            "sealed for environment `staging` as `db_password`, but found in environment `production` as `db_password`; \
             values cannot be copied between environments or names: seal it again with \
             `cargo xtask encrypt-secret --env production db_password`"
        );
        let err = sealed.open(&sk, "staging", "api_key").unwrap_err();
        assert!(matches!(err, OpenError::Context { .. }), "{err}");
    }

    #[test]
    fn wrong_key_is_a_key_id_mismatch_not_tampering() {
        let sk = pair();
        let other = pair();
        let sealed = seal(sk.public_key(), "production", "t", b"x").unwrap();
        assert!(matches!(sealed.open(&other, "production", "t"), Err(OpenError::KeyIdMismatch { .. })));
    }

    #[test]
    fn names_and_lengths_are_checked_when_sealing() {
        let pk = PublicKey::from_bytes([9; 32]);
        assert!(seal(&pk, "Prod", "t", b"").is_err());
        assert!(seal(&pk, "prod", "T", b"").is_err());
        assert!(seal(&pk, "prod", "t", &vec![0; MAX_VALUE_LEN + 1]).is_err());
        assert!(seal(&pk, "prod", "t", &vec![0; MAX_VALUE_LEN]).is_ok());
    }

    #[test]
    fn unframe_rejects_bad_frames() {
        assert!(unframe(&[]).is_err());
        assert!(unframe(&[2, 1, b'a', 1, b'b']).is_err());
        assert!(unframe(&[1, 0, 1, b'b']).is_err());
        assert!(unframe(&[1, 5, b'a', 1, b'b']).is_err());
        assert!(unframe(&[1, 1, b'A', 1, b'b']).is_err());
        assert_eq!(unframe(&[1, 1, b'a', 1, b'b', b'v']).unwrap(), ("a", "b", &b"v"[..]));
    }

    #[test]
    fn parse_errors() {
        assert_eq!(SealedValue::parse("hunter2"), Err(ParseError::NotSealed));
        assert_eq!(SealedValue::parse("sealed:v1:abc"), Err(ParseError::Shape));
        assert!(matches!(
            SealedValue::parse("sealed:v2:0011223344556677:AAAA"),
            Err(ParseError::UnknownVersion { .. })
        ));
        assert_eq!(SealedValue::parse("sealed:v1:XYZ:AAAA"), Err(ParseError::KeyId));
        assert_eq!(SealedValue::parse("sealed:v1:0011223344556677:***"), Err(ParseError::Base64));
        assert!(matches!(
            SealedValue::parse("sealed:v1:0011223344556677:AAAA"),
            Err(ParseError::TooShort { found: 3 })
        ));
    }
}
