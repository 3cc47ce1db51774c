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
use curve25519_dalek::MontgomeryPoint;
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
            let found: String = version.chars().take(16).collect();
            return Err(ParseError::UnknownVersion { found: crate::show::escape(&found).into_owned() });
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
    let (env, rest) = take_name(rest, MAX_ENV_LEN).map_err(|e| {
        bad(match e {
            Take::NoLength => "the frame ends before the environment name's length",
            Take::Length => "the environment name's length is not 1 to 32",
            Take::PastEnd => "the environment name runs past the end of the frame",
        })
    })?;
    let (name, value) = take_name(rest, MAX_NAME_LEN).map_err(|e| {
        bad(match e {
            Take::NoLength => "the frame ends before the secret name's length",
            Take::Length => "the secret name's length is not 1 to 64",
            Take::PastEnd => "the secret name runs past the end of the frame",
        })
    })?;
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

/// Why a length-prefixed name cannot be taken from a frame.
#[derive(Debug, PartialEq, Eq)]
enum Take {
    /// No length byte: the frame ended.
    NoLength,
    /// A length of 0 or above the name's maximum.
    Length,
    /// A length in range, but more than the frame has left.
    PastEnd,
}

fn take_name(bytes: &[u8], max: usize) -> Result<(&[u8], &[u8]), Take> {
    let (&len, rest) = bytes.split_first().ok_or(Take::NoLength)?;
    let len = usize::from(len);
    if len == 0 || len > max {
        return Err(Take::Length);
    }
    if rest.len() < len {
        return Err(Take::PastEnd);
    }
    Ok(rest.split_at(len))
}

/// libsodium's `crypto_box_seal_open`, composed from the primitives crypto_box is made of.
///
/// `crypto_box::SecretKey::unseal` derives the recipient's public key on every
/// call, a second scalar multiplication; `SecretKey` derives it once, so this
/// does the one Diffie-Hellman the construction needs: nonce =
/// BLAKE2b-192(ephemeral pk || recipient pk), shared key = HSalsa20 with a zero
/// nonce of X25519(recipient sk, ephemeral pk), as in `crypto_box::SalsaBox::new`,
/// then XSalsa20-Poly1305.
///
/// The X25519 is [`x25519`], faster than the one in `SalsaBox::new`. It also
/// follows libsodium where crypto_box 0.9 does not, on ephemeral keys no honest
/// sender makes: crypto_box reduces the clamped scalar mod l, so a key with a
/// component of small order gives another result; and libsodium refuses an
/// all-zero result. Equivalence with `unseal` on honest values, and with
/// libsodium, is tested.
///
/// `cargo bench -p boxcar-secrets --bench open`, on one x86-64 machine with
/// AVX2, timed an open at 55 µs with `SalsaBox::new`, 36 µs with [`x25519`],
/// and libsodium (through PyNaCl, in the same runs) at 37 to 38 µs.
fn open_box(key: &SecretKey, sealed: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    use blake2::Digest as _;
    use crypto_secretbox::{Kdf as _, KeyInit as _, XSalsa20Poly1305};
    if sealed.len() < SEAL_OVERHEAD {
        return None;
    }
    let (ephemeral, ciphertext) = sealed.split_at(KEY_LEN);
    let ephemeral: [u8; KEY_LEN] = ephemeral.try_into().ok()?;
    let mut hasher = blake2::Blake2b::<crypto_box::aead::consts::U24>::new();
    hasher.update(ephemeral);
    hasher.update(key.public_key().as_bytes());
    let nonce = hasher.finalize();
    let shared = x25519(key.bytes(), ephemeral);
    // libsodium's crypto_scalarmult fails on an all-zero result, which only an
    // ephemeral key of small order gives, and crypto_box_seal_open with it.
    // Sealed boxes are anonymous, so this keeps out nothing a sender could not
    // seal anyway; it is here so that what opens here is what opens there.
    // The result is secret, hence no early exit; whether it is zero is not (it
    // depends on the ephemeral key alone).
    if shared.as_bytes().iter().fold(0u8, |acc, b| acc | b) == 0 {
        return None;
    }
    let key = Zeroizing::new(XSalsa20Poly1305::kdf(shared.as_bytes().into(), &Default::default()));
    // `SecretBox` wipes its copy of the key on drop.
    XSalsa20Poly1305::new(&key).decrypt(&nonce, ciphertext).ok().map(Zeroizing::new)
}

