//! `cargo xtask deploy`, `status`, `logs`, `undeploy`: the runner image on a
//! Docker engine (one container, health-gated replacement) or on a Swarm
//! cluster (a service with the key as a Swarm secret, rolled back by the engine
//! when an update fails).
//!
//! Everything boxcar creates on an engine carries the label
//! `dev.boxcar.deployment=<name>`; nothing without it is ever changed or removed.

pub(crate) mod standalone;
mod swarm;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use bollard::Docker;
use boxcar_secrets::{EnvFile, SecretKey};
use sha2::Digest as _;

use crate::keys::Context;

/// Label on everything boxcar creates: the deployment's name.
pub(crate) const LABEL_DEPLOYMENT: &str = "dev.boxcar.deployment";
/// Label: the environment deployed.
pub(crate) const LABEL_ENV: &str = "dev.boxcar.env";
/// Label: the key id of the secret key the deployment holds.
pub(crate) const LABEL_KEY_ID: &str = "dev.boxcar.key-id";
/// Label: what a resource is for (`app`, `key`, `data`, `probe`).
pub(crate) const LABEL_ROLE: &str = "dev.boxcar.role";
/// Label: hash of the settings a deploy applied, so a second identical deploy
/// changes nothing.
pub(crate) const LABEL_SPEC: &str = "dev.boxcar.spec";
/// Label: the image ID the deployment runs (tags move; IDs do not).
pub(crate) const LABEL_IMAGE_ID: &str = "dev.boxcar.image-id";

/// The port the app listens on inside the container (the image's APP_LISTEN).
pub(crate) const APP_PORT: u16 = 8080;
/// Where the Swarm secret (or Kubernetes Secret) with the key is mounted as a file.
pub(crate) const SWARM_KEY_FILE: &str = "/run/secrets/boxcar-key";
/// On a standalone engine the key lives in its own volume, mounted read-only here.
pub(crate) const VOLUME_KEY_DIR: &str = "/run/secrets/boxcar";
/// Default memory limit of the app's container, in MiB.
pub(crate) const DEFAULT_MEMORY_MIB: u64 = 256;
/// Default process/thread limit of the app's container.
pub(crate) const DEFAULT_PIDS: i64 = 256;

