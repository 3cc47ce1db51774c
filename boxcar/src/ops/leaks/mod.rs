//! Committed secret keys: every 32-byte value a file holds in a form a key is
//! written in, which files are scanned and how much of each, and the public
//! keys (current and retired) whose secret keys `check` looks for.
//!
//! The scanner does not know which keys matter: it derives the public key of
//! every candidate, and the caller compares that with the public keys it knows.
//! The comparison is exact, so a public key, a hash or a test vector in a file
//! is never reported, only a secret key of a known public key.
//!
//! Finding keys in bytes is `scan`; which files are read, and why one is not,
//! is `files`; this file holds what the keys are and what a leak means.

mod files;
mod scan;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use boxcar_secrets::{KeyId, PublicKey, SealedValue};
use xshell::{Shell, cmd};

pub(crate) use self::files::read;
pub(crate) use self::scan::{Encoding, candidates};
use crate::adapters::git;

/// Every secret key of `keys` in `path` (relative to `root`), however it is
/// written, one problem each; or why the file could not be scanned, since
/// passing it would say it holds no key without having read it.
pub(crate) fn committed_keys(root: &Path, path: &Path, keys: &[Known]) -> Vec<String> {
    let shown = crate::vocab::show::escape(&path.display().to_string()).into_owned();
    let bytes = match read(root, path) {
        Ok(Some(bytes)) => bytes,
        Ok(None) => return Vec::new(),
        Err(why) => return vec![format!("{shown}: not scanned for secret keys: {why}")],
    };
    let mut found = Vec::new();
    for candidate in candidates(&bytes) {
        if let Some(known) = keys.iter().find(|k| k.key == candidate.public_key) {
            found.push(format!("{shown}:{}: {}", candidate.line, known.leak(candidate.encoding)));
        }
    }
    found
}

/// A public key whose secret key must not be in any tracked file.
#[derive(Debug)]
pub(crate) struct Known {
    pub env: String,
    pub key: PublicKey,
    /// No longer the environment's `public_key`: found in an earlier committed
    /// version of its file, or under `[[previous_keys]]`.
    pub retired: bool,
    /// The names of the secrets sealed to this key in any version of the
    /// environment files at hand: the credentials its secret key opens.
    pub names: BTreeSet<String>,
}

impl Known {
    /// What a committed secret key of this public key means, and what undoes
    /// it. Rotating seals the same credentials again, and git keeps the old
    /// sealed values: only a new credential, issued where the old one was, is
    /// out of the leaked key's reach.
    pub(crate) fn leak(&self, encoding: Encoding) -> String {
        let env = &self.env;
        let id = self.key.key_id();
        let names: Vec<String> = self.names.iter().map(|n| format!("`{}`", crate::vocab::show::escape(n))).collect();
        let sealed = if names.is_empty() { String::new() } else { format!(" ({})", names.join(", ")) };
        let renew = format!(
            "change each credential sealed to it{sealed} where it was issued (revoke and reissue the token, \
             regenerate the API key, change the password) and seal the new value with \
             `cargo xtask encrypt-secret --env {env} NAME`"
        );
        if self.retired {
            format!(
                "the secret key of environment `{env}`'s retired key {id} (written as {encoding}) is in this file: \
                 it still opens every value sealed to it in git history; remove it, then {renew}: \
                 `rotate-key` would not help, it seals the same credentials again"
            )
        } else {
            format!(
                "the secret key of environment `{env}` (key id {id}, written as {encoding}) is in this file: \
                 whoever can read the repository can open every value sealed to this key, in every commit; remove \
                 it, run `cargo xtask rotate-key --env {env}`, then {renew}: rotating alone seals the same \
                 credentials again, and the old sealed values stay readable in git history with this key"
            )
        }
    }
}

/// What `check` looks for, and what it could not learn.
#[derive(Debug, Default)]
pub(crate) struct WatchList {
    /// Sorted by key id.
    pub keys: Vec<Known>,
    pub problems: Vec<String>,
    /// Said in the output, not a problem.
    pub note: Option<String>,
}

impl WatchList {
    /// The line that says no key was found in `files` files.
    pub(crate) fn summary(&self, files: usize) -> String {
        let retired = self.keys.iter().filter(|k| k.retired).count();
        format!(
            "no secret key of any environment in {files} tracked file(s) ({} current and {retired} retired key(s) \
             looked for)",
            self.keys.len() - retired
        )
    }
}