/// X25519(`secret`, `u`) as RFC 7748 and libsodium define it: the clamped,
/// unreduced scalar times the point with Montgomery u-coordinate `u` (bit 255
/// ignored), as the u-coordinate of the result. Same 32 bytes as
/// `MontgomeryPoint::mul_clamped`, for every input.
///
/// `MontgomeryPoint::mul_clamped` is the Montgomery ladder on curve25519-dalek's
/// serial field arithmetic, and was nine tenths of the time of an open.
/// `EdwardsPoint::mul_clamped` runs on dalek's AVX2 backend when the CPU has it,
/// which more than makes up for the detour: u -> Edwards y = (u-1)/(u+1),
/// decompression, the multiplication, and back to u, three field inversions or
/// square roots in all. Either sign of x will do, since [k]P and [k](-P) share
/// their u. A u that is not on the curve but on its twist, or u = -1 (where y
/// is undefined; also a twist point), has no Edwards point and takes the ladder.
/// So does every u on a CPU without AVX2, where the detour costs more than it
/// saves (dalek picks its backend at run time too, so the binary runs anywhere).
///
/// Both multiplications are constant-time in the scalar (dalek's radix-16
/// fixed-window method, and the ladder); which one runs depends only on `u`,
/// the public ephemeral key, and on the CPU. The callees take the key bytes by
/// value and keep unwiped copies on their stacks, as `SalsaBox::new` does with
/// its `Scalar`: dalek offers no way around that.
fn x25519(secret: &Zeroizing<[u8; KEY_LEN]>, u: [u8; KEY_LEN]) -> Zeroizing<MontgomeryPoint> {
    let point = MontgomeryPoint(u);
    let edwards = if has_avx2() { point.to_edwards(0) } else { None };
    Zeroizing::new(match edwards {
        Some(edwards) => Zeroizing::new(edwards.mul_clamped(**secret)).to_montgomery(),
        None => point.mul_clamped(**secret),
    })
}

/// Whether curve25519-dalek's AVX2 backend serves Edwards arithmetic here.
/// dalek asks the CPU (and the OS) through cpufeatures, std asks the same
/// question; if they ever disagreed, only the speed would suffer.
fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    return std::is_x86_feature_detected!("avx2");
    #[cfg(not(target_arch = "x86_64"))]
    return false;
}

#[cfg(test)]
mod tests {
    use curve25519_dalek::{EdwardsPoint, Scalar};

    use super::*;
    use crate::key::PublicKey;

    fn pair() -> SecretKey {
        SecretKey::generate()
    }

    #[test]
    fn round_trip() {
        let sk = pair();
        let sealed = seal(sk.public_key(), "production", "api_token", b"123:abc").unwrap();
        let text = sealed.to_string();
        assert!(text.starts_with(&format!("sealed:v1:{}:", sk.key_id())));
        let parsed = SealedValue::parse(&text).unwrap();
        assert_eq!(parsed, sealed);
        let value = parsed.open(&sk, "production", "api_token").unwrap();
        assert_eq!(value.expose_bytes(), b"123:abc");
    }

