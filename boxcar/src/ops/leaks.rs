//! Committed secret keys: every 32-byte value a file holds in a form a key is
//! written in, which files are scanned and how much of each, and the public
//! keys (current and retired) whose secret keys `check` looks for.
//!
//! The scanner does not know which keys matter: it derives the public key of
//! every candidate, and the caller compares that with the public keys it knows.
//! The comparison is exact, so a public key, a hash or a test vector in a file
//! is never reported, only a secret key of a known public key.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};

use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use boxcar_secrets::{KEY_LEN, KeyId, PublicKey, SealedValue, SecretKey};
use xshell::{Shell, cmd};
use zeroize::Zeroizing;

use crate::adapters::git;

/// How a key was written where it was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    /// Standard base64, padded or not: what a key file holds.
    Base64,
    /// URL-safe base64 (`-` and `_`), padded or not.
    UrlSafeBase64,
    /// 64 hex digits, lower or upper case.
    Hex,
    /// Any of the above inside a base64-encoded text: how a Kubernetes
    /// Secret's `data` holds a key file or `SECRET_KEY=<key>`.
    InBase64,
}

impl std::fmt::Display for Encoding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Encoding::Base64 => "base64",
            Encoding::UrlSafeBase64 => "URL-safe base64",
            Encoding::Hex => "hex",
            Encoding::InBase64 => "base64 of a text that holds it (as a Kubernetes Secret's `data` holds a key file)",
        })
    }
}

/// A 32-byte value found in a file, which would be a secret key.
#[derive(Debug)]
pub struct Found {
    /// The line it starts on, from 1.
    pub line: usize,
    pub encoding: Encoding,
    /// The public key of the value taken as a secret key: equal to a known
    /// public key only when the value is that key's secret key.
    pub public_key: PublicKey,
}

/// Characters of base64 of 32 bytes without its padding.
const BASE64_LEN: usize = 43;
/// Hex digits of 32 bytes.
const HEX_LEN: usize = 64;
/// The shortest base64 that can hold a key written in base64: that of its 43
/// characters alone.
const WRAPPED_MIN: usize = 58;

/// Padding is split off with everything else outside the alphabet, so a run
/// never has any; trailing bits must be zero, as every encoder writes them.
const STANDARD: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);
const URL_SAFE: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Every value in `data` that could be a secret key, in the order of the file.
///
/// A value is found only as a whole run of its alphabet of exactly the length
/// of 32 bytes (43 base64 characters before any padding, 64 hex digits), so a
/// key glued to other text of its alphabet is not one, and the candidates
/// (each costs an X25519 scalar multiplication) are at most a few per 44
/// bytes. Every longer run of standard base64 is decoded once and its text
/// searched the same way, one level deep. The work is linear in `data`.
pub fn candidates(data: &[u8]) -> Vec<Found> {
    let mut found: Vec<(usize, Encoding, PublicKey)> = Vec::new();
    plain(data, &mut |at, encoding, key| found.push((at, encoding, key)));
    for (at, run) in runs(data, is_base64) {
        if run.len() >= WRAPPED_MIN
            && let Ok(text) = base64::Engine::decode(&STANDARD, run).map(Zeroizing::new)
        {
            plain(&text, &mut |_, _, key| found.push((at, Encoding::InBase64, key)));
        }
    }
    found.sort_by_key(|(at, ..)| *at);
    // Lines counted in one sweep over the sorted offsets.
    let (mut line, mut counted) = (1, 0);
    found
        .into_iter()
        .map(|(at, encoding, public_key)| {
            line += data[counted..at].iter().filter(|b| **b == b'\n').count();
            counted = at;
            Found { line, encoding, public_key }
        })
        .collect()
}

/// Keys written directly in `data`, with their offsets.
fn plain(data: &[u8], found: &mut impl FnMut(usize, Encoding, PublicKey)) {
    for (at, run) in runs(data, is_base64) {
        if run.len() == BASE64_LEN
            && let Some(key) = from_base64(&STANDARD, run)
        {
            found(at, Encoding::Base64, key);
        }
    }
    for (at, run) in runs(data, is_url_safe) {
        // A run without `-` or `_` is standard base64 too, and was tested above.
        if run.len() == BASE64_LEN
            && run.iter().any(|b| matches!(b, b'-' | b'_'))
            && let Some(key) = from_base64(&URL_SAFE, run)
        {
            found(at, Encoding::UrlSafeBase64, key);
        }
    }
    for (at, run) in runs(data, u8::is_ascii_hexdigit) {
        if run.len() == HEX_LEN
            && let Some(key) = from_hex(run)
        {
            found(at, Encoding::Hex, key);
        }
    }
}

