//! Typed errors: each names the file and field it is about and says what to do.
//!
//! Each message carries its cause in its own text, so the causes are plain
//! fields (`cause`), not `source()`s that a report would print a second time.
//! No variant holds secret bytes, so printing any of them (or their `Debug`)
//! can never leak a key or a value.

use std::path::PathBuf;

use crate::key::KeyId;

/// A key that cannot be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Nothing was given.
    #[error("is empty")]
    Empty,
    /// Not standard base64.
    #[error("is not valid base64 (standard alphabet, with `=` padding)")]
    Base64,
    /// Decodes, but not to 32 bytes.
    #[error("decodes to {found} bytes; an X25519 key is 32 bytes")]
    Length {
        /// How many bytes it decoded to.
        found: usize,
    },
    /// A public key that is not the one encoding of its point (bit 255 set, or
    /// at or above 2^255 - 19).
    #[error("is not a canonical X25519 public key (no key pair has it)")]
    NonCanonical,
    /// A public key of small order: anything sealed to it can be opened by anyone.
    #[error("is a point of small order, not a real public key: anything sealed to it could be opened by anyone")]
    SmallOrder,
}

/// A sealed value's text that cannot be parsed (no key needed to tell).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Does not start with `sealed:`: most likely a plaintext secret.
    #[error("is not a sealed value (it does not start with `sealed:`); a plaintext secret must never be committed")]
    NotSealed,
    /// Not `sealed:<version>:<key id>:<base64>`.
    #[error("is not of the form `sealed:v1:<key id>:<base64>`")]
    Shape,
    /// A version this build does not know.
    #[error(
        "has unknown format version `{found}`; this build reads `v1` only (is boxcar older than the tool that sealed it?)"
    )]
    UnknownVersion {
        /// The version text found (control characters escaped).
        found: String,
    },
    /// The key id is not 16 lower-case hex digits.
    #[error("has a malformed key id (expected 16 lower-case hex digits)")]
    KeyId,
    /// The body is not standard base64.
    #[error("has a body that is not valid base64 (standard alphabet, with `=` padding)")]
    Base64,
    /// The body is shorter than the smallest possible sealed frame.
    #[error("is truncated: its body is {found} bytes, shorter than any sealed value")]
    TooShort {
        /// Length of the decoded body.
        found: usize,
    },
}

/// A value that cannot be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// The text does not parse.
    #[error(transparent)]
    Parse(#[from] ParseError),
    /// The value names another key than the one given.
    #[error("was sealed to key {value}, not to key {key}")]
    KeyIdMismatch {
        /// Key id written in the value.
        value: KeyId,
        /// Key id of the key given.
        key: KeyId,
    },
    /// Authentication failed: the ciphertext was altered or truncated.
    #[error("fails authentication: the sealed bytes were altered or truncated")]
    Decrypt,
    /// Authentic, but the framed plaintext inside is malformed.
    #[error("opens, but its framed plaintext is malformed ({why})")]
    Frame {
        /// What is wrong with it.
        why: &'static str,
    },
    /// Authentic, but sealed for another environment or name.
    #[error(
        "sealed for environment `{sealed_env}` as `{sealed_name}`, but found in environment `{env}` as `{name}`; \
         values cannot be copied between environments or names: seal it again with \
         `cargo xtask encrypt-secret --env {env} {name}`"
    )]
    Context {
        /// Environment named inside the value.
        sealed_env: String,
        /// Secret name inside the value.
        sealed_name: String,
        /// Environment it was opened for.
        env: String,
        /// Name it was opened as.
        name: String,
    },
}

/// One secret of an environment file that is not right.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretFailure {
    /// Environment the file is for.
    pub env: String,
    /// The secret's name (its key under `[secrets]`).
    pub name: String,
    /// What is wrong.
    pub problem: SecretProblem,
}

