//! Where secret keys live: the key folder, key files (written 0600, never
//! replaced), the work-tree boundary, and the public keys this machine sealed
//! to (`KnownKeys`).

use std::path::{Path, PathBuf};

use boxcar_secrets::{KeyId, SecretKey};

/// What goes wrong finding a place for a key or writing one.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("cannot find a place for key files: set BOXCAR_KEY_DIR or HOME, or pass --out")]
    NoKeyDir,
    #[error(
        "refusing to write a secret key inside the work tree ({}): it could be committed; choose a path outside {}",
        .path.display(),
        .root.display()
    )]
    InsideWorkTree { path: PathBuf, root: PathBuf },
    #[error("{} already exists; choose another --out or remove it first", .path.display())]
    KeyFileExists { path: PathBuf, source: std::io::Error },
    /// Reading, creating or writing a file or folder (`doing` says which).
    #[error("{doing} {}", .path.display())]
    Io { doing: &'static str, path: PathBuf, source: std::io::Error },
}

fn io(doing: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.to_owned();
    move |source| Error::Io { doing, path, source }
}

/// The folder for secret key files: `BOXCAR_KEY_DIR`, else
/// The key folder inside the configuration folder (`$XDG_CONFIG_HOME`, else `~/.config`).
const KEY_SUBDIR: &str = "boxcar/keys";

/// The default key folder as a person types it, for instructions.
pub(crate) fn default_key_dir_shown() -> String {
    format!("~/.config/{KEY_SUBDIR}/")
}

/// `$XDG_CONFIG_HOME/boxcar/keys`, else `~/.config/boxcar/keys`.
///
/// Written out rather than taken from the `dirs` crate: the rule is three lines
/// and xtask's dependency list is kept short on purpose.
pub fn key_dir() -> Result<PathBuf, Error> {
    if let Some(dir) = std::env::var_os("BOXCAR_KEY_DIR").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    if let Some(dir) = std::env::var_os("XDG_CONFIG_HOME").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir).join(KEY_SUBDIR));
    }
    match std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        Some(home) => Ok(PathBuf::from(home).join(".config").join(KEY_SUBDIR)),
        None => Err(Error::NoKeyDir),
    }
}

/// `<key dir>/<env>-<key id>.key`: one file per key, so rotating never
/// overwrites the key that running deployments still use.
pub fn default_key_path(env: &str, id: KeyId) -> Result<PathBuf, Error> {
    Ok(key_dir()?.join(format!("{env}-{id}.key")))
}

/// Refuses a key path (absolute, or relative to `root`) inside the project's work tree, where `git add -A`
/// would pick it up.
pub fn ensure_outside_work_tree(root: &Path, path: &Path) -> Result<(), Error> {
    let root = root.canonicalize().map_err(io("resolving", root))?;
    let absolute = root.join(path);
    // Walk the path as the kernel would: each part that exists is resolved
    // (symlinks followed) before a later `..` takes a step back, so
    // `outside/link/../k.key` with `link` pointing into the work tree is
    // seen where it really is. Parts that do not exist yet are taken as written.
    let mut resolved = PathBuf::from("/");
    for part in absolute.components() {
        match part {
            std::path::Component::RootDir | std::path::Component::Prefix(_) | std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                resolved.pop();
            }
            std::path::Component::Normal(name) => {
                let next = resolved.join(name);
                resolved = match next.canonicalize() {
                    Ok(real) => real,
                    Err(_) => next,
                };
            }
        }
    }
    if resolved.starts_with(&root) {
        return Err(Error::InsideWorkTree { path: resolved, root });
    }
    Ok(())
}

/// Writes a key file with mode 0600, creating its folder with mode 0700.
/// Never replaces an existing file.
pub fn write_key_file(path: &Path, key: &SecretKey) -> Result<(), Error> {
    use std::os::unix::fs::DirBuilderExt as _;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(io("creating", dir))?;
    }
    boxcar_secrets::write_key_file(path, key).map_err(|source| {
        if path.exists() {
            Error::KeyFileExists { path: path.to_owned(), source }
        } else {
            Error::Io { doing: "writing the key file", path: path.to_owned(), source }
        }
    })
}

/// After a failed write of `env_file`: removes the new key file, unless the
/// file on disk already names the new public key (the rename happened and
/// only the final sync failed), in which case the key is the only way to
/// open those values and must stay.
pub fn forget_unused_key(env_file: &Path, key: &SecretKey, key_file: &Path) {
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

/// The public keys this machine sealed to, per repository and environment:
/// `known-public-keys.toml` in the key folder.
pub(crate) struct KnownKeys {
    path: Option<std::path::PathBuf>,
    table: toml::Table,
}

impl KnownKeys {
    pub(crate) fn load() -> KnownKeys {
        let path = crate::vocab::keys::key_dir().ok().map(|d| d.join("known-public-keys.toml"));
        let table = path
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .and_then(|t| t.parse().ok())
            .unwrap_or_default();
        KnownKeys { path, table }
    }

    fn repo(root: &std::path::Path) -> String {
        root.canonicalize().unwrap_or_else(|_| root.to_owned()).display().to_string()
    }

    pub(crate) fn get(&self, root: &std::path::Path, env: &str) -> Option<boxcar_secrets::PublicKey> {
        let text = self.table.get(&KnownKeys::repo(root))?.get(env)?.as_str()?;
        boxcar_secrets::PublicKey::from_base64(text).ok()
    }

    pub(crate) fn remember(
        mut self,
        root: &std::path::Path,
        env: &str,
        key: &boxcar_secrets::PublicKey,
    ) -> Result<(), Error> {
        let Some(path) = self.path.take() else { return Err(Error::NoKeyDir) };
        let repo = self.table.entry(KnownKeys::repo(root)).or_insert_with(|| toml::Table::new().into());
        if let Some(t) = repo.as_table_mut() {
            t.insert(env.to_owned(), key.to_base64().into());
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io("creating", dir))?;
        }
        // A table of tables of strings: always serializable, and written
        // whole (`Display` of a `toml::Table` is its TOML document).
        let text = format!(
            "# Public keys `cargo xtask encrypt-secret` sealed to, per repository and environment;\n\
             # a changed one is refused without --accept-new-key.\n{}",
            self.table
        );
        boxcar_secrets::write_atomic(&path, text.as_bytes(), Some(0o600)).map_err(io("writing", &path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        // A symlink is followed before `..` steps back: `deep` is inside the
        // work tree, so `deep/..` is the work tree, not `outside`.
        std::fs::create_dir(root.path().join("sub")).unwrap();
        std::os::unix::fs::symlink(root.path().join("sub"), outside.path().join("deep")).unwrap();
        assert!(ensure_outside_work_tree(root.path(), &outside.path().join("deep/../k.key")).is_err());
        assert!(ensure_outside_work_tree(root.path(), &outside.path().join("deep/../../k.key")).is_ok());
        // Relative paths are taken from the root.
        assert!(ensure_outside_work_tree(root.path(), Path::new("k.key")).is_err());
    }
}