/// The keys to look for: `current` (each environment's `public_key`), every
/// `public_key` of every committed version of every environment file in
/// `dirs` (relative to `root`, the shell's folder) that git holds, and every
/// `public_key` under `[[previous_keys]]` of the current files.
pub(crate) fn watch_list(
    sh: &Shell,
    root: &Path,
    dirs: &[PathBuf],
    current: impl IntoIterator<Item = (String, PublicKey)>,
) -> Result<WatchList, crate::ops::history::Error> {
    let mut keys = Keys::default();
    for (env, key) in current {
        keys.add(&env, key, false);
    }
    for dir in dirs {
        // A folder that does not exist has no files; `check` says so already.
        let Ok(paths) = boxcar_secrets::env_files(&root.join(dir)) else { continue };
        // Read as plain TOML: a file `check` finds wrong in other ways may
        // still name its previous keys.
        for path in paths {
            if let (Ok(env), Some(table)) =
                (boxcar_secrets::env_of(&path), read(root, &path).ok().flatten().and_then(table))
            {
                keys.previous_and_names(&env, &table);
            }
        }
    }
    let shown: Vec<String> =
        dirs.iter().map(|d| format!("{}/", crate::vocab::show::escape(&d.display().to_string()))).collect();
    let mut list = WatchList::default();
    if cmd!(sh, "git rev-parse --is-inside-work-tree").quiet().ignore_stderr().read().is_err() {
        list.note = Some(format!(
            "not a git checkout: the retired keys looked for are only those under [[previous_keys]] \
             of the files in {}; keys of earlier versions of these files are not known",
            shown.join(", ")
        ));
    } else {
        let shallow = cmd!(sh, "git rev-parse --is-shallow-repository")
            .quiet()
            .read()
            .map_err(|source| git::Error::Git { what: "asking git whether the clone is shallow".to_owned(), source })?;
        if shallow.trim() == "true" {
            list.problems.push(format!(
                "the history of {} cannot be read in a shallow clone; fetch the full history (fetch-depth: 0) \
                 so check can look for the secret keys of the public keys these files had before",
                shown.join(", ")
            ));
        }
        for (env, text) in history(sh, dirs)? {
            let Some(table) = table(text) else { continue };
            if let Some(key) = table.get("public_key").and_then(public_key) {
                keys.add(&env, key, true);
            }
            keys.previous_and_names(&env, &table);
        }
    }
    let Keys { mut known, names } = keys;
    for (id, known) in &mut known {
        known.names = names.get(id).cloned().unwrap_or_default();
    }
    list.keys = known.into_values().collect();
    Ok(list)
}

#[derive(Default)]
struct Keys {
    known: BTreeMap<KeyId, Known>,
    names: BTreeMap<KeyId, BTreeSet<String>>,
}

impl Keys {
    /// The first place a key is found names it: current keys come first.
    fn add(&mut self, env: &str, key: PublicKey, retired: bool) {
        self.known.entry(key.key_id()).or_insert_with(|| Known {
            env: env.to_owned(),
            key,
            retired,
            names: BTreeSet::new(),
        });
    }

    /// `[[previous_keys]]` and the key each of `[secrets]` is sealed to.
    fn previous_and_names(&mut self, env: &str, table: &toml::Table) {
        let previous = table.get("previous_keys").and_then(toml::Value::as_array);
        for entry in previous.into_iter().flatten() {
            if let Some(key) = entry.get("public_key").and_then(public_key) {
                self.add(env, key, true);
            }
        }
        let secrets = table.get("secrets").and_then(toml::Value::as_table);
        for (name, value) in secrets.into_iter().flatten() {
            if let Some(sealed) = value.as_str().and_then(|v| SealedValue::parse(v).ok()) {
                self.names.entry(sealed.key_id()).or_default().insert(name.clone());
            }
        }
    }
}

fn table(text: Vec<u8>) -> Option<toml::Table> {
    String::from_utf8(text).ok()?.parse().ok()
}

fn public_key(value: &toml::Value) -> Option<PublicKey> {
    value.as_str().and_then(|text| PublicKey::from_base64(text).ok())
}

