//! Deploying to one Docker engine: a single hardened container per
//! deployment, replaced only after its successor has passed its healthcheck.
//!
//! An engine cannot publish one host port on two containers, so an update runs
//! in two steps. First a probe: the new image with the same key, settings and
//! data volume, but no published port and an unreachable Bot API, so it
//! neither takes the port nor competes with the running bots for updates (two
//! pollers get 409). It proves the things that break deploys (image, key,
//! config, sealed values, storage) while the old container keeps serving.
//! Then the swap: the old container is stopped and kept, the new one created
//! with the port; it must pass its healthcheck before the old one is removed,
//! and if it does not, it is removed and the old one started again.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use bollard::Docker;
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, HealthConfig, HealthStatusEnum, HostConfig, HostConfigLogConfig,
    Mount, MountType, PortBinding, RestartPolicy, RestartPolicyNameEnum, VolumeCreateRequest,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, ListContainersOptionsBuilder, ListVolumesOptionsBuilder,
    RemoveContainerOptionsBuilder, RemoveVolumeOptionsBuilder, RenameContainerOptions, StopContainerOptionsBuilder,
    UploadToContainerOptionsBuilder,
};

use super::{
    APP_PORT, DEFAULT_PIDS, KeyDelivery, LABEL_DEPLOYMENT, LABEL_IMAGE_ID, LABEL_KEY_ID, LABEL_ROLE, LABEL_SPEC, Plan,
    VOLUME_KEY_DIR,
};
use crate::engine::is_not_found;

/// Seconds the engine waits after SIGTERM before SIGKILL; the app stops in 8.
const STOP_SECONDS: i32 = 10;
/// Healthcheck period of the deployed container. The image says 10 s; a
/// deploy waits on the first passing check, so it checks twice as often.
const HEALTH_INTERVAL: Duration = Duration::from_secs(5);
/// The probe lives for seconds: it checks every second.
const PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// Where the probe's bots send their Bot API calls: nowhere (the discard port
/// on its own loopback), so the probe never talks to Telegram.
const PROBE_API_BASE: &str = "http://127.0.0.1:9";

/// How the key reaches the container.
enum KeyMount {
    /// A read-only volume holding the key file.
    Volume(String),
    /// The SECRET_KEY environment variable.
    Env,
}

impl KeyMount {
    fn describe(&self) -> String {
        match self {
            KeyMount::Volume(v) => format!(
                "as a file: SECRET_KEY_FILE={VOLUME_KEY_DIR}/key from the read-only volume {v}; \
                 not in the container's environment"
            ),
            KeyMount::Env => "as SECRET_KEY in the container's environment: `docker inspect` shows it".to_owned(),
        }
    }
}

/// Which container a body is for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    App,
    Probe,
}

