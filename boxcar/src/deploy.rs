//! `cargo xtask deploy`, `status`, `logs`, `undeploy`: a service's image on a
//! Docker engine (one container, health-gated replacement) or on a Swarm
//! cluster (a service with the key as a Swarm secret, rolled back by the engine
//! when an update fails).
//!
//! Everything boxcar creates on an engine carries the label
//! `dev.boxcar.deployment=<name>`; nothing without it is ever changed or removed.

pub mod standalone;
pub mod swarm;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use bollard::Docker;
use xshell::Shell;

use crate::contract::{Instances, Service};
use crate::plan::{Deployment, KeyDelivery, Plan, Publish, PublishMode, Request, Target};
use crate::project::Context;
use crate::service_cmd;

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

pub fn run(_sh: &Shell, ctx: &mut Context, args: Args) -> anyhow::Result<()> {
    let service = ctx.service(&args.target.at.service)?;
    let name = args.target.name(&service)?;
    let file = ctx.load_env(&args.target.at.env)?;
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
    let secrets = file.open_approved(&key).context("nothing was changed")?;
    eprintln!("environment `{}`: key id {}, {} secret(s) open", file.env(), key.key_id(), secrets.len());
    drop(secrets);
    if args.replicas == 0 {
        bail!("--replicas must be at least 1; `cargo xtask undeploy` stops a deployment");
    }
    if args.network.is_some() && args.swarm {
        bail!("--network is for a standalone engine; a Swarm service joins overlay networks through its stack");
    }
    if args.replicas > 1 && !args.swarm {
        bail!("--replicas needs --swarm: a standalone engine runs one container per deployment");
    }
    let publish = match (&args.publish, args.swarm) {
        (Some(text), _) => Publish::parse(text)?,
        (None, false) => Publish { address: Some("127.0.0.1".to_owned()), port: service.port },
        (None, true) => Publish { address: None, port: service.port },
    };
    if args.swarm && publish.address.is_some() {
        bail!(
            "--publish {}: Swarm publishes a port on every address of its nodes and cannot keep it to one; \
             give only the port, and keep it behind a firewall or proxy",
            args.publish.as_deref().unwrap_or_default()
        );
    }
    let image = args.image.clone().unwrap_or_else(|| format!("{}:latest", service.name));
    // The engine's login for the image's registry, when it names one: it
    // pulls with it, and a Swarm manager hands it to the nodes.
    let login = || -> anyhow::Result<Option<bollard::auth::DockerCredentials>> {
        match crate::registry::registry_of(&image) {
            Some(registry) => Ok(crate::registry::credentials(&registry)?.map(|c| c.for_engine(&registry))),
            None => Ok(None),
        }
    };
    let production = crate::plan::is_production(&file)?;
    let request = Request {
        env: file.env().to_owned(),
        name: Some(name.clone()),
        key_id: key.key_id(),
        replicas: args.replicas,
        many: true,
        memory_mib: args.memory_mib,
        publish,
        publish_mode: args.publish_mode,
    };
    // Everything but the instance rule, checked before the engine is asked.
    Deployment::new(&service, Request { replicas: 1, ..request.clone() })?;
    let rt = crate::engine::runtime()?;
    rt.block_on(async {
        let docker = crate::engine::connect(args.target.host.as_deref()).await?;
        if args.swarm {
            let ask = swarm::NodesAsk {
                image: &image,
                publish_mode: args.publish_mode,
                port: request.publish.port,
                replicas: args.replicas,
            };
            swarm::check_cluster(&docker, &ask).await?;
        }
        let shown = crate::show::escape(&image);
        let inspected = match docker.inspect_image(&image).await {
            Ok(found) => found,
            Err(e) if crate::engine::is_not_found(&e) && crate::registry::registry_of(&image).is_some() => {
                pull(&docker, &image, login()?).await?;
                docker.inspect_image(&image).await.with_context(|| format!("inspecting the image {shown}"))?
            }
            Err(e) if crate::engine::is_not_found(&e) => bail!(
                "no image {shown} in the engine; build it with `cargo xtask image`, or pass a registry \
                 reference (`image --push` prints one) (nothing was changed)"
            ),
            Err(e) => return Err(anyhow::Error::new(e).context(format!("inspecting the image {shown}"))),
        };
        let image_id = inspected.id.clone().context("the engine reports no image ID")?;
        let profile = inspected
            .config
            .as_ref()
            .and_then(|c| c.labels.as_ref())
            .and_then(|l| l.get(crate::image::assemble::LABEL_PROFILE));
        if let Some(profile) = profile
            && production
            && !args.allow_non_release
        {
            bail!(
                "{} was built with the `{}` profile, and environment `{}` is production; nothing was changed\n\
                 hint: build it with `cargo xtask image` (release), or pass --allow-non-release",
                crate::show::escape(&image),
                crate::show::escape(profile),
                file.env()
            );
        }
        let service_arg = ctx.service_arg();
        image_environment(&docker, &image, &image_id, &name, (&service, &service_arg), &file, &key).await?;
        let many = service_answers(&docker, &image_id, &name, &service, file.env()).await?;
        let deployment = Deployment::new(&service, Request { many, ..request })?;
        let plan = Plan {
            deployment,
            key,
            image: image.clone(),
            key_delivery: args.key_delivery,
            timeout: args.timeout,
            network: args.network.clone(),
        };
        if args.swarm {
            swarm::deploy(&docker, &plan, &image_id, login()?).await
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

/// What the image would start on: its copy of the environment file must be
/// approved by this key, and approve the run-time contract the image was
/// built with (`/etc/boxcar/service.toml`), or the service refuses to start.
/// Each says what to do: an image built before an approval is built again.
async fn image_environment(
    docker: &Docker,
    image: &str,
    image_id: &str,
    deployment: &str,
    (service, service_arg): (&Service, &str),
    file: &boxcar_secrets::EnvFile,
    key: &boxcar_secrets::SecretKey,
) -> anyhow::Result<()> {
    let in_image = Service::env_file_in_image(file.env());
    let read =
        service_cmd::files_in_image(docker, image_id, deployment, &[&in_image, boxcar_secrets::IMAGE_SERVICE_FILE])
            .await?;
    let shown = crate::show::escape(image);
    let build = format!("build the image again with `cargo xtask image {}` and deploy that", service_arg.trim_end())
        .replace(" ` and", "` and");
    let Some(Some(bytes)) = read.first() else {
        bail!(
            "{shown} carries no environment file for `{}` ({in_image}): it was built before the environment was \
             committed, or git ignores the file; {build} (nothing was changed)",
            file.env()
        );
    };
    let copy = boxcar_secrets::EnvFile::parse(std::path::Path::new(&in_image), &String::from_utf8_lossy(bytes))?
        .for_service(Some(&service.name));
    let approved = match copy.approval_with(key) {
        Ok(approved) => approved,
        Err(e) => bail!(
            "{shown}'s copy of the environment file is not one this key approved, so the service would not start \
             on it: {e}\nhint: if the work tree's file is approved now, the image was built before that; {build} \
             (nothing was changed)"
        ),
    };
    if let Some(Some(text)) = read.get(1) {
        let runtime = boxcar_secrets::ServiceFile::parse(&String::from_utf8_lossy(text))?;
        if let Err(e) = runtime.check(copy.table()) {
            bail!(
                "{shown} was built from a boxcar.toml whose run-time contract environment `{}` did not approve, so \
                 the service would not start: {e}\nhint: have a holder of the key review boxcar.toml's change and \
                 approve it (`cargo xtask approve {service_arg}--env {}`), then {build} (nothing was changed)",
                file.env(),
                file.env()
            );
        }
    }
    if let Ok(here) = file.approval()
        && here.serial != approved.serial
    {
        eprintln!(
            "warning: {shown} carries serial {} of environment `{}`; the work tree's file is serial {}: the service \
             runs on what the image carries ({build} to ship the work tree's)",
            approved.serial,
            file.env(),
            here.serial
        );
    }
    Ok(())
}

/// Pulls a registry reference into the engine with `login`; the engine
/// checks what it gets against a digest in the reference.
async fn pull(docker: &Docker, image: &str, login: Option<bollard::auth::DockerCredentials>) -> anyhow::Result<()> {
    use futures::StreamExt as _;
    let shown = crate::show::escape(image);
    let registry = crate::registry::registry_of(image).unwrap_or_default();
    eprintln!("pulling {shown} into the engine (the service's own check runs it before anything changes)");
    // Repository and tag (or digest) apart: a repository alone would pull every tag.
    let reference = oci_client::Reference::try_from(image)
        .map_err(|e| anyhow::anyhow!("--image {shown}: not an image reference: {e}; nothing was changed"))?;
    let repository = format!("{}/{}", reference.registry(), reference.repository());
    let tag = reference.digest().or(reference.tag()).unwrap_or("latest");
    let options =
        bollard::query_parameters::CreateImageOptionsBuilder::default().from_image(&repository).tag(tag).build();
    let mut stream = docker.create_image(Some(options), None, login.clone());
    while let Some(item) = stream.next().await {
        let why = match item {
            Ok(info) => match info.error_detail.and_then(|d| d.message) {
                Some(message) => message,
                None => continue,
            },
            Err(e) => e.to_string(),
        };
        let hint = pull_hint(&why, &registry, login.is_some());
        bail!(
            "the engine could not pull {shown}: {}; nothing was changed
hint: {hint}",
            crate::show::escape(&why)
        );
    }
    Ok(())
}

/// What to do about an engine's pull error (its words, from the registry).
pub(crate) fn pull_hint(why: &str, registry: &str, had_login: bool) -> String {
    let registry = crate::show::escape(registry);
    let why = why.to_lowercase();
    let auth = ["unauthorized", "denied", "authentication required", "no basic auth credentials"];
    if auth.iter().any(|a| why.contains(a)) {
        match had_login {
            true => format!("the registry refused the login in Docker's config.json; `docker login {registry}` again"),
            false => format!("the registry wants a login: `docker login {registry}` (boxcar passes it to the engine)"),
        }
    } else if why.contains("certificate") {
        format!(
            "the engine does not trust the registry's TLS certificate: put its CA in \
             {}/{registry}/ca.crt on every engine that pulls",
            crate::registry::DOCKER_CERTS_DIR
        )
    } else if why.contains("manifest unknown") || why.contains("not found") {
        "the registry has no such image: check the reference `cargo xtask image --push` printed".to_owned()
    } else if why.contains("connect") || why.contains("no such host") || why.contains("timeout") {
        format!("the engine cannot reach {registry}: check the address, and that the engine's host reaches it")
    } else {
        "check the reference and the registry".to_owned()
    }
}

/// The service's own check of the environment file the image carries, and
/// its instance rule: both from the image about to be deployed, before
/// anything changes. Returns whether several instances may run.
async fn service_answers(
    docker: &Docker,
    image_id: &str,
    name: &str,
    service: &Service,
    env: &str,
) -> anyhow::Result<bool> {
    let file = Service::env_file_in_image(env);
    if let Some(args) = &service.check {
        let answer = service_cmd::in_image(docker, image_id, name, service, args, &file).await?;
        if answer.code != 0 {
            bail!(
                "the service's own check of environment `{env}` in the image failed (`{}`); nothing was changed:\n  {}",
                service_cmd::describe(service, args),
                answer.lines().join("\n  ")
            );
        }
        eprintln!("the service's own check passed: `{}` on {file}", service_cmd::describe(service, args));
    }
    match &service.instances {
        Instances::One => Ok(false),
        Instances::Many => Ok(true),
        Instances::Ask(args) => {
            let answer = service_cmd::in_image(docker, image_id, name, service, args, &file).await?;
            service_cmd::many_from(service, args, &answer)
        }
    }
}

/// Show a deployment: container or service, image, health, key id, port.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    target: Target,
}

pub fn status(ctx: &mut Context, args: StatusArgs) -> anyhow::Result<()> {
    let name = args.target.resolve(ctx)?;
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
            args.target.at.env
        )
    })
}

