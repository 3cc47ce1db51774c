//! `cargo xtask logs`: a deployment's log lines.

use crate::cli::args::Target;
use crate::vocab::project::Context;

/// Print the service's log lines (the last --tail, then new ones with --follow).
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    target: Target,
    /// Keep printing new lines until interrupted.
    #[arg(long, short)]
    follow: bool,
    /// How many of the last lines to print first.
    #[arg(long, default_value_t = 100, value_name = "N")]
    tail: u64,
}

pub(crate) fn run(ctx: &mut Context, args: Args) -> anyhow::Result<()> {
    let name = args.target.resolve(ctx)?;
    args.target.on_engine(async |docker| Ok(crate::ops::deploy::logs(docker, &name, args.follow, args.tail).await?))
}
