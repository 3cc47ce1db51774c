//! A deployment: asked (`Ask`, what `deploy`'s flags or a project's own
//! command say), checked against the contract before any key is read or any
//! engine asked (`Deploy::new`), given its key (`Deploy::with_key`), then
//! applied (`Keyed::apply`) as one container (`standalone`) or a Swarm
//! service (`swarm`). `deploy`, `dev` and a project's own commands (the demo)
//! all go this one way; `manifests` shares the first step.

pub mod standalone;
pub mod swarm;

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use bollard::Docker;
use boxcar_secrets::{EnvFile, SecretKey};

use crate::ops::service_cmd;
use crate::vocab::contract::{Instances, Service};
use crate::vocab::plan::{Deployment, KeyDelivery, Plan, Publish, PublishMode, Request};

/// A deployment as asked, before anything is checked.
#[derive(Debug, Clone)]
pub struct Ask {
    /// The environment deployed.
    pub env: String,
    /// The deployment's name (default: `<service>-<env>`).
    pub name: Option<String>,
    /// The image (default: `<service>:latest`).
    pub image: Option<String>,
    /// Deploy as a Swarm service.
    pub swarm: bool,
    pub replicas: u64,
    /// `[ADDRESS:]PORT` as given (default: 127.0.0.1:<its port>, or its port on a Swarm).
    pub publish: Option<String>,
    pub publish_mode: PublishMode,
    pub memory_mib: Option<u64>,
    pub key_delivery: KeyDelivery,
    /// A Docker network to attach a standalone container to.
    pub network: Option<String>,
    /// Deploy a non-release build to a production environment all the same.
    pub allow_non_release: bool,
    /// How long to wait for health.
    pub timeout: Duration,
    /// `--service NAME ` for the commands messages suggest (empty for the default service).
    pub service_arg: String,
}

impl Ask {
    /// One container of environment `env` on a standalone engine, as `deploy`
    /// does with no options.
    pub fn standalone(env: &str) -> Ask {
        Ask {
            env: env.to_owned(),
            name: None,
            image: None,
            swarm: false,
            replicas: 1,
            publish: None,
            publish_mode: PublishMode::Ingress,
            memory_mib: None,
            key_delivery: KeyDelivery::File,
            network: None,
            allow_non_release: false,
            timeout: Duration::from_secs(120),
            service_arg: String::new(),
        }
    }
}

/// A deployment checked against the contract: every rule that needs no key
/// and no engine holds.
#[derive(Debug, Clone)]
pub struct Deploy {
    service: Service,
    ask: Ask,
    image: String,
    request: Request,
}

impl Deploy {
    /// Checks `ask` against `service`: the name, the replicas, where the
    /// port is published, the memory, and the options that go together.
    pub fn new(service: &Service, ask: Ask) -> anyhow::Result<Deploy> {
        let name = crate::vocab::plan::deployment_name(service, &ask.env, ask.name.as_deref())?;
        if ask.replicas == 0 {
            bail!("--replicas must be at least 1; `cargo xtask undeploy` stops a deployment");
        }
        if ask.network.is_some() && ask.swarm {
            bail!("--network is for a standalone engine; a Swarm service joins overlay networks through its stack");
        }
        if ask.replicas > 1 && !ask.swarm {
            bail!("--replicas needs --swarm: a standalone engine runs one container per deployment");
        }
        let publish = match (&ask.publish, ask.swarm) {
            (Some(text), _) => Publish::parse(text)?,
            (None, false) => Publish { address: Some("127.0.0.1".to_owned()), port: service.port },
            (None, true) => Publish { address: None, port: service.port },
        };
        if ask.swarm && publish.address.is_some() {
            bail!(
                "--publish {}: Swarm publishes a port on every address of its nodes and cannot keep it to one; \
                 give only the port, and keep it behind a firewall or proxy",
                ask.publish.as_deref().unwrap_or_default()
            );
        }
        let request = Request {
            env: ask.env.clone(),
            name: Some(name),
            replicas: ask.replicas,
            many: true,
            memory_mib: ask.memory_mib,
            publish,
            publish_mode: ask.publish_mode,
        };
        // Everything but the instance rule, which the image answers.
        Request { replicas: 1, ..request.clone() }.check(service)?;
        let image = ask.image.clone().unwrap_or_else(|| format!("{}:latest", service.name));
        Ok(Deploy { service: service.clone(), ask, image, request })
    }

