//! Where secret keys live and how commands find them: key directory, key files,
//! the work-tree boundary, and the order in which a key is looked for.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use boxcar_secrets::{EnvFile, Intake, IntakeError, KeyId, SecretKey};

/// What `main` took out of the environment before anything else ran.
pub(crate) type EnvKey = Result<Option<Intake>, IntakeError>;

/// The environment to open and where its secret key is, for commands that
/// open values.
#[derive(Debug, clap::Args)]
pub(crate) struct OpenArgs {
    /// Deployment environment.
    #[arg(long, value_name = "ENV")]
    pub(crate) env: String,
    /// File holding the environment's current secret key (default: SECRET_KEY_FILE,
    /// SECRET_KEY, then the key folder's file for the environment's key id).
    #[arg(long, value_name = "PATH")]
    pub(crate) key_file: Option<PathBuf>,
}

/// What every command gets.
#[derive(Debug)]
pub(crate) struct Context {
    /// The project root, which is also the process's working directory, so
    /// paths in messages read `deploy-config/production.toml`.
    pub(crate) root: PathBuf,
    /// Where the user ran the command: relative paths they give resolve here.
    pub(crate) invoked_from: PathBuf,
    pub(crate) env_key: EnvKey,
}

impl Context {
    /// `deploy-config/` in the project.
    pub(crate) fn config_dir(&self) -> PathBuf {
        PathBuf::from("deploy-config")
    }

    /// A path the user gave, made absolute against where they ran the command.
    pub(crate) fn user_path(&self, path: &Path) -> PathBuf {
        self.invoked_from.join(path)
    }

    /// `deploy-config/<env>.toml`.
    pub(crate) fn env_path(&self, env: &str) -> PathBuf {
        boxcar_secrets::env_file_path(&self.config_dir(), env)
    }

    /// A path shown relative to the project root when it is inside it.
    pub(crate) fn show(&self, path: &Path) -> String {
        path.strip_prefix(&self.root).unwrap_or(path).display().to_string()
    }

    /// Loads `deploy-config/<env>.toml`, with a hint when it does not exist.
    pub(crate) fn load_env(&self, env: &str) -> anyhow::Result<EnvFile> {
        boxcar_secrets::check_env_name(env).map_err(|p| anyhow::anyhow!("environment name `{env}` {p}"))?;
        let path = self.env_path(env);
        if !path.exists() {
            bail!("{} does not exist; create the environment with `cargo xtask keygen --env {env}`", self.show(&path));
        }
        Ok(EnvFile::load(&path)?)
    }

    /// Finds the secret key for `file`'s environment, in this order: `--key-file`,
    /// `SECRET_KEY_FILE` or `SECRET_KEY`, then the default key file for the
    /// environment's key id. Says on stderr which one it used.
    pub(crate) fn secret_key(&mut self, file: &EnvFile, key_file: Option<&Path>) -> anyhow::Result<SecretKey> {
        let from_env = std::mem::replace(&mut self.env_key, Ok(None))?;
        let intake = match (key_file, from_env) {
            (Some(_), Some(env)) => {
                bail!("both --key-file and {} are set; give the key one way only", env_var_name(&env))
            }
            (Some(path), None) => boxcar_secrets::read_key_file(&self.user_path(path), "--key-file")?,
            (None, Some(env)) => env,
            (None, None) => {
                let path = default_key_path(file.env(), file.public_key().key_id())?;
                if !path.exists() {
                    bail!(
                        "no secret key for environment `{}` (key id {}): pass --key-file, set SECRET_KEY_FILE, \
                         or put the key at {}",
                        file.env(),
                        file.public_key().key_id(),
                        path.display()
                    );
                }
                boxcar_secrets::read_key_file(&path, "the default key location")?
            }
        };
        for warning in &intake.warnings {
            eprintln!("warning: {warning}");
        }
        eprintln!("using the secret key from {}", intake.source);
        Ok(intake.key)
    }
}

impl Context {
    /// Loads the environment file and its secret key, as `args` say.
    pub(crate) fn open(&mut self, args: &OpenArgs) -> anyhow::Result<(EnvFile, SecretKey)> {
        let file = self.load_env(&args.env)?;
        let key = self.secret_key(&file, args.key_file.as_deref())?;
        Ok((file, key))
    }
}

fn env_var_name(intake: &Intake) -> &'static str {
    match intake.source {
        boxcar_secrets::KeySource::EnvVar => "SECRET_KEY",
        boxcar_secrets::KeySource::File(_) => "SECRET_KEY_FILE",
    }
}

/// The folder for secret key files: `BOXCAR_KEY_DIR`, else
/// `$XDG_CONFIG_HOME/boxcar/keys`, else `~/.config/boxcar/keys`.
///
/// Written out rather than taken from the `dirs` crate: the rule is three lines
/// and xtask's dependency list is kept short on purpose.
pub(crate) fn key_dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("BOXCAR_KEY_DIR").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    if let Some(dir) = std::env::var_os("XDG_CONFIG_HOME").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir).join("boxcar/keys"));
    }
    match std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        Some(home) => Ok(PathBuf::from(home).join(".config/boxcar/keys")),
        None => bail!("cannot find a place for key files: set BOXCAR_KEY_DIR or HOME, or pass --out"),
    }
}

