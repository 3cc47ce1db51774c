//! Comment-preserving edits of environment files, and atomic file writes.
//!
//! `toml_edit` keeps every byte it was not asked to change, so sealing one
//! value changes one line and a reviewer's diff shows exactly that.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use toml_edit::{DocumentMut, Item, Table, value};

use crate::approval::{self, APPROVAL_KEY, APPROVAL_TABLE, ApprovalKey, KeyPair, PREVIOUS_KEYS};
use crate::error::Error;
use crate::key::{KEY_FILE_LEN, PublicKey, SecretKey};
use crate::runtime::{BOXCAR_TABLE, SERVICES};
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
                let doc = EnvDocument::parse(path, &text)?;
                Ok(EnvDocument { exists: true, ..doc })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Ok(EnvDocument { path: path.to_owned(), env, doc: DocumentMut::new(), exists: false })
            }
            Err(source) => Err(Error::Read { path: path.to_owned(), cause: source }),
        }
    }

    /// A document for `path` from `text` (which is not read from the file):
    /// a file about to be written, to approve before it is.
    pub fn parse(path: &Path, text: &str) -> Result<EnvDocument, Error> {
        let env = crate::file::env_of(path)?;
        let doc = text.parse::<DocumentMut>().map_err(|e| Error::Toml {
            path: path.to_owned(),
            message: crate::file::toml_message(text, e.message(), e.span()),
        })?;
        Ok(EnvDocument { path: path.to_owned(), env, doc, exists: false })
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

    /// Sets what the contract gives each service of this environment at run
    /// time, `(service, run-time contract)`, as `[boxcar.services.<service>]`
    /// (docs/FORMAT.md, "Run-time approval"), replacing what was there. The
    /// next approval covers it; a service in an image checks it (A10).
    pub fn set_runtime(&mut self, services: &[(String, toml::Table)]) {
        let root = self.doc.as_table_mut();
        let decor = root.get(BOXCAR_TABLE).and_then(Item::as_table).map(|t| {
            let first =
                t.get(SERVICES).and_then(Item::as_table).and_then(|s| s.iter().next().map(|(k, _)| k.to_owned()));
            first.and_then(|k| t[SERVICES][&k].as_table().map(|s| s.decor().clone()))
        });
        root.remove(BOXCAR_TABLE);
        if services.is_empty() {
            return;
        }
        // First among the tables (the approval goes above them when it is
        // made): every other header moves down as many places.
        shift_positions(root, services.len() as isize);
        let mut list = Table::new();
        list.set_implicit(true);
        for (i, (name, runtime)) in services.iter().enumerate() {
            let mut table = Table::new();
            table.set_position(i as isize + 1);
            for (key, val) in runtime {
                match val {
                    toml::Value::Table(inner) if !inner.is_empty() => {
                        let mut dotted = Table::new();
                        dotted.set_dotted(true);
                        for (k, v) in inner {
                            dotted.insert(k, Item::Value(edit_value(v)));
                        }
                        table.insert(key, Item::Table(dotted));
                    }
                    other => {
                        table.insert(key, Item::Value(edit_value(other)));
                    }
                }
            }
            if i == 0 {
                match &decor {
                    Some(Some(decor)) => *table.decor_mut() = decor.clone(),
                    _ => table.decor_mut().set_prefix(
                        "\n# What boxcar.toml gives each service of this environment at run time, approved\n\
                         # with this file: `cargo xtask approve` writes it, `check` fails when it differs\n\
                         # from boxcar.toml, and a service in an image refuses another one.\n",
                    ),
                }
            }
            list.insert(name, Item::Table(table));
        }
        let mut outer = Table::new();
        outer.set_implicit(true);
        outer.insert(SERVICES, Item::Table(list));
        root.insert(BOXCAR_TABLE, Item::Table(outer));
    }

    /// Approves the document's content with `key`, the environment's secret
    /// key: sets `approval_key` to the key's, then writes `[approval]` with the
    /// next serial and the signature. Returns the serial. Everything else in
    /// the file stays as it was; an `[approval.entries]` table that an older
    /// boxcar wrote goes (nothing reads it: it was not signed).
    pub fn approve(&mut self, key: &SecretKey) -> Result<u64, Error> {
        self.approve_above(key, 0)
    }

    /// [`EnvDocument::approve`], with a serial above `highest` too: the
    /// highest serial approved anywhere in the file's history, so that an
    /// approval never repeats one made on another branch.
    pub fn approve_above(&mut self, key: &SecretKey, highest: u64) -> Result<u64, Error> {
        let approval_key = ApprovalKey::of(key);
        let root = self.doc.as_table_mut();
        // A new key goes after the root's other values (beside `public_key`, which
        // keygen writes first).
        set_keeping_decor(root, APPROVAL_KEY, &approval_key.to_base64());
        let previous =
            root.get(APPROVAL_TABLE).and_then(|a| a.get("serial")).and_then(Item::as_integer).filter(|n| *n >= 1);
        let serial = previous.map_or(0, |n| n as u64).max(highest) + 1;
        let table = crate::document::read_toml(&self.render())
            .map_err(|message| Error::Toml { path: self.path.clone(), message })?;
        let signature = approval::sign(&self.env, &table, serial, key).map_err(|e| Error::Unapproved {
            path: self.path.clone(),
            env: self.env.clone(),
            service: None,
            problem: Box::new(e.into()),
        })?;
        let mut approval = Table::new();
        approval.decor_mut().set_prefix(
            "\n# Approval by the holder of this environment's secret key (`cargo xtask approve`).\n\
             # Any change to this file (a setting, a value, a key) needs a new approval.\n",
        );
        approval.insert("serial", value(serial as i64));
        approval.insert("signature", value(approval::signature_text(&signature)));
        // First among the tables, right below the keys, with the comment it had:
        // a value appended to the file (`>> production.toml`) still lands in the
        // table that was last, not in the approval.
        let root = self.doc.as_table_mut();
        if let Some(Item::Table(old)) = root.remove(APPROVAL_TABLE) {
            *approval.decor_mut() = old.decor().clone();
        }
        // Every table header moves one place down, and the approval takes the
        // first after the root's (toml_edit numbers the root 0 and the tables
        // of a parsed document from 1, in order).
        shift_positions(root, 1);
        approval.set_position(1);
        root.insert(APPROVAL_TABLE, Item::Table(approval));
        Ok(serial)
    }

    /// Records that `old`, the environment's key until now, endorses `new`:
    /// appends `old`'s pair and its signature over both pairs to
    /// `[[previous_keys]]`. `rotate-key` does this before it approves.
    pub fn endorse(&mut self, old: &SecretKey, new: &KeyPair) {
        let old_pair = KeyPair::of(old);
        let signature = approval::endorse(&self.env, old, new);
        let mut entry = Table::new();
        entry.insert("public_key", value(old_pair.public_key.to_base64()));
        entry.insert("approval_key", value(old_pair.approval_key.to_base64()));
        entry.insert("endorsement", value(approval::signature_text(&signature)));
        let root = self.doc.as_table_mut();
        if !root.contains_key(PREVIOUS_KEYS) {
            let mut array = toml_edit::ArrayOfTables::new();
            entry.decor_mut().set_prefix(
                "\n# Earlier keys of this environment, oldest first; each endorsed the key after it\n\
                 # (`cargo xtask rotate-key`), so `check` can follow the chain from the first key.\n",
            );
            array.push(entry);
            root.insert(PREVIOUS_KEYS, Item::ArrayOfTables(array));
        } else if let Some(array) = root.get_mut(PREVIOUS_KEYS).and_then(Item::as_array_of_tables_mut) {
            array.push(entry);
        }
    }

    /// Removes `[[previous_keys]]` and `[approval]`: a new key that no earlier
    /// key endorses starts a new chain (`keygen --force`).
    pub fn start_new_chain(&mut self) {
        let root = self.doc.as_table_mut();
        root.remove(PREVIOUS_KEYS);
        root.remove(APPROVAL_TABLE);
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

/// A `toml` value as a `toml_edit` one: tables become inline tables.
fn edit_value(v: &toml::Value) -> toml_edit::Value {
    match v {
        toml::Value::String(s) => s.as_str().into(),
        toml::Value::Integer(i) => (*i).into(),
        toml::Value::Float(f) => (*f).into(),
        toml::Value::Boolean(b) => (*b).into(),
        toml::Value::Datetime(d) => d.to_string().into(),
        toml::Value::Array(items) => items.iter().map(edit_value).collect::<toml_edit::Array>().into(),
        toml::Value::Table(t) => {
            t.iter().map(|(k, v)| (k.clone(), edit_value(v))).collect::<toml_edit::InlineTable>().into()
        }
    }
}

/// Moves every table header under `root` (nested ones too) `by` places.
fn shift_positions(root: &mut Table, by: isize) {
    for (_, item) in root.iter_mut() {
        match item {
            Item::Table(t) => {
                if let Some(p) = t.position() {
                    t.set_position(p + by);
                }
                shift_positions(t, by);
            }
            Item::ArrayOfTables(array) => {
                for t in array.iter_mut() {
                    if let Some(p) = t.position() {
                        t.set_position(p + by);
                    }
                    shift_positions(t, by);
                }
            }
            _ => {}
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

/// The folder `path` is in: its parent, or `.` for a bare file name.
fn folder_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Writes `bytes` to `path` through a temporary file in the same folder and a
/// rename, so readers see the old content or the new, never half of one.
/// `mode` sets the permissions; `None` keeps an existing file's (or 0644).
/// The temporary file is created 0600, so a key never sits in a readable file.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: Option<u32>) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = folder_of(path);
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

/// `text`, the content of environment file `path` about to be written,
/// approved by `key`: for programs that write environment files whole (a
/// demo, tests).
pub fn approved_text(path: &Path, text: &str, key: &SecretKey) -> Result<String, Error> {
    let mut doc = EnvDocument::parse(path, text)?;
    doc.approve(key)?;
    Ok(doc.render())
}

/// Writes `key`'s key file at `path`: its base64 text and a newline, mode
/// 0600, through a temporary file, never replacing an existing file. The one
/// writer of key files; [`crate::read_key_file`] is the one reader.
pub fn write_key_file(path: &Path, key: &SecretKey) -> std::io::Result<()> {
    let text = key.to_key_file_text();
    debug_assert_eq!(text.len(), KEY_FILE_LEN);
    write_new_atomic(path, &text[..], 0o600)
}

/// Like [`write_atomic`], but fails if `path` exists: a key file is never
/// overwritten by accident.
pub fn write_new_atomic(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = folder_of(path);
    let mut tmp = tempfile::Builder::new().prefix(".boxcar-").suffix(".tmp").tempfile_in(dir)?;
    tmp.as_file().set_permissions(std::fs::Permissions::from_mode(mode))?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist_noclobber(path).map_err(|e| e.error)?;
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
pub(crate) mod tests {
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
    #[test]
    fn the_folder_of_a_bare_name_is_the_current_one() {
        assert_eq!(folder_of(Path::new("prod.toml")), Path::new("."));
        assert_eq!(folder_of(Path::new("a/prod.toml")), Path::new("a"));
        assert_eq!(folder_of(Path::new("/prod.toml")), Path::new("/"));
    }

    #[test]
    fn loading_says_what_there_is() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("prod.toml");
        let doc = EnvDocument::load_or_new(&path).unwrap();
        assert!(!doc.exists());
        assert_eq!(doc.env(), "prod");
        assert_eq!(doc.path(), path);
        assert_eq!(doc.public_key_text(), None);
        let sk = SecretKey::generate();
        let pk = sk.public_key().to_base64();
        std::fs::write(&path, format!("public_key = \"{pk}\"\n[secrets]\nb = \"x\"\na = \"y\"\n")).unwrap();
        let doc = EnvDocument::load_or_new(&path).unwrap();
        assert!(doc.exists());
        assert_eq!(doc.public_key_text(), Some(pk.as_str()));
        assert_eq!(doc.secret_names(), ["b", "a"]);
        // A path that cannot be read is an error, not a new file.
        let folder = dir.path().join("staging.toml");
        std::fs::create_dir(&folder).unwrap();
        assert!(matches!(EnvDocument::load_or_new(&folder), Err(Error::Read { .. })));
    }

    #[test]
    fn an_existing_file_gets_no_header() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("prod.toml");
        std::fs::write(&path, "# ours\n[app]\nx = 1\n").unwrap();
        let mut doc = EnvDocument::load_or_new(&path).unwrap();
        doc.set_public_key(SecretKey::generate().public_key());
        let text = doc.render();
        assert!(text.starts_with("public_key = "), "{text}");
        assert!(!text.contains("# Deployment environment"), "{text}");
    }

    #[test]
    fn each_approval_takes_the_next_serial() {
        let dir = tempfile::tempdir().unwrap();
        let sk = SecretKey::generate();
        let mut doc = EnvDocument::load_or_new(&dir.path().join("prod.toml")).unwrap();
        doc.set_public_key(sk.public_key());
        assert_eq!(doc.approve(&sk).unwrap(), 1);
        assert_eq!(doc.approve(&sk).unwrap(), 2);
        assert_eq!(doc.approve(&sk).unwrap(), 3);
        let t: toml::Table = doc.render().parse().unwrap();
        assert_eq!(crate::approval::verify("prod", &t).unwrap().serial, 3);
        // Above the highest serial of the history, when that is higher.
        assert_eq!(doc.approve_above(&sk, 7).unwrap(), 8);
        assert_eq!(doc.approve_above(&sk, 2).unwrap(), 9);
    }

    #[test]
    fn the_approval_goes_first_among_the_tables() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("prod.toml");
        let sk = SecretKey::generate();
        let text = format!(
            "public_key = \"{}\"\nnote = 1\n\n[app]\nx = 1\n[app.sub]\ny = 2\n\n[[items]]\nname = \"a\"\n\n[[items]]\nname = \"b\"\n\n[secrets]\n",
            sk.public_key().to_base64()
        );
        let approved = approved_text(&path, &text, &sk).unwrap();
        let headers: Vec<&str> = approved.lines().filter(|l| l.starts_with('[')).collect();
        assert_eq!(headers, ["[approval]", "[app]", "[app.sub]", "[[items]]", "[[items]]", "[secrets]"]);
        let first_header = approved.find("\n[").unwrap();
        assert!(approved[..first_header].contains("note = 1"), "{approved}");
        let t: toml::Table = approved.parse().unwrap();
        assert!(crate::approval::verify_with("prod", &t, &sk).is_ok());
        // Only arrays of tables: the approval still goes first.
        let only_arrays = format!("public_key = \"{}\"\n[[items]]\nname = \"a\"\n", sk.public_key().to_base64());
        let approved = approved_text(&path, &only_arrays, &sk).unwrap();
        let headers: Vec<&str> = approved.lines().filter(|l| l.starts_with('[')).collect();
        assert_eq!(headers, ["[approval]", "[[items]]"]);
        // Approving again keeps one approval, in the same place.
        let again = approved_text(&path, &approved, &sk).unwrap();
        let headers: Vec<&str> = again.lines().filter(|l| l.starts_with('[')).collect();
        assert_eq!(headers, ["[approval]", "[[items]]"]);
        // The unsigned fingerprints an older boxcar wrote go at the next approval.
        let older = again.replace("[[items]]", "[approval.entries]\npublic_key = \"00\"\n\n[[items]]");
        let cleaned = approved_text(&path, &older, &sk).unwrap();
        assert!(!cleaned.contains("entries"), "{cleaned}");
        // A value appended to the file lands in the last table, as before.
        let appended: toml::Table = format!("{again}extra = 1\n").parse().unwrap();
        assert!(appended["items"][0].get("extra").is_some());
    }

    #[test]
    fn the_run_time_contract_sits_below_the_approval_and_is_approved() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("prod.toml");
        let sk = SecretKey::generate();
        let text = format!("public_key = \"{}\"\n\n[app]\nx = 1\n", sk.public_key().to_base64());
        let runtime: toml::Table = toml::from_str(
            "bin = \"app\"\nargs = [\"serve\"]\nenv = { B = \"2\", A = \"1\" }\nprobe_env = {}\n\
             files = [{ to = \"/etc/x\", mode = \"0444\", sha256 = \"ab\" }]\n",
        )
        .unwrap();
        let mut doc = EnvDocument::parse(&path, &text).unwrap();
        doc.set_runtime(&[("app".to_owned(), runtime.clone()), ("worker".to_owned(), toml::Table::new())]);
        doc.approve(&sk).unwrap();
        let out = doc.render();
        let headers: Vec<&str> = out.lines().filter(|l| l.starts_with('[')).collect();
        assert_eq!(headers, ["[approval]", "[boxcar.services.app]", "[boxcar.services.worker]", "[app]"], "{out}");
        assert!(out.contains("\nenv.A = \"1\"\nenv.B = \"2\"\n"), "{out}");
        assert!(out.contains("\nprobe_env = {}\n"), "{out}");
        assert!(out.contains("# What boxcar.toml gives each service"), "{out}");
        let t = crate::read_toml(&out).unwrap();
        assert!(crate::approval::verify_with("prod", &t, &sk).is_ok());
        assert_eq!(crate::runtime::approved_runtime(&t, "app"), Some(&runtime));
        assert_eq!(crate::runtime::approved_runtime(&t, "worker"), Some(&toml::Table::new()));
        // Set again with one service: the other goes, the comment stays, and
        // the file is no longer approved until it is approved again.
        let mut doc = EnvDocument::parse(&path, &out).unwrap();
        doc.set_runtime(&[("app".to_owned(), runtime.clone())]);
        let again = doc.render();
        assert!(!again.contains("worker"), "{again}");
        assert_eq!(again.matches("# What boxcar.toml gives each service").count(), 1, "{again}");
        let t = crate::read_toml(&again).unwrap();
        assert!(crate::approval::verify("prod", &t).is_err());
        // A comment of the file's own above the table stays where it was.
        let ours = again.replace(
            "# What boxcar.toml gives each service of this environment at run time, approved\n",
            "# Ours: reviewed by the ops team.\n",
        );
        let mut doc = EnvDocument::parse(&path, &ours).unwrap();
        doc.set_runtime(&[("app".to_owned(), runtime)]);
        let kept = doc.render();
        assert!(kept.contains("# Ours: reviewed by the ops team.\n"), "{kept}");
        assert!(!kept.contains("# What boxcar.toml gives each service"), "{kept}");
        // None: the table goes.
        let mut doc = EnvDocument::parse(&path, &again).unwrap();
        doc.set_runtime(&[]);
        assert!(!doc.render().contains("boxcar"), "{}", doc.render());
    }

    #[test]
    fn crlf_files_are_approved_as_their_lf_selves() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("prod.toml");
        let sk = SecretKey::generate();
        let text =
            format!("public_key = \"{}\"\r\n[app]\r\nnote = \"\"\"\r\nline\r\n\"\"\"\r\n", sk.public_key().to_base64());
        let approved = approved_text(&path, &text, &sk).unwrap();
        assert!(approved.contains("line\r\n"), "toml_edit keeps the file's line breaks");
        let lf = approved.replace("\r\n", "\n");
        for text in [&approved, &lf] {
            let file = crate::EnvFile::parse(&path, text).unwrap();
            assert_eq!(file.table()["app"]["note"].as_str(), Some("line\n"));
            assert!(file.approval_with(&sk).is_ok());
        }
    }

    /// `prod.toml` in `dir` after a rotation from `old` to `new`, approved
    /// by `new`: `(old, new, document)`.
    pub(crate) fn rotated(dir: &Path) -> (SecretKey, SecretKey, EnvDocument) {
        let (old, new) = (SecretKey::generate(), SecretKey::generate());
        let mut doc = EnvDocument::load_or_new(&dir.join("prod.toml")).unwrap();
        doc.set_public_key(new.public_key());
        doc.endorse(&old, &KeyPair::of(&new));
        doc.approve(&new).unwrap();
        (old, new, doc)
    }

    #[test]
    fn a_new_chain_forgets_the_old_one() {
        let dir = tempfile::tempdir().unwrap();
        let (_, _, mut doc) = rotated(dir.path());
        assert!(doc.render().contains("[[previous_keys]]"));
        doc.start_new_chain();
        let text = doc.render();
        assert!(!text.contains("previous_keys") && !text.contains("[approval]"), "{text}");
    }

    #[test]
    fn writes_keep_the_mode_and_key_files_are_private() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("prod.toml");
        std::fs::write(&path, "old").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        write_atomic(&path, b"new", None).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o7777, 0o640);
        let key_path = dir.path().join("prod.key");
        let sk = SecretKey::generate();
        write_key_file(&key_path, &sk).unwrap();
        assert_eq!(std::fs::read(&key_path).unwrap(), format!("{}\n", &*sk.to_base64()).as_bytes());
        assert_eq!(std::fs::metadata(&key_path).unwrap().permissions().mode() & 0o777, 0o600);
        assert!(write_key_file(&key_path, &SecretKey::generate()).is_err());
        assert_eq!(crate::read_key_file(&key_path, "test").unwrap().key.public_key(), sk.public_key());
    }
}
