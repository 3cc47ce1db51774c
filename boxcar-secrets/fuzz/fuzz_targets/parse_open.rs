//! Fuzz target `parse_open`: environment files and sealed values built from hostile bytes are refused, never a panic.
//!
//! The first byte of the input picks what the rest is:
//!
//! - `0x00`: the base64 body of a sealed value for the fixed key's id, that is
//!   `sealed:v1:<key id>:<rest as lossy UTF-8>`, parsed and opened as secret
//!   `token` of environment `fuzz`;
//! - `0x01`: a frame (`0x01 || len(env) || env || len(name) || name || value`),
//!   sealed to the fixed key here, then parsed and opened the same way. Anyone
//!   holding a public key can seal any frame, so the frame parser faces
//!   hostile bytes too; the fuzzer could never reach it through the first
//!   mode, since every mutation of a sealed box breaks its Poly1305 tag;
//! - anything else: the whole input, as lossy UTF-8, is the text of
//!   `fuzz.toml`; it is parsed with `EnvFile::parse`, every entry under
//!   `[secrets]` is parsed and opened on its own, and then with `open_all`.
//!
//! Besides not panicking, the target checks what must hold whatever the input:
//! a parsed value prints back to text that parses to the same value; a frame
//! opens exactly when it names `fuzz`/`token` and carries at most 64 KiB; and
//! `open_all` agrees with opening each entry on its own.
//!
//! The fixed key is Alice's secret key from RFC 7748 section 6.1, a published
//! test vector: never a key that protects anything. `examples/make_seeds.rs`
//! writes the seeds in `seeds/parse_open/` with it.

#![no_main]

use std::hint::black_box;
use std::path::Path;
use std::sync::LazyLock;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use crypto_box::aead::rand_core::{CryptoRng, Error as RngError, RngCore};
use boxcar_secrets::{EnvFile, MAX_VALUE_LEN, SealedValue, SecretKey, SecretValue};
use libfuzzer_sys::fuzz_target;

/// RFC 7748 section 6.1, Alice's secret key.
const ALICE_SK: &str = "dwdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LCo=";
/// The environment `fuzz.toml` is for, and the name the other modes open as.
const ENV: &str = "fuzz";
const NAME: &str = "token";
/// The frame a value sealed for `fuzz`/`token` starts with.
const FRAME_PREFIX: &[u8] = b"\x01\x04fuzz\x05token";

static KEY: LazyLock<SecretKey> = LazyLock::new(|| SecretKey::from_base64(ALICE_SK).expect("the RFC 7748 key parses"));

fuzz_target!(|data: &[u8]| {
    match data.split_first() {
        Some((0x00, body)) => body_mode(body),
        Some((0x01, frame)) => frame_mode(frame),
        _ => file_mode(data),
    }
});

fn file_mode(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let file = match EnvFile::parse(Path::new("fuzz.toml"), &text) {
        Ok(file) => file,
        Err(err) => return show(err),
    };
    file.problems().into_iter().for_each(show);
    let entries = file.table().get("secrets").and_then(|s| s.as_table());
    let mut one_by_one = Vec::new();
    for (name, raw) in entries.into_iter().flatten() {
        if let Some(text) = raw.as_str() {
            one_by_one.push((name.as_str(), parse_and_open(text, file.env(), name)));
        }
    }
    match file.open_all(&KEY) {
        // All or nothing: every entry opened on its own too, to the same bytes.
        Ok(secrets) => {
            for (name, value) in secrets.iter() {
                let alone = one_by_one.iter().find(|(n, _)| *n == name).and_then(|(_, v)| v.as_ref());
                assert_eq!(alone.map(SecretValue::expose_bytes), Some(value.expose_bytes()), "secrets.{name}");
            }
            assert_eq!(secrets.len(), one_by_one.len());
        }
        Err(err) => show(err),
    }
}

fn body_mode(body: &[u8]) {
    let text = format!("sealed:v1:{}:{}", KEY.key_id(), String::from_utf8_lossy(body));
    parse_and_open(&text, ENV, NAME);
}

fn frame_mode(frame: &[u8]) {
    let public = crypto_box::PublicKey::from(*KEY.public_key().as_bytes());
    let sealed = public.seal(&mut FixedRng(0), frame).expect("sealing never fails with an infallible RNG");
    let text = format!("sealed:v1:{}:{}", KEY.key_id(), B64.encode(&sealed));
    let opened = parse_and_open(&text, ENV, NAME);
    let expected = frame.strip_prefix(FRAME_PREFIX).filter(|value| value.len() <= MAX_VALUE_LEN);
    assert_eq!(opened.as_ref().map(SecretValue::expose_bytes), expected);
}

/// `SealedValue::parse` and `open`, showing every error on the way.
fn parse_and_open(text: &str, env: &str, name: &str) -> Option<SecretValue> {
    let sealed = match SealedValue::parse(text) {
        Ok(sealed) => sealed,
        Err(err) => {
            show(err);
            return None;
        }
    };
    // What `encrypt-secret` writes must be what `open` reads.
    assert_eq!(SealedValue::parse(&sealed.to_string()).as_ref(), Ok(&sealed));
    black_box(format!("{sealed:?}"));
    match sealed.open(&KEY, env, name) {
        Ok(value) => Some(value),
        Err(err) => {
            show(err);
            None
        }
    }
}

/// Formats an error as a user would see it: the message is built from the
/// hostile input too, so it is part of what must not panic.
fn show(err: impl std::fmt::Display) {
    black_box(err.to_string());
}

/// A deterministic stand-in for the operating system's random source, so an
/// input seals to the same bytes on every run and a crash replays exactly.
/// `CryptoRng` is a lie that costs nothing here: the key is a published test
/// vector and the fuzzer's values are no secret.
struct FixedRng(u64);

impl RngCore for FixedRng {
    fn next_u32(&mut self) -> u32 {
        self.next_u64() as u32
    }

    // SplitMix64: any fixed sequence would do; this one is short and not all zeros.
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn fill_bytes(&mut self, dest: &mut [u8]) {
        for chunk in dest.chunks_mut(8) {
            chunk.copy_from_slice(&self.next_u64().to_le_bytes()[..chunk.len()]);
        }
    }

    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), RngError> {
        self.fill_bytes(dest);
        Ok(())
    }
}

impl CryptoRng for FixedRng {}
