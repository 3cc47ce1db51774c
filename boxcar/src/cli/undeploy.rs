//! `cargo xtask undeploy`: a deployment stopped and removed.

use crate::cli::args::Target;
use crate::vocab::project::Context;

/// Stop and remove a deployment: its container or service and its key volumes
/// or secrets. The data volume stays unless --purge.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    target: Target,
    /// Also remove the data volume (the service's data). This cannot be undone.
    #[arg(long)]
    purge: bool,
}

pub(crate) fn run(ctx: &mut Context, args: Args) -> anyhow::Result<()> {
    let name = args.target.resolve(ctx)?;
    args.target.on_engine(async |docker| Ok(crate::ops::deploy::undeploy(docker, &name, args.purge).await?))
}