/// Every version git holds, on any branch or tag, of every environment file
/// of `dirs` and of every folder a version of boxcar.toml named (an
/// environment that moved had its earlier keys in its earlier folder), once
/// each: (environment, content).
fn history(sh: &Shell, dirs: &[PathBuf]) -> Result<Vec<(String, Vec<u8>)>, crate::ops::history::Error> {
    let mut dirs = dirs.to_vec();
    for dir in crate::ops::history::folders_ever(sh)? {
        if !dirs.contains(&dir) {
            dirs.push(dir);
        }
    }
    // `-m` shows merges too (a version made while resolving a merge is in no
    // other commit); `--relative` gives paths from the shell's folder.
    let specs = &dirs;
    let raw = cmd!(sh, "git log --all --no-renames --raw --no-abbrev -m --relative -z --format= -- {specs...}")
        .quiet()
        .output()
        .map_err(|source| git::Error::Git {
            what: "reading the history of the environment files".to_owned(),
            source,
        })?;
    let blobs = env_blobs(&String::from_utf8_lossy(&raw.stdout), &dirs);
    let ids: Vec<String> = blobs.iter().map(|(_, id)| id.clone()).collect();
    let contents = git::read_objects(sh, &ids)?;
    Ok(blobs.into_iter().map(|(env, _)| env).zip(contents.into_iter().map(Option::unwrap_or_default)).collect())
}

