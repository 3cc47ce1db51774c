//! The committed vectors (`boxcar-secrets/vectors/v1.toml`): every positive one opens
//! to its plaintext, every negative one fails with exactly its error variant, both
//! value by value and inside an environment file, and no message shows a plaintext.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use boxcar_secrets::{EnvFile, Error, OpenError, ParseError, PublicKey, SealedValue, SecretKey, SecretProblem};
use serde::Deserialize;

use crate::{contains_bytes, from_hex, to_hex, vectors_path};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Vectors {
    recipient: KeyPair,
    wrong_key: KeyPair,
    positive: Vec<Positive>,
    negative: Vec<Negative>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyPair {
    secret_key: String,
    public_key: String,
    secret_key_hex: String,
    public_key_hex: String,
    key_id: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Positive {
    id: String,
    env: String,
    name: String,
    value: Option<String>,
    value_hex: Option<String>,
    frame_hex: String,
    ephemeral_public_key_hex: String,
    sealed: String,
}

impl Positive {
    fn plaintext(&self) -> Vec<u8> {
        match (&self.value, &self.value_hex) {
            (Some(text), None) => text.as_bytes().to_vec(),
            (None, Some(hex)) => from_hex(hex),
            _ => panic!("positive vector {}: give exactly one of value and value_hex", self.id),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Negative {
    id: String,
    description: String,
    sealed: String,
    key: String,
    env: String,
    name: String,
    error: String,
    file_error: String,
    keyless: bool,
    found: Option<toml::Value>,
    frame_hex: Option<String>,
    sealed_env: Option<String>,
    sealed_name: Option<String>,
    value: Option<String>,
}

struct Loaded {
    vectors: Vectors,
    recipient: SecretKey,
    wrong: SecretKey,
}

impl Loaded {
    fn key(&self, which: &str) -> &SecretKey {
        match which {
            "recipient" => &self.recipient,
            "wrong" => &self.wrong,
            other => panic!("unknown key {other:?}: use \"recipient\" or \"wrong\""),
        }
    }
}

fn load() -> Loaded {
    let path = vectors_path();
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let vectors: Vectors = toml::from_str(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()));
    let recipient = SecretKey::from_base64(&vectors.recipient.secret_key).expect("recipient secret key");
    let wrong = SecretKey::from_base64(&vectors.wrong_key.secret_key).expect("wrong_key secret key");
    Loaded { vectors, recipient, wrong }
}

/// The variant of an opening error, spelled as in the vectors file. The matches are
/// exhaustive so that a new variant fails to compile here until it has vectors.
fn open_kind(e: &OpenError) -> &'static str {
    match e {
        OpenError::Parse(p) => parse_kind(p),
        OpenError::KeyIdMismatch { .. } => "OpenError::KeyIdMismatch",
        OpenError::Decrypt => "OpenError::Decrypt",
        OpenError::Frame { .. } => "OpenError::Frame",
        OpenError::Context { .. } => "OpenError::Context",
    }
}

fn parse_kind(e: &ParseError) -> &'static str {
    match e {
        ParseError::NotSealed => "ParseError::NotSealed",
        ParseError::Shape => "ParseError::Shape",
        ParseError::UnknownVersion { .. } => "ParseError::UnknownVersion",
        ParseError::KeyId => "ParseError::KeyId",
        ParseError::Base64 => "ParseError::Base64",
        ParseError::TooShort { .. } => "ParseError::TooShort",
    }
}

fn file_kind(e: &Error) -> &'static str {
    match e {
        Error::Read { .. } => "Error::Read",
        Error::FileName { .. } => "Error::FileName",
        Error::TooLarge { .. } => "Error::TooLarge",
        Error::Toml { .. } => "Error::Toml",
        Error::MissingPublicKey { .. } => "Error::MissingPublicKey",
        Error::PublicKey { .. } => "Error::PublicKey",
        Error::SecretsNotATable { .. } => "Error::SecretsNotATable",
        Error::WrongKey { .. } => "Error::WrongKey",
        Error::Secrets { .. } => "Error::Secrets",
        Error::Unapproved { .. } => "Error::Unapproved",
    }
}

/// Every variant a sealed value can fail with; each needs at least one vector.
const VALUE_ERRORS: [&str; 10] = [
    "ParseError::NotSealed",
    "ParseError::Shape",
    "ParseError::UnknownVersion",
    "ParseError::KeyId",
    "ParseError::Base64",
    "ParseError::TooShort",
    "OpenError::KeyIdMismatch",
    "OpenError::Decrypt",
    "OpenError::Frame",
    "OpenError::Context",
];

fn open_value(l: &Loaded, v: &Negative) -> Result<boxcar_secrets::SecretValue, OpenError> {
    SealedValue::parse(&v.sealed)?.open(l.key(&v.key), &v.env, &v.name)
}

/// An environment file for `env` with the recipient's public key, a plain settings
/// table and `secrets`, written through the TOML serializer so any text is escaped.
fn env_file(l: &Loaded, env: &str, secrets: &[(&str, &str)]) -> EnvFile {
    let mut table = toml::Table::new();
    for (name, sealed) in secrets {
        table.insert((*name).to_owned(), toml::Value::String((*sealed).to_owned()));
    }
    let mut settings = toml::Table::new();
    settings.insert("log_level".to_owned(), toml::Value::String("info".to_owned()));
    let mut doc = toml::Table::new();
    doc.insert("public_key".to_owned(), toml::Value::String(l.vectors.recipient.public_key.clone()));
    doc.insert("settings".to_owned(), toml::Value::Table(settings));
    doc.insert("secrets".to_owned(), toml::Value::Table(table));
    let text = toml::to_string(&doc).expect("serializable");
    let path = PathBuf::from(format!("{env}.toml"));
    EnvFile::parse(&path, &text).unwrap_or_else(|e| panic!("{env}.toml does not parse: {e}"))
}

#[test]
fn keys_are_the_rfc7748_pairs() {
    let l = load();
    for (pair, sk) in [(&l.vectors.recipient, &l.recipient), (&l.vectors.wrong_key, &l.wrong)] {
        assert_eq!(to_hex(sk.public_key().as_bytes()), pair.public_key_hex);
        assert_eq!(sk.public_key().to_base64(), pair.public_key);
        assert_eq!(sk.key_id().to_string(), pair.key_id);
        let public = PublicKey::from_base64(&pair.public_key).expect("public key");
        assert_eq!(&public, sk.public_key());
        let from_hex_sk = SecretKey::from_bytes(zeroize::Zeroizing::new(
            from_hex(&pair.secret_key_hex).try_into().expect("32 bytes"),
        ));
        assert_eq!(from_hex_sk.public_key(), sk.public_key());
    }
    // RFC 7748 section 6.1 prints these; a typo in the file would make every vector a different test.
    assert_eq!(l.vectors.recipient.public_key_hex, "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a");
    assert_eq!(l.vectors.wrong_key.public_key_hex, "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f");
    assert_ne!(l.recipient.key_id(), l.wrong.key_id());
}

#[test]
fn positive_vectors_open_to_their_plaintext() {
    let l = load();
    assert!(l.vectors.positive.len() >= 6, "too few positive vectors");
    for v in &l.vectors.positive {
        let id = &v.id;
        let sealed = SealedValue::parse(&v.sealed).unwrap_or_else(|e| panic!("{id}: {e}"));
        assert_eq!(sealed.key_id(), l.recipient.key_id(), "{id}");
        assert_eq!(sealed.to_string(), v.sealed, "{id}: the text form is canonical and round-trips");
        let value = sealed.open(&l.recipient, &v.env, &v.name).unwrap_or_else(|e| panic!("{id}: {e}"));
        assert_eq!(value.expose_bytes(), v.plaintext(), "{id}");
        assert_eq!(value.len(), v.plaintext().len(), "{id}");

        // The documented frame layout, built here independently of the library.
        let mut frame = vec![1, v.env.len() as u8];
        frame.extend_from_slice(v.env.as_bytes());
        frame.push(v.name.len() as u8);
        frame.extend_from_slice(v.name.as_bytes());
        frame.extend_from_slice(&v.plaintext());
        assert_eq!(to_hex(&frame), v.frame_hex, "{id}: frame_hex");

        // Body = ephemeral public key (32) || tag (16) || encrypted frame.
        use base64::Engine as _;
        let body = v.sealed.rsplit(':').next().expect("body");
        let body = base64::engine::general_purpose::STANDARD.decode(body).expect("base64");
        assert_eq!(body.len(), 32 + 16 + frame.len(), "{id}: body length");
        assert_eq!(to_hex(&body[..32]), v.ephemeral_public_key_hex, "{id}");

        // The other key pair cannot open it, and says so without trying.
        assert!(matches!(sealed.open(&l.wrong, &v.env, &v.name), Err(OpenError::KeyIdMismatch { .. })), "{id}");
    }
}

#[test]
fn positive_vectors_open_from_environment_files() {
    let l = load();
    let mut by_env: BTreeMap<&str, Vec<&Positive>> = BTreeMap::new();
    for v in &l.vectors.positive {
        by_env.entry(v.env.as_str()).or_default().push(v);
    }
    for (env, vs) in by_env {
        let entries: Vec<(&str, &str)> = vs.iter().map(|v| (v.name.as_str(), v.sealed.as_str())).collect();
        let file = env_file(&l, env, &entries);
        assert!(file.problems().is_empty(), "{env}: {:?}", file.problems());
        let secrets = file.open_all(&l.recipient).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(secrets.env(), env);
        assert_eq!(secrets.len(), vs.len());
        for v in vs {
            let value = secrets.get(&v.name).unwrap_or_else(|| panic!("{}: missing", v.id));
            assert_eq!(value.expose_bytes(), v.plaintext(), "{}", v.id);
        }
        // Plain settings stay readable next to the secrets.
        assert_eq!(file.table()["settings"]["log_level"].as_str(), Some("info"));
        assert!(matches!(file.open_all(&l.wrong), Err(Error::WrongKey { .. })), "{env}");
    }
}

#[test]
fn negative_vectors_fail_with_their_error() {
    let l = load();
    let mut wrong = Vec::new();
    for v in &l.vectors.negative {
        let id = &format!("{} ({})", v.id, v.description);
        let err = match open_value(&l, v) {
            Ok(_) => {
                wrong.push(format!("{id}: opened, expected {}", v.error));
                continue;
            }
            Err(e) => e,
        };
        // The library's own name for the error is the spec's.
        assert_eq!(err.name(), open_kind(&err), "{id}");
        if open_kind(&err) != v.error {
            wrong.push(format!("{id}: expected {}, got {} ({err})", v.error, open_kind(&err)));
            continue;
        }
        let key_id_field = || v.sealed.split(':').nth(2).unwrap_or_default().to_owned();
        let detail_ok = match &err {
            OpenError::Parse(ParseError::TooShort { found }) => {
                v.found.as_ref().and_then(toml::Value::as_integer) == Some(*found as i64)
            }
            OpenError::Parse(ParseError::UnknownVersion { found }) => {
                v.found.as_ref().and_then(toml::Value::as_str) == Some(found.as_str())
            }
            OpenError::KeyIdMismatch { value, key } => {
                value.to_string() == key_id_field() && *key == l.key(&v.key).key_id()
            }
            OpenError::Context { sealed_env, sealed_name, env, name } => {
                v.sealed_env.as_ref() == Some(sealed_env)
                    && v.sealed_name.as_ref() == Some(sealed_name)
                    && *env == v.env
                    && *name == v.name
            }
            OpenError::Frame { .. } => v.frame_hex.is_some(),
            _ => true,
        };
        if !detail_ok {
            wrong.push(format!("{id}: right variant, wrong details: {err:?}"));
        }
    }
    assert!(wrong.is_empty(), "negative vectors that did not fail as expected:\n{}", wrong.join("\n"));
}

#[test]
fn negative_vectors_fail_the_same_way_in_environment_files() {
    let l = load();
    let mut wrong = Vec::new();
    for v in &l.vectors.negative {
        let id = &v.id;
        let expected = open_value(&l, v).err();
        let file = env_file(&l, &v.env, &[(&v.name, &v.sealed)]);

        // `check` needs no secret key: it finds parse errors and foreign key ids only.
        let problems = file.problems();
        if problems.is_empty() == v.keyless {
            wrong.push(format!("{id}: keyless = {}, but problems() gave {problems:?}", v.keyless));
        }
        if let [p] = &problems[..] {
            let SecretProblem::Open(e) = &p.problem else { panic!("{id}: {p}") };
            if open_kind(e) != v.error {
                wrong.push(format!("{id}: problems() gave {}, expected {}", open_kind(e), v.error));
            }
        }

        let err = match file.open_all(l.key(&v.key)) {
            Ok(_) => {
                wrong.push(format!("{id}: the file opened"));
                continue;
            }
            Err(e) => e,
        };
        if file_kind(&err) != v.file_error {
            wrong.push(format!("{id}: expected {}, got {} ({err})", v.file_error, file_kind(&err)));
            continue;
        }
        match &err {
            Error::WrongKey { env, expected, given, .. } => {
                assert_eq!(env, &v.env);
                assert_eq!(*expected, l.recipient.key_id(), "{id}");
                assert_eq!(*given, l.key(&v.key).key_id(), "{id}");
            }
            Error::Secrets { failures, .. } => match &failures[..] {
                [f] if f.env == v.env && f.name == v.name => match &f.problem {
                    SecretProblem::Open(e) if Some(e) == expected.as_ref() && open_kind(e) == v.error => {}
                    other => wrong.push(format!(
                        "{id}: file gave {other:?}, the value alone {expected:?}, the vector {}",
                        v.error
                    )),
                },
                other => wrong.push(format!("{id}: expected one failure, got {other:?}")),
            },
            _ => unreachable!("checked by file_kind"),
        }
    }
    assert!(wrong.is_empty(), "negative vectors that did not fail as expected in a file:\n{}", wrong.join("\n"));
}

#[test]
fn every_error_variant_has_a_vector() {
    let l = load();
    let value_errors: BTreeSet<&str> = l.vectors.negative.iter().map(|v| v.error.as_str()).collect();
    let missing: Vec<&str> = VALUE_ERRORS.iter().copied().filter(|k| !value_errors.contains(k)).collect();
    assert!(missing.is_empty(), "no negative vector for {missing:?}");
    let unknown: Vec<&&str> = value_errors.iter().filter(|k| !VALUE_ERRORS.contains(k)).collect();
    assert!(unknown.is_empty(), "vectors name unknown errors {unknown:?}");
    let file_errors: BTreeSet<&str> = l.vectors.negative.iter().map(|v| v.file_error.as_str()).collect();
    assert_eq!(file_errors, BTreeSet::from(["Error::Secrets", "Error::WrongKey"]));
    let ids: BTreeSet<&str> = l
        .vectors
        .positive
        .iter()
        .map(|v| v.id.as_str())
        .chain(l.vectors.negative.iter().map(|v| v.id.as_str()))
        .collect();
    assert_eq!(ids.len(), l.vectors.positive.len() + l.vectors.negative.len(), "vector ids must be unique");
}

#[test]
fn error_messages_never_show_a_plaintext_or_a_key() {
    let l = load();
    // Everything secret the vectors know: plaintexts (positive ones, ones inside
    // negative ones, plaintext put where a sealed value belongs) and both secret keys.
    let mut secrets: Vec<Vec<u8>> = Vec::new();
    secrets.extend(l.vectors.positive.iter().map(Positive::plaintext).filter(|p| p.len() >= 4));
    secrets.extend(l.vectors.negative.iter().filter_map(|v| v.value.clone()).map(String::into_bytes));
    secrets.extend(
        l.vectors
            .negative
            .iter()
            .filter(|v| !v.sealed.starts_with("sealed:") && !v.sealed.is_empty())
            .map(|v| v.sealed.clone().into_bytes()),
    );
    for pair in [&l.vectors.recipient, &l.vectors.wrong_key] {
        secrets.push(pair.secret_key.clone().into_bytes());
        secrets.push(pair.secret_key_hex.clone().into_bytes());
    }
    assert!(secrets.len() > 10);

    let mut leaks = Vec::new();
    for v in &l.vectors.negative {
        let mut messages = Vec::new();
        if let Err(e) = open_value(&l, v) {
            messages.push(e.to_string());
            messages.push(format!("{e:?}"));
        }
        let file = env_file(&l, &v.env, &[(&v.name, &v.sealed)]);
        if let Err(e) = file.open_all(l.key(&v.key)) {
            messages.push(e.to_string());
            messages.push(format!("{e:?}"));
        }
        for p in file.problems() {
            messages.push(p.to_string());
            messages.push(format!("{p:?}"));
        }
        for m in &messages {
            for s in &secrets {
                if contains_bytes(m.as_bytes(), s) {
                    leaks.push(format!("{}: {m}", v.id));
                }
            }
        }
    }
    assert!(leaks.is_empty(), "messages showing secret bytes:\n{}", leaks.join("\n"));
}
