//! `cargo xtask image` and `cargo xtask image-check`: the runner image, built
//! from a static musl binary compiled in a builder container, assembled
//! deterministically, checked, then loaded into the engine (or written out).

mod assemble;
mod base;
mod check;
mod compile;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context as _, bail};
use boxcar_secrets::{EnvFile, PublicKey};
use futures::StreamExt as _;
use xshell::{Shell, cmd};
use zeroize::Zeroizing;

use crate::keys::Context;

/// Default size budget of the image (all layers, uncompressed).
const DEFAULT_BUDGET_KIB: usize = 32 * 1024;
/// Secret values shorter than this are not searched for: they would match
/// by chance. The check says which it skipped.
const MIN_NEEDLE: usize = 6;

/// Build the runner image: static musl binary, public config, nothing else.
///
/// Compiles `app` in a container from the builder image (docker/builder.Dockerfile,
/// bootstrapped from Debian when no registry is reachable), then writes the
/// runner image itself: one layer with sorted entries and fixed times, owners
/// and modes, user 65532, a HEALTHCHECK running `app healthcheck`, OCI labels.
/// The same commit gives the same image ID. The image check runs before
/// anything is tagged; the image is loaded as app:latest and app:<commit>.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// CA bundle for the builder to reach the crate registry through a
    /// TLS-inspecting proxy (default: SSL_CERT_FILE). Never put in the runner image.
    #[arg(long, value_name = "PATH")]
    ca_bundle: Option<PathBuf>,
    /// Write the image (an OCI layout that `docker load` also reads) to PATH
    /// instead of loading it into the engine.
    #[arg(long, value_name = "PATH")]
    oci_archive: Option<PathBuf>,
    /// Repository name of the tags: <REPO>:latest and <REPO>:<commit>.
    #[arg(long, default_value = "app", value_name = "REPO")]
    pub(crate) repo: String,
    #[command(flatten)]
    check: CheckArgs,
    /// Set by `cargo xtask demo`: also ship the git-ignored demo environment,
    /// and tag the image <REPO>:demo only, since it is not the commit's image.
    #[arg(skip)]
    pub(crate) demo: bool,
}

/// Options of the image check.
#[derive(Debug, clap::Args)]
pub(crate) struct CheckArgs {
    /// Secret key file(s): open every value of the matching environment and make
    /// sure no plaintext is in the image (SECRET_KEY_FILE or SECRET_KEY also count).
    #[arg(long = "key-file", value_name = "PATH")]
    key_files: Vec<PathBuf>,
    /// Fail when the image is larger than this many KiB (all layers, uncompressed).
    #[arg(long, value_name = "KIB", default_value_t = DEFAULT_BUDGET_KIB)]
    size_budget_kib: usize,
}

/// Check an image in the engine: static binary, numeric non-root user, no
/// secret plaintext or key material in any layer, config or history, size.
#[derive(Debug, clap::Args)]
pub(crate) struct CheckCommand {
    /// The image to check.
    #[arg(long, default_value = "app:latest")]
    image: String,
    #[command(flatten)]
    check: CheckArgs,
}

struct Git {
    commit: String,
    short: String,
    time: u64,
    dirty: bool,
}

fn git(sh: &Shell) -> anyhow::Result<Git> {
    let commit = cmd!(sh, "git rev-parse HEAD")
        .quiet()
        .read()
        .context("the image is built from a git checkout with at least one commit")?;
    let time: u64 = cmd!(sh, "git log -1 --format=%ct").quiet().read()?.trim().parse()?;
    let dirty = !cmd!(sh, "git status --porcelain --untracked-files=normal").quiet().read()?.trim().is_empty();
    Ok(Git { short: commit[..12].to_owned(), commit, time, dirty })
}