/// From `git log --raw -z` output: the environment and object id of each
/// version of an environment file directly in one of `dirs`, each once. A
/// removal's id (all zeros) and a symlink's or submodule's are kept: git
/// reports them missing, or they are not TOML.
fn env_blobs(raw: &str, dirs: &[PathBuf]) -> Vec<(String, String)> {
    let mut seen = BTreeSet::new();
    let mut fields = raw.split('\0');
    while let Some(meta) = fields.next() {
        // `:<old mode> <new mode> <old id> <new id> <status>`, then the path.
        let Some(meta) = meta.trim_start_matches('\n').strip_prefix(':') else { continue };
        let Some(path) = fields.next().map(Path::new) else { break };
        let Some(id) = meta.split(' ').nth(3) else { continue };
        let in_dir = dirs.iter().any(|d| path.parent() == Some(d.as_path()));
        if in_dir
            && path.extension().is_some_and(|e| e == "toml")
            && let Ok(env) = boxcar_secrets::env_of(path)
        {
            seen.insert((env, id.to_owned()));
        }
    }
    seen.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use boxcar_secrets::SecretKey;

    use super::files::Unscannable;
    use super::scan::tests::raw;
    use super::*;
    use crate::adapters::git::scratch::{git, shell};

    #[test]
    fn blobs_of_environment_files_from_git_log() {
        let id = |c: char| c.to_string().repeat(40);
        let zero = id('0');
        let raw = [
            format!(":000000 100644 {zero} {} A", id('a')),
            "deploy-config/production.toml".to_owned(),
            format!("\n:100644 100644 {} {} M", id('a'), id('b')),
            "deploy-config/production.toml".to_owned(),
            format!(":100644 000000 {} {zero} D", id('b')),
            "deploy-config/staging.toml".to_owned(),
            // Not environment files: a subfolder, another folder, not TOML, not an environment's name.
            format!(":000000 100644 {zero} {} A", id('c')),
            "deploy-config/old/production.toml".to_owned(),
            format!(":000000 100644 {zero} {} A", id('d')),
            "other/production.toml".to_owned(),
            format!(":000000 100644 {zero} {} A", id('e')),
            "deploy-config/notes.txt".to_owned(),
            format!(":000000 100644 {zero} {} A", id('f')),
            "deploy-config/Cargo.toml".to_owned(),
            format!(":000000 100644 {zero} {} A", id('a')),
            "deploy-config/production.toml".to_owned(),
            String::new(),
        ]
        .join("\0");
        let blobs = env_blobs(&raw, &[PathBuf::from("deploy-config")]);
        let expect = [("production", id('a')), ("production", id('b')), ("staging", zero)];
        let expect: Vec<(String, String)> = expect.into_iter().map(|(e, i)| (e.to_owned(), i)).collect();
        assert_eq!(blobs, expect);
        // A line cut short is skipped, the rest still read.
        let raw = format!(":100644\0deploy-config/a.toml\0:0 0 0 {} A\0deploy-config/b.toml\0", id('a'));
        assert_eq!(env_blobs(&raw, &[PathBuf::from("deploy-config")]), [("b".to_owned(), id('a'))]);
    }

    fn known(env: &str, key: &SecretKey, retired: bool, names: &[&str]) -> Known {
        let names = names.iter().map(|n| (*n).to_owned()).collect();
        Known { env: env.to_owned(), key: key.public_key().clone(), retired, names }
    }

    #[test]
    fn committed_keys_say_what_a_leak_means_and_what_undoes_it() {
        let tree = tempfile::tempdir().unwrap();
        let root = tree.path();
        let (current, retired, other) = (SecretKey::generate(), SecretKey::generate(), SecretKey::generate());
        let keys = [known("production", &current, false, &["token", "api_key"]), known("staging", &retired, true, &[])];
        std::fs::write(root.join("a.txt"), format!("x\nSECRET_KEY={}\n", &*current.to_base64())).unwrap();
        std::fs::write(root.join("b.txt"), hex::encode(raw(&retired))).unwrap();
        // Public keys, another key, a link inside: nothing to say.
        let text = format!(
            "{}\n{}\n{}",
            current.public_key().to_base64(),
            retired.public_key().to_base64(),
            &*other.to_base64()
        );
        std::fs::write(root.join("c.txt"), text).unwrap();
        std::os::unix::fs::symlink("a.txt", root.join("link")).unwrap();
        let scan = |name: &str| committed_keys(root, Path::new(name), &keys);

        let renew = |env: &str, names: &str| {
            format!(
                "change each credential sealed to it{names} where it was issued (revoke and reissue the token, \
                 regenerate the API key, change the password) and seal the new value with \
                 `cargo xtask encrypt-secret --env {env} NAME`"
            )
        };
        assert_eq!(
            scan("a.txt"),
            [format!(
                "a.txt:2: the secret key of environment `production` (key id {}, written as base64) is in this file: \
                 whoever can read the repository can open every value sealed to this key, in every commit; remove it, \
                 run `cargo xtask rotate-key --env production`, then {}: rotating alone seals the same credentials \
                 again, and the old sealed values stay readable in git history with this key",
                current.key_id(),
                renew("production", " (`api_key`, `token`)")
            )]
        );
        assert_eq!(
            scan("b.txt"),
            [format!(
                "b.txt:1: the secret key of environment `staging`'s retired key {} (written as hex) is in this file: \
                 it still opens every value sealed to it in git history; remove it, then {}: `rotate-key` would not \
                 help, it seals the same credentials again",
                retired.key_id(),
                renew("staging", "")
            )]
        );
        assert!(scan("c.txt").is_empty());
        assert!(scan("link").is_empty());
        assert_eq!(
            scan("gone\x1b.txt"),
            [format!("gone\\u{{1b}}.txt: not scanned for secret keys: {}", Unscannable::Gone)]
        );
    }

    #[test]
    fn the_summary_counts_current_and_retired_keys() {
        let key = |retired| known("e", &SecretKey::generate(), retired, &[]);
        let list =
            WatchList { keys: vec![key(false), key(true), key(true), key(false), key(false)], ..WatchList::default() };
        assert_eq!(
            list.summary(7),
            "no secret key of any environment in 7 tracked file(s) (3 current and 2 retired key(s) looked for)"
        );
    }

    /// An environment file: `public_key`, `[[previous_keys]]`, one sealed value per name.
    fn env_text(env: &str, key: &SecretKey, previous: &[&SecretKey], names: &[&str]) -> String {
        let mut text = format!("public_key = \"{}\"\n", key.public_key().to_base64());
        for p in previous {
            text.push_str(&format!("\n[[previous_keys]]\npublic_key = \"{}\"\n", p.public_key().to_base64()));
        }
        text.push_str("\n[secrets]\n");
        for name in names {
            let sealed = boxcar_secrets::seal(key.public_key(), env, name, b"v").unwrap();
            text.push_str(&format!("{name} = \"{sealed}\"\n"));
        }
        text
    }

    /// (environment, key id, retired, names), in key id order.
    fn listed(list: &WatchList) -> Vec<(String, KeyId, bool, Vec<String>)> {
        list.keys
            .iter()
            .map(|k| (k.env.clone(), k.key.key_id(), k.retired, k.names.iter().cloned().collect()))
            .collect()
    }

    fn entry(env: &str, key: &SecretKey, retired: bool, names: &[&str]) -> (String, KeyId, bool, Vec<String>) {
        (env.to_owned(), key.key_id(), retired, names.iter().map(|n| (*n).to_owned()).collect())
    }

    fn sorted<T>(mut v: Vec<(String, KeyId, bool, T)>) -> Vec<(String, KeyId, bool, T)> {
        v.sort_by_key(|e| e.1);
        v
    }

    #[test]
    fn the_watch_list_holds_every_key_git_history_and_previous_keys_name() {
        let tree = tempfile::tempdir().unwrap();
        let root = tree.path();
        let dir = root.join("config");
        std::fs::create_dir(&dir).unwrap();
        git(root, &["init", "-q"]);
        let [first, second, current, chained, gone, elsewhere] = std::array::from_fn(|_| SecretKey::generate());
        let commit = |message: &str| {
            git(root, &["add", "-A"]);
            git(root, &["commit", "-qm", message]);
        };
        std::fs::write(dir.join("production.toml"), env_text("production", &first, &[], &["token"])).unwrap();
        std::fs::write(dir.join("old.toml"), env_text("old", &gone, &[], &[])).unwrap();
        // Not environment files of the folder: their keys are not looked for.
        std::fs::create_dir(root.join("other")).unwrap();
        std::fs::write(root.join("other/production.toml"), env_text("production", &elsewhere, &[], &[])).unwrap();
        std::fs::write(dir.join("notes.txt"), env_text("notes", &elsewhere, &[], &[])).unwrap();
        commit("first");
        // On a branch of its own, then gone from the folder.
        git(root, &["checkout", "-qb", "side"]);
        std::fs::write(dir.join("production.toml"), env_text("production", &second, &[], &["token", "db"])).unwrap();
        commit("second");
        git(root, &["checkout", "-q", "-"]);
        std::fs::remove_file(dir.join("old.toml")).unwrap();
        std::fs::write(dir.join("production.toml"), env_text("production", &current, &[&chained], &["token"])).unwrap();
        commit("current");

        let dirs = [PathBuf::from("config")];
        let now = [("production".to_owned(), current.public_key().clone())];
        let list = watch_list(&shell(root), root, &dirs, now.clone()).unwrap();
        let expect = vec![
            entry("production", &current, false, &["token"]),
            entry("production", &first, true, &["token"]),
            entry("production", &second, true, &["db", "token"]),
            entry("production", &chained, true, &[]),
            entry("old", &gone, true, &[]),
        ];
        assert_eq!(listed(&list), sorted(expect));
        assert!(list.problems.is_empty(), "{:?}", list.problems);
        assert_eq!(list.note, None);

        // A shallow clone lacks the history, and says so.
        let clone = tempfile::tempdir().unwrap();
        git(clone.path(), &["clone", "-q", "--depth", "1", &format!("file://{}", root.display()), "."]);
        let list = watch_list(&shell(clone.path()), clone.path(), &dirs, now.clone()).unwrap();
        assert_eq!(
            list.problems,
            ["the history of config/ cannot be read in a shallow clone; fetch the full history (fetch-depth: 0) \
              so check can look for the secret keys of the public keys these files had before"]
        );
        assert_eq!(
            listed(&list),
            sorted(vec![entry("production", &current, false, &["token"]), entry("production", &chained, true, &[])])
        );

        // Not a git checkout: the current files alone.
        let plain = tempfile::tempdir().unwrap();
        std::fs::create_dir(plain.path().join("config")).unwrap();
        std::fs::copy(dir.join("production.toml"), plain.path().join("config/production.toml")).unwrap();
        let list = watch_list(&shell(plain.path()), plain.path(), &dirs, now).unwrap();
        assert_eq!(
            list.note.as_deref(),
            Some(
                "not a git checkout: the retired keys looked for are only those under [[previous_keys]] of the files \
                 in config/; keys of earlier versions of these files are not known"
            )
        );
        assert!(list.problems.is_empty());
        assert_eq!(
            listed(&list),
            sorted(vec![entry("production", &current, false, &["token"]), entry("production", &chained, true, &[])])
        );
    }
}
