//! The approval vectors (`vectors/approval-v1.toml`), written by an
//! implementation of docs/FORMAT.md's "Approval" in Python made from the
//! specification alone: the Rust reader must agree on every one.

use std::collections::BTreeSet;

use boxcar_secrets::approval::{self, ApprovalError};
use boxcar_secrets::{ApprovalKey, SecretKey};

#[derive(serde::Deserialize)]
struct Vectors {
    derivation: Derivation,
    valid: Vec<Valid>,
    invalid: Vec<Invalid>,
}

#[derive(serde::Deserialize)]
struct Derivation {
    secret_key: String,
    approval_key: String,
    bob_secret_key: String,
    bob_approval_key: String,
}

#[derive(serde::Deserialize)]
struct Valid {
    name: String,
    env: String,
    file: String,
    canonical_hex: String,
    serial: u64,
    secret_key: String,
}

#[derive(serde::Deserialize)]
struct Invalid {
    name: String,
    env: String,
    file: String,
    verify_with: String,
    error: String,
}

fn load() -> Vectors {
    let path = super::workspace_root().join("boxcar-secrets/vectors/approval-v1.toml");
    toml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn kind(e: &ApprovalError) -> &'static str {
    match e {
        ApprovalError::NoApprovalKey => "NoApprovalKey",
        ApprovalError::ApprovalKey(_) => "ApprovalKey",
        ApprovalError::NoApproval => "NoApproval",
        ApprovalError::Malformed { .. } => "Malformed",
        ApprovalError::Content(_) => "Content",
        ApprovalError::NotThisKey { .. } => "NotThisKey",
        ApprovalError::Signature => "Signature",
        ApprovalError::Endorsement { .. } => "Endorsement",
        ApprovalError::Runtime { .. } => "Runtime",
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn the_derivation_matches() {
    let v = load();
    for (sk, ak) in [
        (&v.derivation.secret_key, &v.derivation.approval_key),
        (&v.derivation.bob_secret_key, &v.derivation.bob_approval_key),
    ] {
        assert_eq!(&ApprovalKey::of(&SecretKey::from_base64(sk).unwrap()).to_base64(), ak);
    }
}

#[test]
fn every_valid_vector_verifies_and_signs_the_same() {
    let v = load();
    assert!(v.valid.len() >= 5);
    for case in &v.valid {
        let sk = if case.secret_key == "bob" { &v.derivation.bob_secret_key } else { &v.derivation.secret_key };
        let key = SecretKey::from_base64(sk).unwrap();
        let table: toml::Table = case.file.parse().unwrap_or_else(|e| panic!("{}: {e}", case.name));
        assert_eq!(hex(&approval::canonical_content(&table).unwrap()), case.canonical_hex, "{}", case.name);
        let approved = approval::verify(&case.env, &table).unwrap_or_else(|e| panic!("{}: {e}", case.name));
        assert_eq!(approved.serial, case.serial, "{}", case.name);
        approval::verify_with(&case.env, &table, &key).unwrap_or_else(|e| panic!("{}: {e}", case.name));
        // Ed25519 is deterministic: boxcar's signature is the vector's.
        let signature = approval::sign(&case.env, &table, case.serial, &key).unwrap();
        let written = table["approval"]["signature"].as_str().unwrap();
        use base64::Engine as _;
        assert_eq!(base64::engine::general_purpose::STANDARD.encode(signature.to_bytes()), written, "{}", case.name);
    }
}

#[test]
fn every_invalid_vector_fails_with_its_error() {
    let v = load();
    let mut seen = BTreeSet::new();
    for case in &v.invalid {
        let table: toml::Table = case.file.parse().unwrap_or_else(|e| panic!("{}: {e}", case.name));
        let result = match case.verify_with.as_str() {
            "" => approval::verify(&case.env, &table),
            who => {
                let sk = if who == "bob" { &v.derivation.bob_secret_key } else { &v.derivation.secret_key };
                approval::verify_with(&case.env, &table, &SecretKey::from_base64(sk).unwrap())
            }
        };
        let err = result.err().unwrap_or_else(|| panic!("{}: verified, expected {}", case.name, case.error));
        assert_eq!(kind(&err), case.error, "{}: {err}", case.name);
        assert_eq!(err.name(), kind(&err), "{}", case.name);
        seen.insert(kind(&err));
    }
    // Every way an approval can fail has a vector.
    assert_eq!(seen.len(), 8, "{seen:?}");
}