pub(crate) fn run(sh: &Shell, ctx: &mut Context, args: Args) -> anyhow::Result<()> {
    let started = Instant::now();
    refuse_bad_env_files(ctx)?;
    let git = git(sh)?;
    if git.dirty {
        eprintln!(
            "warning: the work tree has uncommitted changes: the image is labelled dirty and is not reproducible"
        );
    }
    let needles = needles(ctx, &args.check.key_files)?;
    let public_keys = public_keys(ctx)?;
    let ca_bundle = ca_bundle(ctx, args.ca_bundle.as_deref())?;

    let rt = crate::engine::runtime()?;
    rt.block_on(async {
        let docker = crate::engine::connect(None).await?;
        let builder = base::ensure_builder(sh, &docker, &ctx.root, ca_bundle.as_deref()).await?;
        let compiled = compile::compile(sh, &docker, &ctx.root, &builder, compile::APP).await?;
        eprintln!("binary: {} ({:.1} s)", compiled.how, compiled.took.as_secs_f64());
        if let Err(why) = check::is_static(&compiled.binary) {
            bail!("the compiled binary is not static: {why}; no image was built");
        }

        let spec = assemble::Spec {
            binary: compiled.binary,
            env_files: env_files(sh, &ctx.root, args.demo)?,
            ca_bundle: compiled.ca_bundle,
            epoch: epoch(git.time)?,
            version: workspace_field(&ctx.root, "version")?,
            revision: if git.dirty { format!("{}-dirty", git.commit) } else { git.commit.clone() },
            source: workspace_field(&ctx.root, "repository")?,
            dirty: git.dirty,
        };
        let short = if git.dirty { format!("{}-dirty", git.short) } else { git.short.clone() };
        let repo = &args.repo;
        let tags = if args.demo {
            vec![format!("{repo}:demo")]
        } else {
            vec![format!("{repo}:latest"), format!("{repo}:{short}")]
        };
        let built = assemble::build(&spec, &tags)?;
        let report = check::check_archive(&built.archive, &needles, &public_keys, args.check.size_budget_kib * 1024)?;
        check::enforce(&report)?;

        match &args.oci_archive {
            Some(path) => {
                let path = ctx.user_path(path);
                boxcar_secrets::write_atomic(&path, &built.archive, Some(0o644))
                    .with_context(|| format!("writing {}", path.display()))?;
                eprintln!("wrote {} (OCI layout and docker-archive; not loaded)", path.display());
            }
            None => {
                load(&docker, &built.archive).await?;
                let loaded = docker.inspect_image(&tags[0]).await.with_context(|| format!("inspecting {}", tags[0]))?;
                if loaded.id.as_deref() != Some(built.image_id.as_str()) {
                    bail!(
                        "the engine reports image ID {:?} for {}, not the built {}",
                        loaded.id,
                        tags[0],
                        built.image_id
                    );
                }
            }
        }
        print_table(&report, &built, &tags, spec.binary.len(), started);
        Ok(())
    })
}

/// The CA bundle for the builder: `--ca-bundle`, else SSL_CERT_FILE when it
/// names a file.
fn ca_bundle(ctx: &Context, given: Option<&Path>) -> anyhow::Result<Option<PathBuf>> {
    match given {
        Some(path) => {
            let path = ctx.user_path(path);
            if !path.is_file() {
                bail!("--ca-bundle {}: no such file", path.display());
            }
            Ok(Some(path))
        }
        None => Ok(std::env::var_os("SSL_CERT_FILE").map(|p| ctx.user_path(Path::new(&p))).filter(|p| p.is_file())),
    }
}

impl Args {
    /// What `cargo xtask image` does with no options (clap's defaults).
    pub(crate) fn defaults() -> Args {
        #[derive(clap::Parser)]
        struct Image {
            #[command(flatten)]
            args: Args,
        }
        <Image as clap::Parser>::parse_from(["image"]).args
    }
}

