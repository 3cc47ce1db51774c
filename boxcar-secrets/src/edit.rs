//! Comment-preserving edits of environment files, and atomic file writes.
//!
//! `toml_edit` keeps every byte it was not asked to change, so sealing one
//! value changes one line and a reviewer's diff shows exactly that.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use toml_edit::{DocumentMut, Item, Table, value};

use crate::error::Error;
use crate::key::PublicKey;
use crate::sealed::SealedValue;

/// An environment file opened for editing.
#[derive(Debug)]
pub struct EnvDocument {
    path: PathBuf,
    env: String,
    doc: DocumentMut,
    exists: bool,
}

impl EnvDocument {
    /// Opens `path` for editing; a missing file gives a new document with a
    /// header comment that says what the file is.
    pub fn load_or_new(path: &Path) -> Result<EnvDocument, Error> {
        let env = crate::file::env_of(path)?;
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let doc = text.parse::<DocumentMut>().map_err(|e| Error::Toml {
                    path: path.to_owned(),
                    message: crate::file::toml_message(&text, e.message(), e.span()),
                })?;
                Ok(EnvDocument { path: path.to_owned(), env, doc, exists: true })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Ok(EnvDocument { path: path.to_owned(), env, doc: DocumentMut::new(), exists: false })
            }
            Err(source) => Err(Error::Read { path: path.to_owned(), source }),
        }
    }

    /// Whether the file existed when it was loaded.
    pub fn exists(&self) -> bool {
        self.exists
    }

    /// The environment name.
    pub fn env(&self) -> &str {
        &self.env
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The raw text of `public_key`, if there is one.
    pub fn public_key_text(&self) -> Option<&str> {
        self.doc.get("public_key").and_then(Item::as_str)
    }

    /// Sets `public_key`, keeping the comments around it.
    pub fn set_public_key(&mut self, key: &PublicKey) {
        let root = self.doc.as_table_mut();
        let fresh = !root.contains_key("public_key");
        set_keeping_decor(root, "public_key", &key.to_base64());
        if fresh && !self.exists {
            // A new file: the header goes above its first entry.
            if let Some(mut k) = root.key_mut("public_key") {
                k.leaf_decor_mut().set_prefix(header(&self.env));
            }
        }
    }

    /// Names under `[secrets]`, in file order.
    pub fn secret_names(&self) -> Vec<String> {
        self.doc
            .get("secrets")
            .and_then(Item::as_table)
            .map(|t| t.iter().map(|(k, _)| k.to_owned()).collect())
            .unwrap_or_default()
    }

    /// Writes `name = "<sealed>"` under `[secrets]`, replacing an existing entry
    /// in place or appending a new one. Returns whether it replaced one.
    pub fn set_secret(&mut self, name: &str, sealed: &SealedValue) -> Result<bool, Error> {
        let root = self.doc.as_table_mut();
        if !root.contains_key("secrets") {
            let mut table = Table::new();
            table
                .decor_mut()
                .set_prefix("\n# Sealed values: `printf %s \"$VALUE\" | cargo xtask encrypt-secret --env ENV NAME`.\n");
            root.insert("secrets", Item::Table(table));
        }
        let Some(secrets) = root.get_mut("secrets").and_then(Item::as_table_mut) else {
            return Err(Error::SecretsNotATable { path: self.path.clone() });
        };
        let replaced = secrets.contains_key(name);
        set_keeping_decor(secrets, name, &sealed.to_string());
        Ok(replaced)
    }

    /// The document's text.
    pub fn render(&self) -> String {
        self.doc.to_string()
    }

    /// Writes the document atomically, keeping the file's mode.
    pub fn write(&self) -> std::io::Result<()> {
        write_atomic(&self.path, self.render().as_bytes(), None)
    }
}