pub(crate) async fn deploy(docker: &Docker, plan: &Plan, image_id: &str) -> anyhow::Result<()> {
    let started = Instant::now();
    let name = &plan.name;
    let previous = format!("{name}-previous");
    let probe = format!("{name}-next");

    // A deploy that was interrupted may have left its probe or the stopped
    // old container behind: clear the first, put the second back.
    remove_if_managed(docker, &probe, name).await?;
    let mut current = managed_container(docker, name).await?;
    if current.is_none()
        && let Some(_) = managed_container(docker, &previous).await?
    {
        eprintln!("a deploy of `{name}` was interrupted: restoring the previous container");
        rename(docker, &previous, name).await?;
        current = managed_container(docker, name).await?;
    } else {
        remove_if_managed(docker, &previous, name).await?;
    }

    let spec = spec_hash(plan, image_id);
    if let Some(c) = &current
        && label(c, LABEL_SPEC) == Some(spec.as_str())
        && running(c)
    {
        println!("unchanged  {name} already runs {} with these settings; nothing to do", plan.image);
        return Ok(());
    }

    let mut created_volumes = Vec::new();
    let data = super::data_volume(name);
    if ensure_volume(docker, plan, &data, "data").await? {
        created_volumes.push(data.clone());
    }
    let key = match plan.key_delivery {
        KeyDelivery::Env => KeyMount::Env,
        delivery => match fill_key_volume(docker, plan, &mut created_volumes).await {
            Ok(volume) => KeyMount::Volume(volume),
            Err(e) if delivery == KeyDelivery::Auto => {
                eprintln!(
                    "warning: the engine refused the key as a file ({e:#}); handing it over as SECRET_KEY, \
                     which `docker inspect` shows"
                );
                KeyMount::Env
            }
            Err(e) => {
                remove_volumes(docker, &created_volumes).await;
                return Err(e.context("the key could not be put in a volume; nothing was changed"));
            }
        },
    };
    eprintln!("key: {}", key.describe());

    let old_running = current.as_ref().is_some_and(running);
    if old_running {
        eprintln!("probe: starting {} beside the running `{name}` (no port, no Bot API)", plan.image);
        create(docker, &probe, body(plan, image_id, &spec, &key, Role::Probe)).await?;
        let result = start_and_wait(docker, &probe, plan.timeout).await;
        let logs = super::last_log_lines(docker, &probe, 30).await;
        remove(docker, &probe).await;
        if let Err(why) = result {
            remove_volumes(docker, &created_volumes).await;
            bail!(
                "the new image did not become healthy: {why}; `{name}` keeps running the previous image, \
                 nothing was changed\nlast log lines of the new container:\n{logs}"
            );
        }
        eprintln!("probe: healthy");
    }

    if current.is_some() {
        eprintln!("stopping the previous `{name}`");
        stop(docker, name).await?;
        rename(docker, name, &previous).await?;
    }
    let result = match create(docker, name, body(plan, image_id, &spec, &key, Role::App)).await {
        Ok(()) => start_and_wait(docker, name, plan.timeout).await,
        Err(e) => Err(format!("{e:#}")),
    };
    let healthy_after = started.elapsed();
    if let Err(why) = result {
        let logs = super::last_log_lines(docker, name, 30).await;
        remove(docker, name).await;
        remove_volumes(docker, &created_volumes).await;
        if current.is_some() {
            rename(docker, &previous, name).await?;
            if old_running {
                docker
                    .start_container(name, None::<bollard::query_parameters::StartContainerOptions>)
                    .await
                    .with_context(|| format!("starting the previous `{name}` again"))?;
            }
            bail!(
                "the new container did not become healthy: {why}; rolled back: `{name}` runs the previous \
                 container again\nlast log lines of the new container:\n{logs}"
            );
        }
        bail!("`{name}` did not become healthy: {why}; it was removed\nlast log lines:\n{logs}");
    }
    if current.is_some() {
        remove(docker, &previous).await;
    }
    let key_volume = match &key {
        KeyMount::Volume(v) => Some(v.as_str()),
        KeyMount::Env => None,
    };
    prune_key_volumes(docker, name, key_volume).await;

    let info = inspect(docker, name).await?;
    println!("deployed   {name} ({})", short_id(info.id.as_deref().unwrap_or("")));
    println!("image      {} ({image_id})", plan.image);
    println!("key        {}", key.describe());
    println!("data       volume {data} at /data");
    println!("published  {}", published(&info).unwrap_or_else(|| "-".to_owned()));
    println!("healthy    after {:.1} s", healthy_after.as_secs_f64());
    Ok(())
}

/// What decides whether a running container is already what a deploy asks
/// for: image ID, environment, key, published port, memory, key delivery.
fn spec_hash(plan: &Plan, image_id: &str) -> String {
    super::spec_hash(&serde_json::json!({
        "image": image_id,
        "env": plan.env,
        "key": plan.key.key_id().to_string(),
        "publish": [plan.publish.address, plan.publish.port],
        "memory": plan.memory_bytes,
        "delivery": format!("{:?}", plan.key_delivery),
        "health": HEALTH_INTERVAL.as_secs(),
        "network": plan.network,
    }))
}

