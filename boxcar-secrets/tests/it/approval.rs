//! The approval vectors (`vectors/approval-v1.toml`), written by an
//! implementation of docs/FORMAT.md's "Environment files" and "Approval" in
//! Python made from the specification alone: the Rust reader must agree on
//! every one, from reading the file (CR LF, TOML 1.0) to the run-time
//! contract of an image (A10).

use std::collections::BTreeSet;
use std::path::Path;

use boxcar_secrets::approval::{self, ApprovalError};
use boxcar_secrets::{ApprovalKey, EnvFile, Error, SecretKey, ServiceFile};

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
    service_file: Option<String>,
}

#[derive(serde::Deserialize)]
struct Invalid {
    name: String,
    env: String,
    file: String,
    verify_with: String,
    error: String,
    service_file: Option<String>,
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

/// What a reader does with a vector's file: read it as an environment file
/// (the A0 and "Reading a file" errors), check its approval without a key or
/// with `key` (A1 to A9), then A10 with the service file, when there is one.
fn check(env: &str, file: &str, key: Option<&SecretKey>, service_file: Option<&str>) -> Result<u64, String> {
    let path = format!("{env}.toml");
    let read = EnvFile::parse(Path::new(&path), file).map_err(|e| match e {
        Error::Toml { .. } => "Toml".to_owned(),
        Error::PublicKey { .. } | Error::MissingPublicKey { .. } => "PublicKey".to_owned(),
        other => panic!("{other}"),
    })?;
    let approved = match key {
        None => approval::verify(env, read.table()),
        Some(key) => approval::verify_with(env, read.table(), key),
    }
    .map_err(|e| {
        assert_eq!(e.name(), kind(&e));
        kind(&e).to_owned()
    })?;
    if let Some(text) = service_file {
        let runtime = ServiceFile::parse(text).map_err(|e| kind(&e).to_owned())?;
        runtime.check(read.table()).map_err(|e| kind(&e).to_owned())?;
    }
    Ok(approved.serial)
}

#[test]
fn every_valid_vector_verifies_and_signs_the_same() {
    let v = load();
    assert!(v.valid.len() >= 5);
    for case in &v.valid {
        let sk = if case.secret_key == "bob" { &v.derivation.bob_secret_key } else { &v.derivation.secret_key };
        let key = SecretKey::from_base64(sk).unwrap();
        let table = boxcar_secrets::read_toml(&case.file).unwrap_or_else(|e| panic!("{}: {e}", case.name));
        assert_eq!(hex(&approval::canonical_content(&table).unwrap()), case.canonical_hex, "{}", case.name);
        let service_file = case.service_file.as_deref();
        for with in [None, Some(&key)] {
            let serial =
                check(&case.env, &case.file, with, service_file).unwrap_or_else(|e| panic!("{}: {e}", case.name));
            assert_eq!(serial, case.serial, "{}", case.name);
        }
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
        let key = match case.verify_with.as_str() {
            "" => None,
            who => {
                let sk = if who == "bob" { &v.derivation.bob_secret_key } else { &v.derivation.secret_key };
                Some(SecretKey::from_base64(sk).unwrap())
            }
        };
        let result = check(&case.env, &case.file, key.as_ref(), case.service_file.as_deref());
        let err = result.err().unwrap_or_else(|| panic!("{}: verified, expected {}", case.name, case.error));
        assert_eq!(err, case.error, "{}", case.name);
        seen.insert(err);
    }
    // Every way an approval can fail has a vector, and so has every way a
    // file can be refused when it is read.
    assert_eq!(seen.len(), 11, "{seen:?}");
}
