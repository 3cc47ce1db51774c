//! Finding secret keys in bytes: every 32-byte value a file holds in a form
//! a key is written in (base64, URL-safe base64, hex, base64 of base64, one
//! line or wrapped), each with the public key it derives. The scanner does
//! not know which keys matter: the caller compares the public keys.

use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use boxcar_secrets::{KEY_LEN, PublicKey, SecretKey};
use zeroize::Zeroizing;

/// How a key was written where it was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Encoding {
    /// Standard base64, padded or not: what a key file holds.
    Base64,
    /// URL-safe base64 (`-` and `_`), padded or not.
    UrlSafeBase64,
    /// 64 hex digits, lower or upper case.
    Hex,
    /// Any of the above inside a base64-encoded text: how a Kubernetes
    /// Secret's `data` holds a key file or `SECRET_KEY=<key>`.
    InBase64,
}

impl std::fmt::Display for Encoding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Encoding::Base64 => "base64",
            Encoding::UrlSafeBase64 => "URL-safe base64",
            Encoding::Hex => "hex",
            Encoding::InBase64 => "base64 of a text that holds it (as a Kubernetes Secret's `data` holds a key file)",
        })
    }
}

/// A 32-byte value found in a file, which would be a secret key.
#[derive(Debug)]
pub(crate) struct Found {
    /// The line it starts on, from 1.
    pub line: usize,
    pub encoding: Encoding,
    /// The public key of the value taken as a secret key: equal to a known
    /// public key only when the value is that key's secret key.
    pub public_key: PublicKey,
}

/// Characters of base64 of 32 bytes without its padding.
const BASE64_LEN: usize = 43;
/// Hex digits of 32 bytes.
const HEX_LEN: usize = 64;
/// The shortest base64 that can hold a key written in base64: that of its 43
/// characters alone.
const WRAPPED_MIN: usize = 58;

/// Padding is split off with everything else outside the alphabet, so a run
/// never has any; trailing bits must be zero, as every encoder writes them.
const STANDARD: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);
const URL_SAFE: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Every value in `data` that could be a secret key, in the order of the file.
///
/// A value is found only as a whole run of its alphabet of exactly the length
/// of 32 bytes (43 base64 characters before any padding, 64 hex digits), so a
/// key glued to other text of its alphabet is not one, and the candidates
/// (each costs an X25519 scalar multiplication) are at most a few per 44
/// bytes. Every longer run of standard base64 is decoded once and its text
/// searched the same way, one level deep. The work is linear in `data`.
pub(crate) fn candidates(data: &[u8]) -> Vec<Found> {
    let mut found: Vec<(usize, Encoding, PublicKey)> = Vec::new();
    plain(data, &mut |at, encoding, key| found.push((at, encoding, key)));
    for (at, run) in runs(data, is_base64) {
        if run.len() >= WRAPPED_MIN
            && let Ok(text) = base64::Engine::decode(&STANDARD, run).map(Zeroizing::new)
        {
            plain(&text, &mut |_, _, key| found.push((at, Encoding::InBase64, key)));
        }
    }
    found.sort_by_key(|(at, ..)| *at);
    // Lines counted in one sweep over the sorted offsets.
    let (mut line, mut counted) = (1, 0);
    found
        .into_iter()
        .map(|(at, encoding, public_key)| {
            line += data[counted..at].iter().filter(|b| **b == b'\n').count();
            counted = at;
            Found { line, encoding, public_key }
        })
        .collect()
}

/// Keys written directly in `data`, with their offsets.
fn plain(data: &[u8], found: &mut impl FnMut(usize, Encoding, PublicKey)) {
    for (at, run) in runs(data, is_base64) {
        if run.len() == BASE64_LEN
            && let Some(key) = from_base64(&STANDARD, run)
        {
            found(at, Encoding::Base64, key);
        }
    }
    for (at, run) in runs(data, is_url_safe) {
        // A run without `-` or `_` is standard base64 too, and was tested above.
        if run.len() == BASE64_LEN
            && run.iter().any(|b| matches!(b, b'-' | b'_'))
            && let Some(key) = from_base64(&URL_SAFE, run)
        {
            found(at, Encoding::UrlSafeBase64, key);
        }
    }
    for (at, run) in runs(data, u8::is_ascii_hexdigit) {
        if run.len() == HEX_LEN
            && let Some(key) = from_hex(run)
        {
            found(at, Encoding::Hex, key);
        }
    }
}