/// Deploy the runner image to a Docker engine or a Swarm cluster.
///
/// Refuses before changing anything when the key does not belong to the
/// environment (its derived public key is compared with the file's), when a
/// sealed value does not open, when the image is not in the engine, or when a
/// container or service of that name was not made by boxcar.
///
/// Standalone engine: one container `<name>`, read-only, cap-drop ALL,
/// no-new-privileges, uid 65532, memory and pids limits, restart unless-stopped,
/// data in a volume `<name>-data-<hex>`, the key as a file in the volume
/// `<name>-key-<key id>`. An update first starts the new image beside the old
/// one (no published port, no Bot API, no data); when that is healthy, the old
/// container is stopped and the new one started on a copy of its data. A new
/// container that does not become healthy is removed and the old one started
/// again on its untouched data.
///
/// Swarm (--swarm): the key becomes the Swarm secret `<name>-key-<key id>`, the
/// app the service `<name>`, updated one task at a time and rolled back by the
/// engine when a new task fails its healthcheck.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    target: Target,
    /// File holding the environment's secret key (default: SECRET_KEY_FILE, then
    /// the key folder's file for the environment's key id).
    #[arg(long, value_name = "PATH")]
    key_file: Option<PathBuf>,
    /// The image to run; it must be in the engine (`cargo xtask image` puts it there).
    #[arg(long, default_value = "app:latest", value_name = "IMAGE")]
    image: String,
    /// Deploy as a Swarm service (the engine must be a Swarm manager).
    #[arg(long)]
    swarm: bool,
    /// Number of tasks (Swarm only). More than one needs every bot in webhook
    /// mode: two pollers of one bot get 409 Conflict.
    #[arg(long, default_value_t = 1, value_name = "N")]
    replicas: u64,
    /// Where the dashboard and webhook port is published: [ADDRESS:]PORT, port 0
    /// for any free port (default: 127.0.0.1:8080). With --swarm only a PORT
    /// (default 8080): Swarm publishes on every address of the nodes.
    #[arg(long, value_name = "[ADDR:]PORT")]
    publish: Option<String>,
    /// How Swarm publishes the port: `ingress` (any node forwards to a task;
    /// needs the kernel's IPVS) or `host` (each task on its own node's port).
    #[arg(long, value_enum, default_value_t = PublishMode::Ingress)]
    publish_mode: PublishMode,
    /// Memory limit in MiB.
    #[arg(long, default_value_t = DEFAULT_MEMORY_MIB, value_name = "MIB")]
    memory_mib: u64,
    /// How the key reaches a standalone container: `file` (a read-only volume),
    /// `env` (SECRET_KEY: `docker inspect` shows it), or `auto` (file, unless the
    /// engine refuses it). Swarm always uses a secret.
    #[arg(long, value_enum, default_value_t = KeyDelivery::Auto)]
    key_delivery: KeyDelivery,
    /// Docker network to attach the container to, e.g. the one a reverse proxy
    /// is on (standalone only; default: the engine's default bridge).
    #[arg(long, value_name = "NETWORK")]
    network: Option<String>,
    /// How long to wait for the new container or tasks to become healthy.
    #[arg(long, default_value = "120s", value_name = "DURATION", value_parser = humantime::parse_duration)]
    timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum PublishMode {
    Ingress,
    Host,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum KeyDelivery {
    Auto,
    File,
    Env,
}

/// Which deployment a command is about.
#[derive(Debug, clap::Args)]
pub(crate) struct Target {
    /// Deployment environment (deploy-config/<ENV>.toml).
    #[arg(long, value_name = "ENV")]
    pub(crate) env: String,
    /// Docker engine to talk to (default: DOCKER_HOST, else the local socket).
    #[arg(long, value_name = "DOCKER_HOST")]
    pub(crate) host: Option<String>,
    /// Name of the container or service (default: app-<ENV>). Volumes and
    /// secrets are named after it.
    #[arg(long, value_name = "NAME")]
    pub(crate) name: Option<String>,
}

impl Target {
    /// The deployment's name: `--name`, else `app-<env>` with `_` as `-`
    /// (service and Kubernetes names allow neither `_` nor capitals).
    pub(crate) fn name(&self) -> anyhow::Result<String> {
        boxcar_secrets::check_env_name(&self.env)
            .map_err(|p| anyhow::anyhow!("environment name `{}` {p}", self.env))?;
        let name = self.name.clone().unwrap_or_else(|| format!("app-{}", self.env.replace('_', "-")));
        check_name(&name)?;
        Ok(name)
    }
}

/// A name every engine and Kubernetes accepts, with room for `-key-<16 hex>`.
pub(crate) fn check_name(name: &str) -> anyhow::Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 40
        && name.bytes().all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'-'))
        && !name.starts_with('-')
        && !name.ends_with('-');
    if !ok {
        bail!(
            "deployment name `{name}` must be 1 to 40 characters of a-z, 0-9 and `-`, not starting or ending with `-`"
        );
    }
    // A deploy names its stopped old container and its probe this way.
    if name.ends_with("-previous") || name.ends_with("-next") {
        bail!("deployment name `{name}` must not end in `-previous` or `-next`: deploys use those for a while");
    }
    Ok(())
}

/// `<name>-key-<key id>`: the volume or Swarm secret holding one key.
pub(crate) fn key_resource(name: &str, key: &SecretKey) -> String {
    format!("{name}-key-{}", key.key_id())
}

/// `<name>-data`: the volume holding the app's SQLite database.
pub(crate) fn data_volume(name: &str) -> String {
    format!("{name}-data")
}

/// Whether every bot of the environment takes updates by webhook, so several
/// instances can run at once. A polling bot (the default mode) allows one.
pub(crate) fn all_webhook(file: &EnvFile) -> bool {
    let bots = file.table().get("bots").and_then(toml::Value::as_array);
    match bots {
        Some(bots) if !bots.is_empty() => {
            bots.iter().all(|b| b.get("mode").and_then(toml::Value::as_str) == Some("webhook"))
        }
        _ => false,
    }
}

/// What a deploy has settled before it touches the engine.
pub(crate) struct Plan {
    pub(crate) env: String,
    pub(crate) name: String,
    pub(crate) key: SecretKey,
    pub(crate) image: String,
    pub(crate) replicas: u64,
    pub(crate) publish: Publish,
    pub(crate) publish_mode: PublishMode,
    pub(crate) memory_bytes: i64,
    pub(crate) all_webhook: bool,
    pub(crate) key_delivery: KeyDelivery,
    pub(crate) timeout: Duration,
    pub(crate) network: Option<String>,
}

