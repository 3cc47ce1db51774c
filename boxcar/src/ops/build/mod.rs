//! One service's runner image: the musl binary compiled in a builder
//! container (`compile`, on the builder `base` makes), the image written byte
//! for byte (`assemble`), and checked before anything is tagged (`check`).
//!
//! `prepare` checks everything that needs no engine (the environment files
//! that ship, the keys to search for, the extra files, the CA bundle); then
//! `Prepared::build` compiles, writes, checks and loads. `build` does both.

pub mod assemble;
pub(crate) mod base;
mod cache;
pub(crate) mod check;
pub mod compile;
mod error;
mod hints;
mod inputs;
pub(crate) mod prefetch;
mod probe;
mod sources;
pub mod target;

use std::path::PathBuf;
use std::time::Instant;

pub use self::error::Error;
use self::error::{Result, on_engine, on_file};
use boxcar_secrets::PublicKey;
use futures::StreamExt as _;
use xshell::{Shell, cmd};

use crate::vocab::contract::Service;
use crate::vocab::project::Context;

/// How to build: what `cargo xtask image` takes, without its command line.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// CA bundle for the builder (default: SSL_CERT_FILE when it names a file).
    pub ca_bundle: Option<PathBuf>,
    /// Write the image to this file instead of loading it into the engine.
    pub oci_archive: Option<PathBuf>,
    /// Repository name of the tags (default: the service's name).
    pub repo: Option<String>,
    pub profile: compile::Profile,
    /// Key files whose environments' values (and the keys) must not be in the image.
    pub key_files: Vec<PathBuf>,
    /// The image check's size budget in KiB (default: the contract's).
    pub size_budget_kib: Option<usize>,
    /// An environment file git ignores that ships all the same, and the one
    /// tag the image then gets: `(file name, tag)` (the demo's own).
    pub ignored_env: Option<(String, String)>,
    /// Other binaries `(package, bin)` compiled in the same cargo run, whose
    /// own builds follow and find them made (see [`compile::Binary::along`]).
    pub compile_along: Vec<(String, String)>,
}

/// What `image` made.
#[derive(Debug)]
pub struct Image {
    /// `sha256:<hex>`.
    pub id: String,
    pub tags: Vec<String>,
    /// Its blobs, byte for byte, for a registry.
    pub blobs: assemble::Blobs,
}

/// The commit an image is built from.
#[derive(Debug, Clone)]
pub struct Commit {
    pub id: String,
    /// Its first 12 hex digits, with `-dirty` for a work tree with changes:
    /// the image's tag.
    pub tag: String,
    time: u64,
    dirty: bool,
}

impl Commit {
    /// The checkout's HEAD, and whether its work tree has changes.
    pub fn of(sh: &Shell) -> Result<Commit> {
        let id = cmd!(sh, "git rev-parse HEAD").quiet().read().map_err(|source| Error::NoCommit { source })?;
        let time: u64 = cmd!(sh, "git log -1 --format=%ct").quiet().read()?.trim().parse()?;
        let dirty = !cmd!(sh, "git status --porcelain --untracked-files=normal").quiet().read()?.trim().is_empty();
        let tag = if dirty { format!("{}-dirty", &id[..12]) } else { id[..12].to_owned() };
        Ok(Commit { id, tag, time, dirty })
    }
}

/// Everything checked that needs no engine: an image can be built from it.
#[derive(Debug)]
pub struct Prepared {
    service: Service,
    options: Options,
    commit: Commit,
    root: PathBuf,
    needles: Vec<check::Needle>,
    public_keys: Vec<(String, PublicKey)>,
    ca_bundle: Option<PathBuf>,
    excluded: Vec<PathBuf>,
    files: Vec<(String, u32, Vec<u8>)>,
    env_files: Vec<(String, Vec<u8>)>,
    oci_archive: Option<PathBuf>,
}

/// Checks what `service`'s image needs before any engine is asked: the
/// environment files that would ship (each approved, each approving the
/// service's run-time contract), the keys to search for, the extra files.
pub fn prepare(sh: &Shell, ctx: &mut Context, service: &Service, options: &Options) -> Result<Prepared> {
    let commit = Commit::of(sh)?;
    if commit.dirty {
        eprintln!(
            "warning: the work tree has uncommitted changes: the image is labelled dirty and is not reproducible"
        );
    }
    let needles = check::needles(ctx, &options.key_files)?;
    let public_keys = check::public_keys(ctx)?;
    let ca_bundle = inputs::ca_bundle(ctx, options.ca_bundle.as_deref())?;
    let excluded = inputs::excluded_from_build(ctx)?;
    let files = inputs::extra_files(ctx, service)?;
    let env_files = inputs::env_files(sh, ctx, options.ignored_env.as_ref().map(|(file, _)| file.as_str()))?;
    inputs::refuse_bad_env_files(ctx, service, &env_files, &files)?;
    Ok(Prepared {
        service: service.clone(),
        options: options.clone(),
        commit,
        root: ctx.root.clone(),
        needles,
        public_keys,
        ca_bundle,
        excluded,
        files,
        env_files,
        oci_archive: options.oci_archive.as_deref().map(|p| ctx.user_path(p)),
    })
}

