//! Approval: the key holder's signature over an environment file's content,
//! and the endorsements that carry trust from one key to the next.
//!
//! Sealing needs only the public key, so anyone can put a value into a file,
//! and a plain setting (an API base URL) decides where opened values go. An
//! approval says that the holder of the environment's secret key accepted
//! exactly this content. It is an Ed25519 signature by a key derived from the
//! X25519 secret key, so there is still one secret to keep, and anyone can
//! check it with the committed `approval_key`, without any secret (CI). A
//! service holding the secret key also checks that `approval_key` is the one
//! its key derives, so an approval by another key is refused.
//!
//! `docs/FORMAT.md` ("Approval") is the specification; in short:
//!
//! ```text
//! seed         = BLAKE2b-256(key = X25519 secret key, "boxcar approval key v1")
//! approval key = Ed25519 public key of seed
//! content      = canonical encoding of the file's TOML, less the [approval] table
//! signature    = Ed25519(seed, "boxcar-approval-v1" 0x00 || len(env) || env || serial (u64 BE) || content)
//! endorsement  = Ed25519(old seed, "boxcar-endorse-v1" 0x00 || len(env) || env || old pk || old ak || new pk || new ak)
//! ```

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signature, SigningKey, VerifyingKey};
use sha2::{Digest as _, Sha256};
use zeroize::Zeroizing;

use crate::error::KeyError;
use crate::key::{KEY_LEN, KeyId, PublicKey, SecretKey};

/// The label the approval key's seed is derived under.
const KEY_LABEL: &[u8] = b"boxcar approval key v1";
/// Domain of an approval's signed message.
const APPROVAL_DOMAIN: &[u8] = b"boxcar-approval-v1";
/// Domain of an endorsement's signed message.
const ENDORSE_DOMAIN: &[u8] = b"boxcar-endorse-v1";

/// The table that holds the approval; everything else in the file is content.
pub const APPROVAL_TABLE: &str = "approval";
/// The key that holds the approval key.
pub const APPROVAL_KEY: &str = "approval_key";
/// The array of tables that lists earlier keys, oldest first.
pub const PREVIOUS_KEYS: &str = "previous_keys";

/// The Ed25519 public key that checks an environment's approvals; derived
/// from its secret key, safe to publish.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ApprovalKey(VerifyingKey);

impl ApprovalKey {
    /// The approval key of `secret`.
    pub fn of(secret: &SecretKey) -> ApprovalKey {
        ApprovalKey(signing_key(secret).verifying_key())
    }

    /// Parses standard base64 of a 32-byte Ed25519 public key, refusing an
    /// encoding that is not the canonical one of a point, and a point of small
    /// order (under which some signatures verify whatever the message).
    pub fn from_base64(text: &str) -> Result<ApprovalKey, KeyError> {
        let bytes = B64.decode(crate::key::around_key(text)).map_err(|_| KeyError::Base64)?;
        let bytes: [u8; KEY_LEN] = bytes.try_into().map_err(|v: Vec<u8>| KeyError::Length { found: v.len() })?;
        let key = VerifyingKey::from_bytes(&bytes).map_err(|_| KeyError::NonCanonical)?;
        // dalek decodes a y at or above p (and x = 0 with its sign bit set) as
        // the point it stands for; RFC 8032 and libsodium refuse such an
        // encoding, and so does boxcar: one key, one text.
        if key.to_edwards().compress().to_bytes() != bytes {
            return Err(KeyError::NonCanonical);
        }
        if key.is_weak() {
            return Err(KeyError::SmallOrder);
        }
        Ok(ApprovalKey(key))
    }

    /// The standard base64 text form, as stored in `approval_key`.
    pub fn to_base64(&self) -> String {
        B64.encode(self.0.as_bytes())
    }

    /// A short public name for the key, made as a [`KeyId`] is.
    pub fn key_id(&self) -> KeyId {
        KeyId::of(self.0.as_bytes())
    }

    /// The raw 32 bytes.
    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        self.0.as_bytes()
    }

    fn verify(&self, message: &[u8], signature: &Signature) -> bool {
        // Strict: no small-order components, no non-canonical R, so one
        // message has one valid signature per key.
        self.0.verify_strict(message, signature).is_ok()
    }
}

impl fmt::Debug for ApprovalKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApprovalKey({})", self.key_id())
    }
}