    /// The deployment's name.
    pub fn name(&self) -> &str {
        self.request.name.as_deref().unwrap_or_default()
    }

    /// The deployment this asks for, with `many` instances allowed or not
    /// (the contract's rule, or the service's answer) and the key `key_id`.
    pub fn deployment(&self, many: bool, key_id: boxcar_secrets::KeyId) -> anyhow::Result<Deployment> {
        Ok(Deployment::new(&self.service, Request { many, ..self.request.clone() }, key_id)?)
    }

    /// With the environment's `file` and its secret `key`: the key must be
    /// the file's, and every value must open from content its holder approved.
    pub fn with_key(self, file: EnvFile, key: SecretKey) -> anyhow::Result<Keyed> {
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
        let production = crate::vocab::plan::is_production(&file)?;
        Ok(Keyed { deploy: self, file, key: Arc::new(key), production })
    }
}

/// A checked deployment with its key: ready to apply.
#[derive(Debug)]
pub struct Keyed {
    deploy: Deploy,
    file: EnvFile,
    key: Arc<SecretKey>,
    production: bool,
}

impl Keyed {
    /// Whether the environment is production (release builds only).
    pub fn production(&self) -> bool {
        self.production
    }

    /// The deployment's name.
    pub fn name(&self) -> &str {
        self.deploy.name()
    }

    /// Applies the deployment with `image` (default: the one asked for) on
    /// `docker`: a Swarm checked first, the image pulled when it names a
    /// registry, its profile, its copy of the environment and its run-time
    /// contract checked, the service's own check and instance rule asked of
    /// it; then one container or a Swarm service, health-gated.
    pub async fn apply(&self, docker: &Docker, image: Option<&str>) -> anyhow::Result<()> {
        let (ask, service, file) = (&self.deploy.ask, &self.deploy.service, &self.file);
        let image = image.unwrap_or(&self.deploy.image);
        let name = self.deploy.name();
        // The engine's login for the image's registry, when it names one: it
        // pulls with it, and a Swarm manager hands it to the nodes.
        let login = || -> anyhow::Result<Option<bollard::auth::DockerCredentials>> {
            match crate::ops::publish::registry_of(image) {
                Some(registry) => Ok(crate::ops::publish::credentials(&registry)?.map(|c| c.for_engine(&registry))),
                None => Ok(None),
            }
        };
        if ask.swarm {
            let nodes = swarm::NodesAsk {
                image,
                publish_mode: ask.publish_mode,
                port: self.deploy.request.publish.port,
                replicas: ask.replicas,
            };
            swarm::check_cluster(docker, &nodes).await?;
        }
        let shown = crate::vocab::show::escape(image);
        let inspected = match docker.inspect_image(image).await {
            Ok(found) => found,
            Err(e)
                if crate::adapters::engine::is_not_found(&e) && crate::ops::publish::registry_of(image).is_some() =>
            {
                pull(docker, image, login()?).await?;
                docker.inspect_image(image).await.with_context(|| format!("inspecting the image {shown}"))?
            }
            Err(e) if crate::adapters::engine::is_not_found(&e) => bail!(
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
            .and_then(|l| l.get(crate::vocab::labels::PROFILE));
        if let Some(profile) = profile
            && self.production
            && !ask.allow_non_release
        {
            bail!(
                "{shown} was built with the `{}` profile, and environment `{}` is production; nothing was changed\n\
                 hint: build it with `cargo xtask image` (release), or pass --allow-non-release",
                crate::vocab::show::escape(profile),
                file.env()
            );
        }
        image_environment(docker, image, &image_id, name, (service, &ask.service_arg), file, &self.key).await?;
        let many = service_answers(docker, &image_id, name, service, file.env()).await?;
        let plan = Plan {
            deployment: self.deploy.deployment(many, self.key.key_id())?,
            key: Arc::clone(&self.key),
            image: image.to_owned(),
            key_delivery: ask.key_delivery,
            timeout: ask.timeout,
            network: ask.network.clone(),
        };
        if ask.swarm {
            swarm::deploy(docker, &plan, &image_id, login()?).await
        } else {
            if swarm::service_here(docker, &plan.name).await? {
                bail!(
                    "`{}` runs as a Swarm service on this engine; deploy with --swarm, or `cargo xtask undeploy` first",
                    plan.name
                );
            }
            standalone::deploy(docker, &plan, &image_id).await
        }
    }
}

/// What the image would start on: its copy of the environment file must be
/// approved by this key, and approve the run-time contract the image was
/// built with (`/etc/boxcar/service.toml`), or the service refuses to start.
/// Each says what to do: an image built before an approval is built again.
pub(crate) async fn image_environment(
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
    let shown = crate::vocab::show::escape(image);
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
    let shown = crate::vocab::show::escape(image);
    let registry = crate::ops::publish::registry_of(image).unwrap_or_default();
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
            crate::vocab::show::escape(&why)
        );
    }
    Ok(())
}

