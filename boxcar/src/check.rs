//! `cargo xtask check`: everything that can be checked without a secret key. Meant for CI.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use boxcar_secrets::EnvFile;
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
pub struct Args {
    /// Follow each environment's keys from its version at REF (a commit, a
    /// branch: `origin/main` in a pull request's CI) instead of from the
    /// file's first commit. After a deliberate restart with a new key
    /// (`keygen --force`), the commit that made it.
    #[arg(long, value_name = "REF")]
    base: Option<String>,
}

pub(crate) fn run(sh: &Shell, ctx: &Context, args: Args) -> anyhow::Result<()> {
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
            let trust = crate::trust::check(sh, &file, args.base.as_deref());
            found.extend(trust.problems.iter().map(|p| format!("{shown}: {p}")));
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
                    "ok  {shown}: {} secret(s) sealed to key {}, {}{}",
                    file.secret_names().count(),
                    file.public_key().key_id(),
                    trust.summary,
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
    let dirs: Vec<PathBuf> = folders.iter().map(|(dir, _)| dir.clone()).collect();
    let watch = crate::leaks::watch_list(sh, &ctx.root, &dirs, public_keys.into_values())?;
    problems.extend(watch.problems);
    for path in &tracked {
        problems.extend(committed_keys(&ctx.root, path, &watch.keys));
    }
    if let Some(note) = &watch.note {
        println!("note: {note}");
    }
    if problems.is_empty() {
        let retired = watch.keys.iter().filter(|k| k.retired).count();
        println!(
            "ok  no secret key of any environment in {} tracked file(s) ({} current and {retired} retired key(s) looked for)",
            tracked.len(),
            watch.keys.len() - retired
        );
        return Ok(());
    }
    for p in &problems {
        println!("error: {p}");
    }
    bail!("check found {} problem(s)", problems.len())
}

/// Files git tracks (plus new files not ignored), or every file when the
/// project is not a git checkout. Whatever is listed is there to be scanned:
/// a path that is not a regular file is listed too, and `check` says why it
/// cannot scan it.
pub fn tracked_files(sh: &Shell, root: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let is_git = cmd!(sh, "git rev-parse --is-inside-work-tree").quiet().ignore_stderr().read().is_ok();
    if !is_git {
        let mut out = Vec::new();
        walk(root, root, &mut out)?;
        return Ok(out);
    }
    // A submodule (mode 160000) is a repository of its own, checked there;
    // the rest of each line is `<mode> <id> <stage>\t<path>`.
    let staged = cmd!(sh, "git ls-files -z --stage").quiet().read()?;
    let mut files: Vec<PathBuf> = staged
        .split('\0')
        .filter_map(|line| line.split_once('\t'))
        .filter(|(meta, _)| !meta.starts_with("160000 "))
        .map(|(_, path)| PathBuf::from(path))
        .collect();
    // `--others --exclude-standard` adds files about to be committed with
    // `git add -A`; a folder listed there (`name/`) is another repository,
    // which `git add` would record as a submodule.
    let others = cmd!(sh, "git ls-files -z --others --exclude-standard").quiet().read()?;
    files.extend(others.split('\0').filter(|p| !p.is_empty() && !p.ends_with('/')).map(PathBuf::from));
    files.sort();
    files.dedup();
    Ok(files)
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry.with_context(|| format!("reading {}", dir.display()))?;
        let path = entry.path();
        let name = entry.file_name();
        if name == "target" || name == ".git" {
            continue;
        }
        // The entry's own type: a symlink to a folder is listed, not entered.
        let is_dir = entry.file_type().with_context(|| format!("reading {}", path.display()))?.is_dir();
        if is_dir {
            walk(root, &path, out)?;
        } else {
            out.push(path.strip_prefix(root).unwrap_or(&path).to_owned());
        }
    }
    Ok(())
}

/// Finds every secret key of a known public key in `path`, however it is
/// written (`leaks::candidates`). Exact, so it never flags a public key, a hash
/// or a test vector. A file that cannot be scanned is a problem too: passing it
/// would say it holds no key without having read it.
fn committed_keys(root: &Path, path: &Path, keys: &[crate::leaks::Known]) -> Vec<String> {
    let shown = crate::show::escape(&path.display().to_string()).into_owned();
    let bytes = match crate::leaks::read(root, path) {
        Ok(Some(bytes)) => bytes,
        Ok(None) => return Vec::new(),
        Err(why) => return vec![format!("{shown}: not scanned for secret keys: {why}")],
    };
    let mut found = Vec::new();
    for candidate in crate::leaks::candidates(&bytes) {
        if let Some(known) = keys.iter().find(|k| k.key == candidate.public_key) {
            found.push(format!("{shown}:{}: {}", candidate.line, leak_message(known, candidate.encoding)));
        }
    }
    found
}

/// What a committed secret key means, and what undoes it. Rotating seals the
/// same credentials again, and git keeps the old sealed values: only a new
/// credential, issued where the old one was, is out of the leaked key's reach.
fn leak_message(known: &crate::leaks::Known, encoding: crate::leaks::Encoding) -> String {
    let env = &known.env;
    let id = known.key.key_id();
    let names: Vec<String> = known.names.iter().map(|n| format!("`{}`", crate::show::escape(n))).collect();
    let sealed = if names.is_empty() { String::new() } else { format!(" ({})", names.join(", ")) };
    let renew = format!(
        "change each credential sealed to it{sealed} where it was issued (revoke and reissue the token, \
         regenerate the API key, change the password) and seal the new value with \
         `cargo xtask encrypt-secret --env {env} NAME`"
    );
    if known.retired {
        format!(
            "the secret key of environment `{env}`'s retired key {id} (written as {encoding}) is in this file: \
             it still opens every value sealed to it in git history; remove it, then {renew}: \
             `rotate-key` would not help, it seals the same credentials again"
        )
    } else {
        format!(
            "the secret key of environment `{env}` (key id {id}, written as {encoding}) is in this file: \
             whoever can read it can open every value sealed to this key, in every commit; remove it, run \
             `cargo xtask rotate-key --env {env}`, then {renew}: rotating alone seals the same credentials \
             again, and the old sealed values stay readable in git history with this key"
        )
    }
}
