//! `cargo xtask check`: everything that can be checked without a secret key. Meant for CI.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::bail;
use boxcar_secrets::EnvFile;
use xshell::Shell;

use crate::adapters::git::tracked_files;
use crate::cli::args::BaseArg;
use crate::ops::trust::{At, FileVerdict, Problem, Verdict, Version};
use crate::vocab::contract::Service;
use crate::vocab::project::Context;

/// Check every environment from a trusted base commit, and the repository, without any key.
///
/// The base is the one commit trusted: in a pull request's CI, the branch it
/// merges into (`--base origin/main`, with the whole history fetched); by
/// default the merge base of HEAD and origin/HEAD. With history but no base
/// it fails: it never trusts the history it is checking. Every
/// version of every environment file between the base and the work tree,
/// along every parent of every merge and wherever the file moved, must be
/// approved by a key the base's key endorsed, and no approval serial may go
/// down (an older approved file brought back).
///
/// Also: every <config dir>/<ENV>.toml of every service in boxcar.toml (or
/// deploy-config/ without one) must parse and have a valid public key; every
/// value under [secrets] must be sealed (no plaintext), in a known format
/// version, to that file's key; each file must approve what boxcar.toml gives
/// its services at run time ([boxcar.services.NAME]); the service's own check
/// (boxcar.toml's `check`, built and run on this machine) must pass on each
/// file; and no tracked file may contain the secret key of any environment.
/// Prints one line per problem and exits non-zero if there is any.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    base: BaseArg,
}

pub(crate) fn run(sh: &Shell, ctx: &Context, args: Args) -> anyhow::Result<()> {
    let mut problems = Vec::new();
    let (folders, default_service) = folders(ctx)?;
    let verdict = history(sh, args.base.base.as_deref(), default_service.as_deref(), &mut problems);
    // History's problems go with the file of the work tree they are about,
    // the rest (other paths, earlier commits, R4) after the files.
    let mut history_problems: Vec<&Problem> = verdict.iter().flat_map(|v| &v.problems).collect();

    let mut public_keys = BTreeMap::new();
    let mut files = 0;
    let mut own_checks = OwnChecks { sh, ctx, built: Vec::new() };
    for (dir, services) in &folders {
        let paths = if ctx.root.join(dir).is_dir() { boxcar_secrets::env_files(dir)? } else { Vec::new() };
        files += paths.len();
        for path in &paths {
            let file = match EnvFile::load(path) {
                Ok(file) => file,
                Err(err) => {
                    problems.push(crate::vocab::show::escape(&err.to_string()).into_owned());
                    continue;
                }
            };
            let rel = dir.join(path.file_name().unwrap_or_default());
            let (here, elsewhere): (Vec<_>, Vec<_>) =
                history_problems.into_iter().partition(|p| p.at == At::WorkTree && p.path == rel);
            history_problems = elsewhere;
            let trust = verdict.as_ref().and_then(|v| v.files.get(rel.as_path()));
            let found = check_file(ctx, &file, services, default_service.as_deref(), &mut own_checks, &here, trust)?;
            problems.extend(found);
            public_keys.insert(file.public_key().key_id(), (file.env().to_owned(), file.public_key().clone()));
        }
    }
    problems.extend(history_problems.iter().map(ToString::to_string));
    if files == 0 {
        let dirs: Vec<String> = folders.iter().map(|(d, _)| format!("{}/", ctx.show(d))).collect();
        println!("no environment files in {} yet (create one with `cargo xtask keygen --env ENV`)", dirs.join(", "));
    }
    for note in verdict.iter().flat_map(|v| &v.notes) {
        println!("note: {note}");
    }
    let dirs: Vec<PathBuf> = folders.iter().map(|(dir, _)| dir.clone()).collect();
    let scanned = leaks(sh, ctx, &dirs, public_keys, &mut problems)?;
    if problems.is_empty() {
        println!("ok  {scanned}");
        return Ok(());
    }
    for p in &problems {
        println!("error: {p}");
    }
    bail!("check found {} problem(s)", problems.len())
}

/// Folders of environment files, each with the services that read it.
type Folders = Vec<(PathBuf, Vec<Service>)>;

/// Each folder of environment files, with the services that read it, and
/// the contract's default service (hints name the others).
fn folders(ctx: &Context) -> anyhow::Result<(Folders, Option<String>)> {
    let contract = match ctx.contract()? {
        None => None,
        Some(mut contract) => {
            contract.resolve(&ctx.root)?;
            Some(contract)
        }
    };
    let mut folders: Folders = Vec::new();
    match &contract {
        None => folders.push((PathBuf::from(crate::vocab::defaults::CONFIG_DIR), Vec::new())),
        Some(contract) => {
            for service in contract.services() {
                match folders.iter_mut().find(|(dir, _)| *dir == service.config_dir) {
                    Some((_, services)) => services.push(service.clone()),
                    None => folders.push((service.config_dir.clone(), vec![service.clone()])),
                }
            }
        }
    }
    let default_service = contract.as_ref().and_then(|c| c.pick(None).ok()).map(|s| s.name.clone());
    Ok((folders, default_service))
}