fn is_base64(b: &u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/')
}

fn is_url_safe(b: &u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_')
}

/// The maximal runs of bytes of an alphabet, with their offsets.
fn runs(data: &[u8], alphabet: fn(&u8) -> bool) -> impl Iterator<Item = (usize, &[u8])> {
    let mut offset = 0;
    data.split(move |b| !alphabet(b)).map(move |run| {
        let at = offset;
        offset += run.len() + 1;
        (at, run)
    })
}

fn from_base64(engine: &GeneralPurpose, run: &[u8]) -> Option<PublicKey> {
    // 43 characters decode to exactly 32 bytes, straight into the wiped buffer.
    let mut raw = Zeroizing::new([0u8; KEY_LEN]);
    base64::Engine::decode_slice(engine, run, &mut raw[..]).ok()?;
    Some(public_key_of(raw))
}

fn from_hex(run: &[u8]) -> Option<PublicKey> {
    let mut raw = Zeroizing::new([0u8; KEY_LEN]);
    hex::decode_to_slice(run, &mut raw[..]).ok()?;
    Some(public_key_of(raw))
}

/// The one scalar multiplication a candidate costs; the secret is wiped on drop.
fn public_key_of(raw: Zeroizing<[u8; KEY_LEN]>) -> PublicKey {
    SecretKey::from_bytes(raw).public_key().clone()
}

#[cfg(test)]
pub(super) mod tests {
    use base64::Engine as _;
    use base64::engine::general_purpose::{STANDARD as B64, URL_SAFE, URL_SAFE_NO_PAD};

    use super::*;

    /// A new key whose base64 (standard, or URL-safe when `url`) satisfies `fit`.
    fn key_where(url: bool, fit: impl Fn(&str) -> bool) -> SecretKey {
        loop {
            let key = SecretKey::generate();
            let text =
                if url { URL_SAFE.encode(B64.decode(&*key.to_base64()).unwrap()) } else { key.to_base64().to_string() };
            if fit(&text) {
                return key;
            }
        }
    }

    pub(in crate::ops::leaks) fn raw(key: &SecretKey) -> Vec<u8> {
        B64.decode(&*key.to_base64()).unwrap()
    }

    /// The one candidate of `text`, which must be `key`'s: (line, encoding).
    fn only(text: &str, key: &SecretKey) -> (usize, Encoding) {
        let found = candidates(text.as_bytes());
        assert_eq!(found.len(), 1, "{text:?}: {found:?}");
        assert_eq!(&found[0].public_key, key.public_key(), "{text:?}");
        (found[0].line, found[0].encoding)
    }

    #[test]
    fn finds_a_key_in_every_encoding() {
        // No `+` or `/`: the text is URL-safe base64 as well, and must still
        // be found once.
        let key = key_where(false, |t| !t.contains(['+', '/']));
        let b64 = key.to_base64().to_string();
        let bare = b64.trim_end_matches('=');
        for text in [
            format!("first line\nx {b64} y"),
            format!("first line\nSECRET_KEY={b64}"),
            format!("first line\r\n- SECRET_KEY={bare}\n"),
            format!("first line\nkey: \"{b64}\"\n"),
            format!("first line\n[\"SECRET_KEY={b64}\"]"),
        ] {
            assert_eq!(only(&text, &key), (2, Encoding::Base64));
        }

        let key = key_where(true, |t| t.contains(['-', '_']));
        let url = URL_SAFE.encode(raw(&key));
        let url_bare = URL_SAFE_NO_PAD.encode(raw(&key));
        for text in [format!("\n\nkey={url}\n"), format!("\n\n{url_bare}")] {
            assert_eq!(only(&text, &key), (3, Encoding::UrlSafeBase64));
        }

        let key = SecretKey::generate();
        let lower = hex::encode(raw(&key));
        for text in [
            format!("{lower}\n"),
            format!("\"{}\"", lower.to_uppercase()),
            format!("key = 0x{lower}"),
            format!("sha256:{lower}"),
        ] {
            assert_eq!(only(&text, &key), (1, Encoding::Hex));
        }

        // A Kubernetes Secret's `data`: base64 of the key file (with its
        // newline or without), of the key without padding, of `SECRET_KEY=<key>`,
        // of the key in hex.
        let key = SecretKey::generate();
        let b64 = key.to_base64().to_string();
        for inner in [
            b64.clone(),
            format!("{b64}\n"),
            b64.trim_end_matches('=').to_owned(),
            format!("SECRET_KEY={b64}"),
            format!("SECRET_KEY={b64}\n"),
            hex::encode(raw(&key)),
        ] {
            let text = format!("apiVersion: v1\nkind: Secret\ndata:\n  SECRET_KEY: {}\n", B64.encode(&inner));
            assert_eq!(only(&text, &key), (4, Encoding::InBase64), "{inner:?}");
        }
        // 58 characters, the shortest that holds a key: base64 of the bare 43.
        assert_eq!(B64.encode(b64.trim_end_matches('=')).trim_end_matches('=').len(), WRAPPED_MIN);
    }

