//! `cargo xtask check`: everything that can be checked without a secret key. Meant for CI.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use boxcar_secrets::{EnvFile, PublicKey};
use xshell::{Shell, cmd};

use crate::contract::Service;
use crate::project::Context;

/// Check every environment file and the repository, without any secret key.
///
/// Every <config dir>/<ENV>.toml of every service in boxcar.toml (or
/// deploy-config/ without one) must parse and have a valid public key; every
/// value under [secrets] must be sealed (no plaintext), in a known format
/// version, to that file's key; the service's own check (boxcar.toml's
/// `check`, built and run on this machine) must pass on each file; and no
/// tracked file may contain the secret key of any environment. Prints one line
/// per problem and exits non-zero if there is any.
#[derive(Debug, clap::Args)]
pub struct Args {}

pub(crate) fn run(sh: &Shell, ctx: &Context, _args: Args) -> anyhow::Result<()> {
    let mut problems = Vec::new();
    let mut public_keys = BTreeMap::new();

    // Each folder of environment files, with the services that read it.
    let mut folders: Vec<(PathBuf, Vec<Service>)> = Vec::new();
    match ctx.contract()? {
        None => folders.push((PathBuf::from(crate::defaults::CONFIG_DIR), Vec::new())),
        Some(mut contract) => {
            contract.resolve(&ctx.root)?;
            for service in contract.services() {
                match folders.iter_mut().find(|(dir, _)| *dir == service.config_dir) {
                    Some((_, services)) => services.push(service.clone()),
                    None => folders.push((service.config_dir.clone(), vec![service.clone()])),
                }
            }
        }
    }
    let mut files = 0;
    // Each service is built once, for all of its environment files.
    let mut built: Vec<(String, PathBuf)> = Vec::new();
    for (dir, services) in &folders {
        let paths = if ctx.root.join(dir).is_dir() { boxcar_secrets::env_files(dir)? } else { Vec::new() };
        files += paths.len();
        for path in &paths {
            let shown = ctx.show(path);
            let file = match EnvFile::load(path) {
                Ok(file) => file,
                Err(err) => {
                    problems.push(crate::show::escape(&err.to_string()).into_owned());
                    continue;
                }
            };
            let mut found: Vec<String> = file.problems().iter().map(|p| format!("{shown}: {p}")).collect();
            for service in services {
                let Some(args) = &service.check else { continue };
                let binary = match built.iter().find(|(name, _)| *name == service.name) {
                    Some((_, binary)) => binary.clone(),
                    None => {
                        let binary = crate::service_cmd::build_native(sh, &ctx.root, service)?;
                        built.push((service.name.clone(), binary.clone()));
                        binary
                    }
                };
                let answer = crate::service_cmd::native(&binary, args, path)?;
                if answer.code != 0 {
                    let what = crate::service_cmd::describe(service, args);
                    found.extend(answer.lines().into_iter().map(|l| format!("{shown}: `{what}`: {l}")));
                }
            }
            if found.is_empty() {
                let checked: Vec<String> = services
                    .iter()
                    .filter_map(|s| s.check.as_ref().map(|a| format!("`{}`", crate::service_cmd::describe(s, a))))
                    .collect();
                println!(
                    "ok  {shown}: {} secret(s) sealed to key {}{}",
                    file.secret_names().count(),
                    file.public_key().key_id(),
                    if checked.is_empty() { String::new() } else { format!("; {} passed", checked.join(", ")) }
                );
            }
            problems.extend(found);
            public_keys.insert(file.public_key().key_id(), (file.env().to_owned(), file.public_key().clone()));
        }
    }
    if files == 0 {
        let dirs: Vec<String> = folders.iter().map(|(d, _)| format!("{}/", ctx.show(d))).collect();
        println!("no environment files in {} yet (create one with `cargo xtask keygen --env ENV`)", dirs.join(", "));
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
pub fn tracked_files(sh: &Shell, root: &Path) -> anyhow::Result<Vec<PathBuf>> {
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