fn body(plan: &Plan, image_id: &str, spec: &str, key: &KeyMount, role: Role) -> ContainerCreateBody {
    let mut labels = plan.labels(if role == Role::App { "app" } else { "probe" });
    labels.insert(LABEL_SPEC.to_owned(), spec.to_owned());
    labels.insert(LABEL_IMAGE_ID.to_owned(), image_id.to_owned());
    let mut env = vec![format!("DEPLOY_ENV={}", plan.env)];
    let mut mounts = vec![Mount {
        typ: Some(MountType::VOLUME),
        source: Some(super::data_volume(&plan.name)),
        target: Some("/data".to_owned()),
        ..Mount::default()
    }];
    match key {
        KeyMount::Volume(volume) => {
            env.push(format!("SECRET_KEY_FILE={VOLUME_KEY_DIR}/key"));
            mounts.push(Mount {
                typ: Some(MountType::VOLUME),
                source: Some(volume.clone()),
                target: Some(VOLUME_KEY_DIR.to_owned()),
                read_only: Some(true),
                ..Mount::default()
            });
        }
        // Only where the operator chose it or the engine refused the file.
        KeyMount::Env => env.push(format!("SECRET_KEY={}", &*plan.key.to_base64())),
    }
    let (interval, restart, ports) = match role {
        Role::App => {
            let binding = PortBinding {
                host_ip: plan.publish.address.clone(),
                host_port: Some(if plan.publish.port == 0 { String::new() } else { plan.publish.port.to_string() }),
            };
            let ports = HashMap::from([(format!("{APP_PORT}/tcp"), Some(vec![binding]))]);
            (HEALTH_INTERVAL, RestartPolicyNameEnum::UNLESS_STOPPED, Some(ports))
        }
        Role::Probe => {
            env.push(format!("APP_API_BASE={PROBE_API_BASE}"));
            (PROBE_INTERVAL, RestartPolicyNameEnum::NO, None)
        }
    };
    let nanos = |d: Duration| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX);
    ContainerCreateBody {
        image: Some(plan.image.clone()),
        user: Some("65532:65532".to_owned()),
        env: Some(env),
        labels: Some(labels),
        healthcheck: Some(HealthConfig {
            // No test: the engine keeps the image's HEALTHCHECK command and
            // takes only the timing from here.
            test: None,
            interval: Some(nanos(interval)),
            timeout: Some(nanos(Duration::from_secs(3))),
            retries: Some(3),
            start_period: Some(nanos(Duration::from_secs(10))),
            start_interval: None,
        }),
        host_config: Some(HostConfig {
            restart_policy: Some(RestartPolicy { name: Some(restart), maximum_retry_count: None }),
            readonly_rootfs: Some(true),
            cap_drop: Some(vec!["ALL".to_owned()]),
            security_opt: Some(vec!["no-new-privileges".to_owned()]),
            tmpfs: Some(HashMap::from([("/tmp".to_owned(), "rw,noexec,nosuid,size=16m,mode=1777".to_owned())])),
            mounts: Some(mounts),
            memory: Some(plan.memory_bytes),
            memory_swap: Some(plan.memory_bytes),
            pids_limit: Some(DEFAULT_PIDS),
            port_bindings: ports,
            network_mode: plan.network.clone(),
            log_config: Some(HostConfigLogConfig {
                typ: Some("json-file".to_owned()),
                config: Some(HashMap::from([
                    ("max-size".to_owned(), "10m".to_owned()),
                    ("max-file".to_owned(), "3".to_owned()),
                ])),
            }),
            ..HostConfig::default()
        }),
        ..ContainerCreateBody::default()
    }
}

/// The container `name`, if there is one and boxcar made it for this
/// deployment; an error if there is one that boxcar did not make.
pub(super) async fn managed_container(docker: &Docker, name: &str) -> anyhow::Result<Option<ContainerInspectResponse>> {
    let info = match docker.inspect_container(name, None::<bollard::query_parameters::InspectContainerOptions>).await {
        Ok(info) => info,
        Err(e) if is_not_found(&e) => return Ok(None),
        Err(e) => return Err(anyhow::Error::new(e).context(format!("inspecting the container {name}"))),
    };
    let deployment = name.trim_end_matches("-previous").trim_end_matches("-next");
    if label(&info, LABEL_DEPLOYMENT) != Some(deployment) {
        return Err(super::not_ours("container", name));
    }
    Ok(Some(info))
}

fn label<'a>(info: &'a ContainerInspectResponse, key: &str) -> Option<&'a str> {
    info.config.as_ref()?.labels.as_ref()?.get(key).map(String::as_str)
}

