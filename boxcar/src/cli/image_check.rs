//! `cargo xtask image-check`: an image in the engine held to the image
//! check (`ops::build::check`), as `image` holds the ones it builds.

use anyhow::Context as _;
use futures::StreamExt as _;

use crate::cli::args::ServiceArg;
use crate::ops::build::{self, check};
use crate::vocab::project::Context;

/// Check an image in the engine: static binaries, numeric non-root user, no
/// secret plaintext or key material in any layer, config or history, size.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    service: ServiceArg,
    /// The image to check (default: <service>:latest).
    #[arg(long)]
    image: Option<String>,
    #[command(flatten)]
    check: crate::cli::args::CheckArgs,
}

pub(crate) fn run(ctx: &mut Context, args: Args) -> anyhow::Result<()> {
    let service = ctx.service(args.service.name())?;
    let image = args.image.unwrap_or_else(|| format!("{}:latest", service.name));
    let budget = args.check.size_budget_kib.unwrap_or(service.size_budget_kib);
    let needles = build::check::needles(ctx, &args.check.key_files)?;
    let public_keys = build::check::public_keys(ctx)?;
    let rt = crate::adapters::engine::runtime()?;
    rt.block_on(async {
        let docker = crate::adapters::engine::connect(None).await?;
        docker.inspect_image(&image).await.with_context(|| format!("no image {} in the engine", image))?;
        let mut stream = docker.export_image(&image);
        let mut archive = Vec::new();
        while let Some(chunk) = stream.next().await {
            archive.extend_from_slice(&chunk.with_context(|| format!("exporting {}", image))?);
        }
        let report = check::check_archive(&archive, &needles, &public_keys, budget * 1024)?;
        check::enforce(&report)?;
        println!(
            "ok  {}: static binary ({} KiB), user {}, {} layer(s), {} KiB, {} secret(s) searched for",
            image,
            report.binary_size / 1024,
            report.user,
            report.layers,
            report.image_size / 1024,
            needles.len()
        );
        Ok(())
    })
}
