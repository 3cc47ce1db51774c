//! `cargo xtask deploy`: a service's image on a Docker engine or a Swarm,
//! the flags made an `ops::deploy::Ask`, checked, keyed and applied.

use std::path::PathBuf;
use std::time::Duration;

use xshell::Shell;

use crate::cli::args::Target;
use crate::ops::deploy::{Ask, Deploy};
use crate::vocab::plan::{KeyDelivery, PublishMode};
use crate::vocab::project::Context;

/// Deploy a service's image to a Docker engine or a Swarm cluster.
///
/// Refuses before changing anything when the key does not belong to the
/// environment (its derived public key is compared with the file's), when a
/// sealed value does not open, when the image is not in the engine, when the
/// service's own check of the environment file (boxcar.toml's `check`, run in
/// the image) fails, or when a container or service of that name was not made
/// by boxcar.
///
/// Standalone engine: one container `<name>`, read-only, cap-drop ALL,
/// no-new-privileges, the contract's numeric user, memory and pids limits,
/// restart unless-stopped, data in a volume `<name>-data-<hex>`, the key as a
/// file in the volume `<name>-key-<key id>`. An update first starts the new
/// image beside the old one (no published port, in-memory data, the
/// contract's probe settings); when that is healthy, the old container is
/// stopped and the new one started on a copy of its data. A new container
/// that does not become healthy is removed and the old one started again on
/// its untouched data.
///
/// Swarm (--swarm): the key becomes the Swarm secret `<name>-key-<key id>`, the
/// service the Swarm service `<name>`, updated one task at a time and rolled
/// back by the engine when a new task fails its healthcheck.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub target: Target,
    /// File holding the environment's secret key (default: SECRET_KEY_FILE, then
    /// the key folder's file for the environment's key id).
    #[arg(long, value_name = "PATH")]
    pub key_file: Option<PathBuf>,
    /// The image to run: one in the engine (`cargo xtask image` puts it
    /// there), or a registry reference such as the REGISTRY/REPO@sha256:…
    /// that `image --push` prints, pulled with Docker's login for that
    /// registry (a Swarm of several nodes takes only that pinned form).
    /// Default: <service>:latest.
    #[arg(long, value_name = "IMAGE")]
    pub image: Option<String>,
    /// Deploy as a Swarm service (the engine must be a Swarm manager).
    #[arg(long)]
    pub swarm: bool,
    /// Number of tasks (Swarm only). More than one needs a service whose
    /// contract allows several instances.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub replicas: u64,
    /// Where the service's port is published: [ADDRESS:]PORT, port 0 for any
    /// free port (default: 127.0.0.1:<its port>). With --swarm only a PORT
    /// (default: its port): Swarm publishes on every address of the nodes.
    #[arg(long, value_name = "[ADDR:]PORT")]
    pub publish: Option<String>,
    /// How Swarm publishes the port: `ingress` (any node forwards to a task;
    /// needs the kernel's IPVS) or `host` (each task on its own node's port).
    #[arg(long, value_enum, default_value_t = PublishMode::Ingress)]
    pub publish_mode: PublishMode,
    /// Memory limit in MiB (default: the contract's memory_mib).
    #[arg(long, value_name = "MIB")]
    pub memory_mib: Option<u64>,
    /// How the key reaches a standalone container: `file` (a read-only volume;
    /// the default, and a deploy fails if the engine refuses it), `env`
    /// (SECRET_KEY: `docker inspect` shows it), or `auto` (file, and SECRET_KEY
    /// if the engine refuses the file, said loudly). Swarm always uses a secret.
    #[arg(long, value_enum, default_value_t = KeyDelivery::File)]
    pub key_delivery: KeyDelivery,
    /// Docker network to attach the container to, e.g. the one a reverse proxy
    /// is on (standalone only; default: the engine's default bridge).
    #[arg(long, value_name = "NETWORK")]
    pub network: Option<String>,
    /// Deploy an image built with a profile other than `release` (`image
    /// --profile fast`) to a production environment all the same.
    #[arg(long)]
    pub allow_non_release: bool,
    /// How long to wait for the new container or tasks to become healthy.
    #[arg(long, default_value = "120s", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

pub(crate) fn run(_sh: &Shell, ctx: &mut Context, args: Args) -> anyhow::Result<()> {
    let service = ctx.service(args.target.at.service.name())?;
    let ask = Ask {
        env: args.target.at.env.clone(),
        name: args.target.name.clone(),
        image: args.image,
        swarm: args.swarm,
        replicas: args.replicas,
        publish: args.publish,
        publish_mode: args.publish_mode,
        memory_mib: args.memory_mib,
        key_delivery: args.key_delivery,
        network: args.network,
        allow_non_release: args.allow_non_release,
        timeout: args.timeout,
        service_arg: ctx.service_arg(),
    };
    // Checked before any key is read or any engine asked.
    let deploy = Deploy::new(&service, ask)?;
    let file = ctx.load_env(&args.target.at.env)?;
    let key = ctx.secret_key(&file, args.key_file.as_deref())?;
    let keyed = deploy.with_key(file, key)?;
    args.target.on_engine(async |docker| Ok(keyed.apply(docker, None).await?))
}
