//! boxcar-secrets' integration tests: the committed format vectors, interoperability
//! with libsodium through PyNaCl, and key intake (in child processes).

// Helpers outside `#[test]` functions too: a panic is the failure report we want.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod approval;
mod intake;
mod interop;
mod vectors;

use std::path::{Path, PathBuf};

/// The workspace root: boxcar-secrets' parent folder.
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("boxcar-secrets has a parent folder").to_owned()
}

/// The committed vectors of format v1.
fn vectors_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("vectors").join("v1.toml")
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn from_hex(text: &str) -> Vec<u8> {
    assert!(text.len().is_multiple_of(2), "odd-length hex: {text}");
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex digits")).collect()
}

/// Whether `haystack` contains `needle` anywhere (byte-wise; an empty needle never counts).
fn contains_bytes(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}