fn running(info: &ContainerInspectResponse) -> bool {
    info.state.as_ref().and_then(|s| s.running).unwrap_or(false)
}

async fn inspect(docker: &Docker, name: &str) -> anyhow::Result<ContainerInspectResponse> {
    docker
        .inspect_container(name, None::<bollard::query_parameters::InspectContainerOptions>)
        .await
        .with_context(|| format!("inspecting the container {name}"))
}

async fn create(docker: &Docker, name: &str, body: ContainerCreateBody) -> anyhow::Result<()> {
    docker
        .create_container(Some(CreateContainerOptionsBuilder::default().name(name).build()), body)
        .await
        .with_context(|| format!("creating the container {name}"))?;
    Ok(())
}

async fn stop(docker: &Docker, name: &str) -> anyhow::Result<()> {
    let options = StopContainerOptionsBuilder::default().t(STOP_SECONDS).build();
    match docker.stop_container(name, Some(options)).await {
        // 304: already stopped.
        Ok(()) | Err(bollard::errors::Error::DockerResponseServerError { status_code: 304, .. }) => Ok(()),
        Err(e) => Err(anyhow::Error::new(e).context(format!("stopping {name}"))),
    }
}

async fn rename(docker: &Docker, from: &str, to: &str) -> anyhow::Result<()> {
    docker
        .rename_container(from, RenameContainerOptions { name: to.to_owned() })
        .await
        .with_context(|| format!("renaming the container {from} to {to}"))
}

/// Stops and removes a container; failures are reported, not returned: this
/// runs on paths that are already reporting something more important.
async fn remove(docker: &Docker, name: &str) {
    // `v`: also the anonymous volume the image's `/data` gives a container
    // that does not mount one (the key loader); named volumes stay.
    let options = RemoveContainerOptionsBuilder::default().force(true).v(true).build();
    if let Err(e) = docker.remove_container(name, Some(options)).await
        && !is_not_found(&e)
    {
        eprintln!("warning: could not remove the container {name}: {e}");
    }
}

async fn remove_if_managed(docker: &Docker, name: &str, deployment: &str) -> anyhow::Result<()> {
    if let Some(info) = managed_container(docker, name).await?
        && label(&info, LABEL_DEPLOYMENT) == Some(deployment)
    {
        eprintln!("removing {name}, left by an interrupted deploy");
        remove(docker, name).await;
    }
    Ok(())
}