fn is_base64(b: &u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/')
}

fn is_url_safe(b: &u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_')
}

/// The maximal runs of bytes of an alphabet, with their offsets.
fn runs(data: &[u8], alphabet: fn(&u8) -> bool) -> impl Iterator<Item = (usize, &[u8])> {
    let mut offset = 0;
    data.split(move |b| !alphabet(b)).map(move |run| {
        let at = offset;
        offset += run.len() + 1;
        (at, run)
    })
}

fn from_base64(engine: &GeneralPurpose, run: &[u8]) -> Option<PublicKey> {
    // 43 characters decode to exactly 32 bytes, straight into the wiped buffer.
    let mut raw = Zeroizing::new([0u8; KEY_LEN]);
    base64::Engine::decode_slice(engine, run, &mut raw[..]).ok()?;
    Some(public_key_of(raw))
}

fn from_hex(run: &[u8]) -> Option<PublicKey> {
    let mut raw = Zeroizing::new([0u8; KEY_LEN]);
    hex::decode_to_slice(run, &mut raw[..]).ok()?;
    Some(public_key_of(raw))
}

/// The one scalar multiplication a candidate costs; the secret is wiped on drop.
fn public_key_of(raw: Zeroizing<[u8; KEY_LEN]>) -> PublicKey {
    SecretKey::from_bytes(raw).public_key().clone()
}

/// Largest file scanned, in bytes. GitHub refuses files over 100 MiB, so no
/// file of a repository pushed there is larger; a file is read whole, once.
pub const MAX_SCANNED: u64 = 100 * 1024 * 1024;

/// Why a listed file was not scanned; shown with what to do about it.
#[derive(Debug)]
pub enum Unscannable {
    TooLarge { len: u64 },
    Gone,
    Unreadable(std::io::Error),
    LinkOutside { target: PathBuf },
    Directory,
    Special,
}

impl std::fmt::Display for Unscannable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        const MIB: u64 = 1024 * 1024;
        match self {
            Unscannable::TooLarge { len } => write!(
                f,
                "it is {} MiB, over the scan limit of {} MiB (GitHub refuses files over 100 MiB); \
                 keep it out of git (Git LFS, a release asset, a download at build time)",
                len.div_ceil(MIB),
                MAX_SCANNED / MIB
            ),
            Unscannable::Gone => f.write_str(
                "git lists it, but it is not in the work tree; commit its removal (`git rm --cached PATH`) \
                 or restore it (`git checkout -- PATH`), then check again",
            ),
            Unscannable::Unreadable(err) => {
                write!(f, "it cannot be read ({err}); make it readable by the user that runs check")
            }
            Unscannable::LinkOutside { target } => write!(
                f,
                "it is a symlink to {}, outside the work tree, which check does not follow; \
                 commit the file itself, or remove the link",
                crate::vocab::show::escape(&target.display().to_string())
            ),
            Unscannable::Directory => f.write_str(
                "git lists a file here, but it is a directory; commit what is really there, then check again",
            ),
            Unscannable::Special => f.write_str(
                "it is a FIFO, socket or device, not a regular file; remove it from the work tree, then check again",
            ),
        }
    }
}

/// The content of `path` (relative to `work_tree`) to scan: `None` for a
/// symlink that stays inside the work tree, whose target, when git holds it, is
/// scanned under its own path (git stores only the link's text).
pub fn read(work_tree: &Path, path: &Path) -> Result<Option<Vec<u8>>, Unscannable> {
    use std::io::Read as _;
    let full = work_tree.join(path);
    let meta = std::fs::symlink_metadata(&full).map_err(unreadable)?;
    let kind = meta.file_type();
    if kind.is_symlink() {
        return link_inside(work_tree, path).map(|()| None);
    }
    if kind.is_dir() {
        return Err(Unscannable::Directory);
    }
    if !kind.is_file() {
        return Err(Unscannable::Special);
    }
    if meta.len() > MAX_SCANNED {
        return Err(Unscannable::TooLarge { len: meta.len() });
    }
    let mut bytes = Vec::new();
    // Bounded again as it is read: the file may grow after its metadata was read.
    std::fs::File::open(&full).and_then(|f| f.take(MAX_SCANNED).read_to_end(&mut bytes)).map_err(unreadable)?;
    Ok(Some(bytes))
}

