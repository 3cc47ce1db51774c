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
    long_runs(data, is_base64, WRAPPED_MIN, |at, run| {
        if let Ok(text) = base64::Engine::decode(&STANDARD, run).map(Zeroizing::new) {
            plain(&text, &mut |_, _, key| found.push((at, Encoding::InBase64, key)));
        }
    });
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
    long_runs(data, is_base64, BASE64_LEN, |at, run| {
        if run.len() == BASE64_LEN
            && let Some(key) = from_base64(&STANDARD, run)
        {
            found(at, Encoding::Base64, key);
        }
    });
    long_runs(data, is_url_safe, BASE64_LEN, |at, run| {
        // A run without `-` or `_` is standard base64 too, and was tested above.
        if run.len() == BASE64_LEN
            && run.iter().any(|b| matches!(b, b'-' | b'_'))
            && let Some(key) = from_base64(&URL_SAFE, run)
        {
            found(at, Encoding::UrlSafeBase64, key);
        }
    });
    long_runs(data, u8::is_ascii_hexdigit, HEX_LEN, |at, run| {
        if run.len() == HEX_LEN
            && let Some(key) = from_hex(run)
        {
            found(at, Encoding::Hex, key);
        }
    });
}

fn is_base64(b: &u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/')
}

fn is_url_safe(b: &u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_')
}

/// Calls `each` with every maximal run of bytes of `alphabet` in `data`
/// that is at least `min` long, with its offset, in order.
///
/// A run that long holds one of every `min`-th byte, so only those bytes
/// are looked at, and each one of the alphabet is widened to its run; after
/// a run, the bytes looked at go on `min` past its end (a run that starts
/// after it, at its end + 1 or later, holds that byte or a later one in
/// the same step). The image check scans every file of an image, a
/// service's binary too, in the xtask's dev profile (no optimisation): a
/// split at every byte outside the alphabet took 7 s for a 21 MiB binary,
/// where this reads about a tenth of the bytes.
fn long_runs<'a>(data: &'a [u8], alphabet: fn(&u8) -> bool, min: usize, mut each: impl FnMut(usize, &'a [u8])) {
    let step = min.max(1);
    let mut at = step - 1;
    while let Some(byte) = data.get(at) {
        if !alphabet(byte) {
            at += step;
            continue;
        }
        let start = data[..at].iter().rposition(|b| !alphabet(b)).map_or(0, |i| i + 1);
        let end = data[at..].iter().position(|b| !alphabet(b)).map_or(data.len(), |i| at + i);
        if end - start >= min {
            each(start, &data[start..end]);
        }
        at = end + step;
    }
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

    /// The maximal runs of an alphabet, with their offsets, found by a split
    /// at every byte outside it: what `long_runs` must find, in the same order.
    fn every_run(data: &[u8], alphabet: fn(&u8) -> bool) -> Vec<(usize, &[u8])> {
        let mut offset = 0;
        data.split(move |b| !alphabet(b))
            .map(move |run| {
                let at = offset;
                offset += run.len() + 1;
                (at, run)
            })
            .collect()
    }

    /// Bytes with runs of every length around the ones looked for, in
    /// mixed alphabets, from a fixed seed (xorshift).
    fn noise(seed: u64, len: usize) -> Vec<u8> {
        let mut state = seed | 1;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let parts: [&[u8]; 4] = [b"0123456789abcdef", b"ABCDEFGHIJKLMNOPQRSTUVWXYZghijkz+/", b"-_", b" \n=.\x00\xff"];
        let mut out = Vec::with_capacity(len);
        while out.len() < len {
            // A stretch of one part, of a length around the run lengths that matter.
            let part = parts[(next() % 4) as usize];
            let stretch = (next() % 70) as usize;
            for _ in 0..stretch {
                out.push(part[(next() % part.len() as u64) as usize]);
            }
        }
        out.truncate(len);
        out
    }

    #[test]
    fn long_runs_are_every_run_that_long() {
        let alphabets: [fn(&u8) -> bool; 3] = [is_base64, is_url_safe, u8::is_ascii_hexdigit];
        for seed in 1..40 {
            let data = noise(seed, 5000 + seed as usize * 37);
            for alphabet in alphabets {
                for min in [1, 2, 3, 5, BASE64_LEN, WRAPPED_MIN, HEX_LEN] {
                    let expected: Vec<_> =
                        every_run(&data, alphabet).into_iter().filter(|(_, r)| r.len() >= min).collect();
                    let mut got = Vec::new();
                    long_runs(&data, alphabet, min, |at, run| got.push((at, run)));
                    assert_eq!(got, expected, "seed {seed}, min {min}");
                }
            }
        }
        // At the edges: a run that is all the data, or ends or starts it.
        for len in [0, 1, 42, 43, 44, 86, 87, 100] {
            let data = vec![b'A'; len];
            let mut got = Vec::new();
            long_runs(&data, is_base64, BASE64_LEN, |at, run| got.push((at, run.len())));
            assert_eq!(got, if len >= BASE64_LEN { vec![(0, len)] } else { vec![] }, "{len}");
        }
    }

    #[test]
    fn a_key_is_found_at_every_offset_in_noise() {
        let key = SecretKey::generate();
        let bare = key.to_base64().trim_end_matches('=').to_owned();
        let hex = hex::encode(raw(&key));
        let url = URL_SAFE_NO_PAD.encode(raw(&key));
        let wrapped = B64.encode(format!("SECRET_KEY={bare}\n"));
        for (written, encoding) in [
            (&bare, Encoding::Base64),
            (&hex, Encoding::Hex),
            (&url, Encoding::UrlSafeBase64),
            (&wrapped, Encoding::InBase64),
        ] {
            if encoding == Encoding::UrlSafeBase64 && !url.contains(['-', '_']) {
                continue;
            }
            for at in 0..=130 {
                // Noise around it, kept off the key by a byte outside every alphabet.
                let mut data = noise(at as u64 + 7, at);
                if at > 0 {
                    data[at - 1] = b' ';
                }
                data.extend_from_slice(written.as_bytes());
                data.push(b'\n');
                data.extend(noise(at as u64 + 99, 150));
                let ours: Vec<_> =
                    candidates(&data).into_iter().filter(|f| &f.public_key == key.public_key()).collect();
                assert_eq!(ours.len(), 1, "{encoding} at {at}");
                assert_eq!(ours[0].encoding, encoding, "at {at}");
            }
        }
    }

    #[test]
    fn encodings_are_named() {
        assert_eq!(Encoding::Base64.to_string(), "base64");
        assert_eq!(Encoding::UrlSafeBase64.to_string(), "URL-safe base64");
        assert_eq!(Encoding::Hex.to_string(), "hex");
        assert!(Encoding::InBase64.to_string().contains("Kubernetes Secret's `data`"));
    }
}