/// The Ed25519 signing key of `secret`: its seed is keyed BLAKE2b-256 of a
/// fixed label, so it is independent of the X25519 key yet needs nothing
/// else to keep. `SigningKey` wipes itself on drop.
fn signing_key(secret: &SecretKey) -> SigningKey {
    use blake2::digest::{KeyInit, Mac as _};
    let mut mac = <blake2::Blake2bMac<blake2::digest::consts::U32> as KeyInit>::new_from_slice(&secret.bytes()[..])
        .unwrap_or_else(|_| unreachable!("BLAKE2b takes keys of up to 64 bytes"));
    mac.update(KEY_LABEL);
    let mut seed = Zeroizing::new([0u8; KEY_LEN]);
    seed.copy_from_slice(&mac.finalize().into_bytes());
    SigningKey::from_bytes(&seed)
}

/// Why a file's content cannot be encoded for approval.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContentError {
    /// TOML date-times have several spellings of one value and no canonical form here.
    #[error("`{at}` is a TOML date-time, which cannot be approved; write it as a string")]
    DateTime {
        /// Where it is, as `table.key`.
        at: String,
    },
}

/// The canonical encoding of a file's content: the whole document less the
/// approval table, as FORMAT.md's "Canonical content" says.
pub fn canonical_content(table: &toml::Table) -> Result<Vec<u8>, ContentError> {
    let mut out = Vec::with_capacity(1024);
    let entries: Vec<(&String, &toml::Value)> = table.iter().filter(|(k, _)| *k != APPROVAL_TABLE).collect();
    encode_table(entries, "", &mut out)?;
    Ok(out)
}

fn encode_table<'a>(
    mut entries: Vec<(&'a String, &'a toml::Value)>,
    at: &str,
    out: &mut Vec<u8>,
) -> Result<(), ContentError> {
    entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    out.push(b't');
    push_len(out, entries.len());
    for (key, value) in entries {
        push_len(out, key.len());
        out.extend_from_slice(key.as_bytes());
        let at = if at.is_empty() { key.clone() } else { format!("{at}.{key}") };
        encode(value, &at, out)?;
    }
    Ok(())
}

fn encode(value: &toml::Value, at: &str, out: &mut Vec<u8>) -> Result<(), ContentError> {
    match value {
        toml::Value::String(s) => {
            out.push(b's');
            push_len(out, s.len());
            out.extend_from_slice(s.as_bytes());
        }
        toml::Value::Integer(i) => {
            out.push(b'i');
            out.extend_from_slice(&i.to_be_bytes());
        }
        toml::Value::Float(f) => {
            out.push(b'f');
            // Every NaN is one value in TOML (`nan`, `+nan`, `-nan`).
            let bits = if f.is_nan() { 0x7ff8_0000_0000_0000 } else { f.to_bits() };
            out.extend_from_slice(&bits.to_be_bytes());
        }
        toml::Value::Boolean(b) => {
            out.push(b'b');
            out.push(u8::from(*b));
        }
        toml::Value::Datetime(_) => return Err(ContentError::DateTime { at: at.to_owned() }),
        toml::Value::Array(items) => {
            out.push(b'a');
            push_len(out, items.len());
            for (i, item) in items.iter().enumerate() {
                encode(item, &format!("{at}[{i}]"), out)?;
            }
        }
        toml::Value::Table(table) => encode_table(table.iter().collect(), at, out)?,
    }
    Ok(())
}

fn push_len(out: &mut Vec<u8>, len: usize) {
    // A file is at most 4 MiB, so every length fits.
    out.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes());
}

/// The message an approval signs.
fn approval_message(env: &str, serial: u64, content: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(APPROVAL_DOMAIN.len() + 10 + env.len() + content.len());
    m.extend_from_slice(APPROVAL_DOMAIN);
    m.push(0);
    m.push(env.len() as u8);
    m.extend_from_slice(env.as_bytes());
    m.extend_from_slice(&serial.to_be_bytes());
    m.extend_from_slice(content);
    m
}

/// The message an endorsement of `new` by `old` signs.
fn endorsement_message(env: &str, old: &KeyPair, new: &KeyPair) -> Vec<u8> {
    let mut m = Vec::with_capacity(ENDORSE_DOMAIN.len() + 2 + env.len() + 4 * KEY_LEN);
    m.extend_from_slice(ENDORSE_DOMAIN);
    m.push(0);
    m.push(env.len() as u8);
    m.extend_from_slice(env.as_bytes());
    for key in
        [old.public_key.as_bytes(), old.approval_key.as_bytes(), new.public_key.as_bytes(), new.approval_key.as_bytes()]
    {
        m.extend_from_slice(key);
    }
    m
}

/// An environment's public key and approval key, as the file names them.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct KeyPair {
    /// The X25519 public key values are sealed to.
    pub public_key: PublicKey,
    /// The Ed25519 key approvals are checked with.
    pub approval_key: ApprovalKey,
}

