//! What an image is made from besides the compiled binary, read and
//! checked on the host before any engine is asked: the environment files
//! that ship (each approved, each approving the service's run-time
//! contract), the contract's extra files, the CA bundle for the builder, the
//! build's time, and what the build must not see.

use std::path::{Path, PathBuf};

use boxcar_secrets::EnvFile;
use xshell::Shell;

use super::error::{Error, Result, on_file};
use crate::vocab::contract::Service;
use crate::vocab::project::Context;

/// What the build must not see besides what git ignores: every service's
/// environment files and boxcar.toml, which the image takes from the host
/// (so sealing a value or changing a label recompiles nothing).
pub(super) fn excluded_from_build(ctx: &Context) -> Result<Vec<PathBuf>> {
    let mut dirs = vec![ctx.config_dir()];
    if let Some(contract) = ctx.contract()? {
        dirs.extend(contract.services().iter().map(|s| s.config_dir.clone()));
    }
    let mut out = vec![PathBuf::from(crate::vocab::contract::FILE)];
    for dir in dirs {
        if ctx.root.join(&dir).is_dir() {
            for path in boxcar_secrets::env_files(&ctx.root.join(&dir))? {
                out.extend(path.strip_prefix(&ctx.root).ok().map(Path::to_path_buf));
            }
        }
    }
    Ok(out)
}

/// The contract's extra files, read now: each must exist in the workspace.
pub(super) fn extra_files(ctx: &Context, service: &Service) -> Result<Vec<(String, u32, Vec<u8>)>> {
    service
        .files
        .iter()
        .map(|f| {
            let data = std::fs::read(ctx.root.join(&f.from)).map_err(|source| Error::ExtraFile {
                service: service.name.clone(),
                from: ctx.show(&f.from),
                source,
            })?;
            Ok((f.to.clone(), f.mode, data))
        })
        .collect()
}

/// The CA bundle for the builder: `--ca-bundle`, else SSL_CERT_FILE when it
/// names a file.
pub(super) fn ca_bundle(ctx: &Context, given: Option<&Path>) -> Result<Option<PathBuf>> {
    match given {
        Some(path) => {
            let path = ctx.user_path(path);
            if !path.is_file() {
                return Err(Error::CaBundleMissing { path: path.display().to_string() });
            }
            Ok(Some(path))
        }
        None => Ok(std::env::var_os("SSL_CERT_FILE").map(|p| ctx.user_path(Path::new(&p))).filter(|p| p.is_file())),
    }
}

/// SOURCE_DATE_EPOCH when set, else the commit time.
pub(super) fn epoch(commit_time: u64) -> Result<u64> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) => v.trim().parse().map_err(|source| Error::Epoch { value: v.clone(), source }),
        Err(_) => Ok(commit_time),
    }
}

/// The public environment files for the image: those git tracks or would
/// add, never one it ignores (the demo's, made on one machine with a key that
/// exists there only), unless `ignored` names that one.
pub(super) fn env_files(sh: &Shell, ctx: &Context, ignored: Option<&str>) -> Result<Vec<(String, Vec<u8>)>> {
    let root = &ctx.root;
    let dir = root.join(ctx.config_dir());
    if !dir.is_dir() {
        return Ok(Vec::new());
    }
    let visible = crate::adapters::git::tracked_files(sh, root)?;
    let mut out = Vec::new();
    for path in boxcar_secrets::env_files(&dir)? {
        let name = path.file_name().unwrap_or_default().to_string_lossy().into_owned();
        let rel = path.strip_prefix(root).unwrap_or(&path);
        let shipped = visible.iter().any(|v| v == rel) || ignored == Some(name.as_str());
        if !shipped {
            eprintln!("not in the image: {} (git ignores it)", ctx.show(rel));
            continue;
        }
        out.push((name, std::fs::read(&path).map_err(on_file(format!("reading {}", path.display())))?));
    }
    Ok(out)
}

/// The environment files that ship in the image: each must pass what
/// `check` checks without a key (no plaintext under [secrets], every value
/// sealed to its file's key), be approved, and approve what the contract
/// gives the service at run time, before anything is built: an image that
/// carries anything else would not start.
pub(super) fn refuse_bad_env_files(
    ctx: &Context,
    service: &Service,
    env_files: &[(String, Vec<u8>)],
    files: &[(String, u32, Vec<u8>)],
) -> Result<()> {
    let runtime = service.runtime_with(files);
    let mut problems = Vec::new();
    for (name, bytes) in env_files {
        let path = ctx.config_dir().join(name);
        let shown = ctx.show(&path);
        let text = String::from_utf8_lossy(bytes);
        let file = match EnvFile::parse(&path, &text) {
            Ok(file) => file.for_service(ctx.named_service()),
            Err(e) => {
                problems.push(e.to_string());
                continue;
            }
        };
        problems.extend(file.problems().iter().map(|p| format!("{shown}: {p}")));
        if let Err(e) = file.approval() {
            problems.push(format!("{e} (an image with it would not start)"));
            continue;
        }
        let changed = match boxcar_secrets::runtime::approved_runtime(file.table(), &service.name) {
            None => vec!["it approves none".to_owned()],
            Some(approved) => boxcar_secrets::runtime::differences(approved, &runtime),
        };
        if !changed.is_empty() {
            problems.push(format!(
                "{shown}: boxcar.toml gives service `{}` at run time what environment `{}` did not approve ({}); \
                 an image with it would not start: have a holder of its secret key review the change and approve it \
                 (`cargo xtask approve {}--env {}`)",
                service.name,
                file.env(),
                changed.join(", "),
                ctx.service_arg(),
                file.env()
            ));
        }
    }
    match problems.is_empty() {
        true => Ok(()),
        false => Err(Error::EnvFiles { problems }),
    }
}