/// Builds (or finds) the image of the Bot API stand-in for `cargo xtask demo`,
/// `boxcar/standin:<image id>`, compiled by the same builder as the app.
pub(crate) async fn standin(sh: &Shell, ctx: &Context, docker: &bollard::Docker) -> anyhow::Result<String> {
    let git = git(sh)?;
    let ca_bundle = ca_bundle(ctx, None)?;
    {
        let builder = base::ensure_builder(sh, docker, &ctx.root, ca_bundle.as_deref()).await?;
        let compiled = compile::compile(sh, docker, &ctx.root, &builder, compile::STANDIN).await?;
        eprintln!("stand-in binary: {} ({:.1} s)", compiled.how, compiled.took.as_secs_f64());
        if let Err(why) = check::is_static(&compiled.binary) {
            bail!("the compiled stand-in is not static: {why}");
        }
        // The tag is the image ID itself: known before loading, so an image
        // that is already there is not loaded again.
        let probe = assemble::standin(compiled.binary.clone(), epoch(git.time)?, &[])?;
        let tag = format!("boxcar/standin:{}", &probe.image_id["sha256:".len()..][..12]);
        if docker.inspect_image(&tag).await.is_err() {
            let built = assemble::standin(compiled.binary, epoch(git.time)?, std::slice::from_ref(&tag))?;
            load(docker, &built.archive).await?;
        }
        Ok(tag)
    }
}

async fn load(docker: &bollard::Docker, archive: &[u8]) -> anyhow::Result<()> {
    let options = bollard::query_parameters::ImportImageOptionsBuilder::default().quiet(true).build();
    let mut stream = docker.import_image(options, bollard::body_full(archive.to_vec().into()), None);
    while let Some(item) = stream.next().await {
        item.context("loading the image into the engine")?;
    }
    Ok(())
}

fn print_table(report: &check::Report, built: &assemble::Built, tags: &[String], binary: usize, started: Instant) {
    let kib = |n: usize| format!("{:.1} KiB", n as f64 / 1024.0);
    println!("image      {}", built.image_id);
    println!("tags       {}", tags.join(", "));
    println!("binary     {} (static)", kib(binary));
    println!(
        "image      {} in {} layer(s), {} files; {} besides the binary",
        kib(report.image_size),
        report.layers,
        report.files,
        kib(report.image_size.saturating_sub(binary))
    );
    println!("user       {}", report.user);
    for (k, v) in &report.labels {
        println!("label      {k}={v}");
    }
    println!("took       {:.1} s", started.elapsed().as_secs_f64());
}

/// SOURCE_DATE_EPOCH when set, else the commit time.
fn epoch(commit_time: u64) -> anyhow::Result<u64> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) => v.trim().parse().with_context(|| format!("SOURCE_DATE_EPOCH `{v}` is not a number of seconds")),
        Err(_) => Ok(commit_time),
    }
}

fn workspace_field(root: &Path, field: &str) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(root.join("Cargo.toml")).context("reading Cargo.toml")?;
    let doc: toml::Table = text.parse().context("parsing Cargo.toml")?;
    doc.get("workspace")
        .and_then(|w| w.get("package"))
        .and_then(|p| p.get(field))
        .and_then(|v| v.as_str())
        .map(ToOwned::to_owned)
        .with_context(|| format!("Cargo.toml has no [workspace.package] {field}"))
}

/// The public environment files for /etc/boxcar/deploy-config: those git
/// tracks or would add, never one it ignores (the demo's, made on one machine
/// with a key that exists there only), unless `demo` asks for that one.
fn env_files(sh: &Shell, root: &Path, demo: bool) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let visible = crate::check::tracked_files(sh, root)?;
    let mut out = Vec::new();
    for path in boxcar_secrets::env_files(&root.join("deploy-config"))? {
        let name = path.file_name().unwrap_or_default().to_string_lossy().into_owned();
        let rel = path.strip_prefix(root).unwrap_or(&path);
        let shipped = visible.iter().any(|v| v == rel) || (demo && name == "demo.toml");
        if !shipped {
            eprintln!("not in the image: {} (git ignores it)", rel.display());
            continue;
        }
        out.push((name, std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?));
    }
    Ok(out)
}

/// The environment files ship in the image: each must pass what `check`
/// checks without a key (no plaintext under [secrets], every value sealed to
/// its file's key) before anything is built.
fn refuse_bad_env_files(ctx: &Context) -> anyhow::Result<()> {
    let mut problems = Vec::new();
    for path in boxcar_secrets::env_files(&ctx.config_dir())? {
        match EnvFile::load(&path) {
            Ok(file) => problems.extend(file.problems().iter().map(|p| format!("{}: {p}", ctx.show(&path)))),
            Err(e) => problems.push(e.to_string()),
        }
    }
    if problems.is_empty() {
        return Ok(());
    }
    for p in &problems {
        eprintln!("error: {p}");
    }
    bail!(
        "{} problem(s) in the environment files that would ship in the image; `cargo xtask check` lists them too",
        problems.len()
    )
}