    fn random_bytes() -> [u8; KEY_LEN] {
        let mut bytes = [0u8; KEY_LEN];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut bytes);
        bytes
    }

    /// p = 2^255 - 19 plus `add`, little-endian (`add` small enough not to reach bit 255).
    fn p_plus(add: u8) -> [u8; KEY_LEN] {
        let mut bytes = [0xff; KEY_LEN];
        bytes[0] = 0xed + add;
        bytes[31] = 0x7f;
        bytes
    }

    /// The u-coordinates of small order that X25519 implementations reject or
    /// must get right, as in libsodium's list: 0, 1, the two of order 8
    /// (325606250916557431795983626356110631294008115727848805560023387167927233504
    /// and 39382357235489614581723060781553021112529911719440698176882885853963445705823),
    /// p - 1, p and p + 1; each also with bit 255 set, which X25519 ignores.
    fn small_order_u() -> Vec<[u8; KEY_LEN]> {
        let mut one = [0u8; KEY_LEN];
        one[0] = 1;
        let low = [
            [0u8; KEY_LEN],
            one,
            [
                0xe0, 0xeb, 0x7a, 0x7c, 0x3b, 0x41, 0xb8, 0xae, 0x16, 0x56, 0xe3, 0xfa, 0xf1, 0x9f, 0xc4, 0x6a, 0xda,
                0x09, 0x8d, 0xeb, 0x9c, 0x32, 0xb1, 0xfd, 0x86, 0x62, 0x05, 0x16, 0x5f, 0x49, 0xb8, 0x00,
            ],
            [
                0x5f, 0x9c, 0x95, 0xbc, 0xa3, 0x50, 0x8c, 0x24, 0xb1, 0xd0, 0xb1, 0x55, 0x9c, 0x83, 0xef, 0x5b, 0x04,
                0x44, 0x5c, 0xc4, 0x58, 0x1c, 0x8e, 0x86, 0xd8, 0x22, 0x4e, 0xdd, 0xd0, 0x9f, 0x11, 0x57,
            ],
            [
                0xec, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f,
            ],
            p_plus(0),
            p_plus(1),
        ];
        let high = low.map(|mut u| {
            u[31] |= 0x80;
            u
        });
        low.into_iter().chain(high).collect()
    }

    #[test]
    fn small_order_list_is_right() {
        // p - 1 written out above is p_plus(0) with its low byte less one.
        let mut p_minus_one = p_plus(0);
        p_minus_one[0] -= 1;
        let list = small_order_u();
        assert_eq!(list[4], p_minus_one);
        // Every one of them is killed by a clamped scalar (a multiple of 8).
        for u in list {
            assert_eq!(MontgomeryPoint(u).mul_clamped(random_bytes()).to_bytes(), [0; KEY_LEN], "{u:02x?}");
        }
    }

    /// The eight points of order dividing 8, from the small-order u and both signs of x.
    fn eight_torsion() -> Vec<EdwardsPoint> {
        let mut points = vec![EdwardsPoint::default()];
        for u in small_order_u() {
            for sign in [0, 1] {
                let Some(point) = MontgomeryPoint(u).to_edwards(sign) else { continue };
                if !points.contains(&point) {
                    points.push(point);
                }
            }
        }
        assert_eq!(points.len(), 8);
        assert!(points.iter().all(|p| p.mul_by_cofactor() == EdwardsPoint::default()));
        points
    }

    /// `x25519` must give the ladder's 32 bytes for every input: points on the
    /// curve (through the Edwards form) and on the twist (through the ladder),
    /// points with a component of small order, u of small order, and u that is
    /// not reduced mod p or has bit 255 set.
    #[test]
    fn x25519_agrees_with_the_montgomery_ladder() {
        let check = |secret: [u8; KEY_LEN], u: [u8; KEY_LEN]| {
            let expected = MontgomeryPoint(u).mul_clamped(secret);
            let secret = Zeroizing::new(secret);
            assert_eq!(x25519(&secret, u).to_bytes(), expected.to_bytes(), "u = {u:02x?}");
        };
        let mut awkward = small_order_u();
        // Every u from p to 2^255 - 1 (which X25519 reduces to 0 to 18), the
        // largest 32 bytes, and p - 3 and p - 2, next to p - 1.
        awkward.extend((0..=18).map(p_plus));
        awkward.push([0xff; KEY_LEN]);
        for low in [0xea, 0xeb] {
            let mut u = p_plus(0);
            u[0] = low;
            awkward.push(u);
        }
        for u in awkward {
            for secret in [[0; KEY_LEN], [0xff; KEY_LEN], random_bytes(), random_bytes(), random_bytes()] {
                check(secret, u);
            }
        }

        // Random u, and both halves of the fast path's test: about half of all
        // u are on the curve, the other half on the twist.
        let (mut curve, mut twist) = (0, 0);
        for _ in 0..200 {
            let u = random_bytes();
            if MontgomeryPoint(u).to_edwards(0).is_some() {
                curve += 1
            } else {
                twist += 1
            }
            check(random_bytes(), u);
        }
        assert!(curve > 50 && twist > 50, "{curve} on the curve, {twist} on the twist");

        // A point of the prime-order subgroup, as honest ephemeral keys are,
        // plus each point of order dividing 8: the clamped scalar must not be
        // reduced mod l for the torsion part to vanish as it does in the ladder.
        let torsion = eight_torsion();
        for t in &torsion {
            let q = EdwardsPoint::mul_base(&Scalar::from_bytes_mod_order(random_bytes()));
            let u = (q + t).to_montgomery().to_bytes();
            check(random_bytes(), u);
            let mut high = u;
            high[31] |= 0x80;
            check(random_bytes(), high);
        }
    }

    /// Seals `msg` the way `crypto_box_seal` does, but with a given ephemeral
    /// public key and the shared point the sender would have computed.
    fn seal_with(epk: [u8; KEY_LEN], shared: &MontgomeryPoint, to: &PublicKey, msg: &[u8]) -> Vec<u8> {
        use blake2::Digest as _;
        use crypto_secretbox::{Kdf as _, KeyInit as _, XSalsa20Poly1305};
        let mut hasher = blake2::Blake2b::<crypto_box::aead::consts::U24>::new();
        hasher.update(epk);
        hasher.update(to.as_bytes());
        let key = XSalsa20Poly1305::kdf(shared.as_bytes().into(), &Default::default());
        let mut sealed = epk.to_vec();
        sealed.extend(XSalsa20Poly1305::new(&key).encrypt(&hasher.finalize(), msg).unwrap());
        sealed
    }

    #[test]
    fn open_box_agrees_with_crypto_box_unseal() {
        for _ in 0..20 {
            let sk = pair();
            for len in [0usize, 1, 31, 32, 33, 1000] {
                let msg = random_bytes().repeat(len.div_ceil(KEY_LEN))[..len].to_vec();
                let sealed = sk.public_key().inner().seal(&mut rand_core::OsRng, &msg).unwrap();
                let ours = open_box(&sk, &sealed).unwrap();
                let theirs = crypto_box::SecretKey::from_bytes(**sk.bytes()).unseal(&sealed).unwrap();
                assert_eq!(&ours[..], &theirs[..]);
                assert_eq!(&ours[..], &msg[..]);
                let mut tampered = sealed.clone();
                tampered[KEY_LEN] ^= 1;
                assert!(open_box(&sk, &tampered).is_none());
            }
        }
    }

    /// An ephemeral key with a component of small order opens as it does in
    /// libsodium, where the clamped scalar removes that component.
    /// (`crypto_box` 0.9 reduces the scalar mod l first and opens none of these
    /// unless that happens to be a multiple of the component's order.)
    #[test]
    fn open_box_opens_ephemeral_keys_with_a_small_order_component() {
        let sk = pair();
        let torsion = eight_torsion();
        for t in torsion {
            let esk = random_bytes();
            let epk = (EdwardsPoint::mul_base_clamped(esk) + t).to_montgomery().to_bytes();
            let shared = MontgomeryPoint(*sk.public_key().as_bytes()).mul_clamped(esk);
            let sealed = seal_with(epk, &shared, sk.public_key(), b"mixed order");
            assert_eq!(&open_box(&sk, &sealed).unwrap()[..], b"mixed order");
        }
    }

    /// A small-order ephemeral key makes the shared point zero whatever the
    /// recipient's key, so the box key is no secret; libsodium refuses such a
    /// box, and so does `open_box`.
    #[test]
    fn open_box_refuses_small_order_ephemeral_keys() {
        let sk = pair();
        let zero = MontgomeryPoint([0; KEY_LEN]);
        for epk in small_order_u() {
            let sealed = seal_with(epk, &zero, sk.public_key(), b"forged");
            assert!(open_box(&sk, &sealed).is_none(), "{epk:02x?}");
        }
        // The same forgery with an honest ephemeral key opens, so the refusal
        // above is the check's doing and not a mistake in `seal_with`.
        let esk = random_bytes();
        let shared = MontgomeryPoint(*sk.public_key().as_bytes()).mul_clamped(esk);
        let sealed = seal_with(MontgomeryPoint::mul_base_clamped(esk).to_bytes(), &shared, sk.public_key(), b"ok");
        assert_eq!(&open_box(&sk, &sealed).unwrap()[..], b"ok");
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
        let pk = SecretKey::generate().public_key().clone();
        assert!(seal(&pk, "Prod", "t", b"").is_err());
        assert!(seal(&pk, "prod", "T", b"").is_err());
        assert!(seal(&pk, "prod", "t", &vec![0; MAX_VALUE_LEN + 1]).is_err());
        assert!(seal(&pk, "prod", "t", &vec![0; MAX_VALUE_LEN]).is_ok());
    }

    #[test]
    fn frame_errors_say_which_length_is_wrong() {
        let why = |frame: &[u8]| match unframe(frame) {
            Err(OpenError::Frame { why }) => why,
            other => panic!("{other:?}"),
        };
        assert_eq!(why(&[1]), "the frame ends before the environment name's length");
        assert_eq!(why(&[1, 0]), "the environment name's length is not 1 to 32");
        assert_eq!(why(&[1, 33]), "the environment name's length is not 1 to 32");
        assert_eq!(why(&[1, 32, b'a']), "the environment name runs past the end of the frame");
        assert_eq!(why(&[1, 1, b'a']), "the frame ends before the secret name's length");
        assert_eq!(why(&[1, 1, b'a', 65]), "the secret name's length is not 1 to 64");
        assert_eq!(why(&[1, 1, b'a', 0]), "the secret name's length is not 1 to 64");
        assert_eq!(why(&[1, 1, b'a', 64, b'b']), "the secret name runs past the end of the frame");
        assert_eq!(take_name(&[2, b'a', b'b'], 2), Ok((&b"ab"[..], &b""[..])));
        assert_eq!(take_name(&[3, b'a', b'b', b'c'], 2), Err(Take::Length));
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