impl KeyPair {
    /// The pair of `secret`.
    pub fn of(secret: &SecretKey) -> KeyPair {
        KeyPair { public_key: secret.public_key().clone(), approval_key: ApprovalKey::of(secret) }
    }
}

/// `C(value)`, the canonical encoding of one value; `None` for a value that
/// has none (a date-time).
pub fn encoded(value: &toml::Value) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    encode(value, "", &mut out).ok()?;
    Some(out)
}

/// A short fingerprint of one value: the first 8 bytes of SHA-256 of its
/// canonical encoding, in hex. Public: `approve` shows it for each sealed
/// value, so a reviewer can tell two values apart without seeing either.
pub fn fingerprint(value: &toml::Value) -> Result<String, ContentError> {
    let mut out = Vec::new();
    encode(value, "", &mut out)?;
    Ok(Sha256::digest(&out)[..8].iter().map(|b| format!("{b:02x}")).collect())
}

/// What a file says about its approval, read without any secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Approved {
    /// The approval's serial number, one more at each approval.
    pub serial: u64,
    /// Every key of the environment, oldest first; the last is the current
    /// one, and each is endorsed by the one before it.
    pub chain: Vec<KeyPair>,
}

impl Approved {
    /// The current key pair.
    pub fn current(&self) -> &KeyPair {
        self.chain.last().unwrap_or_else(|| unreachable!("a chain holds at least the current key"))
    }
}

/// Why a file's content is not approved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApprovalError {
    /// No `approval_key`: never approved.
    #[error("is not approved: it has no `approval_key`")]
    NoApprovalKey,
    /// `approval_key` does not decode to a usable key.
    #[error("`approval_key` {0}")]
    ApprovalKey(KeyError),
    /// No `[approval]` table.
    #[error("is not approved: it has no [approval]")]
    NoApproval,
    /// A field of the approval or of the key chain is malformed.
    #[error("`{field}` {why}")]
    Malformed {
        /// The field, as `table.key`.
        field: String,
        /// What is wrong.
        why: String,
    },
    /// The content cannot be encoded.
    #[error(transparent)]
    Content(#[from] ContentError),
    /// The approval key is not the one the secret key derives.
    #[error(
        "`approval_key` (key id {committed}) is not the approval key of this environment's secret key \
         (key id {derived}): the file was approved by another key"
    )]
    NotThisKey {
        /// Key id of the committed approval key.
        committed: KeyId,
        /// Key id of the one the secret key derives.
        derived: KeyId,
    },
    /// The signature does not verify: the content changed since it was
    /// approved. Nothing in such a file can say what changed (all of it is
    /// unverified); `check` compares it with the last approved version in git.
    #[error("is not approved as it is: its content, or its environment, differs from what was approved")]
    Signature,
    /// An endorsement in the key chain does not verify.
    #[error(
        "`previous_keys[{index}]` (key id {old}) did not endorse the key after it (key id {new}): \
         its endorsement does not verify"
    )]
    Endorsement {
        /// Index in `previous_keys`.
        index: usize,
        /// Key id of the endorsing public key.
        old: KeyId,
        /// Key id of the endorsed public key.
        new: KeyId,
    },
    /// The run-time contract a boxcar image was built with is not the one the
    /// file approves for its service (A10), or cannot be read.
    #[error("{}", describe_runtime(service, why))]
    Runtime {
        /// The service the image says it is (escaped); empty when its service
        /// file cannot be read.
        service: String,
        /// The fields that differ, or why the contract cannot be checked.
        why: String,
    },
}

fn describe_runtime(service: &str, why: &str) -> String {
    if service.is_empty() {
        format!("this image's run-time contract cannot be checked: {why}")
    } else {
        format!("the run-time contract of service `{service}` in this image is not the one this file approves: {why}")
    }
}

