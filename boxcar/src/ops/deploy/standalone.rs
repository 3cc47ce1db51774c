//! Deploying to one Docker engine: a single hardened container per
//! deployment, replaced only after its successor has passed its healthcheck.
//!
//! An engine cannot publish one host port on two containers, so an update runs
//! in two steps. First a probe: the new image with the same key and settings
//! but in-memory data, no published port, and the variables the contract
//! declares to make a probe harmless (`probe.env`: for example an API address
//! that goes nowhere), so it neither changes the service's data nor takes the
//! port nor acts on the outside world. It proves the things that break most
//! deploys (image, key, settings, sealed values) while the old container
//! keeps serving. Then the swap: the old container is stopped and
//! kept, its data copied into a new volume, and the new container created on
//! that copy with the port. It must pass its healthcheck before the old
//! container and its data are removed; on any failure the new container and
//! its copy are removed and the old container, on its untouched data, starts
//! again. A new release that migrates the database therefore never leaves the
//! old one unable to start.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use bollard::Docker;
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, HealthConfig, HealthStatusEnum, HostConfig, HostConfigLogConfig,
    Mount, MountType, PortBinding, RestartPolicy, RestartPolicyNameEnum, VolumeCreateRequest,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, DownloadFromContainerOptionsBuilder, ListContainersOptionsBuilder,
    ListVolumesOptionsBuilder, RemoveContainerOptionsBuilder, RemoveVolumeOptionsBuilder, RenameContainerOptions,
    StopContainerOptionsBuilder, UploadToContainerOptionsBuilder,
};
use futures::StreamExt as _;

use crate::adapters::engine::is_not_found;
use crate::ops::resources::{self, engine_message, label, managed_container, remove};
use crate::vocab::labels::{
    DATA as LABEL_DATA, DEPLOYMENT as LABEL_DEPLOYMENT, KEY_ID as LABEL_KEY_ID, ROLE as LABEL_ROLE, SPEC as LABEL_SPEC,
};
use crate::vocab::layout::{VOLUME_KEY_DIR, VOLUME_KEY_FILE, VOLUME_KEY_FILE_NAME};
use crate::vocab::plan::{KeyDelivery, Plan, filters};

fn not_ours(kind: &'static str, name: &str) -> anyhow::Error {
    resources::Error::NotOurs { kind, name: name.to_owned() }.into()
}
/// Seconds the engine waits after SIGTERM before SIGKILL: a service's graceful stop.
const STOP_SECONDS: i32 = 10;
/// Healthcheck period of the deployed container. The image says 10 s; a
/// deploy waits on the first passing check, so it checks twice as often.
const HEALTH_INTERVAL: Duration = Duration::from_secs(5);
/// The probe lives for seconds: it checks every second.
const PROBE_INTERVAL: Duration = Duration::from_secs(1);

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
                "as a file: SECRET_KEY_FILE={VOLUME_KEY_FILE} from the read-only volume {v}; \
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

/// What a deploy created and removes again when it fails.
struct Created<'a> {
    docker: &'a Docker,
    volumes: Vec<String>,
}

impl Created<'_> {
    async fn undo(&self) {
        remove_volumes(self.docker, &self.volumes).await;
    }
}