fn set_keeping_decor(table: &mut Table, key: &str, text: &str) {
    let mut new = value(text);
    // Replace the value in place: `Table::insert` would also replace the key,
    // and with it the comment lines above the entry.
    match table.get_mut(key) {
        Some(item) => {
            if let (Some(old), Some(v)) = (item.as_value(), new.as_value_mut()) {
                *v.decor_mut() = old.decor().clone();
            }
            *item = new;
        }
        None => {
            table.insert(key, new);
        }
    }
}

fn header(env: &str) -> String {
    format!(
        "# Deployment environment `{env}`, managed by `cargo xtask`.\n\
         # Safe to commit: the values under [secrets] are sealed to `public_key` and only\n\
         # this environment's secret key (kept outside the repository) can open them.\n\
         \n"
    )
}

/// Writes `bytes` to `path` through a temporary file in the same folder and a
/// rename, so readers see the old content or the new, never half of one.
/// `mode` sets the permissions; `None` keeps an existing file's (or 0644).
/// The temporary file is created 0600, so a key never sits in a readable file.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: Option<u32>) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mode =
        mode.unwrap_or_else(|| std::fs::metadata(path).map(|m| m.permissions().mode() & 0o7777).unwrap_or(0o644));
    let mut tmp = tempfile::Builder::new().prefix(".boxcar-").suffix(".tmp").tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.as_file().set_permissions(std::fs::Permissions::from_mode(mode))?;
    tmp.persist(path).map_err(|e| e.error)?;
    // Make the rename itself durable.
    std::fs::File::open(dir)?.sync_all()
}

/// Like [`write_atomic`], but fails if `path` exists: a key file is never
/// overwritten by accident.
pub fn write_new_atomic(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new().prefix(".boxcar-").suffix(".tmp").tempfile_in(dir)?;
    tmp.as_file().set_permissions(std::fs::Permissions::from_mode(mode))?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist_noclobber(path).map_err(|e| e.error)?;
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::SecretKey;

    #[test]
    fn edits_keep_every_other_byte() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("prod.toml");
        let sk = SecretKey::generate();
        let original = format!(
            "# top comment\npublic_key = \"{}\" # trailing\n\n[app]\nlisten = \"0.0.0.0:9000\"  # odd   spacing\n\n[secrets]\n# about a\na = \"sealed:v1:old\" # keep me\nb = 'x'\n",
            sk.public_key().to_base64()
        );
        std::fs::write(&path, &original).unwrap();
        let mut doc = EnvDocument::load_or_new(&path).unwrap();
        let sealed = crate::seal(sk.public_key(), "prod", "a", b"v").unwrap();
        assert!(doc.set_secret("a", &sealed).unwrap());
        let sealed_c = crate::seal(sk.public_key(), "prod", "c", b"v").unwrap();
        assert!(!doc.set_secret("c", &sealed_c).unwrap());
        let out = doc.render();
        let old: Vec<&str> = original.lines().collect();
        let new: Vec<&str> = out.lines().collect();
        assert_eq!(new.len(), old.len() + 1);
        for (i, (o, n)) in old.iter().zip(&new).enumerate() {
            if o.starts_with("a = ") {
                assert_eq!(*n, format!("a = \"{sealed}\" # keep me"));
            } else {
                assert_eq!(o, n, "line {i} changed");
            }
        }
        assert_eq!(new.last().unwrap(), &format!("c = \"{sealed_c}\""));
    }

    #[test]
    fn new_file_has_header_and_parses() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("staging.toml");
        let mut doc = EnvDocument::load_or_new(&path).unwrap();
        assert!(!doc.exists());
        let sk = SecretKey::generate();
        doc.set_public_key(sk.public_key());
        doc.write().unwrap();
        let f = crate::EnvFile::load(&path).unwrap();
        assert_eq!(f.public_key(), sk.public_key());
        assert!(std::fs::read_to_string(&path).unwrap().starts_with("# Deployment environment `staging`"));
    }

    #[test]
    fn write_new_refuses_to_overwrite() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        write_new_atomic(&path, b"one", 0o600).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert!(write_new_atomic(&path, b"two", 0o600).is_err());
        assert_eq!(std::fs::read(&path).unwrap(), b"one");
    }
}