    #[test]
    fn lines_are_counted_from_one_in_file_order() {
        let mut keys: Vec<SecretKey> = (0..4).map(|_| SecretKey::generate()).collect();
        keys.push(key_where(true, |t| t.contains(['-', '_'])));
        let b64 = |i: usize| keys[i].to_base64().to_string();
        let text = format!(
            "{}\n\r\nA: {}\nB: {}\n\n\n{} x {}\n",
            hex::encode(raw(&keys[0])),
            B64.encode(b64(1)),
            b64(2),
            b64(3),
            URL_SAFE.encode(raw(&keys[4]))
        );
        let found = candidates(text.as_bytes());
        let seen: Vec<(usize, &PublicKey)> = found.iter().map(|f| (f.line, &f.public_key)).collect();
        let expect = [(1, 0), (3, 1), (4, 2), (7, 3), (7, 4)];
        let expect: Vec<(usize, &PublicKey)> = expect.iter().map(|(line, i)| (*line, keys[*i].public_key())).collect();
        assert_eq!(seen, expect);
        let encodings: Vec<Encoding> = found.iter().map(|f| f.encoding).collect();
        use Encoding::*;
        assert_eq!(encodings, [Hex, InBase64, Base64, Base64, UrlSafeBase64]);
    }

    #[test]
    fn near_misses_are_not_candidates() {
        let key = SecretKey::generate();
        let b64 = key.to_base64().to_string();
        let bare = b64.trim_end_matches('=');
        let lower = hex::encode(raw(&key));
        let url = URL_SAFE_NO_PAD.encode(raw(&key));
        for text in [
            format!("{bare}A"),
            format!("A{b64}"),
            format!("abc{b64}"),
            format!("{bare}+/{bare}"),
            format!("{url}x"),
            format!("{lower}0"),
            lower[1..].to_owned(),
            B64.encode(format!("x{b64}")),
            B64.encode(format!("{bare}A")),
        ] {
            let found = candidates(text.as_bytes());
            assert!(found.iter().all(|f| &f.public_key != key.public_key()), "{text:?}");
        }
    }

    #[test]
    fn a_public_key_or_a_hash_is_a_candidate_that_matches_nothing() {
        let key = SecretKey::generate();
        let public = key.public_key();
        let hash: [u8; 32] = sha2::Digest::finalize(<sha2::Sha256 as sha2::Digest>::new()).into();
        let text = format!(
            "public_key = \"{}\"\nchecksum = \"{}\"\nhash: {}\n",
            public.to_base64(),
            hex::encode(hash),
            B64.encode(hash)
        );
        let found = candidates(text.as_bytes());
        // Each is a candidate (the scanner cannot tell), and none is the
        // secret key of the public key or of the hash read as one.
        assert_eq!(found.len(), 3, "{found:?}");
        for f in &found {
            assert_ne!(&f.public_key, public);
            assert_ne!(f.public_key.as_bytes(), &hash);
        }
    }

    #[test]
    fn candidates_grow_with_the_input_only() {
        let key = SecretKey::generate();
        let text = format!("{} ", &*key.to_base64()).repeat(100);
        let found = candidates(text.as_bytes());
        assert_eq!(found.len(), 100);
        assert!(found.iter().all(|f| &f.public_key == key.public_key() && f.line == 1));
        // One long run of base64 is decoded once and holds nothing.
        assert!(candidates(&vec![b'A'; 1 << 20]).is_empty());
        assert!(candidates(b"").is_empty());
    }

    #[test]
    fn encodings_are_named() {
        assert_eq!(Encoding::Base64.to_string(), "base64");
        assert_eq!(Encoding::UrlSafeBase64.to_string(), "URL-safe base64");
        assert_eq!(Encoding::Hex.to_string(), "hex");
        assert!(Encoding::InBase64.to_string().contains("Kubernetes Secret's `data`"));
    }
}