pub async fn deploy(docker: &Docker, plan: &Plan, image_id: &str) -> anyhow::Result<()> {
    let started = Instant::now();
    let name = &plan.name;
    let previous = format!("{name}-previous");
    if let Some(network) = &plan.network
        && docker.inspect_network(network, None::<bollard::query_parameters::InspectNetworkOptions>).await.is_err()
    {
        bail!("--network {network}: no such Docker network on this engine; nothing was changed");
    }
    recover(docker, name).await?;
    let current = managed_container(docker, name, name).await?;

    let key_preview = match plan.key_delivery {
        KeyDelivery::Env => KeyMount::Env,
        _ => KeyMount::Volume(plan.key_resource()),
    };
    let spec = spec_hash(plan, image_id, &key_preview);
    if let Some(c) = &current
        && label(c, LABEL_SPEC) == Some(spec.as_str())
        && running(c)
        && health(c) == Some(HealthStatusEnum::HEALTHY)
    {
        println!("unchanged  {name} already runs {} with these settings; nothing to do", plan.image);
        return Ok(());
    }

    let mut created = Created { docker, volumes: Vec::new() };
    let key = match plan.key_delivery {
        KeyDelivery::Env => KeyMount::Env,
        delivery => match fill_key_volume(docker, plan, &mut created.volumes).await? {
            Ok(volume) => KeyMount::Volume(volume),
            Err(refused) if delivery == KeyDelivery::Auto => {
                eprintln!(
                    "warning: the engine refused the key as a file ({refused:#}); handing it over as SECRET_KEY, \
                     which `docker inspect` shows"
                );
                KeyMount::Env
            }
            Err(refused) => {
                created.undo().await;
                return Err(refused.context("the key could not be put in a volume; nothing was changed"));
            }
        },
    };
    eprintln!("key: {}", key.describe());

    let old_running = current.as_ref().is_some_and(running);
    if old_running {
        let probe = format!("{name}-next");
        eprintln!(
            "probe: starting {} beside the running `{name}` (no port, in-memory data, {} probe setting(s))",
            plan.image,
            plan.service.probe_env.len()
        );
        let result = match create(docker, &probe, body(plan, &spec, &key, Role::Probe, None)).await {
            Ok(()) => start_and_wait(docker, &probe, plan.timeout).await,
            Err(e) => Err(format!("{e:#}")),
        };
        let logs = resources::last_log_lines(docker, &probe, 30).await;
        remove(docker, &probe).await;
        if let Err(why) = result {
            created.undo().await;
            bail!(
                "the new image did not become healthy: {why}; `{name}` keeps running the previous image, \
                 nothing was changed\nlast log lines of the new container:\n{logs}"
            );
        }
        eprintln!("probe: healthy");
    }

    // From here on the old container is stopped: every failure puts it back.
    let old_data = current.as_ref().and_then(|c| label(c, LABEL_DATA).map(str::to_owned));
    if current.is_some() {
        eprintln!("stopping the previous `{name}`");
        if let Err(e) = stop(docker, name).await {
            restart(docker, name, old_running).await;
            created.undo().await;
            return Err(e.context("nothing was changed"));
        }
        if let Err(e) = rename(docker, name, &previous).await {
            restart(docker, name, old_running).await;
            created.undo().await;
            return Err(e.context("the previous container runs again; nothing was changed"));
        }
    }
    let result = swap_in(docker, plan, &spec, &key, &previous, current.is_some(), &mut created).await;
    let healthy_after = started.elapsed();
    if let Err(why) = result {
        let logs = resources::last_log_lines(docker, name, 30).await;
        remove(docker, name).await;
        created.undo().await;
        if current.is_some() {
            rename(docker, &previous, name).await?;
            restart(docker, name, old_running).await;
            let moved = if plan.publish.port == 0 { " (on a new port: `cargo xtask status` shows it)" } else { "" };
            bail!(
                "the new container did not become healthy: {why}; rolled back: `{name}` runs the previous \
                 container again on its own data{moved}\nlast log lines of the new container:\n{logs}"
            );
        }
        bail!("`{name}` did not become healthy: {why}; it was removed\nlast log lines:\n{logs}");
    }
    if current.is_some() {
        remove(docker, &previous).await;
        if let Some(old) = old_data {
            remove_volumes(docker, &[old]).await;
        }
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
    match &plan.service.data {
        Some(path) => println!("data       volume {} at {path}", label(&info, LABEL_DATA).unwrap_or("?")),
        None => println!("data       none (the service keeps no data)"),
    }
    println!("published  {}", published(&info).unwrap_or_else(|| "-".to_owned()));
    println!("healthy    after {:.1} s", healthy_after.as_secs_f64());
    Ok(())
}

/// Creates the data volume of the new container (a copy of the stopped old
/// container's data, or empty on a first deploy), then the container, and
/// waits for it to become healthy.
async fn swap_in(
    docker: &Docker,
    plan: &Plan,
    spec: &str,
    key: &KeyMount,
    previous: &str,
    has_previous: bool,
    created: &mut Created<'_>,
) -> Result<(), String> {
    let name = &plan.name;
    let Some(path) = &plan.service.data else {
        // A service without data: nothing to create or copy.
        create(docker, name, body(plan, spec, key, Role::App, None)).await.map_err(|e| format!("{e:#}"))?;
        return start_and_wait(docker, name, plan.timeout).await;
    };
    let data = format!("{}-{:08x}", plan.data_volume(), fastrand::u32(..));
    ensure_volume(docker, plan, &data, "data").await.map_err(|e| format!("{e:#}"))?;
    created.volumes.push(data.clone());
    if has_previous {
        let bytes = copy_data(docker, plan, previous, path, &data).await.map_err(|e| format!("{e:#}"))?;
        eprintln!("copied the data of the previous container ({:.1} KiB) into {data}", bytes as f64 / 1024.0);
    }
    create(docker, name, body(plan, spec, key, Role::App, Some(&data))).await.map_err(|e| format!("{e:#}"))?;
    start_and_wait(docker, name, plan.timeout).await?;
    // The new container owns its data now: a failure after this point is not undone.
    created.volumes.retain(|v| v != &data);
    Ok(())
}

/// Starts a stopped container again (on failure paths: reports, never fails).
async fn restart(docker: &Docker, name: &str, was_running: bool) {
    if !was_running {
        return;
    }
    if let Err(e) = docker.start_container(name, None::<bollard::query_parameters::StartContainerOptions>).await {
        eprintln!("warning: could not start the previous `{name}` again: {e}; `docker start {name}` may");
    }
}

/// Puts the deployment back in order after a deploy that was interrupted: a
/// probe left behind is removed; a stopped old container (`-previous`) is
/// restored unless the new one is running and healthy.
async fn recover(docker: &Docker, name: &str) -> anyhow::Result<()> {
    let probe = format!("{name}-next");
    let previous = format!("{name}-previous");
    if managed_container(docker, &probe, name).await?.is_some() {
        eprintln!("removing {probe}, left by an interrupted deploy");
        remove(docker, &probe).await;
    }
    let Some(old) = managed_container(docker, &previous, name).await? else { return Ok(()) };
    let current = managed_container(docker, name, name).await?;
    let new_is_good = current.as_ref().is_some_and(|c| running(c) && health(c) == Some(HealthStatusEnum::HEALTHY));
    if new_is_good {
        eprintln!("removing {previous}, left by an interrupted deploy whose new container is healthy");
        remove(docker, &previous).await;
        let new_data = current.as_ref().and_then(|c| label(c, LABEL_DATA));
        if let Some(old_data) = label(&old, LABEL_DATA).filter(|d| Some(*d) != new_data) {
            remove_volumes(docker, &[old_data.to_owned()]).await;
        }
        return Ok(());
    }
    eprintln!("a deploy of `{name}` was interrupted: restoring the previous container");
    if let Some(c) = &current {
        remove(docker, name).await;
        if let Some(new_data) = label(c, LABEL_DATA).filter(|d| Some(*d) != label(&old, LABEL_DATA)) {
            remove_volumes(docker, &[new_data.to_owned()]).await;
        }
    }
    rename(docker, &previous, name).await?;
    docker
        .start_container(name, None::<bollard::query_parameters::StartContainerOptions>)
        .await
        .with_context(|| format!("starting the restored `{name}`"))?;
    Ok(())
}

/// Copies the data folder `path` of the (stopped) container `from` into
/// `volume` through the archive API: out of one container, into a loader
/// container that mounts the new volume and is never started. Returns the
/// archive's size.
async fn copy_data(docker: &Docker, plan: &Plan, from: &str, path: &str, volume: &str) -> anyhow::Result<usize> {
    let options = DownloadFromContainerOptionsBuilder::default().path(path).build();
    let mut stream = docker.download_from_container(from, Some(options));
    let mut archive = Vec::new();
    while let Some(chunk) = stream.next().await {
        archive.extend_from_slice(&chunk.with_context(|| format!("copying {path} out of {from}"))?);
    }
    let size = archive.len();
    // The archive's entries are `<last part of path>/...`: unpacked in the
    // folder above, they land in the new volume mounted at `path`, owners
    // and modes kept.
    let parent = std::path::Path::new(path).parent().and_then(|p| p.to_str()).unwrap_or("/").to_owned();
    with_loader(docker, plan, volume, path, |loader| async move {
        let options = UploadToContainerOptionsBuilder::default().path(&parent).build();
        docker
            .upload_to_container(&loader, Some(options), bollard::body_full(archive.into()))
            .await
            .map_err(|e| anyhow::anyhow!("copying the data into {volume}: {}", engine_message(&e)))
    })
    .await??;
    Ok(size)
}

/// Runs `f` with a loader container: made from the deployment's image, never
/// started, no network, `volume` mounted read-write at `target`.
/// The outer error is about the loader itself, the inner one is `f`'s.
async fn with_loader<F, Fut>(
    docker: &Docker,
    plan: &Plan,
    volume: &str,
    target: &str,
    f: F,
) -> anyhow::Result<anyhow::Result<()>>
where
    F: FnOnce(String) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let loader = format!("{}-load-{:08x}", plan.name, fastrand::u32(..));
    let body = ContainerCreateBody {
        image: Some(plan.image.clone()),
        labels: Some(plan.labels("loader")),
        network_disabled: Some(true),
        host_config: Some(HostConfig {
            mounts: Some(vec![Mount {
                typ: Some(MountType::VOLUME),
                source: Some(volume.to_owned()),
                target: Some(target.to_owned()),
                ..Mount::default()
            }]),
            ..HostConfig::default()
        }),
        ..ContainerCreateBody::default()
    };
    create(docker, &loader, body).await?;
    let result = f(loader.clone()).await;
    remove(docker, &loader).await;
    Ok(result)
}