/// Starts a container and waits until the engine reports it healthy.
async fn start_and_wait(docker: &Docker, name: &str, timeout: Duration) -> Result<(), String> {
    let started = Instant::now();
    docker
        .start_container(name, None::<bollard::query_parameters::StartContainerOptions>)
        .await
        .map_err(|e| format!("the engine could not start it: {}", engine_message(&e)))?;
    eprintln!("waiting for {name} to pass its healthcheck (up to {})", humantime::format_duration(timeout));
    let deadline = started + timeout;
    loop {
        let info = inspect(docker, name).await.map_err(|e| format!("{e:#}"))?;
        let state = info.state.clone().unwrap_or_default();
        let restarts = info.restart_count.unwrap_or(0);
        if !state.running.unwrap_or(false) || restarts > 0 {
            let code = state.exit_code.unwrap_or(-1);
            let oom = if state.oom_killed == Some(true) { " (out of memory)" } else { "" };
            return Err(format!("it exited with code {code}{oom}"));
        }
        let health = state.health.unwrap_or_default();
        match health.status {
            Some(HealthStatusEnum::HEALTHY) => {
                eprintln!("{name}: healthy after {:.1} s", started.elapsed().as_secs_f64());
                return Ok(());
            }
            Some(HealthStatusEnum::UNHEALTHY) => {
                let last = health.log.unwrap_or_default().pop().and_then(|l| l.output).unwrap_or_default();
                return Err(format!("its healthcheck failed: {}", last.trim()));
            }
            _ => {}
        }
        if Instant::now() > deadline {
            return Err(format!("it was not healthy after {}", humantime::format_duration(timeout)));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The engine's own message, without bollard's wrapping.
fn engine_message(e: &bollard::errors::Error) -> String {
    match e {
        bollard::errors::Error::DockerResponseServerError { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

/// Creates a labelled volume unless it exists; true when it was created.
async fn ensure_volume(docker: &Docker, plan: &Plan, volume: &str, role: &str) -> anyhow::Result<bool> {
    match docker.inspect_volume(volume).await {
        Ok(v) => {
            if v.labels.get(LABEL_DEPLOYMENT).map(String::as_str) != Some(plan.name.as_str()) {
                return Err(super::not_ours("volume", volume));
            }
            Ok(false)
        }
        Err(e) if is_not_found(&e) => {
            let request = VolumeCreateRequest {
                name: Some(volume.to_owned()),
                labels: Some(plan.labels(role)),
                ..VolumeCreateRequest::default()
            };
            docker.create_volume(request).await.with_context(|| format!("creating the volume {volume}"))?;
            Ok(true)
        }
        Err(e) => Err(anyhow::Error::new(e).context(format!("inspecting the volume {volume}"))),
    }
}

/// Puts the key file into the volume `<name>-key-<key id>` (owned by 65532,
/// mode 0400) through a container that is created and never started: the
/// engine's archive upload is the one way to write a file there that works on
/// a remote engine too. The volume keeps the key across restarts and reboots,
/// as the restart policy needs; it lives under the engine's data directory,
/// readable by root only.
async fn fill_key_volume(docker: &Docker, plan: &Plan, created: &mut Vec<String>) -> anyhow::Result<String> {
    let volume = super::key_resource(&plan.name, &plan.key);
    if ensure_volume(docker, plan, &volume, "key").await? {
        created.push(volume.clone());
    }
    let loader = format!("{}-keyload-{:08x}", plan.name, fastrand::u32(..));
    let body = ContainerCreateBody {
        image: Some(plan.image.clone()),
        labels: Some(plan.labels("keyload")),
        network_disabled: Some(true),
        host_config: Some(HostConfig {
            mounts: Some(vec![Mount {
                typ: Some(MountType::VOLUME),
                source: Some(volume.clone()),
                target: Some(VOLUME_KEY_DIR.to_owned()),
                ..Mount::default()
            }]),
            ..HostConfig::default()
        }),
        ..ContainerCreateBody::default()
    };
    create(docker, &loader, body).await?;
    let upload = async {
        let mut archive = tar::Builder::new(Vec::new());
        let bytes = plan.key_file_bytes();
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o400);
        header.set_uid(65532);
        header.set_gid(65532);
        header.set_mtime(0);
        archive.append_data(&mut header, "key", &bytes[..]).context("packing the key")?;
        let tar = zeroize::Zeroizing::new(archive.into_inner().context("packing the key")?);
        let options = UploadToContainerOptionsBuilder::default().path(VOLUME_KEY_DIR).build();
        docker
            .upload_to_container(&loader, Some(options), bollard::body_full(tar.to_vec().into()))
            .await
            .map_err(|e| anyhow::anyhow!("writing the key into the volume {volume}: {}", engine_message(&e)))
    };
    let result = upload.await;
    remove(docker, &loader).await;
    result?;
    Ok(volume)
}

async fn remove_volumes(docker: &Docker, volumes: &[String]) {
    for v in volumes {
        if let Err(e) = docker.remove_volume(v, None::<bollard::query_parameters::RemoveVolumeOptions>).await {
            eprintln!("warning: could not remove the volume {v}: {e}");
        }
    }
}

/// Removes this deployment's key volumes other than `keep`.
async fn prune_key_volumes(docker: &Docker, name: &str, keep: Option<&str>) {
    for v in volumes(docker, name).await.unwrap_or_default() {
        if v.labels.get(LABEL_ROLE).map(String::as_str) == Some("key") && Some(v.name.as_str()) != keep {
            match docker.remove_volume(&v.name, None::<bollard::query_parameters::RemoveVolumeOptions>).await {
                Ok(()) => eprintln!("removed the key volume {} (key id {})", v.name, label_or(&v.labels, LABEL_KEY_ID)),
                Err(e) => eprintln!("warning: could not remove the old key volume {}: {e}", v.name),
            }
        }
    }
}

fn label_or<'a>(labels: &'a HashMap<String, String>, key: &str) -> &'a str {
    labels.get(key).map(String::as_str).unwrap_or("?")
}

async fn volumes(docker: &Docker, name: &str) -> anyhow::Result<Vec<bollard::models::Volume>> {
    let options = ListVolumesOptionsBuilder::default().filters(&super::filters(name)).build();
    let list = docker.list_volumes(Some(options)).await.context("listing volumes")?;
    Ok(list.volumes.unwrap_or_default())
}

fn short_id(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

fn published(info: &ContainerInspectResponse) -> Option<String> {
    let ports = info.network_settings.as_ref()?.ports.as_ref()?;
    let bindings = ports.get(&format!("{APP_PORT}/tcp"))?.as_ref()?;
    let b = bindings.first()?;
    Some(format!("{}:{} -> {APP_PORT}", b.host_ip.as_deref().unwrap_or(""), b.host_port.as_deref().unwrap_or("")))
}

/// Prints the state of the deployment's container; false when there is none.
pub(super) async fn status(docker: &Docker, name: &str) -> anyhow::Result<bool> {
    let Some(info) = managed_container(docker, name).await? else { return Ok(false) };
    let state = info.state.clone().unwrap_or_default();
    let health = state.health.as_ref().and_then(|h| h.status).map(|s| s.to_string()).unwrap_or_else(|| "-".into());
    let config = info.config.clone().unwrap_or_default();
    let env = config.env.unwrap_or_default();
    let key = if env.iter().any(|e| e.starts_with("SECRET_KEY_FILE=")) {
        "file (SECRET_KEY_FILE)"
    } else if env.iter().any(|e| e.starts_with("SECRET_KEY=")) {
        "SECRET_KEY in the environment"
    } else {
        "none"
    };
    println!("container  {name} ({}), standalone engine", short_id(info.id.as_deref().unwrap_or("")));
    println!(
        "state      {}{}, health {health}, restarts {}",
        state.status.map(|s| s.to_string()).unwrap_or_default(),
        state.started_at.map(|t| format!(" since {t}")).unwrap_or_default(),
        info.restart_count.unwrap_or(0)
    );
    println!("image      {} ({})", config.image.unwrap_or_default(), info.image.as_deref().unwrap_or_default());
    println!("key        id {}, {key}", label(&info, LABEL_KEY_ID).unwrap_or("?"));
    println!("published  {}", published(&info).unwrap_or_else(|| "-".to_owned()));
    println!("data       volume {}", super::data_volume(name));
    Ok(true)
}

/// Removes the deployment's containers and key volumes, and with `purge` its
/// data volume. Returns how many things it removed.
pub(crate) async fn undeploy(docker: &Docker, name: &str, purge: bool) -> anyhow::Result<usize> {
    // A container named `name` that boxcar did not make stops us here.
    managed_container(docker, name).await?;
    let options = ListContainersOptionsBuilder::default().all(true).filters(&super::filters(name)).build();
    let containers = docker.list_containers(Some(options)).await.context("listing containers")?;
    let mut removed = 0;
    for c in containers {
        let Some(id) = c.id else { continue };
        // Swarm's task containers carry the label too; Swarm removes those.
        if c.labels.as_ref().is_some_and(|l| l.contains_key("com.docker.swarm.service.id")) {
            continue;
        }
        let shown = c.names.unwrap_or_default().join(",").trim_start_matches('/').to_owned();
        stop(docker, &id).await?;
        docker
            .remove_container(&id, Some(RemoveContainerOptionsBuilder::default().force(true).v(true).build()))
            .await
            .with_context(|| format!("removing the container {shown}"))?;
        println!("removed    container {shown}");
        removed += 1;
    }
    for v in volumes(docker, name).await? {
        let role = v.labels.get(LABEL_ROLE).map(String::as_str);
        if role == Some("data") && !purge {
            println!("kept       volume {} (the bots' data; --purge removes it)", v.name);
            continue;
        }
        let options = RemoveVolumeOptionsBuilder::default().force(false).build();
        docker
            .remove_volume(&v.name, Some(options))
            .await
            .with_context(|| format!("removing the volume {}", v.name))?;
        println!("removed    volume {}", v.name);
        removed += 1;
    }
    Ok(removed)
}