fn unreadable(err: std::io::Error) -> Unscannable {
    match err.kind() {
        std::io::ErrorKind::NotFound => Unscannable::Gone,
        _ => Unscannable::Unreadable(err),
    }
}

/// Whether the symlink `path` leads inside `work_tree`: where it resolves,
/// or, when its target does not exist, where its text points.
fn link_inside(work_tree: &Path, path: &Path) -> Result<(), Unscannable> {
    let root = work_tree.canonicalize().map_err(unreadable)?;
    let link = root.join(path);
    let target = match link.canonicalize() {
        Ok(real) => real,
        Err(_) => {
            let text = std::fs::read_link(&link).map_err(unreadable)?;
            lexical(&link.parent().unwrap_or(&root).join(text))
        }
    };
    if target.starts_with(&root) { Ok(()) } else { Err(Unscannable::LinkOutside { target }) }
}

/// `path` with `.` and `..` taken as written, without asking the file system.
fn lexical(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::ParentDir => {
                out.pop();
            }
            // `.` stays: a path's components skip it anyway.
            other => out.push(other),
        }
    }
    out
}

/// Every secret key of `keys` in `path` (relative to `root`), however it is
/// written, one problem each; or why the file could not be scanned, since
/// passing it would say it holds no key without having read it.
pub fn committed_keys(root: &Path, path: &Path, keys: &[Known]) -> Vec<String> {
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
pub struct Known {
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
    pub fn leak(&self, encoding: Encoding) -> String {
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
pub struct WatchList {
    /// Sorted by key id.
    pub keys: Vec<Known>,
    pub problems: Vec<String>,
    /// Said in the output, not a problem.
    pub note: Option<String>,
}

impl WatchList {
    /// The line that says no key was found in `files` files.
    pub fn summary(&self, files: usize) -> String {
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
pub fn watch_list(
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
    use base64::Engine as _;
    use base64::engine::general_purpose::{STANDARD as B64, URL_SAFE, URL_SAFE_NO_PAD};

    use super::*;

    /// A new key whose base64 (standard, or URL-safe when `url`) satisfies `fit`.
    fn key_where(url: bool, fit: impl Fn(&str) -> bool) -> SecretKey {
        loop {
            let key = SecretKey::generate();
            let text =
                if url { URL_SAFE.encode(B64.decode(&*key.to_base64()).unwrap()) } else { key.to_base64().to_string() };
            if fit(&text) {
                return key;
            }
        }
    }

    fn raw(key: &SecretKey) -> Vec<u8> {
        B64.decode(&*key.to_base64()).unwrap()
    }

    /// The one candidate of `text`, which must be `key`'s: (line, encoding).
    fn only(text: &str, key: &SecretKey) -> (usize, Encoding) {
        let found = candidates(text.as_bytes());
        assert_eq!(found.len(), 1, "{text:?}: {found:?}");
        assert_eq!(&found[0].public_key, key.public_key(), "{text:?}");
        (found[0].line, found[0].encoding)
    }

    #[test]
    fn finds_a_key_in_every_encoding() {
        // No `+` or `/`: the text is URL-safe base64 as well, and must still
        // be found once.
        let key = key_where(false, |t| !t.contains(['+', '/']));
        let b64 = key.to_base64().to_string();
        let bare = b64.trim_end_matches('=');
        for text in [
            format!("first line\nx {b64} y"),
            format!("first line\nSECRET_KEY={b64}"),
            format!("first line\r\n- SECRET_KEY={bare}\n"),
            format!("first line\nkey: \"{b64}\"\n"),
            format!("first line\n[\"SECRET_KEY={b64}\"]"),
        ] {
            assert_eq!(only(&text, &key), (2, Encoding::Base64));
        }

        let key = key_where(true, |t| t.contains(['-', '_']));
        let url = URL_SAFE.encode(raw(&key));
        let url_bare = URL_SAFE_NO_PAD.encode(raw(&key));
        for text in [format!("\n\nkey={url}\n"), format!("\n\n{url_bare}")] {
            assert_eq!(only(&text, &key), (3, Encoding::UrlSafeBase64));
        }

        let key = SecretKey::generate();
        let lower = hex::encode(raw(&key));
        for text in [
            format!("{lower}\n"),
            format!("\"{}\"", lower.to_uppercase()),
            format!("key = 0x{lower}"),
            format!("sha256:{lower}"),
        ] {
            assert_eq!(only(&text, &key), (1, Encoding::Hex));
        }

        // A Kubernetes Secret's `data`: base64 of the key file (with its
        // newline or without), of the key without padding, of `SECRET_KEY=<key>`,
        // of the key in hex.
        let key = SecretKey::generate();
        let b64 = key.to_base64().to_string();
        for inner in [
            b64.clone(),
            format!("{b64}\n"),
            b64.trim_end_matches('=').to_owned(),
            format!("SECRET_KEY={b64}"),
            format!("SECRET_KEY={b64}\n"),
            hex::encode(raw(&key)),
        ] {
            let text = format!("apiVersion: v1\nkind: Secret\ndata:\n  SECRET_KEY: {}\n", B64.encode(&inner));
            assert_eq!(only(&text, &key), (4, Encoding::InBase64), "{inner:?}");
        }
        // 58 characters, the shortest that holds a key: base64 of the bare 43.
        assert_eq!(B64.encode(b64.trim_end_matches('=')).trim_end_matches('=').len(), WRAPPED_MIN);
    }

    #[test]
    fn lines_are_counted_from_one_in_file_order() {
        let mut keys: Vec<SecretKey> = (0..4).map(|_| SecretKey::generate()).collect();
        keys.push(key_where(true, |t| t.contains(['-', '_'])));
        let b64 = |i: usize| keys[i].to_base64().to_string();
        let text = format!(
            "{}\n\r\nA: {}\nB: {}\n\n\n{} x {}\n",
            hex::encode(raw(&keys[0])),
            B64.encode(b64(1)),
            b64(2),
            b64(3),
            URL_SAFE.encode(raw(&keys[4]))
        );
        let found = candidates(text.as_bytes());
        let seen: Vec<(usize, &PublicKey)> = found.iter().map(|f| (f.line, &f.public_key)).collect();
        let expect = [(1, 0), (3, 1), (4, 2), (7, 3), (7, 4)];
        let expect: Vec<(usize, &PublicKey)> = expect.iter().map(|(line, i)| (*line, keys[*i].public_key())).collect();
        assert_eq!(seen, expect);
        let encodings: Vec<Encoding> = found.iter().map(|f| f.encoding).collect();
        use Encoding::*;
        assert_eq!(encodings, [Hex, InBase64, Base64, Base64, UrlSafeBase64]);
    }

    #[test]
    fn near_misses_are_not_candidates() {
        let key = SecretKey::generate();
        let b64 = key.to_base64().to_string();
        let bare = b64.trim_end_matches('=');
        let lower = hex::encode(raw(&key));
        let url = URL_SAFE_NO_PAD.encode(raw(&key));
        for text in [
            format!("{bare}A"),
            format!("A{b64}"),
            format!("abc{b64}"),
            format!("{bare}+/{bare}"),
            format!("{url}x"),
            format!("{lower}0"),
            lower[1..].to_owned(),
            B64.encode(format!("x{b64}")),
            B64.encode(format!("{bare}A")),
        ] {
            let found = candidates(text.as_bytes());
            assert!(found.iter().all(|f| &f.public_key != key.public_key()), "{text:?}");
        }
    }

    #[test]
    fn a_public_key_or_a_hash_is_a_candidate_that_matches_nothing() {
        let key = SecretKey::generate();
        let public = key.public_key();
        let hash: [u8; 32] = sha2::Digest::finalize(<sha2::Sha256 as sha2::Digest>::new()).into();
        let text = format!(
            "public_key = \"{}\"\nchecksum = \"{}\"\nhash: {}\n",
            public.to_base64(),
            hex::encode(hash),
            B64.encode(hash)
        );
        let found = candidates(text.as_bytes());
        // Each is a candidate (the scanner cannot tell), and none is the
        // secret key of the public key or of the hash read as one.
        assert_eq!(found.len(), 3, "{found:?}");
        for f in &found {
            assert_ne!(&f.public_key, public);
            assert_ne!(f.public_key.as_bytes(), &hash);
        }
    }

    #[test]
    fn candidates_grow_with_the_input_only() {
        let key = SecretKey::generate();
        let text = format!("{} ", &*key.to_base64()).repeat(100);
        let found = candidates(text.as_bytes());
        assert_eq!(found.len(), 100);
        assert!(found.iter().all(|f| &f.public_key == key.public_key() && f.line == 1));
        // One long run of base64 is decoded once and holds nothing.
        assert!(candidates(&vec![b'A'; 1 << 20]).is_empty());
        assert!(candidates(b"").is_empty());
    }

    #[test]
    fn encodings_are_named() {
        assert_eq!(Encoding::Base64.to_string(), "base64");
        assert_eq!(Encoding::UrlSafeBase64.to_string(), "URL-safe base64");
        assert_eq!(Encoding::Hex.to_string(), "hex");
        assert!(Encoding::InBase64.to_string().contains("Kubernetes Secret's `data`"));
    }

    #[test]
    fn unscannable_files_say_why() {
        let tree = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let root = tree.path();
        let read = |rel: &str| read(root, Path::new(rel));
        std::fs::write(root.join("ok.txt"), b"text").unwrap();
        assert_eq!(read("ok.txt").unwrap(), Some(b"text".to_vec()));

        // The limit itself is scanned; a byte more is not (sparse files).
        let big = std::fs::File::create(root.join("limit.bin")).unwrap();
        big.set_len(MAX_SCANNED).unwrap();
        assert_eq!(read("limit.bin").unwrap().map(|b| b.len() as u64), Some(MAX_SCANNED));
        big.set_len(MAX_SCANNED + 1).unwrap();
        let why = read("limit.bin").unwrap_err();
        assert!(matches!(why, Unscannable::TooLarge { len } if len == MAX_SCANNED + 1), "{why:?}");
        assert!(why.to_string().starts_with("it is 101 MiB, over the scan limit of 100 MiB"), "{why}");

        let why = read("gone.txt").unwrap_err();
        assert!(matches!(why, Unscannable::Gone), "{why:?}");
        assert!(why.to_string().contains("git lists it, but it is not in the work tree"), "{why}");
        let why = read("ok.txt/under").unwrap_err();
        assert!(matches!(why, Unscannable::Unreadable(_)), "{why:?}");
        assert!(why.to_string().starts_with("it cannot be read (Not a directory"), "{why}");

        std::fs::create_dir(root.join("dir")).unwrap();
        let why = read("dir").unwrap_err();
        assert!(matches!(why, Unscannable::Directory), "{why:?}");
        assert!(why.to_string().contains("it is a directory"), "{why}");
        let _socket = std::os::unix::net::UnixListener::bind(root.join("socket")).unwrap();
        let why = read("socket").unwrap_err();
        assert!(matches!(why, Unscannable::Special), "{why:?}");
        assert!(why.to_string().starts_with("it is a FIFO, socket or device"), "{why}");

        // Symlinks inside the work tree are left to their targets' own paths,
        // existing or not; one that leads out is a problem, existing or not.
        let link = |to: &Path, name: &str| std::os::unix::fs::symlink(to, root.join(name)).unwrap();
        link(Path::new("ok.txt"), "in-file");
        link(Path::new("dir"), "in-dir");
        link(Path::new("missing"), "in-missing");
        link(&root.join("dir/../ok.txt"), "in-absolute");
        for name in ["in-file", "in-dir", "in-missing", "in-absolute"] {
            assert_eq!(read(name).unwrap(), None, "{name}");
        }
        std::fs::write(outside.path().join("key"), b"x").unwrap();
        link(&outside.path().join("key"), "out-file");
        link(Path::new("dir/../../elsewhere/missing"), "out-missing");
        for (name, target) in [
            ("out-file", outside.path().canonicalize().unwrap().join("key")),
            ("out-missing", root.canonicalize().unwrap().parent().unwrap().join("elsewhere/missing")),
        ] {
            let why = read(name).unwrap_err();
            assert!(matches!(&why, Unscannable::LinkOutside { target: t } if *t == target), "{name}: {why:?}");
            let text = why.to_string();
            assert!(
                text.starts_with(&format!("it is a symlink to {}, outside the work tree", target.display())),
                "{text}"
            );
        }
    }

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

    /// `git` in `dir`, with an identity of its own; its output.
    fn git(dir: &Path, args: &[&str]) -> String {
        let out = std::process::Command::new("git")
            .args(["-c", "user.name=test", "-c", "user.email=test@example.invalid", "-c", "protocol.file.allow=always"])
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    fn shell(dir: &Path) -> Shell {
        let sh = Shell::new().unwrap();
        sh.change_dir(dir);
        sh
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