/// What decides whether a running container is already what a deploy asks
/// for: the image, and everything in its container spec (settings, limits,
/// hardening), with the generation's data volume and the key's value left out.
fn spec_hash(plan: &Plan, image_id: &str, key: &KeyMount) -> String {
    let mut value = serde_json::to_value(body(plan, "", key, Role::App, Some("DATA"))).unwrap_or_default();
    if let Some(env) = value.pointer_mut("/Env").and_then(|e| e.as_array_mut()) {
        env.retain(|e| !e.as_str().is_some_and(|e| e.starts_with("SECRET_KEY=")));
    }
    crate::vocab::plan::spec_hash(
        &serde_json::json!({ "image": image_id, "body": value, "key": plan.key.key_id().to_string() }),
    )
}

fn body(plan: &Plan, spec: &str, key: &KeyMount, role: Role, data: Option<&str>) -> ContainerCreateBody {
    let service = &plan.service;
    let user = service.user;
    let mut labels = plan.labels(if role == Role::App { "app" } else { "probe" });
    labels.insert(LABEL_SPEC.to_owned(), spec.to_owned());
    let mut env = vec![format!("{}={}", boxcar_secrets::DEPLOY_ENV, plan.env)];
    let mut mounts = Vec::new();
    let mut tmpfs = HashMap::from([("/tmp".to_owned(), "rw,noexec,nosuid,size=16m,mode=1777".to_owned())]);
    match (&service.data, data) {
        (Some(path), Some(volume)) => {
            labels.insert(LABEL_DATA.to_owned(), volume.to_owned());
            mounts.push(Mount {
                typ: Some(MountType::VOLUME),
                source: Some(volume.to_owned()),
                target: Some(path.clone()),
                ..Mount::default()
            });
        }
        // The probe: empty, in-memory data of the service's user.
        (Some(path), None) => {
            tmpfs.insert(path.clone(), format!("rw,noexec,nosuid,size=64m,uid={user},gid={user},mode=0700"));
        }
        (None, _) => {}
    }
    match key {
        KeyMount::Volume(volume) => {
            env.push(format!("SECRET_KEY_FILE={VOLUME_KEY_FILE}"));
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
            let ports = HashMap::from([(format!("{}/tcp", service.port), Some(vec![binding]))]);
            (HEALTH_INTERVAL, RestartPolicyNameEnum::UNLESS_STOPPED, Some(ports))
        }
        Role::Probe => {
            env.extend(service.probe_env.iter().map(|(k, v)| format!("{k}={v}")));
            (PROBE_INTERVAL, RestartPolicyNameEnum::NO, None)
        }
    };
    let nanos = |d: Duration| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX);
    ContainerCreateBody {
        image: Some(plan.image.clone()),
        user: Some(format!("{user}:{user}")),
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
        host_config: Some(resources::hardened(HostConfig {
            restart_policy: Some(RestartPolicy { name: Some(restart), maximum_retry_count: None }),
            tmpfs: Some(tmpfs),
            mounts: Some(mounts),
            memory: Some(plan.memory_bytes),
            memory_swap: Some(plan.memory_bytes),
            pids_limit: Some(plan.pids()),
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
        })),
        ..ContainerCreateBody::default()
    }
}

