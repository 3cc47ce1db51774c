//! `cargo xtask check`: everything that can be checked without a secret key. Meant for CI.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::bail;
use boxcar_secrets::EnvFile;
use xshell::Shell;

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
    // Asked once for every file's key history.
    let git = crate::trust::Git::probe(sh, args.base.as_deref());
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
            let trust = crate::trust::check(sh, &file, git.as_ref());
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
    problems.extend(watch.problems.iter().cloned());
    for path in &tracked {
        problems.extend(crate::leaks::committed_keys(&ctx.root, path, &watch.keys));
    }
    if let Some(note) = &watch.note {
        println!("note: {note}");
    }
    if problems.is_empty() {
        println!("ok  {}", watch.summary(tracked.len()));
        return Ok(());
    }
    for p in &problems {
        println!("error: {p}");
    }
    bail!("check found {} problem(s)", problems.len())
}

// What `check` scans; `image` asks it too.
pub use crate::leaks::tracked_files;