/// Print the service's log lines (the last --tail, then new ones with --follow).
#[derive(Debug, clap::Args)]
pub struct LogsArgs {
    #[command(flatten)]
    target: Target,
    /// Keep printing new lines until interrupted.
    #[arg(long, short)]
    follow: bool,
    /// How many of the last lines to print first.
    #[arg(long, default_value_t = 100, value_name = "N")]
    tail: u64,
}

pub fn logs(ctx: &mut Context, args: LogsArgs) -> anyhow::Result<()> {
    let name = args.target.resolve(ctx)?;
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
pub struct UndeployArgs {
    #[command(flatten)]
    target: Target,
    /// Also remove the data volume (the service's data). This cannot be undone.
    #[arg(long)]
    purge: bool,
}

pub fn undeploy(ctx: &mut Context, args: UndeployArgs) -> anyhow::Result<()> {
    let name = args.target.resolve(ctx)?;
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

/// The last lines of a container's log, for failure reports.
pub async fn last_log_lines(docker: &Docker, container: &str, n: usize) -> String {
    read_log(docker.logs(container, Some(tail_options(n)))).await
}

/// Both streams of a log, its last `n` lines.
pub(crate) fn tail_options(n: usize) -> bollard::query_parameters::LogsOptions {
    bollard::query_parameters::LogsOptionsBuilder::default().stdout(true).stderr(true).tail(&n.to_string()).build()
}

/// A log stream read to its end, each line escaped and indented.
pub(crate) async fn read_log(
    stream: impl futures::Stream<Item = Result<bollard::container::LogOutput, bollard::errors::Error>>,
) -> String {
    use futures::StreamExt as _;
    let mut stream = std::pin::pin!(stream);
    let mut out = String::new();
    while let Some(Ok(item)) = stream.next().await {
        out.push_str(&String::from_utf8_lossy(&item.into_bytes()));
    }
    let lines: Vec<String> = out.lines().map(|l| crate::show::escape(l).into_owned()).collect();
    indent(&lines.join("\n"))
}

pub fn indent(text: &str) -> String {
    let lines: Vec<String> = text.lines().map(|l| format!("  | {l}")).collect();
    if lines.is_empty() { "  | (no output)".to_owned() } else { lines.join("\n") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pull_errors_get_what_to_do() {
        let hint = |why: &str, login: bool| pull_hint(why, "reg.io:5000", login);
        let denied = "Head https://reg.io:5000/v2/x/manifests/sha256:1: no basic auth credentials";
        assert!(hint(denied, false).contains("`docker login reg.io:5000`"), "{}", hint(denied, false));
        for why in ["unauthorized: authentication required", "denied: requested access to the resource is denied"] {
            assert!(hint(why, true).contains("refused the login"), "{}", hint(why, true));
            assert!(hint(why, false).contains("wants a login"), "{}", hint(why, false));
        }
        let x509 = "Get https://reg.io:5000/v2/: x509: certificate signed by unknown authority";
        assert!(hint(x509, true).contains("/etc/docker/certs.d/reg.io:5000/ca.crt"), "{}", hint(x509, true));
        assert!(hint("manifest unknown: manifest unknown", true).contains("has no such image"));
        let refused = "dial tcp 10.0.0.1:5000: connect: connection refused";
        assert!(hint(refused, true).contains("cannot reach reg.io:5000"), "{}", hint(refused, true));
        assert!(hint("i/o timeout", true).contains("cannot reach"));
        assert!(hint("lookup reg.io: no such host", true).contains("cannot reach"));
        assert_eq!(hint("something else", true), "check the reference and the registry");
        // A registry name is escaped before it reaches a terminal.
        assert!(!pull_hint("connect: refused", "reg\u{1b}[2J.io", true).contains('\u{1b}'));
    }

    #[test]
    fn logs_are_indented_and_an_empty_one_says_so() {
        assert_eq!(indent("a\nb"), "  | a\n  | b");
        assert_eq!(indent(""), "  | (no output)");
    }
}
