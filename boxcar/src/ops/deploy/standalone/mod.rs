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
//!
//! Here: `deploy` in its steps, `swap_in`, `recover`; the container's body
//! and engine calls in `container`, its volumes in `volumes`, `status` and
//! `undeploy` in `manage`.

mod container;
mod manage;
mod volumes;

use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::models::{ContainerInspectResponse, HealthStatusEnum};

pub(crate) use manage::status;
pub use manage::undeploy;

use self::container::{
    KeyMount, Role, body, health, inspect, published, rename, running, short_id, spec_hash, start_and_wait, stop,
};
use self::volumes::{copy_data, ensure_volume, fill_key_volume, prune_key_volumes, remove_volumes};
use crate::ops::deploy::Error;
use crate::ops::deploy::error::chain;
use crate::ops::resources::{self, label, managed_container, remove};
use crate::vocab::labels::DATA as LABEL_DATA;
use crate::vocab::plan::{KeyDelivery, Plan};

/// The name of a deployment's stopped old container while its successor is
/// tried.
fn previous_of(name: &str) -> String {
    format!("{name}{}", crate::vocab::plan::PREVIOUS)
}

/// The name of the probe of a deployment's new image.
fn probe_of(name: &str) -> String {
    format!("{name}{}", crate::vocab::plan::NEXT)
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

/// Deploys `plan` (image `image_id`) as one container: nothing when it
/// already runs as asked; else the key handed over, the new image probed
/// beside a running old container, the old one replaced, the result said.
pub async fn deploy(docker: &Docker, plan: &Plan, image_id: &str) -> Result<(), Error> {
    let started = Instant::now();
    let name = &plan.name;
    if let Some(network) = &plan.network
        && docker.inspect_network(network, None::<bollard::query_parameters::InspectNetworkOptions>).await.is_err()
    {
        return Err(Error::NoNetwork { network: network.clone() });
    }
    recover(docker, name).await?;
    let current = managed_container(docker, name, name).await?;
    let spec = spec_hash(plan, image_id, &KeyMount::planned(plan));
    if let Some(c) = &current
        && label(c, crate::vocab::labels::SPEC) == Some(spec.as_str())
        && running(c)
        && health(c) == Some(HealthStatusEnum::HEALTHY)
    {
        println!("unchanged  {name} already runs {} with these settings; nothing to do", plan.image);
        return Ok(());
    }
    let mut created = Created { docker, volumes: Vec::new() };
    let key = hand_over_key(docker, plan, &mut created).await?;
    eprintln!("key: {}", key.describe());
    if current.as_ref().is_some_and(running) {
        probe(docker, plan, &spec, &key, &created).await?;
    }
    let healthy_after = replace(docker, plan, (&spec, &key), current.as_ref(), &mut created, started).await?;
    prune_key_volumes(docker, name, key.volume()).await;
    report(docker, plan, image_id, &key, healthy_after).await
}

/// The key in its volume, or where asked (or, with `auto`, where the engine
/// refuses the file) in the container's environment.
async fn hand_over_key(docker: &Docker, plan: &Plan, created: &mut Created<'_>) -> Result<KeyMount, Error> {
    let delivery = plan.key_delivery;
    if delivery == KeyDelivery::Env {
        return Ok(KeyMount::Env);
    }
    match fill_key_volume(docker, plan, &mut created.volumes).await? {
        Ok(volume) => Ok(KeyMount::Volume(volume)),
        Err(refused) if delivery == KeyDelivery::Auto => {
            eprintln!(
                "warning: the engine refused the key as a file ({}); handing it over as SECRET_KEY, \
                 which `docker inspect` shows",
                chain(&refused)
            );
            Ok(KeyMount::Env)
        }
        Err(refused) => {
            created.undo().await;
            Err(Error::KeyVolume { source: Box::new(refused) })
        }
    }
}

/// The new image started beside the running old container: no port,
/// in-memory data, the contract's probe settings. It must become healthy
/// before the old container is touched.
async fn probe(docker: &Docker, plan: &Plan, spec: &str, key: &KeyMount, created: &Created<'_>) -> Result<(), Error> {
    let name = &plan.name;
    let probe = probe_of(name);
    eprintln!(
        "probe: starting {} beside the running `{name}` (no port, in-memory data, {} probe setting(s))",
        plan.image,
        plan.service.probe_env.len()
    );
    let result = match resources::create(docker, &probe, body(plan, spec, key, Role::Probe, None)).await {
        Ok(()) => start_and_wait(docker, &probe, plan.timeout).await,
        Err(e) => Err(chain(&e)),
    };
    let logs = resources::last_log_lines(docker, &probe, 30).await;
    remove(docker, &probe).await;
    if let Err(why) = result {
        created.undo().await;
        return Err(Error::ProbeUnhealthy { name: name.clone(), why, logs });
    }
    eprintln!("probe: healthy");
    Ok(())
}

/// The old container (if any) stopped and renamed aside, the new one swapped
/// in on a copy of its data; on failure the new one is removed and the old
/// one runs again on its own data; on success the old one and its data go.
/// Returns how long after `started` the new container was healthy.
async fn replace(
    docker: &Docker,
    plan: &Plan,
    (spec, key): (&str, &KeyMount),
    current: Option<&ContainerInspectResponse>,
    created: &mut Created<'_>,
    started: Instant,
) -> Result<Duration, Error> {
    let name = &plan.name;
    let previous = previous_of(name);
    let old_running = current.is_some_and(running);
    // From here on the old container is stopped: every failure puts it back.
    let old_data = current.and_then(|c| label(c, LABEL_DATA).map(str::to_owned));
    if current.is_some() {
        eprintln!("stopping the previous `{name}`");
        if let Err(source) = stop(docker, name).await {
            restart(docker, name, old_running).await;
            created.undo().await;
            return Err(Error::StopPrevious { source });
        }
        if let Err(source) = rename(docker, name, &previous).await {
            restart(docker, name, old_running).await;
            created.undo().await;
            return Err(Error::RenamePrevious { source });
        }
    }
    let result = swap_in(docker, plan, spec, key, &previous, current.is_some(), created).await;
    let healthy_after = started.elapsed();
    if let Err(why) = result {
        let logs = resources::last_log_lines(docker, name, 30).await;
        remove(docker, name).await;
        created.undo().await;
        if current.is_none() {
            return Err(Error::Unhealthy { name: name.clone(), why, logs });
        }
        rename(docker, &previous, name).await?;
        restart(docker, name, old_running).await;
        return Err(Error::RolledBack { name: name.clone(), why, moved_port: plan.publish.port == 0, logs });
    }
    if current.is_some() {
        remove(docker, &previous).await;
        if let Some(old) = old_data {
            remove_volumes(docker, &[old]).await;
        }
    }
    Ok(healthy_after)
}

/// What was deployed, as `deploy` prints it.
async fn report(
    docker: &Docker,
    plan: &Plan,
    image_id: &str,
    key: &KeyMount,
    healthy_after: Duration,
) -> Result<(), Error> {
    let name = &plan.name;
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
        resources::create(docker, name, body(plan, spec, key, Role::App, None)).await.map_err(|e| chain(&e))?;
        return start_and_wait(docker, name, plan.timeout).await;
    };
    let data = format!("{}-{:08x}", plan.data_volume(), fastrand::u32(..));
    ensure_volume(docker, plan, &data, "data").await.map_err(|e| chain(&e))?;
    created.volumes.push(data.clone());
    if has_previous {
        let bytes = copy_data(docker, plan, previous, path, &data).await.map_err(|e| chain(&e))?;
        eprintln!("copied the data of the previous container ({:.1} KiB) into {data}", bytes as f64 / 1024.0);
    }
    resources::create(docker, name, body(plan, spec, key, Role::App, Some(&data))).await.map_err(|e| chain(&e))?;
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
async fn recover(docker: &Docker, name: &str) -> Result<(), Error> {
    let probe = probe_of(name);
    let previous = previous_of(name);
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
        .map_err(resources::api(format!("starting the restored `{name}`")))?;
    Ok(())
}
