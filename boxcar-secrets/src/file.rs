//! Environment files: `deploy-config/<env>.toml`, with the public key, the sealed
//! values and the plain settings of one deployment environment.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::{Error, SecretFailure, SecretProblem};
use crate::key::{PublicKey, SecretKey};
use crate::names::{check_env_name, check_secret_name};
use crate::sealed::SealedValue;
use crate::value::SecretValue;

/// Largest environment file read, in bytes: far above any real one, small
/// enough that a wrong path (a disk image, say) fails fast.
const MAX_FILE_LEN: u64 = 4 * 1024 * 1024;

/// One environment file, parsed; its sealed values are not opened yet.
///
/// `Debug` shows the path, environment, key id and secret names only: a
/// `[secrets]` entry may hold a plaintext someone pasted by mistake.
pub struct EnvFile {
    path: PathBuf,
    env: String,
    public_key: PublicKey,
    /// Raw TOML value of each entry under `[secrets]`, in file order by name.
    secrets: BTreeMap<String, toml::Value>,
    table: toml::Table,
    /// The service whose file this is, for hints (`--service NAME`).
    service: Option<String>,
}

impl std::fmt::Debug for EnvFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnvFile")
            .field("path", &self.path)
            .field("env", &self.env)
            .field("key_id", &self.public_key.key_id())
            .field("secrets", &self.secrets.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl EnvFile {
    /// Reads and parses `path`; the environment is the file's stem.
    pub fn load(path: &Path) -> Result<EnvFile, Error> {
        use std::io::Read as _;
        let read = |cause| Error::Read { path: path.to_owned(), cause };
        // Bounded whatever the metadata says: a FIFO or a device (/dev/zero)
        // reports no length and never ends.
        let mut bytes = Vec::new();
        std::fs::File::open(path).and_then(|f| f.take(MAX_FILE_LEN + 1).read_to_end(&mut bytes)).map_err(read)?;
        if bytes.len() as u64 > MAX_FILE_LEN {
            return Err(Error::TooLarge { path: path.to_owned(), max: MAX_FILE_LEN });
        }
        let text = String::from_utf8(bytes).map_err(|e| Error::Toml {
            path: path.to_owned(),
            message: format!("not UTF-8 text (byte {})", e.utf8_error().valid_up_to()),
        })?;
        EnvFile::parse(path, &text)
    }

    /// Parses `text` as the content of `path` (which is not read).
    pub fn parse(path: &Path, text: &str) -> Result<EnvFile, Error> {
        let env = env_of(path)?;
        let table =
            crate::document::read_toml(text).map_err(|message| Error::Toml { path: path.to_owned(), message })?;
        let public_key = match table.get("public_key") {
            None => return Err(Error::MissingPublicKey { path: path.to_owned(), env }),
            Some(toml::Value::String(s)) => PublicKey::from_base64(s).map_err(|cause| Error::PublicKey {
                path: path.to_owned(),
                env: env.clone(),
                cause,
            })?,
            Some(_) => {
                return Err(Error::PublicKey { path: path.to_owned(), env, cause: crate::error::KeyError::Base64 });
            }
        };
        let secrets = match table.get("secrets") {
            None => BTreeMap::new(),
            Some(toml::Value::Table(t)) => t.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            Some(_) => return Err(Error::SecretsNotATable { path: path.to_owned() }),
        };
        Ok(EnvFile { path: path.to_owned(), env, public_key, secrets, table, service: None })
    }

    /// The same file, as service `service`'s: errors then say
    /// `cargo xtask approve --service NAME …`. A workspace's commands name the
    /// service when it is not the contract's default; a service in an image
    /// names itself.
    pub fn for_service(mut self, service: Option<&str>) -> EnvFile {
        self.service = service.map(str::to_owned);
        self
    }

    /// The file this was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The environment's name (the file's stem).
    pub fn env(&self) -> &str {
        &self.env
    }

    /// The environment's public key.
    pub fn public_key(&self) -> &PublicKey {
        &self.public_key
    }

    /// Names of the entries under `[secrets]`, sorted.
    pub fn secret_names(&self) -> impl Iterator<Item = &str> {
        self.secrets.keys().map(String::as_str)
    }

    /// The whole document, for the plain settings next to the secrets.
    pub fn table(&self) -> &toml::Table {
        &self.table
    }

    /// Checks the file's approval without any secret: the approval key, the
    /// signature over the content, and the endorsements of the key chain.
    pub fn approval(&self) -> Result<crate::approval::Approved, Error> {
        crate::approval::verify(&self.env, &self.table).map_err(|problem| self.unapproved(problem))
    }

    /// Checks the file's approval as a service holding `key` does: the
    /// approval key must be the one `key` derives, then as [`EnvFile::approval`].
    pub fn approval_with(&self, key: &SecretKey) -> Result<crate::approval::Approved, Error> {
        crate::approval::verify_with(&self.env, &self.table, key).map_err(|problem| self.unapproved(problem))
    }

    /// What a service does with its key: checks that `key` is this file's,
    /// that its holder approved the content ([`EnvFile::approval_with`]), then
    /// opens every value ([`EnvFile::open_all`]).
    pub fn open_approved(&self, key: &SecretKey) -> Result<Secrets, Error> {
        self.check_key(key)?;
        self.approval_with(key)?;
        self.open_all(key)
    }

    fn check_key(&self, key: &SecretKey) -> Result<(), Error> {
        if key.public_key() != &self.public_key {
            return Err(Error::WrongKey {
                path: self.path.clone(),
                env: self.env.clone(),
                expected: self.public_key.key_id(),
                given: key.key_id(),
            });
        }
        Ok(())
    }

    fn unapproved(&self, problem: crate::approval::ApprovalError) -> Error {
        let (path, env, service) = (self.path.clone(), self.env.clone(), self.service.clone());
        Error::Unapproved { path, env, service, problem: Box::new(problem) }
    }

    /// Every problem that can be found without the secret key: names, shapes,
    /// versions, base64, and values sealed to another key than this file's.
    pub fn problems(&self) -> Vec<SecretFailure> {
        self.secrets.iter().filter_map(|(name, raw)| self.parse_entry(name, raw).err().map(|f| *f)).collect()
    }

    /// Opens every secret with `key`, or none: any failure returns one error
    /// listing every failing name. The key is checked against the file's public
    /// key first, so a wrong key is never reported as tampering.
    pub fn open_all(&self, key: &SecretKey) -> Result<Secrets, Error> {
        self.check_key(key)?;
        let mut values = BTreeMap::new();
        let mut failures = Vec::new();
        for (name, raw) in &self.secrets {
            let opened = self
                .parse_entry(name, raw)
                .and_then(|sealed| sealed.open(key, &self.env, name).map_err(|e| self.failure(name, e.into())));
            match opened {
                Ok(value) => {
                    values.insert(name.clone(), value);
                }
                Err(failure) => failures.push(*failure),
            }
        }
        if !failures.is_empty() {
            // `values` is dropped here, wiping what was opened.
            return Err(Error::Secrets { path: self.path.clone(), failures });
        }
        Ok(Secrets { env: self.env.clone(), values })
    }

    // Failures are boxed on this private path to keep the `Ok` path small.
    fn parse_entry(&self, name: &str, raw: &toml::Value) -> Result<SealedValue, Box<SecretFailure>> {
        check_secret_name(name).map_err(|p| self.failure(name, SecretProblem::BadName(p)))?;
        let toml::Value::String(text) = raw else {
            return Err(self.failure(name, SecretProblem::NotAString));
        };
        let sealed = SealedValue::parse(text).map_err(|e| self.failure(name, SecretProblem::Open(e.into())))?;
        if sealed.key_id() != self.public_key.key_id() {
            let problem =
                crate::error::OpenError::KeyIdMismatch { value: sealed.key_id(), key: self.public_key.key_id() };
            return Err(self.failure(name, problem.into()));
        }
        Ok(sealed)
    }

    fn failure(&self, name: &str, problem: SecretProblem) -> Box<SecretFailure> {
        Box::new(SecretFailure { env: self.env.clone(), name: name.to_owned(), problem })
    }
}

/// Every opened secret of one environment.
#[derive(Debug)]
pub struct Secrets {
    env: String,
    values: BTreeMap<String, SecretValue>,
}

impl Secrets {
    /// The environment these belong to.
    pub fn env(&self) -> &str {
        &self.env
    }

    /// The opened value called `name`.
    pub fn get(&self, name: &str) -> Option<&SecretValue> {
        self.values.get(name)
    }

    /// Every `(name, value)`, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &SecretValue)> {
        self.values.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// How many secrets there are.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}

/// A parser error as one line: `line L, column C: message`. The parser's own
/// rendering quotes the source over several lines; problems are reported one
/// per line.
pub(crate) fn toml_message(text: &str, message: &str, span: Option<std::ops::Range<usize>>) -> String {
    let message = message.trim_end().replace('\n', "; ");
    let Some(span) = span else { return message };
    let before = &text[..span.start.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    format!("line {line}, column {column}: {message}")
}

/// The environment a file is for: its stem, which must be a valid name.
pub fn env_of(path: &Path) -> Result<String, Error> {
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
    check_env_name(stem).map_err(|problem| Error::FileName { path: path.to_owned(), problem })?;
    Ok(stem.to_owned())
}

/// The path of environment `env`'s file in `dir`.
pub fn env_file_path(dir: &Path, env: &str) -> PathBuf {
    dir.join(format!("{env}.toml"))
}

/// Every environment file in `dir`: `*.toml` except the crate's `Cargo.toml`
/// (the library and the configuration share the `deploy-config` folder), sorted.
pub fn env_files(dir: &Path) -> Result<Vec<PathBuf>, Error> {
    let read = |cause| Error::Read { path: dir.to_owned(), cause };
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(read)? {
        let path = entry.map_err(read)?.path();
        let is_toml = path.extension().is_some_and(|e| e == "toml");
        if is_toml && path.file_name().is_some_and(|n| n != "Cargo.toml") && path.is_file() {
            out.push(path);
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::OpenError;

    fn file_with(sk: &SecretKey, env: &str, secrets: &[(&str, String)]) -> String {
        let mut text = format!("public_key = \"{}\"\n[secrets]\n", sk.public_key().to_base64());
        for (k, v) in secrets {
            text.push_str(&format!("{k} = \"{v}\"\n"));
        }
        let _ = env;
        text
    }

    #[test]
    fn opens_all_or_nothing() {
        let sk = SecretKey::generate();
        let a = crate::seal(sk.public_key(), "prod", "a", b"one").unwrap().to_string();
        let b = crate::seal(sk.public_key(), "prod", "b", b"two").unwrap().to_string();
        let f = EnvFile::parse(
            Path::new("deploy-config/prod.toml"),
            &file_with(&sk, "prod", &[("a", a.clone()), ("b", b)]),
        )
        .unwrap();
        let secrets = f.open_all(&sk).unwrap();
        assert_eq!(secrets.get("a").unwrap().expose_bytes(), b"one");
        assert_eq!(secrets.len(), 2);

        // Swap the names: both fail, and nothing is returned.
        let b_as_a = crate::seal(sk.public_key(), "prod", "b", b"two").unwrap().to_string();
        let f = EnvFile::parse(Path::new("prod.toml"), &file_with(&sk, "prod", &[("a", b_as_a), ("b", a)])).unwrap();
        let err = f.open_all(&sk).unwrap_err();
        let Error::Secrets { failures, .. } = &err else { panic!("{err}") };
        assert_eq!(failures.len(), 2);
        assert!(matches!(failures[0].problem, SecretProblem::Open(OpenError::Context { .. })));
        let text = err.to_string();
        assert!(
            text.starts_with(
                "prod.toml: 2 secrets cannot be opened:\n  secrets.a sealed for environment `prod` as `b`"
            ),
            "{text}"
        );
    }

    #[test]
    fn wrong_key_names_both_key_ids() {
        let sk = SecretKey::generate();
        let other = SecretKey::generate();
        let f = EnvFile::parse(Path::new("prod.toml"), &file_with(&sk, "prod", &[])).unwrap();
        let err = f.open_all(&other).unwrap_err().to_string();
        assert!(err.contains(&sk.key_id().to_string()) && err.contains(&other.key_id().to_string()), "{err}");
    }

    #[test]
    fn problems_without_a_key() {
        let sk = SecretKey::generate();
        let other = SecretKey::generate();
        let foreign = crate::seal(other.public_key(), "prod", "x", b"1").unwrap().to_string();
        let text =
            file_with(&sk, "prod", &[("plain", "hunter2".into()), ("x", foreign), ("Bad", "sealed:v1:x".into())]);
        let f = EnvFile::parse(Path::new("prod.toml"), &text).unwrap();
        let problems: Vec<String> = f.problems().iter().map(ToString::to_string).collect();
        assert_eq!(problems.len(), 3, "{problems:#?}");
        assert!(problems[0].starts_with("secrets.Bad is not a valid secret name"));
        assert!(problems[1].starts_with("secrets.plain is not a sealed value"));
        assert!(problems[2].starts_with(&format!("secrets.x was sealed to key {}", other.key_id())));
        // Each line ends in the error's name in docs/FORMAT.md.
        assert!(problems[0].ends_with(" [SecretProblem::BadName]"), "{}", problems[0]);
        assert!(problems[1].ends_with(" [ParseError::NotSealed]"), "{}", problems[1]);
        assert!(problems[2].ends_with(" [OpenError::KeyIdMismatch]"), "{}", problems[2]);
        // The plaintext is never echoed back.
        assert!(!problems.concat().contains("hunter2"));
    }

    #[test]
    fn reading_is_bounded_whatever_the_file_is() {
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big.toml");
        std::fs::write(&big, vec![b'#'; (MAX_FILE_LEN + 1) as usize]).unwrap();
        let err = EnvFile::load(&big).unwrap_err();
        assert!(matches!(err, Error::TooLarge { .. }), "{err}");
        assert!(err.to_string().contains("is larger than 4096 KiB"), "{err}");
        // Exactly at the bound is read (and then parsed: a comment and no key).
        std::fs::write(&big, vec![b'#'; MAX_FILE_LEN as usize]).unwrap();
        assert!(matches!(EnvFile::load(&big), Err(Error::MissingPublicKey { .. })));
        // A device that never ends, and reports no length.
        let zero = dir.path().join("zero.toml");
        std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
        assert!(matches!(EnvFile::load(&zero), Err(Error::TooLarge { .. })));
        let latin1 = dir.path().join("latin.toml");
        std::fs::write(&latin1, b"# caf\xe9\n").unwrap();
        assert!(EnvFile::load(&latin1).unwrap_err().to_string().contains("not UTF-8 text (byte 5)"));
    }

    #[test]
    fn file_level_errors() {
        let p = Path::new("prod.toml");
        assert!(matches!(EnvFile::parse(p, "public_key = "), Err(Error::Toml { .. })));
        assert!(matches!(EnvFile::parse(p, "[secrets]\n"), Err(Error::MissingPublicKey { .. })));
        assert!(matches!(EnvFile::parse(p, "public_key = \"AAAA\""), Err(Error::PublicKey { .. })));
        assert!(matches!(EnvFile::parse(Path::new("Prod.toml"), ""), Err(Error::FileName { .. })));
        let sk = SecretKey::generate();
        let text = format!("public_key = \"{}\"\nsecrets = 3\n", sk.public_key().to_base64());
        assert!(matches!(EnvFile::parse(p, &text), Err(Error::SecretsNotATable { .. })));
    }
    #[test]
    fn accessors_and_debug() {
        let sk = SecretKey::generate();
        let a = crate::seal(sk.public_key(), "prod", "a", b"one").unwrap().to_string();
        let b = crate::seal(sk.public_key(), "prod", "b", b"").unwrap().to_string();
        let f = EnvFile::parse(Path::new("x/prod.toml"), &file_with(&sk, "prod", &[("b", b), ("a", a)])).unwrap();
        assert_eq!(f.secret_names().collect::<Vec<_>>(), ["a", "b"]);
        let dbg = format!("{f:?}");
        assert_eq!(
            dbg,
            format!(
                "EnvFile {{ path: \"x/prod.toml\", env: \"prod\", key_id: KeyId({}), secrets: [\"a\", \"b\"], .. }}",
                sk.key_id()
            )
        );
        let secrets = f.open_all(&sk).unwrap();
        assert!(!secrets.is_empty());
        assert_eq!(secrets.env(), "prod");
        let listed: Vec<(&str, usize)> = secrets.iter().map(|(n, v)| (n, v.len())).collect();
        assert_eq!(listed, [("a", 3), ("b", 0)]);
        let none = EnvFile::parse(Path::new("prod.toml"), &file_with(&sk, "prod", &[])).unwrap();
        assert!(none.open_all(&sk).unwrap().is_empty());
    }

    #[test]
    fn parser_errors_are_one_line_with_line_and_column() {
        assert_eq!(
            toml_message("a = 1\nb = [\n", "unclosed\narray\n", Some(10..11)),
            "line 2, column 5: unclosed; array"
        );
        assert_eq!(toml_message("x", "oops", Some(0..1)), "line 1, column 1: oops");
        assert_eq!(toml_message("x", "oops", None), "oops");
        let err = EnvFile::parse(Path::new("prod.toml"), "public_key = \"x\"\nbad = \n").unwrap_err();
        assert!(err.to_string().starts_with("prod.toml: malformed TOML: line 2, column 7:"), "{err}");
    }

    #[test]
    fn env_files_are_the_toml_files_but_cargo_toml() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["b.toml", "a.toml", "Cargo.toml", "notes.txt", "toml"] {
            std::fs::write(dir.path().join(name), "").unwrap();
        }
        std::fs::create_dir(dir.path().join("folder.toml")).unwrap();
        let found: Vec<String> = env_files(dir.path())
            .unwrap()
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(found, ["a.toml", "b.toml"]);
        assert!(matches!(env_files(&dir.path().join("missing")), Err(Error::Read { .. })));
    }
}