/// What is wrong with one secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretProblem {
    /// The value cannot be parsed or opened.
    #[error(transparent)]
    Open(#[from] OpenError),
    /// The TOML value is not a string.
    #[error("must be a string holding a sealed value")]
    NotAString,
    /// The key is not a valid secret name.
    #[error("is not a valid secret name: it {0}")]
    BadName(String),
}

impl std::fmt::Display for SecretFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "secrets.{} {}", crate::show::escape(&self.name), self.problem)?;
        // Context errors already carry their fix.
        if !matches!(self.problem, SecretProblem::Open(OpenError::Context { .. }) | SecretProblem::BadName(_)) {
            write!(
                f,
                "; seal it with `cargo xtask encrypt-secret --env {} {}`",
                self.env,
                crate::show::escape(&self.name)
            )?;
        }
        // The name docs/FORMAT.md gives the error, for tools to match on.
        write!(f, " [{}]", self.problem.name())
    }
}

impl SecretProblem {
    /// The error's name in docs/FORMAT.md (`ParseError::NotSealed`, …).
    pub fn name(&self) -> &'static str {
        match self {
            SecretProblem::Open(e) => e.name(),
            SecretProblem::NotAString => "SecretProblem::NotAString",
            SecretProblem::BadName(_) => "SecretProblem::BadName",
        }
    }
}

impl OpenError {
    /// The error's name in docs/FORMAT.md.
    pub fn name(&self) -> &'static str {
        match self {
            OpenError::Parse(e) => e.name(),
            OpenError::KeyIdMismatch { .. } => "OpenError::KeyIdMismatch",
            OpenError::Decrypt => "OpenError::Decrypt",
            OpenError::Frame { .. } => "OpenError::Frame",
            OpenError::Context { .. } => "OpenError::Context",
        }
    }
}

impl ParseError {
    /// The error's name in docs/FORMAT.md.
    pub fn name(&self) -> &'static str {
        match self {
            ParseError::NotSealed => "ParseError::NotSealed",
            ParseError::Shape => "ParseError::Shape",
            ParseError::UnknownVersion { .. } => "ParseError::UnknownVersion",
            ParseError::KeyId => "ParseError::KeyId",
            ParseError::Base64 => "ParseError::Base64",
            ParseError::TooShort { .. } => "ParseError::TooShort",
        }
    }
}

/// An environment file that cannot be loaded or opened.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file cannot be read.
    #[error("cannot read {}: {cause}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        cause: std::io::Error,
    },
    /// The file name is not `<env>.toml` with a valid environment name.
    #[error("{}: the file name is not a valid environment name: it {problem}", path.display())]
    FileName {
        /// The file.
        path: PathBuf,
        /// What is wrong with the name.
        problem: String,
    },
    /// The file is larger than any environment file.
    #[error("{}: the file is larger than {} KiB; this is not an environment file", path.display(), max / 1024)]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The bound, in bytes.
        max: u64,
    },
    /// The file is not valid TOML.
    #[error("{}: malformed TOML: {message}", path.display())]
    Toml {
        /// The file.
        path: PathBuf,
        /// The parser's message, with line and column.
        message: String,
    },
    /// No `public_key`.
    #[error("{}: `public_key` is missing; create a key pair with `cargo xtask keygen --env {env}`", path.display())]
    MissingPublicKey {
        /// The file.
        path: PathBuf,
        /// Its environment.
        env: String,
    },
    /// `public_key` cannot be decoded.
    #[error("{}: `public_key` {cause}; restore it from git or make a new pair with `cargo xtask keygen --env {env} --force`", path.display())]
    PublicKey {
        /// The file.
        path: PathBuf,
        /// Its environment.
        env: String,
        /// What is wrong with it.
        cause: KeyError,
    },
    /// `secrets` is not a table.
    #[error("{}: `secrets` must be a table of `name = \"sealed:…\"` entries", path.display())]
    SecretsNotATable {
        /// The file.
        path: PathBuf,
    },
    /// The secret key does not belong to this environment.
    #[error(
        "{}: the secret key given has key id {given}, but environment `{env}` uses key id {expected}; \
         use the key that `cargo xtask keygen --env {env}` wrote (its file name ends in `-{expected}.key`) [Error::WrongKey]",
        path.display()
    )]
    WrongKey {
        /// The file.
        path: PathBuf,
        /// Its environment.
        env: String,
        /// Key id of the file's public key.
        expected: KeyId,
        /// Key id of the key given.
        given: KeyId,
    },
    /// The content is not approved by the environment's key.
    #[error(
        "{}: {problem}; {} [ApprovalError::{}]",
        path.display(),
        problem.hint(env, service.as_deref()),
        problem.name()
    )]
    Unapproved {
        /// The file.
        path: PathBuf,
        /// Its environment.
        env: String,
        /// The service whose file it is, when the command named one: the
        /// hint names it (`--service NAME`).
        service: Option<String>,
        /// Why it is not approved (boxed: the other variants are small).
        problem: Box<crate::approval::ApprovalError>,
    },
    /// One or more secrets cannot be opened; none were returned.
    #[error("{}: {} cannot be opened:{}", path.display(), plural(failures.len()), list(failures))]
    Secrets {
        /// The file.
        path: PathBuf,
        /// Every failing secret.
        failures: Vec<SecretFailure>,
    },
}