/// Every environment through its history (R0 to R5); why it cannot be
/// followed goes into `problems`.
fn history(
    sh: &Shell,
    base: Option<&str>,
    default_service: Option<&str>,
    problems: &mut Vec<String>,
) -> Option<Verdict> {
    let start = match crate::ops::history::start(sh, base) {
        Ok(start) => start,
        Err(why) => {
            problems.push(why.to_string());
            return None;
        }
    };
    if start == crate::ops::history::Start::NotGit {
        println!("note: not a git checkout: no history to follow; every environment is taken as it is");
    }
    match crate::ops::history::read(sh, &start) {
        Ok(history) => {
            let hint = |v: &Version| {
                v.services
                    .iter()
                    .find(|s| Some(s.as_str()) == default_service)
                    .map_or_else(|| v.services.first().cloned(), |_| None)
            };
            Some(crate::ops::trust::evaluate(&history, &hint))
        }
        Err(why) => {
            problems.push(format!("{:#}", anyhow::Error::from(why)));
            None
        }
    }
}

/// The services' own checks, each service built once for all of its files.
struct OwnChecks<'a> {
    sh: &'a Shell,
    ctx: &'a Context,
    built: Vec<(String, PathBuf)>,
}

impl OwnChecks<'_> {
    /// What `service`'s own check says of the file at `path`, one line each
    /// when it fails.
    fn of(&mut self, service: &Service, path: &Path, shown: &str) -> anyhow::Result<Vec<String>> {
        let Some(args) = &service.check else { return Ok(Vec::new()) };
        let binary = match self.built.iter().find(|(name, _)| *name == service.name) {
            Some((_, binary)) => binary.clone(),
            None => {
                let binary = crate::ops::service_cmd::build_native(self.sh, &self.ctx.root, service)?;
                self.built.push((service.name.clone(), binary.clone()));
                binary
            }
        };
        let answer = crate::ops::service_cmd::native(&binary, args, path)?;
        if answer.code == 0 {
            return Ok(Vec::new());
        }
        let what = crate::ops::service_cmd::describe(service, args);
        Ok(answer.lines().into_iter().map(|l| format!("{shown}: `{what}`: {l}")).collect())
    }
}

/// One environment file of the work tree: what can be found without a key,
/// its run-time contracts (R6), its services' own checks, and its history's
/// problems (`here`); its `ok` line when there is none.
fn check_file(
    ctx: &Context,
    file: &EnvFile,
    services: &[Service],
    default_service: Option<&str>,
    own_checks: &mut OwnChecks<'_>,
    here: &[&Problem],
    trust: Option<&FileVerdict>,
) -> anyhow::Result<Vec<String>> {
    let shown = ctx.show(file.path());
    let mut found: Vec<String> = file.problems().iter().map(|p| format!("{shown}: {p}")).collect();
    if file.approval().is_ok() {
        found.extend(runtime_problems(ctx, file, services, default_service, &shown)?);
    }
    for service in services {
        found.extend(own_checks.of(service, file.path(), &shown)?);
    }
    found.extend(here.iter().map(ToString::to_string));
    if found.is_empty() && trust.is_some_and(|t| !t.troubled) {
        let checked: Vec<String> = services
            .iter()
            .filter_map(|s| s.check.as_ref().map(|a| format!("`{}`", crate::ops::service_cmd::describe(s, a))))
            .collect();
        println!(
            "ok  {shown}: {} secret(s) sealed to key {}, {}{}",
            file.secret_names().count(),
            file.public_key().key_id(),
            trust.map(|t| t.summary.as_str()).unwrap_or_default(),
            if checked.is_empty() { String::new() } else { format!("; {} passed", checked.join(", ")) }
        );
    }
    Ok(found)
}

/// Committed secret keys: the keys of these files and their history looked
/// for in every tracked file, problems into `problems`; the summary of what
/// was scanned.
fn leaks(
    sh: &Shell,
    ctx: &Context,
    dirs: &[PathBuf],
    public_keys: BTreeMap<boxcar_secrets::KeyId, (String, boxcar_secrets::PublicKey)>,
    problems: &mut Vec<String>,
) -> anyhow::Result<String> {
    let tracked = tracked_files(sh, &ctx.root)?;
    let watch = crate::ops::leaks::watch_list(sh, &ctx.root, dirs, public_keys.into_values())?;
    problems.extend(watch.problems.iter().cloned());
    for path in &tracked {
        problems.extend(crate::ops::leaks::committed_keys(&ctx.root, path, &watch.keys));
    }
    if let Some(note) = &watch.note {
        println!("note: {note}");
    }
    Ok(watch.summary(tracked.len()))
}

/// R6: `file` must approve what boxcar.toml gives each of its `services` at
/// run time, as `[boxcar.services.NAME]`.
fn runtime_problems(
    ctx: &Context,
    file: &EnvFile,
    services: &[Service],
    default_service: Option<&str>,
    shown: &str,
) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    for service in services {
        let now = service.runtime(&ctx.root)?;
        let service_arg = if Some(service.name.as_str()) == default_service {
            String::new()
        } else {
            format!("--service {} ", service.name)
        };
        let what = match boxcar_secrets::runtime::approved_runtime(file.table(), &service.name) {
            None => "approves no run-time contract for it".to_owned(),
            Some(approved) => {
                let changed = boxcar_secrets::runtime::differences(approved, &now);
                if changed.is_empty() {
                    continue;
                }
                format!("approved another: it differs in {}", changed.join(", "))
            }
        };
        out.push(format!(
            "{shown}: boxcar.toml gives service `{}` at run time what environment `{}` did not approve ({what}); \
             a holder of its secret key reviews the change and approves it (`cargo xtask approve {service_arg}--env {}`), \
             or boxcar.toml goes back [R6]",
            service.name,
            file.env(),
            file.env()
        ));
    }
    Ok(out)
}