/// What to do about an engine's pull error (its words, from the registry).
pub(crate) fn pull_hint(why: &str, registry: &str, had_login: bool) -> String {
    let registry = crate::vocab::show::escape(registry);
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
            crate::ops::publish::DOCKER_CERTS_DIR
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
            Ok(service_cmd::many_from(service, args, &answer)?)
        }
    }
}

/// Shows deployment `name`: its container or service, image, health, key id, port.
pub async fn status(docker: &Docker, name: &str, env: &str) -> anyhow::Result<()> {
    if swarm::service_here(docker, name).await? {
        return swarm::status(docker, name).await;
    }
    if standalone::status(docker, name).await? {
        return Ok(());
    }
    bail!("nothing named `{name}` is deployed on this engine; `cargo xtask deploy --env {env}` deploys it")
}

/// Prints deployment `name`'s log lines: the last `tail`, then new ones when `follow`.
pub async fn logs(docker: &Docker, name: &str, follow: bool, tail: u64) -> anyhow::Result<()> {
    use futures::StreamExt as _;
    use std::io::Write as _;
    let swarm = swarm::service_here(docker, name).await?;
    if !swarm && crate::ops::resources::managed_container(docker, name, name).await?.is_none() {
        bail!("nothing named `{name}` is deployed on this engine");
    }
    let options = bollard::query_parameters::LogsOptionsBuilder::default()
        .stdout(true)
        .stderr(true)
        .follow(follow)
        .tail(&tail.to_string())
        .build();
    let mut stream =
        if swarm { docker.service_logs(name, Some(options)).boxed() } else { docker.logs(name, Some(options)).boxed() };
    while let Some(item) = stream.next().await {
        let item = item.with_context(|| format!("reading the logs of `{name}`"))?;
        match item {
            bollard::container::LogOutput::StdErr { message } => std::io::stderr().write_all(&message)?,
            other => std::io::stdout().write_all(&other.into_bytes())?,
        }
    }
    Ok(())
}

/// Removes deployment `name`: its container or service and its key volumes
/// or secrets; its data volume too when `purge`.
pub async fn undeploy(docker: &Docker, name: &str, purge: bool) -> anyhow::Result<()> {
    let mut removed = 0;
    if swarm::is_manager(docker).await {
        removed += swarm::undeploy(docker, name).await?;
    }
    removed += standalone::undeploy(docker, name, purge).await?;
    if removed == 0 {
        bail!("nothing named `{name}` is deployed on this engine");
    }
    Ok(())
}