impl ApprovalError {
    /// The variant's name, as docs/FORMAT.md gives it after `ApprovalError::`.
    pub fn name(&self) -> &'static str {
        match self {
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

    /// What to do about it, for the environment `env` of `service` (named in
    /// the command when it is not the contract's default, or not known to be).
    pub fn hint(&self, env: &str, service: Option<&str>) -> String {
        let service_arg = service.map(|s| format!("--service {} ", crate::show::escape(s))).unwrap_or_default();
        match self {
            ApprovalError::NotThisKey { .. } | ApprovalError::Endorsement { .. } => format!(
                "this is what a replaced key looks like: restore the file from a trusted commit, \
                 or rotate with `cargo xtask rotate-key {service_arg}--env {env}`"
            ),
            ApprovalError::Runtime { service, .. } if !service.is_empty() => format!(
                "a holder of the secret key reviews boxcar.toml's change for this environment and approves it \
                 (`cargo xtask approve --service {service} --env {env}`), then the image is built again"
            ),
            ApprovalError::Runtime { .. } => {
                "build the image again with `cargo xtask image`: boxcar writes this file".to_owned()
            }
            _ => format!(
                "a holder of the secret key must review the change and approve it: \
                 `cargo xtask approve {service_arg}--env {env}` (`cargo xtask check` names what changed)"
            ),
        }
    }
}

/// Reads and checks the approval of a file's `table` for environment `env`,
/// without any secret: the approval key, the serial, the signature over the
/// content, and every endorsement of the key chain.
pub fn verify(env: &str, table: &toml::Table) -> Result<Approved, ApprovalError> {
    let current = current_pair(table)?;
    let approval = table.get(APPROVAL_TABLE).ok_or(ApprovalError::NoApproval)?;
    let toml::Value::Table(approval) = approval else {
        return Err(malformed(APPROVAL_TABLE, "must be a table"));
    };
    let serial = serial(approval)?;
    let signature = signature_field(approval.get("signature"), "approval.signature")?;
    let content = canonical_content(table)?;
    if !current.approval_key.verify(&approval_message(env, serial, &content), &signature) {
        return Err(ApprovalError::Signature);
    }
    let chain = chain(env, table, current)?;
    Ok(Approved { serial, chain })
}

/// Like [`verify`], and first checks that the approval key is the one
/// `secret` derives: what a service holding the key does at startup.
pub fn verify_with(env: &str, table: &toml::Table, secret: &SecretKey) -> Result<Approved, ApprovalError> {
    let current = current_pair(table)?;
    let derived = ApprovalKey::of(secret);
    if current.approval_key != derived {
        return Err(ApprovalError::NotThisKey { committed: current.approval_key.key_id(), derived: derived.key_id() });
    }
    verify(env, table)
}

/// The key chain of a file's `table`, oldest first, with every endorsement
/// checked; the approval itself is not. `check` reads it from every version
/// of a file in its history.
pub fn key_chain(env: &str, table: &toml::Table) -> Result<Vec<KeyPair>, ApprovalError> {
    chain(env, table, current_pair(table)?)
}

fn current_pair(table: &toml::Table) -> Result<KeyPair, ApprovalError> {
    let approval_key = match table.get(APPROVAL_KEY) {
        None => return Err(ApprovalError::NoApprovalKey),
        Some(toml::Value::String(text)) => ApprovalKey::from_base64(text).map_err(ApprovalError::ApprovalKey)?,
        Some(_) => return Err(ApprovalError::ApprovalKey(KeyError::Base64)),
    };
    // The file's loader has checked `public_key` already.
    let public_key = match table.get("public_key") {
        Some(toml::Value::String(text)) => PublicKey::from_base64(text),
        _ => Err(KeyError::Empty),
    }
    .map_err(|e| malformed("public_key", &e.to_string()))?;
    Ok(KeyPair { public_key, approval_key })
}

fn serial(approval: &toml::Table) -> Result<u64, ApprovalError> {
    match approval.get("serial") {
        Some(toml::Value::Integer(n)) if *n >= 1 => Ok(*n as u64),
        Some(_) => Err(malformed("approval.serial", "must be a whole number of at least 1")),
        None => Err(malformed("approval.serial", "is missing")),
    }
}

fn signature_field(value: Option<&toml::Value>, field: &str) -> Result<Signature, ApprovalError> {
    let Some(toml::Value::String(text)) = value else {
        return Err(malformed(field, "is missing, or not a string"));
    };
    let bytes = B64.decode(text).map_err(|_| malformed(field, "is not valid base64"))?;
    let bytes: [u8; 64] =
        bytes.try_into().map_err(|v: Vec<u8>| malformed(field, &format!("decodes to {} bytes, not 64", v.len())))?;
    Ok(Signature::from_bytes(&bytes))
}

fn malformed(field: &str, why: &str) -> ApprovalError {
    ApprovalError::Malformed { field: crate::show::escape(field).into_owned(), why: why.to_owned() }
}

/// The key chain: each `previous_keys` entry, oldest first, must endorse the
/// one after it, and the last the current pair.
fn chain(env: &str, table: &toml::Table, current: KeyPair) -> Result<Vec<KeyPair>, ApprovalError> {
    let entries = match table.get(PREVIOUS_KEYS) {
        None => return Ok(vec![current]),
        Some(toml::Value::Array(entries)) => entries,
        Some(_) => return Err(malformed(PREVIOUS_KEYS, "must be an array of tables ([[previous_keys]])")),
    };
    let mut chain = Vec::with_capacity(entries.len() + 1);
    let mut endorsements = Vec::with_capacity(entries.len());
    for (i, entry) in entries.iter().enumerate() {
        let field = |name: &str| format!("{PREVIOUS_KEYS}[{i}].{name}");
        let toml::Value::Table(entry) = entry else {
            return Err(malformed(&format!("{PREVIOUS_KEYS}[{i}]"), "must be a table"));
        };
        let text = |name: &str| match entry.get(name) {
            Some(toml::Value::String(text)) => Ok(text.as_str()),
            _ => Err(malformed(&field(name), "is missing, or not a string")),
        };
        let public_key =
            PublicKey::from_base64(text("public_key")?).map_err(|e| malformed(&field("public_key"), &e.to_string()))?;
        let approval_key = ApprovalKey::from_base64(text("approval_key")?)
            .map_err(|e| malformed(&field("approval_key"), &e.to_string()))?;
        endorsements.push(signature_field(entry.get("endorsement"), &field("endorsement"))?);
        chain.push(KeyPair { public_key, approval_key });
    }
    chain.push(current);
    for (index, signature) in endorsements.iter().enumerate() {
        let (old, new) = (&chain[index], &chain[index + 1]);
        if !old.approval_key.verify(&endorsement_message(env, old, new), signature) {
            return Err(ApprovalError::Endorsement {
                index,
                old: old.public_key.key_id(),
                new: new.public_key.key_id(),
            });
        }
    }
    Ok(chain)
}

/// Signs `table`'s content for `env` with `secret` at `serial`; the table's
/// `approval_key` must already be `secret`'s.
#[cfg(feature = "seal")]
pub fn sign(env: &str, table: &toml::Table, serial: u64, secret: &SecretKey) -> Result<Signature, ContentError> {
    use ed25519_dalek::Signer as _;
    let content = canonical_content(table)?;
    Ok(signing_key(secret).sign(&approval_message(env, serial, &content)))
}

/// The endorsement by `old` of `new` in environment `env`.
#[cfg(feature = "seal")]
pub(crate) fn endorse(env: &str, old: &SecretKey, new: &KeyPair) -> Signature {
    use ed25519_dalek::Signer as _;
    signing_key(old).sign(&endorsement_message(env, &KeyPair::of(old), new))
}

/// Base64 of a signature, as the file holds it.
#[cfg(feature = "seal")]
pub(crate) fn signature_text(signature: &Signature) -> String {
    B64.encode(signature.to_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EnvDocument;

    const ALICE_SK: &str = "dwdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LCo=";

    #[test]
    fn derives_the_approval_key_as_pynacl_does() {
        // nacl.signing.SigningKey(nacl.hash.blake2b(b"boxcar approval key v1",
        //     digest_size=32, key=alice_sk, encoder=RawEncoder)).verify_key
        let sk = SecretKey::from_base64(ALICE_SK).unwrap();
        let key = ApprovalKey::of(&sk);
        assert_eq!(key.to_base64(), "idT0TfzRKYrQR8kmhnrZw+j55FAj4pj37V5QGzZqyMI=");
        assert_eq!(format!("{key:?}"), format!("ApprovalKey({})", key.key_id()));
        assert_eq!(ApprovalKey::from_base64(&key.to_base64()), Ok(key));
    }

    #[test]
    fn a_fingerprint_is_of_the_value_alone() {
        let t = table("a = 1\n[full]\nx = 1\ny = \"z\"\nwhen = 1979-05-27\n");
        let fp = |v: &toml::Value| fingerprint(v).unwrap();
        assert_eq!(fp(&t["a"]), fp(&t["full"]["x"]));
        assert_ne!(fp(&t["a"]), fp(&t["full"]["y"]));
        // SHA-256 of `i` and the i64 1, first 8 bytes.
        assert_eq!(fp(&t["a"]).len(), 16);
        assert_eq!(encoded(&t["a"]), Some(vec![b'i', 0, 0, 0, 0, 0, 0, 0, 1]));
        assert_eq!(encoded(&t["full"]["when"]), None);
        assert!(matches!(fingerprint(&t["full"]["when"]), Err(ContentError::DateTime { .. })));
    }

    fn approved(dir: &std::path::Path, env: &str, key: &SecretKey, rest: &str) -> String {
        let path = dir.join(format!("{env}.toml"));
        std::fs::write(&path, format!("public_key = \"{}\"\n{rest}", key.public_key().to_base64())).unwrap();
        let mut doc = EnvDocument::load_or_new(&path).unwrap();
        doc.approve(key).unwrap();
        doc.render()
    }

    fn table(text: &str) -> toml::Table {
        text.parse().unwrap()
    }

    /// Signs `t` for `env` at `serial` with `key` and writes both into its approval.
    fn resign(env: &str, t: &mut toml::Table, serial: u64, key: &SecretKey) {
        let signature = sign(env, t, serial, key).unwrap();
        let approval = t.get_mut("approval").unwrap().as_table_mut().unwrap();
        approval.insert("signature".into(), signature_text(&signature).into());
        approval.insert("serial".into(), (serial as i64).into());
    }

    #[test]
    fn an_approval_covers_every_value_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let sk = SecretKey::generate();
        let text = approved(dir.path(), "prod", &sk, "[app]\nurl = \"https://a.example\" # where\nn = 3\n");
        let ok = verify("prod", &table(&text)).unwrap();
        assert_eq!(ok.serial, 1);
        assert_eq!(ok.chain, vec![KeyPair::of(&sk)]);
        assert!(verify_with("prod", &table(&text), &sk).is_ok());
        // Comments, spacing and spelling of the same values do not matter.
        let same = text.replace(" # where", "").replace("n = 3", "n    = 0x3");
        assert!(verify("prod", &table(&same)).is_ok());
        // Every value does.
        for changed in [
            text.replace("a.example", "b.example"),
            text.replace("n = 3", "n = 3\nextra = true"),
            text.replace("n = 3\n", ""),
            format!("{text}\n[boxcar.services.app]\nargs = []\n"),
        ] {
            assert_eq!(verify("prod", &table(&changed)), Err(ApprovalError::Signature), "{changed}");
        }
        // What the approval table holds besides serial and signature is not content.
        let noted = text.replace("[approval]\n", "[approval]\nnote = \"anything\"\n");
        assert!(verify("prod", &table(&noted)).is_ok());
        // The environment is part of what is signed.
        assert_eq!(verify("staging", &table(&text)), Err(ApprovalError::Signature));
        // So is the serial.
        let bumped = text.replace("serial = 1", "serial = 2");
        assert_eq!(verify("prod", &table(&bumped)), Err(ApprovalError::Signature));
    }

    #[test]
    fn another_keys_approval_is_refused_by_the_key_holder() {
        let dir = tempfile::tempdir().unwrap();
        let (sk, attacker) = (SecretKey::generate(), SecretKey::generate());
        // The attacker keeps the victim's public key but approves with their own key.
        let path = dir.path().join("prod.toml");
        std::fs::write(
            &path,
            format!("public_key = \"{}\"\n[app]\nurl = \"https://evil\"\n", sk.public_key().to_base64()),
        )
        .unwrap();
        let mut doc = EnvDocument::load_or_new(&path).unwrap();
        doc.approve(&attacker).unwrap();
        let text = doc.render();
        // Without a key it verifies (the key chain is what catches it in `check`) …
        assert!(verify("prod", &table(&text)).is_ok());
        // … but not for the holder of the real key.
        let err = verify_with("prod", &table(&text), &sk).unwrap_err();
        assert_eq!(
            err,
            ApprovalError::NotThisKey {
                committed: ApprovalKey::of(&attacker).key_id(),
                derived: ApprovalKey::of(&sk).key_id()
            }
        );
    }

    #[test]
    fn malformed_approvals_say_which_field() {
        let dir = tempfile::tempdir().unwrap();
        let sk = SecretKey::generate();
        let text = approved(dir.path(), "prod", &sk, "");
        let t = table(&text);
        let sig = t["approval"]["signature"].as_str().unwrap().to_owned();
        let ak = t["approval_key"].as_str().unwrap().to_owned();
        let cases: Vec<(String, ApprovalError)> = vec![
            (text.replace(&format!("approval_key = \"{ak}\""), ""), ApprovalError::NoApprovalKey),
            (text.replace(&ak, &B64.encode([0u8; 32])), ApprovalError::ApprovalKey(KeyError::SmallOrder)),
            (text.replace(&ak, "AAAA"), ApprovalError::ApprovalKey(KeyError::Length { found: 3 })),
            (
                text.replace(&format!("approval_key = \"{ak}\""), "approval_key = 1"),
                ApprovalError::ApprovalKey(KeyError::Base64),
            ),
            (text[..text.find("\n# Approval by").unwrap()].to_owned(), ApprovalError::NoApproval),
            (
                text.replace("serial = 1", "serial = 0"),
                malformed("approval.serial", "must be a whole number of at least 1"),
            ),
            (
                text.replace("serial = 1", "serial = \"1\""),
                malformed("approval.serial", "must be a whole number of at least 1"),
            ),
            (text.replace("serial = 1\n", ""), malformed("approval.serial", "is missing")),
            (
                text.replace(&sig, &B64.encode([1u8; 63])),
                malformed("approval.signature", "decodes to 63 bytes, not 64"),
            ),
            (text.replace(&sig, "!!"), malformed("approval.signature", "is not valid base64")),
            (
                text.replace(&format!("signature = \"{sig}\""), ""),
                malformed("approval.signature", "is missing, or not a string"),
            ),
            (
                format!("{text}\n[app]\nwhen = 1979-05-27\n"),
                ApprovalError::Content(ContentError::DateTime { at: "app.when".into() }),
            ),
        ];
        for (bad, expected) in cases {
            assert_eq!(verify("prod", &table(&bad)).unwrap_err(), expected, "{bad}");
        }
        let mut not_a_table = table(&text);
        not_a_table.insert("approval".into(), 3.into());
        assert_eq!(verify("prod", &not_a_table).unwrap_err(), malformed("approval", "must be a table"));
    }

    #[test]
    fn canonical_encoding_by_hand() {
        let t = table("b = true\na = \"x\"\n[t]\ni = -2\nf = -0.0\nn = nan\nl = [1, \"y\"]\n");
        let mut expected = vec![b't', 0, 0, 0, 3];
        expected.extend([0, 0, 0, 1, b'a', b's', 0, 0, 0, 1, b'x']);
        expected.extend([0, 0, 0, 1, b'b', b'b', 1]);
        expected.extend([0, 0, 0, 1, b't', b't', 0, 0, 0, 4]);
        expected.extend([0, 0, 0, 1, b'f', b'f', 0x80, 0, 0, 0, 0, 0, 0, 0]);
        expected.extend([0, 0, 0, 1, b'i', b'i', 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe]);
        expected.extend([0, 0, 0, 1, b'l', b'a', 0, 0, 0, 2, b'i', 0, 0, 0, 0, 0, 0, 0, 1, b's', 0, 0, 0, 1, b'y']);
        expected.extend([0, 0, 0, 1, b'n', b'f', 0x7f, 0xf8, 0, 0, 0, 0, 0, 0]);
        assert_eq!(canonical_content(&t).unwrap(), expected);
        // -nan is the same value as nan; the approval table is left out.
        let same =
            table("a = \"x\"\nb = true\n[approval]\nserial = 9\n[t]\ni = -2\nf = -0.0\nn = -nan\nl = [1, \"y\"]\n");
        assert_eq!(canonical_content(&same).unwrap(), expected);
    }

    #[test]
    fn a_rotation_is_endorsed_by_the_old_key() {
        let dir = tempfile::tempdir().unwrap();
        let (old, new, other) = (SecretKey::generate(), SecretKey::generate(), SecretKey::generate());
        let path = dir.path().join("prod.toml");
        std::fs::write(&path, format!("public_key = \"{}\"\n", old.public_key().to_base64())).unwrap();
        let mut doc = EnvDocument::load_or_new(&path).unwrap();
        doc.approve(&old).unwrap();
        doc.endorse(&old, &KeyPair::of(&new));
        doc.set_public_key(new.public_key());
        assert_eq!(doc.approve(&new).unwrap(), 2);
        let text = doc.render();
        let ok = verify_with("prod", &table(&text), &new).unwrap();
        assert_eq!(ok.chain, vec![KeyPair::of(&old), KeyPair::of(&new)]);
        // The chain alone, as `check` reads it from every version of a file.
        assert_eq!(key_chain("prod", &table(&text)).unwrap(), ok.chain);
        assert!(matches!(key_chain("staging", &table(&text)), Err(ApprovalError::Endorsement { index: 0, .. })));
        assert_eq!(ok.current(), &KeyPair::of(&new));

        // An endorsement by another key than the one it is listed under.
        let path2 = dir.path().join("forged.toml");
        std::fs::write(&path2, format!("public_key = \"{}\"\n", new.public_key().to_base64())).unwrap();
        let mut forged = EnvDocument::load_or_new(&path2).unwrap();
        forged.endorse(&other, &KeyPair::of(&new));
        let listed_as_old = forged
            .render()
            .replace(&KeyPair::of(&other).public_key.to_base64(), &old.public_key().to_base64())
            .replace(&ApprovalKey::of(&other).to_base64(), &ApprovalKey::of(&old).to_base64());
        std::fs::write(&path2, listed_as_old).unwrap();
        let mut forged = EnvDocument::load_or_new(&path2).unwrap();
        forged.approve(&new).unwrap();
        let err = verify("forged", &table(&forged.render())).unwrap_err();
        assert_eq!(err, ApprovalError::Endorsement { index: 0, old: old.key_id(), new: new.key_id() });

        // The endorsement names the environment.
        let mut elsewhere = EnvDocument::load_or_new(&dir.path().join("staging.toml")).unwrap();
        elsewhere.set_public_key(new.public_key());
        elsewhere.endorse(&old, &KeyPair::of(&new));
        elsewhere.approve(&new).unwrap();
        let moved = elsewhere.render();
        assert!(verify("staging", &table(&moved)).is_ok());
        // Re-approved for prod by the new key, the old key's endorsement still names staging.
        let mut t = table(&moved);
        resign("prod", &mut t, 1, &new);
        assert!(matches!(verify("prod", &t), Err(ApprovalError::Endorsement { index: 0, .. })));
    }

    #[test]
    fn the_chain_is_read_field_by_field() {
        let dir = tempfile::tempdir().unwrap();
        let (old, new, doc) = crate::edit::tests::rotated(dir.path());
        let text = doc.render();
        let resigned = |text: String| {
            let mut t = table(&text);
            resign("prod", &mut t, 1, &new);
            t
        };
        let old_pk = old.public_key().to_base64();
        let cases = [
            (
                text.replace(&old_pk, &B64.encode([0u8; 32])),
                "previous_keys[0].public_key",
                "is a point of small order, not a real public key: anything sealed to it could be opened by anyone",
            ),
            (
                text.replace(&format!("public_key = \"{old_pk}\"\n"), ""),
                "previous_keys[0].public_key",
                "is missing, or not a string",
            ),
            (
                text.replace(&ApprovalKey::of(&old).to_base64(), "AAAA"),
                "previous_keys[0].approval_key",
                "decodes to 3 bytes; an X25519 key is 32 bytes",
            ),
            (
                text.replace("endorsement = ", "endorsement = 5\nx = "),
                "previous_keys[0].endorsement",
                "is missing, or not a string",
            ),
        ];
        for (bad, field, why) in cases {
            assert_eq!(verify("prod", &resigned(bad)).unwrap_err(), malformed(field, why));
        }
        let mut t = table(&text);
        t.insert("previous_keys".into(), 3.into());
        resign("prod", &mut t, 1, &new);
        assert_eq!(
            verify("prod", &t).unwrap_err(),
            malformed("previous_keys", "must be an array of tables ([[previous_keys]])")
        );
        t.insert("previous_keys".into(), toml::Value::Array(vec![3.into()]));
        resign("prod", &mut t, 1, &new);
        assert_eq!(verify("prod", &t).unwrap_err(), malformed("previous_keys[0]", "must be a table"));
    }

    #[test]
    fn hints_say_what_to_do_and_name_the_service() {
        let changed = ApprovalError::Signature;
        assert!(changed.hint("prod", None).contains("`cargo xtask approve --env prod`"));
        assert!(
            changed.hint("prod", Some("hello-api")).contains("`cargo xtask approve --service hello-api --env prod`")
        );
        assert!(changed.hint("prod", None).contains("`cargo xtask check` names what changed"));
        let swapped = ApprovalError::NotThisKey { committed: KeyId::of(&[1; 32]), derived: KeyId::of(&[2; 32]) };
        assert!(swapped.hint("prod", None).contains("replaced key"));
        assert!(swapped.hint("prod", Some("api")).contains("`cargo xtask rotate-key --service api --env prod`"));
        let endorsed = ApprovalError::Endorsement { index: 0, old: KeyId::of(&[1; 32]), new: KeyId::of(&[2; 32]) };
        assert!(endorsed.hint("prod", None).contains("replaced key"));
        assert!(changed.to_string().contains("differs from what was approved"));
        let runtime = ApprovalError::Runtime { service: "app".into(), why: "it differs in args".into() };
        let hint = runtime.hint("prod", None);
        assert!(hint.contains("`cargo xtask approve --service app --env prod`"), "{hint}");
        assert!(hint.ends_with("then the image is built again"), "{hint}");
        let unreadable = ApprovalError::Runtime { service: String::new(), why: "gone".into() };
        assert_eq!(unreadable.to_string(), "this image's run-time contract cannot be checked: gone");
        assert!(unreadable.hint("prod", None).contains("build the image again"));
        assert_eq!(runtime.name(), "Runtime");
        // A service name from a file is escaped in the command shown.
        assert!(changed.hint("prod", Some("a\u{1b}[2J")).contains("--service a\\u{1b}[2J --env"));
    }
}