/// `<key dir>/<env>-<key id>.key`: one file per key, so rotating never
/// overwrites the key that running deployments still use.
pub(crate) fn default_key_path(env: &str, id: KeyId) -> anyhow::Result<PathBuf> {
    Ok(key_dir()?.join(format!("{env}-{id}.key")))
}

/// Refuses a key path (absolute, or relative to `root`) inside the project's work tree, where `git add -A`
/// would pick it up.
pub(crate) fn ensure_outside_work_tree(root: &Path, path: &Path) -> anyhow::Result<()> {
    let root = root.canonicalize().with_context(|| format!("resolving {}", root.display()))?;
    let absolute = root.join(path);
    // Normalise `..` lexically, then resolve symlinks in the nearest ancestor
    // that exists (the file and its folders may not exist yet), so neither
    // `..` nor a symlink can sneak a path inside.
    let mut normal = PathBuf::new();
    for part in absolute.components() {
        match part {
            std::path::Component::ParentDir => {
                normal.pop();
            }
            std::path::Component::CurDir => {}
            other => normal.push(other),
        }
    }
    let mut existing = normal.as_path();
    let mut rest = Vec::new();
    while !existing.exists() {
        rest.extend(existing.file_name().map(ToOwned::to_owned));
        existing = existing.parent().unwrap_or(Path::new("/"));
    }
    let mut resolved = existing.canonicalize().with_context(|| format!("resolving {}", existing.display()))?;
    resolved.extend(rest.iter().rev());
    if resolved.starts_with(&root) {
        bail!(
            "refusing to write a secret key inside the work tree ({}): it could be committed; \
             choose a path outside {}",
            resolved.display(),
            root.display()
        );
    }
    Ok(())
}

/// Writes a key file with mode 0600, creating its folder with mode 0700.
/// Never replaces an existing file.
pub(crate) fn write_key_file(path: &Path, key: &SecretKey) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut text = key.to_base64();
    text.push('\n');
    boxcar_secrets::write_new_atomic(path, text.as_bytes(), 0o600).with_context(|| {
        if path.exists() {
            format!("{} already exists; choose another --out or remove it first", path.display())
        } else {
            format!("writing the key file {}", path.display())
        }
    })
}

/// After a failed write of `env_file`: removes the new key file, unless the
/// file on disk already names the new public key (the rename happened and
/// only the final sync failed), in which case the key is the only way to
/// open those values and must stay.
pub(crate) fn forget_unused_key(env_file: &Path, key: &SecretKey, key_file: &Path) {
    let written = std::fs::read_to_string(env_file).is_ok_and(|t| t.contains(&key.public_key().to_base64()));
    if written {
        eprintln!(
            "warning: {} was replaced before the error; keeping the new key {}",
            env_file.display(),
            key_file.display()
        );
    } else {
        let _ = std::fs::remove_file(key_file);
    }
}

/// Every X25519 key written in base64 in `data` (padded or not, bare or as in
/// `SECRET_KEY=<key>`), with the line (from 1) it is on.
///
/// Splits on everything outside the base64 alphabet, `=` included, so a key
/// after `NAME=` or before its own padding is a run of exactly 43 characters.
pub(crate) fn base64_keys(data: &[u8]) -> Vec<(usize, SecretKey)> {
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    const LENIENT: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    let is_b64 = |b: &u8| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/');
    let mut found = Vec::new();
    let mut offset = 0;
    for run in data.split(|b| !is_b64(b)) {
        if run.len() == 43 {
            let decoded = base64::Engine::decode(&LENIENT, run).map(zeroize::Zeroizing::new);
            if let Ok(bytes) = decoded
                && let Ok(raw) = <[u8; 32]>::try_from(&bytes[..])
            {
                let line = data[..offset].iter().filter(|b| **b == b'\n').count() + 1;
                found.push((line, SecretKey::from_bytes(zeroize::Zeroizing::new(raw))));
            }
        }
        offset += run.len() + 1;
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_keys_however_they_are_written() {
        let key = SecretKey::generate();
        let b64 = key.to_base64();
        let bare = b64.trim_end_matches('=');
        for text in [
            format!("x {} y", &*b64),
            format!("SECRET_KEY={}", &*b64),
            format!("- SECRET_KEY={bare}\n"),
            format!("key: \"{}\"", &*b64),
            format!("[\"SECRET_KEY={}\"]", &*b64),
        ] {
            let found = base64_keys(format!("first line\n{text}").as_bytes());
            assert_eq!(found.len(), 1, "{text}");
            assert_eq!(found[0].0, 2);
            assert_eq!(found[0].1.public_key(), key.public_key());
        }
        assert!(base64_keys(format!("x{}", &*b64).as_bytes()).is_empty());
    }

    #[test]
    fn work_tree_boundary() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        assert!(ensure_outside_work_tree(root.path(), &root.path().join("k.key")).is_err());
        assert!(ensure_outside_work_tree(root.path(), &root.path().join("a/b/k.key")).is_err());
        assert!(ensure_outside_work_tree(root.path(), &outside.path().join("k.key")).is_ok());
        let sneaky = outside.path().join("x/../../").join(root.path().file_name().unwrap()).join("k.key");
        assert!(ensure_outside_work_tree(root.path(), &sneaky).is_err());
        std::os::unix::fs::symlink(root.path(), outside.path().join("link")).unwrap();
        assert!(ensure_outside_work_tree(root.path(), &outside.path().join("link/k.key")).is_err());
    }
}