fn public_keys(ctx: &Context) -> anyhow::Result<Vec<(String, PublicKey)>> {
    let mut out = Vec::new();
    for path in boxcar_secrets::env_files(&ctx.config_dir())? {
        if let Ok(file) = EnvFile::load(&path) {
            out.push((file.env().to_owned(), file.public_key().clone()));
        }
    }
    Ok(out)
}

/// What must not be in the image, from every key supplied: each opened value
/// and the key itself (base64 and raw).
fn needles(ctx: &mut Context, key_files: &[PathBuf]) -> anyhow::Result<Vec<check::Needle>> {
    let mut intakes = Vec::new();
    if let Some(intake) = std::mem::replace(&mut ctx.env_key, Ok(None))? {
        intakes.push(intake);
    }
    for path in key_files {
        intakes.push(boxcar_secrets::read_key_file(&ctx.user_path(path), "--key-file")?);
    }
    let mut files = Vec::new();
    let mut unreadable = Vec::new();
    for path in boxcar_secrets::env_files(&ctx.config_dir())? {
        match EnvFile::load(&path) {
            Ok(file) => files.push(file),
            Err(e) => unreadable.push(e.to_string()),
        }
    }
    let mut needles = Vec::new();
    for intake in intakes {
        let key = intake.key;
        let Some(file) = files.iter().find(|f| f.public_key() == key.public_key()) else {
            let mut msg = format!(
                "the key from {} (key id {}) belongs to no environment in deploy-config/",
                intake.source,
                key.key_id()
            );
            for e in &unreadable {
                msg.push_str(&format!("\n  (could not read: {e})"));
            }
            bail!("{msg}");
        };
        let secrets = file.open_all(&key)?;
        for (name, value) in secrets.iter() {
            if value.len() < MIN_NEEDLE {
                eprintln!(
                    "image check: secrets.{name} of `{}` is shorter than {MIN_NEEDLE} bytes; not searched for",
                    file.env()
                );
                continue;
            }
            needles.push(check::Needle {
                what: format!("the plaintext of secrets.{name} of environment `{}`", file.env()),
                bytes: Zeroizing::new(value.expose_bytes().to_vec()),
            });
        }
        let b64 = key.to_base64();
        let raw =
            base64::Engine::decode(&base64::engine::general_purpose::STANDARD, b64.as_bytes()).map(Zeroizing::new)?;
        for bytes in [Zeroizing::new(b64.as_bytes().to_vec()), raw] {
            needles.push(check::Needle { what: format!("the secret key of environment `{}`", file.env()), bytes });
        }
        eprintln!("image check: searching for {} value(s) and the key of `{}`", secrets.len(), file.env());
    }
    Ok(needles)
}

pub(crate) fn run_check(ctx: &mut Context, args: CheckCommand) -> anyhow::Result<()> {
    let needles = needles(ctx, &args.check.key_files)?;
    let public_keys = public_keys(ctx)?;
    let rt = crate::engine::runtime()?;
    rt.block_on(async {
        let docker = crate::engine::connect(None).await?;
        docker.inspect_image(&args.image).await.with_context(|| format!("no image {} in the engine", args.image))?;
        let mut stream = docker.export_image(&args.image);
        let mut archive = Vec::new();
        while let Some(chunk) = stream.next().await {
            archive.extend_from_slice(&chunk.with_context(|| format!("exporting {}", args.image))?);
        }
        let report = check::check_archive(&archive, &needles, &public_keys, args.check.size_budget_kib * 1024)?;
        check::enforce(&report)?;
        println!(
            "ok  {}: static binary ({} KiB), user {}, {} layer(s), {} KiB, {} secret(s) searched for",
            args.image,
            report.binary_size / 1024,
            report.user,
            report.layers,
            report.image_size / 1024,
            needles.len()
        );
        Ok(())
    })
}
