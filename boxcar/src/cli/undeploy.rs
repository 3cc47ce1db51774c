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
    let rt = crate::adapters::engine::runtime()?;
    rt.block_on(async {
        let docker = crate::adapters::engine::connect(args.target.host.as_deref()).await?;
        Ok(crate::ops::deploy::undeploy(&docker, &name, args.purge).await?)
    })
}