fn plural(n: usize) -> String {
    if n == 1 { "1 secret".to_owned() } else { format!("{n} secrets") }
}

fn list(failures: &[SecretFailure]) -> String {
    failures.iter().map(|f| format!("\n  {f}")).collect()
}

/// Errors of `SealedValue` creation.
#[cfg(feature = "seal")]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// Invalid environment name.
    #[error("environment name `{env}` {problem}")]
    EnvName {
        /// The name.
        env: String,
        /// What is wrong.
        problem: String,
    },
    /// Invalid secret name.
    #[error("secret name `{name}` {problem}")]
    SecretName {
        /// The name.
        name: String,
        /// What is wrong.
        problem: String,
    },
    /// The value is over the size limit.
    #[error("the value is {found} bytes; at most 65536 can be sealed")]
    TooLong {
        /// Its length.
        found: usize,
    },
    /// The cipher refused (does not happen with valid input).
    #[error("encryption failed")]
    Encrypt,
}

/// The secret key could not be taken from the environment.
#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    /// The process has other threads, so its environment cannot be changed safely.
    #[error(
        "the secret key must be taken before any other thread starts (first thing in `main`), but this process has {}; \
         nothing was read or changed",
        match count { Some(n) => format!("{n} threads"), None => "threads that /proc/self/task cannot count".to_owned() }
    )]
    Threads {
        /// How many threads there were, if they could be counted.
        count: Option<usize>,
    },
    /// Both `SECRET_KEY` and `SECRET_KEY_FILE` are set.
    #[error(
        "both SECRET_KEY and SECRET_KEY_FILE are set; set only one (SECRET_KEY_FILE is preferred: environment variables show in `docker inspect`)"
    )]
    Both,
    /// `SECRET_KEY` is not valid Unicode.
    #[error("SECRET_KEY is not valid text; it must be the base64 key that keygen wrote")]
    NotUnicode,
    /// `SECRET_KEY` cannot be decoded.
    #[error("SECRET_KEY {0}; it must be the base64 key that keygen wrote")]
    EnvKey(KeyError),
    /// The key file cannot be read.
    #[error("cannot read the key file {} (from {origin}): {cause}", path.display())]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// Where its path came from.
        origin: &'static str,
        /// Why.
        cause: std::io::Error,
    },
    /// The key file's content cannot be decoded.
    #[error("the key file {} {cause}; it must hold the base64 key that keygen wrote", path.display())]
    FileKey {
        /// The file.
        path: PathBuf,
        /// What is wrong with the content.
        cause: KeyError,
    },
}
