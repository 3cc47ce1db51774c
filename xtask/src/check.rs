//! `cargo xtask check`: everything that can be checked without a secret key. Meant for CI.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use boxcar_secrets::{EnvFile, PublicKey};
use xshell::{Shell, cmd};

use crate::keys::Context;

/// Check every environment file and the repository, without any secret key.
///
/// Every deploy-config/<ENV>.toml must parse and have a valid public key; every
/// value under [secrets] must be sealed (no plaintext), in a known format
/// version, to that file's key; no plain string may look like a Telegram bot
/// token; and no tracked file may contain the secret key of any environment.
/// Prints one line per problem and exits non-zero if there is any.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {}

pub(crate) fn run(sh: &Shell, ctx: &Context, _args: Args) -> anyhow::Result<()> {
    let mut problems = Vec::new();
    let mut public_keys = BTreeMap::new();

    let files = boxcar_secrets::env_files(&ctx.config_dir())?;
    if files.is_empty() {
        println!("no environment files in deploy-config/ yet (create one with `cargo xtask keygen --env ENV`)");
    }
    for path in &files {
        let shown = ctx.show(path);
        let file = match EnvFile::load(path) {
            Ok(file) => file,
            Err(err) => {
                problems.push(err.to_string());
                continue;
            }
        };
        let mut found = file.problems().iter().map(|p| format!("{shown}: {p}")).collect::<Vec<_>>();
        found.extend(bot_references(&file).into_iter().map(|p| format!("{shown}: {p}")));
        found.extend(plaintext_tokens(file.table(), "").into_iter().map(|field| {
            format!("{shown}: `{field}` holds what looks like a plaintext Telegram bot token; seal it under [secrets] instead")
        }));
        if found.is_empty() {
            println!(
                "ok  {shown}: {} secret(s) sealed to key {}",
                file.secret_names().count(),
                file.public_key().key_id()
            );
        }
        problems.extend(found);
        public_keys.insert(file.public_key().key_id(), (file.env().to_owned(), file.public_key().clone()));
    }

    let tracked = tracked_files(sh, &ctx.root)?;
    let keys: Vec<(String, PublicKey)> = public_keys.into_values().collect();
    for path in &tracked {
        problems.extend(committed_keys(&ctx.root, path, &keys)?);
    }
    if problems.is_empty() {
        println!("ok  no secret key of any environment in {} tracked file(s)", tracked.len());
        return Ok(());
    }
    for p in &problems {
        println!("error: {p}");
    }
    bail!("check found {} problem(s)", problems.len())
}

/// Files git tracks (plus new files not ignored), or every file when the
/// project is not a git checkout.
pub(crate) fn tracked_files(sh: &Shell, root: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let is_git = cmd!(sh, "git rev-parse --is-inside-work-tree").quiet().ignore_stderr().read().is_ok();
    if !is_git {
        let mut out = Vec::new();
        walk(root, root, &mut out)?;
        return Ok(out);
    }
    // `--others --exclude-standard` adds files about to be committed with `git add -A`.
    let list = cmd!(sh, "git ls-files -z --cached --others --exclude-standard").quiet().read()?;
    let mut files: Vec<PathBuf> =
        list.split('\0').filter(|s| !s.is_empty()).map(PathBuf::from).filter(|p| root.join(p).is_file()).collect();
    files.sort();
    files.dedup();
    Ok(files)
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        let name = path.file_name().unwrap_or_default();
        if name == "target" || name == ".git" {
            continue;
        }
        if path.is_dir() {
            walk(root, &path, out)?;
        } else if path.is_file() {
            out.push(path.strip_prefix(root).unwrap_or(&path).to_owned());
        }
    }
    Ok(())
}

/// Finds base64 strings of 32 bytes whose X25519 public key is one of the
/// environments' public keys: that string is the environment's secret key.
/// Exact, so it never flags a public key, a hash or a test vector.
fn committed_keys(root: &Path, path: &Path, keys: &[(String, PublicKey)]) -> anyhow::Result<Vec<String>> {
    const MAX_SCANNED: u64 = 16 * 1024 * 1024;
    let full = root.join(path);
    if keys.is_empty() || std::fs::metadata(&full).map(|m| m.len() > MAX_SCANNED).unwrap_or(true) {
        return Ok(Vec::new());
    }
    let bytes = std::fs::read(&full).with_context(|| format!("reading {}", full.display()))?;
    let mut found = Vec::new();
    for (line, candidate) in crate::keys::base64_keys(&bytes) {
        if let Some((env, pk)) = keys.iter().find(|(_, pk)| pk == candidate.public_key()) {
            found.push(format!(
                "{}:{line}: the secret key of environment `{env}` (key id {}) is in this file; \
                 remove it and rotate the key with `cargo xtask rotate-key --env {env}`: whoever saw this file can open every value",
                path.display(),
                pk.key_id()
            ));
        }
    }
    Ok(found)
}

/// The app's `[[bots]]` name their credentials by secret name: each must be
/// under `[secrets]`, or the app will refuse to start.
fn bot_references(file: &EnvFile) -> Vec<String> {
    let names: Vec<&str> = file.secret_names().collect();
    let mut out = Vec::new();
    let Some(bots) = file.table().get("bots").and_then(toml::Value::as_array) else { return out };
    for (i, bot) in bots.iter().enumerate() {
        for field in ["token_secret", "webhook_secret"] {
            if let Some(name) = bot.get(field).and_then(toml::Value::as_str)
                && !names.contains(&name)
            {
                out.push(format!(
                    "bots[{i}].{field} names `{name}`, which is not under [secrets]; seal it with \
                         `cargo xtask encrypt-secret --env {} {name}`",
                    file.env()
                ));
            }
        }
    }
    out
}

/// Dotted paths of string values outside `[secrets]` shaped like a Telegram
/// bot token (`<digits>:<35 characters>`).
fn plaintext_tokens(table: &toml::Table, prefix: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (key, value) in table {
        let path = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
        if path == "secrets" {
            continue;
        }
        collect_tokens(value, &path, &mut out);
    }
    out
}

fn collect_tokens(value: &toml::Value, path: &str, out: &mut Vec<String>) {
    match value {
        toml::Value::String(s) if looks_like_bot_token(s) => out.push(path.to_owned()),
        toml::Value::Table(t) => out.extend(plaintext_tokens(t, path)),
        toml::Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                collect_tokens(item, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

fn looks_like_bot_token(s: &str) -> bool {
    let Some((id, secret)) = s.split_once(':') else { return false };
    (5..=16).contains(&id.len())
        && id.bytes().all(|b| b.is_ascii_digit())
        && secret.len() >= 30
        && secret.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bot_token_shape() {
        assert!(looks_like_bot_token("123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"));
        assert!(!looks_like_bot_token("sealed:v1:0011223344556677:AAAA"));
        assert!(!looks_like_bot_token("0.0.0.0:8080"));
        let t: toml::Table = "a = 1\n[x]\ny = [\"123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw\"]\n".parse().unwrap();
        assert_eq!(plaintext_tokens(&t, ""), ["x.y[0]"]);
    }
}