fn health(info: &ContainerInspectResponse) -> Option<HealthStatusEnum> {
    info.state.as_ref()?.health.as_ref()?.status
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

/// Creates a labelled volume unless it exists; true when it was created.
async fn ensure_volume(docker: &Docker, plan: &Plan, volume: &str, role: &str) -> anyhow::Result<bool> {
    match docker.inspect_volume(volume).await {
        Ok(v) => {
            if v.labels.get(LABEL_DEPLOYMENT).map(String::as_str) != Some(plan.name.as_str()) {
                return Err(not_ours("volume", volume));
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

/// Puts the key file into the volume `<name>-key-<key id>` (owned by the service's user,
/// mode 0400) through a container that is created and never started: the
/// engine's archive upload is the one way to write a file there that works on
/// a remote engine too. The volume keeps the key across restarts and reboots,
/// as the restart policy needs; it lives under the engine's data directory,
/// readable by root only.
async fn fill_key_volume(
    docker: &Docker,
    plan: &Plan,
    created: &mut Vec<String>,
) -> anyhow::Result<anyhow::Result<String>> {
    let volume = plan.key_resource();
    if ensure_volume(docker, plan, &volume, "key").await? {
        created.push(volume.clone());
    }
    let shown = volume.clone();
    let upload = with_loader(docker, plan, &volume, VOLUME_KEY_DIR, |loader| async move {
        // Room for the whole archive up front (one 512-byte header, one data
        // block, the end marker), so no reallocation leaves a copy behind.
        let mut archive = tar::Builder::new(Vec::with_capacity(4096));
        let bytes = plan.key_file_bytes();
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o400);
        header.set_uid(u64::from(plan.service.user));
        header.set_gid(u64::from(plan.service.user));
        header.set_mtime(0);
        archive.append_data(&mut header, VOLUME_KEY_FILE_NAME, &bytes[..]).context("packing the key")?;
        // Moved, not copied, into the request body: bollard takes ownership
        // and cannot wipe it, so a wiped copy here would only add one more.
        let tar = archive.into_inner().context("packing the key")?;
        let options = UploadToContainerOptionsBuilder::default().path(VOLUME_KEY_DIR).build();
        docker
            .upload_to_container(&loader, Some(options), bollard::body_full(tar.into()))
            .await
            .map_err(|e| anyhow::anyhow!("writing the key into the volume {shown}: {}", engine_message(&e)))
    })
    .await?;
    Ok(upload.map(|()| volume))
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
    let options = ListVolumesOptionsBuilder::default().filters(&filters(name)).build();
    let list = docker.list_volumes(Some(options)).await.context("listing volumes")?;
    Ok(list.volumes.unwrap_or_default())
}

fn short_id(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

/// The published port: `<host ip>:<host port> -> <port>/tcp` of the
/// container's first binding (a deployment publishes one).
fn published(info: &ContainerInspectResponse) -> Option<String> {
    let ports = info.network_settings.as_ref()?.ports.as_ref()?;
    let (port, bindings) = ports.iter().find_map(|(p, b)| Some((p, b.as_ref()?.first()?)))?;
    let b = bindings;
    Some(format!("{}:{} -> {port}", b.host_ip.as_deref().unwrap_or(""), b.host_port.as_deref().unwrap_or("")))
}

/// Prints the state of the deployment's container; false when there is none.
pub(crate) async fn status(docker: &Docker, name: &str) -> anyhow::Result<bool> {
    let Some(info) = managed_container(docker, name, name).await? else { return Ok(false) };
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
    println!("data       volume {}", label(&info, LABEL_DATA).unwrap_or("-"));
    Ok(true)
}

/// Removes the deployment's containers and key volumes, and with `purge` its
/// data volume. Returns how many things it removed.
pub async fn undeploy(docker: &Docker, name: &str, purge: bool) -> anyhow::Result<usize> {
    // A container named `name` that boxcar did not make stops us here.
    managed_container(docker, name, name).await?;
    let options = ListContainersOptionsBuilder::default().all(true).filters(&filters(name)).build();
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
            println!("kept       volume {} (the service's data; --purge removes it)", v.name);
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