/// `[ADDRESS:]PORT`.
#[derive(Debug, Clone)]
pub(crate) struct Publish {
    pub(crate) address: Option<String>,
    /// 0: any free port.
    pub(crate) port: u16,
}

impl Publish {
    fn parse(text: &str) -> anyhow::Result<Publish> {
        let (address, port) = match text.rsplit_once(':') {
            Some((a, p)) => (Some(a.trim_start_matches('[').trim_end_matches(']').to_owned()), p),
            None => (None, text),
        };
        let port = port
            .parse::<u16>()
            .map_err(|_| anyhow::anyhow!("--publish `{text}`: expected [ADDRESS:]PORT, like 127.0.0.1:8080 or 8080"))?;
        if let Some(a) = &address
            && a.parse::<std::net::IpAddr>().is_err()
        {
            bail!("--publish `{text}`: `{a}` is not an IP address");
        }
        Ok(Publish { address, port })
    }
}

impl Plan {
    /// Labels common to everything this deploy creates.
    pub(crate) fn labels(&self, role: &str) -> std::collections::HashMap<String, String> {
        [
            (LABEL_DEPLOYMENT, self.name.as_str()),
            (LABEL_ENV, self.env.as_str()),
            (LABEL_ROLE, role),
            (LABEL_KEY_ID, &self.key.key_id().to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    /// The key file's bytes, as `cargo xtask keygen` writes them.
    pub(crate) fn key_file_bytes(&self) -> zeroize::Zeroizing<Vec<u8>> {
        let text = self.key.to_base64();
        let mut bytes = zeroize::Zeroizing::new(Vec::with_capacity(text.len() + 1));
        bytes.extend_from_slice(text.as_bytes());
        bytes.push(b'\n');
        bytes
    }
}

/// A short hash of a JSON value, for the spec label.
pub(crate) fn spec_hash(value: &serde_json::Value) -> String {
    let digest = sha2::Sha256::digest(value.to_string().as_bytes());
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn run(ctx: &mut Context, args: Args) -> anyhow::Result<()> {
    let name = args.target.name()?;
    let file = ctx.load_env(&args.target.env)?;
    let key = ctx.secret_key(&file, args.key_file.as_deref())?;
    // The key must be this environment's before anything else happens: compare
    // the public key derived from it with the file's, then open every value.
    if key.public_key() != file.public_key() {
        bail!(
            "the secret key (key id {}) does not belong to environment `{}` (key id {}); nothing was changed\n\
             hint: pass the key `cargo xtask keygen --env {}` or `rotate-key` wrote for this environment",
            key.key_id(),
            file.env(),
            file.public_key().key_id(),
            file.env()
        );
    }
    let secrets = file.open_all(&key).context("nothing was changed")?;
    eprintln!("environment `{}`: key id {}, {} secret(s) open", file.env(), key.key_id(), secrets.len());
    drop(secrets);
    let all_webhook = all_webhook(&file);
    if args.replicas == 0 {
        bail!("--replicas must be at least 1; `cargo xtask undeploy` stops a deployment");
    }
    if args.network.is_some() && args.swarm {
        bail!("--network is for a standalone engine; a Swarm service joins overlay networks through its stack");
    }
    if args.replicas > 1 && !args.swarm {
        bail!("--replicas needs --swarm: a standalone engine runs one container per deployment");
    }
    if args.replicas > 1 && !all_webhook {
        bail!(
            "--replicas {}: environment `{}` has a bot in polling mode, and two pollers of one bot get \
             409 Conflict from Telegram; use one replica, or set mode = \"webhook\" on every bot",
            args.replicas,
            file.env()
        );
    }
    let publish = match (&args.publish, args.swarm) {
        (Some(text), _) => Publish::parse(text)?,
        (None, false) => Publish { address: Some("127.0.0.1".to_owned()), port: APP_PORT },
        (None, true) => Publish { address: None, port: APP_PORT },
    };
    if args.swarm && publish.address.is_some() {
        bail!(
            "--publish {}: Swarm publishes a port on every address of its nodes and cannot keep it to one; \
             give only the port, and keep it behind a firewall or proxy (the dashboard has no login)",
            args.publish.as_deref().unwrap_or_default()
        );
    }
    if args.publish_mode == PublishMode::Host && publish.port != 0 && args.replicas > 1 {
        bail!(
            "--publish-mode host with port {} runs one task per node on that port; with --replicas {} use \
             --publish-mode ingress, or --publish 0 for a free port per task",
            publish.port,
            args.replicas
        );
    }
    let memory_bytes = i64::try_from(args.memory_mib)
        .ok()
        .and_then(|m| m.checked_mul(1024 * 1024))
        .filter(|m| *m >= 16 * 1024 * 1024)
        .with_context(|| format!("--memory-mib {}: give at least 16", args.memory_mib))?;
    let plan = Plan {
        env: file.env().to_owned(),
        name,
        key,
        image: args.image,
        replicas: args.replicas,
        publish,
        publish_mode: args.publish_mode,
        memory_bytes,
        all_webhook,
        key_delivery: args.key_delivery,
        timeout: args.timeout,
        network: args.network,
    };
    let rt = crate::engine::runtime()?;
    rt.block_on(async {
        let docker = crate::engine::connect(args.target.host.as_deref()).await?;
        let image = docker.inspect_image(&plan.image).await.map_err(|e| {
            if crate::engine::is_not_found(&e) {
                anyhow::anyhow!(
                    "no image {} in the engine; build it with `cargo xtask image` (nothing was changed)",
                    plan.image
                )
            } else {
                anyhow::Error::new(e).context(format!("inspecting the image {}", plan.image))
            }
        })?;
        let image_id = image.id.clone().context("the engine reports no image ID")?;
        if args.swarm {
            swarm::deploy(&docker, &plan, &image_id).await
        } else {
            if swarm::service_here(&docker, &plan.name).await? {
                bail!(
                    "`{}` runs as a Swarm service on this engine; deploy with --swarm, or `cargo xtask undeploy` first",
                    plan.name
                );
            }
            standalone::deploy(&docker, &plan, &image_id).await
        }
    })
}

/// Show a deployment: container or service, image, health, key id, port.
#[derive(Debug, clap::Args)]
pub(crate) struct StatusArgs {
    #[command(flatten)]
    target: Target,
}

pub(crate) fn status(args: StatusArgs) -> anyhow::Result<()> {
    let name = args.target.name()?;
    let rt = crate::engine::runtime()?;
    rt.block_on(async {
        let docker = crate::engine::connect(args.target.host.as_deref()).await?;
        if swarm::service_here(&docker, &name).await? {
            return swarm::status(&docker, &name).await;
        }
        if standalone::status(&docker, &name).await? {
            return Ok(());
        }
        bail!(
            "nothing named `{name}` is deployed on this engine; `cargo xtask deploy --env {}` deploys it",
            args.target.env
        )
    })
}

/// Print the app's log lines (the last --tail, then new ones with --follow).
#[derive(Debug, clap::Args)]
pub(crate) struct LogsArgs {
    #[command(flatten)]
    target: Target,
    /// Keep printing new lines until interrupted.
    #[arg(long, short)]
    follow: bool,
    /// How many of the last lines to print first.
    #[arg(long, default_value_t = 100, value_name = "N")]
    tail: u64,
}

pub(crate) fn logs(args: LogsArgs) -> anyhow::Result<()> {
    let name = args.target.name()?;
    let rt = crate::engine::runtime()?;
    rt.block_on(async {
        let docker = crate::engine::connect(args.target.host.as_deref()).await?;
        let swarm = swarm::service_here(&docker, &name).await?;
        if !swarm && standalone::managed_container(&docker, &name, &name).await?.is_none() {
            bail!("nothing named `{name}` is deployed on this engine");
        }
        let options = bollard::query_parameters::LogsOptionsBuilder::default()
            .stdout(true)
            .stderr(true)
            .follow(args.follow)
            .tail(&args.tail.to_string())
            .build();
        let mut stream = if swarm {
            docker.service_logs(&name, Some(options)).boxed()
        } else {
            docker.logs(&name, Some(options)).boxed()
        };
        use futures::StreamExt as _;
        use std::io::Write as _;
        while let Some(item) = stream.next().await {
            let item = item.with_context(|| format!("reading the logs of `{name}`"))?;
            match item {
                bollard::container::LogOutput::StdErr { message } => std::io::stderr().write_all(&message)?,
                other => std::io::stdout().write_all(&other.into_bytes())?,
            }
        }
        Ok(())
    })
}

/// Stop and remove a deployment: its container or service and its key volumes
/// or secrets. The data volume stays unless --purge.
#[derive(Debug, clap::Args)]
pub(crate) struct UndeployArgs {
    #[command(flatten)]
    target: Target,
    /// Also remove the data volume (the bots' database). This cannot be undone.
    #[arg(long)]
    purge: bool,
}

pub(crate) fn undeploy(args: UndeployArgs) -> anyhow::Result<()> {
    let name = args.target.name()?;
    let rt = crate::engine::runtime()?;
    rt.block_on(async {
        let docker = crate::engine::connect(args.target.host.as_deref()).await?;
        let mut removed = 0;
        if swarm::is_manager(&docker).await {
            removed += swarm::undeploy(&docker, &name).await?;
        }
        removed += standalone::undeploy(&docker, &name, args.purge).await?;
        if removed == 0 {
            bail!("nothing named `{name}` is deployed on this engine");
        }
        Ok(())
    })
}

/// The error for a resource that has the deployment's name but not boxcar's label.
pub(crate) fn not_ours(kind: &str, name: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "a {kind} named `{name}` exists and boxcar did not create it; nothing was changed\n\
         hint: remove or rename it, or deploy under another name with --name"
    )
}

/// Filters for the resources of one deployment.
pub(crate) fn filters(name: &str) -> std::collections::HashMap<String, Vec<String>> {
    [("label".to_owned(), vec![format!("{LABEL_DEPLOYMENT}={name}")])].into()
}

/// The last lines of a container's log, for failure reports.
pub(crate) async fn last_log_lines(docker: &Docker, container: &str, n: usize) -> String {
    use futures::StreamExt as _;
    let options =
        bollard::query_parameters::LogsOptionsBuilder::default().stdout(true).stderr(true).tail(&n.to_string()).build();
    let mut stream = docker.logs(container, Some(options));
    let mut out = String::new();
    while let Some(Ok(item)) = stream.next().await {
        out.push_str(&String::from_utf8_lossy(&item.into_bytes()));
    }
    indent(&out)
}

pub(crate) fn indent(text: &str) -> String {
    let lines: Vec<String> = text.lines().map(|l| format!("  | {l}")).collect();
    if lines.is_empty() { "  | (no output)".to_owned() } else { lines.join("\n") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_environment() {
        let t = |env: &str, name: Option<&str>| Target { env: env.into(), host: None, name: name.map(Into::into) };
        assert_eq!(t("production", None).name().unwrap(), "app-production");
        assert_eq!(t("eu_west", None).name().unwrap(), "app-eu-west");
        assert_eq!(t("p", Some("bots-p")).name().unwrap(), "bots-p");
        assert!(t("p", Some("Bots")).name().is_err());
        assert!(t("p", Some("-x")).name().is_err());
        assert!(t("p", Some(&"x".repeat(41))).name().is_err());
        assert!(t("p", Some("bots-next")).name().is_err());
        assert!(t("p", Some("bots-previous")).name().is_err());
        assert!(t("../p", None).name().is_err());
    }

    #[test]
    fn publish_parses_address_and_port() {
        let p = Publish::parse("127.0.0.1:8080").unwrap();
        assert_eq!((p.address.as_deref(), p.port), (Some("127.0.0.1"), 8080));
        let p = Publish::parse("9000").unwrap();
        assert_eq!((p.address, p.port), (None, 9000));
        let p = Publish::parse("[::1]:0").unwrap();
        assert_eq!((p.address.as_deref(), p.port), (Some("::1"), 0));
        assert!(Publish::parse("localhost:80").is_err());
        assert!(Publish::parse("127.0.0.1:99999").is_err());
    }

    #[test]
    fn only_all_webhook_bots_allow_replicas() {
        let file = |bots: &str| {
            let key = SecretKey::generate();
            let text = format!("public_key = \"{}\"\n[secrets]\n{bots}", key.public_key().to_base64());
            EnvFile::parse(std::path::Path::new("deploy-config/t.toml"), &text).unwrap()
        };
        assert!(!all_webhook(&file("")));
        assert!(!all_webhook(&file("[[bots]]\nname = \"a\"\n")));
        assert!(!all_webhook(&file("[[bots]]\nname = \"a\"\nmode = \"webhook\"\n[[bots]]\nname = \"b\"\n")));
        assert!(all_webhook(&file("[[bots]]\nname = \"a\"\nmode = \"webhook\"\n")));
    }
}