/// [`prepare`], then [`Prepared::build`] on the local engine.
pub fn build(sh: &Shell, ctx: &mut Context, service: &Service, options: &Options) -> Result<Image> {
    let prepared = prepare(sh, ctx, service, options)?;
    let rt = crate::adapters::engine::runtime()?;
    rt.block_on(async {
        let docker = crate::adapters::engine::connect(None).await?;
        prepared.build(sh, &docker).await
    })
}

impl Prepared {
    /// The commit the image is built from.
    pub fn commit(&self) -> &Commit {
        &self.commit
    }

    /// Compiles, writes the image, checks it, and loads it into `docker` (or
    /// writes it out); prints its summary.
    pub async fn build(&self, sh: &Shell, docker: &bollard::Docker) -> Result<Image> {
        let started = Instant::now();
        let (service, options, commit) = (&self.service, &self.options, &self.commit);
        let prefetch = prefetch::Prefetch::start(docker, &self.root).await;
        let builder =
            base::ensure_builder(sh, docker, &self.root, self.ca_bundle.as_deref(), &service.packages).await?;
        let binary = compile::Binary {
            package: service.package.clone(),
            bin: service.bin.clone(),
            profile: options.profile,
            along: options.compile_along.clone(),
        };
        let compiled = compile::compile(sh, docker, &self.root, &builder, &binary, &self.excluded, prefetch).await?;
        eprintln!("binary: {} ({:.1} s)", compiled.how, compiled.took.as_secs_f64());
        if let Err(why) = check::is_static(&compiled.binary) {
            return Err(Error::NotStatic { why });
        }
        let probe = match service.health.needs_probe() {
            true => Some(probe::probe(docker, &self.root, &builder).await?),
            false => None,
        };
        let spec = assemble::Spec {
            service: service.clone(),
            binary: compiled.binary,
            probe,
            env_files: self.env_files.clone(),
            files: self.files.clone(),
            ca_bundle: compiled.ca_bundle,
            epoch: inputs::epoch(commit.time)?,
            revision: if commit.dirty { format!("{}-dirty", commit.id) } else { commit.id.clone() },
            dirty: commit.dirty,
            profile: options.profile,
        };
        let repo = options.repo.clone().unwrap_or_else(|| service.name.clone());
        let tags = match &options.ignored_env {
            Some((_, tag)) => vec![format!("{repo}:{tag}")],
            None => vec![format!("{repo}:latest"), format!("{repo}:{}", commit.tag)],
        };
        let built = assemble::build(&spec, &tags)?;
        let budget = options.size_budget_kib.unwrap_or(service.size_budget_kib);
        let report = check::check_archive(&built.archive, &self.needles, &self.public_keys, budget * 1024)?;
        check::enforce(&report)?;
        match &self.oci_archive {
            Some(path) => {
                boxcar_secrets::write_atomic(path, &built.archive, Some(0o644))
                    .map_err(on_file(format!("writing {}", path.display())))?;
                eprintln!("wrote {} (OCI layout and docker-archive; not loaded)", path.display());
            }
            None => {
                load(docker, &built.archive).await?;
                let loaded =
                    docker.inspect_image(&tags[0]).await.map_err(on_engine(format!("inspecting {}", tags[0])))?;
                if loaded.id.as_deref() != Some(built.image_id.as_str()) {
                    return Err(Error::LoadedOther {
                        reported: loaded.id,
                        tag: tags[0].clone(),
                        built: built.image_id.clone(),
                    });
                }
            }
        }
        print_table(&report, &built, &tags, spec.binary.len(), started);
        Ok(Image { id: built.image_id, tags, blobs: built.blobs })
    }
}

async fn load(docker: &bollard::Docker, archive: &[u8]) -> Result<()> {
    let options = bollard::query_parameters::ImportImageOptionsBuilder::default().quiet(true).build();
    let mut stream = docker.import_image(options, bollard::body_full(archive.to_vec().into()), None);
    while let Some(item) = stream.next().await {
        item.map_err(on_engine("loading the image into the engine"))?;
    }
    Ok(())
}

fn print_table(report: &check::Report, built: &assemble::Built, tags: &[String], binary: usize, started: Instant) {
    let kib = |n: usize| format!("{:.1} KiB", n as f64 / 1024.0);
    println!("image      {}", built.image_id);
    println!("digest     {} (the manifest's: a registry serves the image under it)", built.blobs.manifest.digest);
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
