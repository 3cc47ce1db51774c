//! `cargo xtask status`: what is deployed under a deployment's name.

use crate::cli::args::Target;
use crate::vocab::project::Context;

/// Show a deployment: container or service, image, health, key id, port.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    target: Target,
}

pub(crate) fn run(ctx: &mut Context, args: Args) -> anyhow::Result<()> {
    let name = args.target.resolve(ctx)?;
    args.target.on_engine(async |docker| Ok(crate::ops::deploy::status(docker, &name, &args.target.at.env).await?))
}
