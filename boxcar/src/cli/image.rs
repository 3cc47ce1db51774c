//! `cargo xtask image`: a service's runner image built (`ops::build`), then,
//! with `--push`, published byte for byte (`ops::publish`).

use std::path::PathBuf;

use xshell::Shell;

use crate::cli::args::{CheckArgs, ServiceArg};
use crate::ops::build::{self, compile::Profile};
use crate::ops::publish;
use crate::vocab::project::Context;

/// Build a service's runner image: static musl binary, public config, nothing else.
///
/// Compiles the service (boxcar.toml names its package and binary) in a
/// container from the builder image (bootstrapped from Debian when no registry
/// is reachable), then writes the runner image itself: one layer with sorted
/// entries and fixed times, owners and modes, the contract's user, port,
/// health check and labels. The same commit gives the same image ID. The image
/// check runs before anything is tagged; the image is loaded as
/// <REPO>:latest and <REPO>:<commit>.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub service: ServiceArg,
    /// CA bundle for the builder to reach the crate registry through a
    /// TLS-inspecting proxy (default: SSL_CERT_FILE). Never put in the runner image.
    #[arg(long, value_name = "PATH")]
    pub ca_bundle: Option<PathBuf>,
    /// Write the image (an OCI layout that `docker load` also reads) to PATH
    /// instead of loading it into the engine.
    #[arg(long, value_name = "PATH")]
    pub oci_archive: Option<PathBuf>,
    /// Then push the image, byte for byte, to a registry:
    /// REGISTRY/REPO[:TAG] (default tag: the commit's, as the local tag).
    /// Uses Docker's config.json and credential helpers for the login, and
    /// trusts the host's CA bundle and /etc/docker/certs.d/REGISTRY/*.crt.
    /// Prints the pinned REGISTRY/REPO@sha256:… that `deploy --image` and
    /// `manifests --image` take.
    #[arg(long, value_name = "REGISTRY/REPO[:TAG]")]
    pub push: Option<String>,
    /// Repository name of the tags: <REPO>:latest and <REPO>:<commit>
    /// (default: the service's name).
    #[arg(long, value_name = "REPO")]
    pub repo: Option<String>,
    /// How to compile: `release` (what production runs) or `fast` (no LTO,
    /// many codegen units, incremental: for the inner loop; `deploy` refuses it
    /// for a production environment). The image's label `dev.boxcar.profile`
    /// says which, when it is not `release`.
    #[arg(long, value_enum, default_value_t = Profile::Release, env = "BOXCAR_PROFILE")]
    pub profile: Profile,
    #[command(flatten)]
    pub check: CheckArgs,
}

pub(crate) fn run(sh: &Shell, ctx: &mut Context, args: Args) -> anyhow::Result<()> {
    let service = ctx.service(args.service.name())?;
    let options = build::Options {
        ca_bundle: args.ca_bundle,
        oci_archive: args.oci_archive,
        repo: args.repo,
        profile: args.profile,
        key_files: args.check.key_files,
        size_budget_kib: args.check.size_budget_kib,
        ignored_env: None,
        compile_along: Vec::new(),
    };
    let prepared = build::prepare(sh, ctx, &service, &options)?;
    let target = args.push.as_deref().map(|text| publish::parse_target(text, &prepared.commit().tag)).transpose()?;
    let rt = crate::adapters::engine::runtime()?;
    rt.block_on(async {
        let docker = crate::adapters::engine::connect(None).await?;
        // Signed in before the build: a refused login fails in a second, not
        // after the compile.
        let session = match target {
            Some(target) => Some(publish::Session::open(target).await?),
            None => None,
        };
        let image = prepared.build(sh, &docker).await?;
        if let Some(session) = session {
            let pushed = session.push(&image.blobs).await?;
            println!(
                "pushed     {} ({} blob(s) sent, {:.1} KiB; {} already there) in {:.1} s",
                crate::vocab::show::escape(&pushed.tagged),
                pushed.sent.len(),
                pushed.bytes_sent as f64 / 1024.0,
                pushed.present.len(),
                pushed.took.as_secs_f64()
            );
            println!("pinned     {}", crate::vocab::show::escape(&pushed.pinned));
        }
        Ok(())
    })
}
