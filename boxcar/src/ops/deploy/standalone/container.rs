//! The container of a standalone deployment: its body (`body`, for the
//! service and for its probe, with the key as a file or a variable), the
//! hash that says whether a running one is already what a deploy asks for
//! (`spec_hash`), and the engine calls a deploy makes on it (start and wait
//! for health, stop, rename, inspect).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, HealthConfig, HealthStatusEnum, HostConfig, HostConfigLogConfig,
    Mount, MountType, PortBinding, RestartPolicy, RestartPolicyNameEnum,
};
use bollard::query_parameters::{RenameContainerOptions, StopContainerOptionsBuilder};
use boxcar_secrets::{SECRET_KEY, SECRET_KEY_FILE};

use crate::ops::deploy::error::chain;
use crate::ops::resources::{self, api, engine_message};
use crate::vocab::labels::{DATA as LABEL_DATA, SPEC as LABEL_SPEC};
use crate::vocab::layout::{VOLUME_KEY_DIR, VOLUME_KEY_FILE};
use crate::vocab::plan::{KeyDelivery, Plan};

/// Seconds the engine waits after SIGTERM before SIGKILL: a service's graceful stop.
const STOP_SECONDS: i32 = 10;
/// Healthcheck period of the deployed container. The image says 10 s; a
/// deploy waits on the first passing check, so it checks twice as often.
const HEALTH_INTERVAL: Duration = Duration::from_secs(5);
/// The probe lives for seconds: it checks every second.
const PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// How the key reaches the container.
pub(super) enum KeyMount {
    /// A read-only volume holding the key file.
    Volume(String),
    /// The SECRET_KEY environment variable.
    Env,
}

impl KeyMount {
    /// The mount a plan asks for, before the engine is asked to take the file.
    pub(super) fn planned(plan: &Plan) -> KeyMount {
        match plan.key_delivery {
            KeyDelivery::Env => KeyMount::Env,
            _ => KeyMount::Volume(plan.key_resource()),
        }
    }

    pub(super) fn describe(&self) -> String {
        match self {
            KeyMount::Volume(v) => format!(
                "as a file: SECRET_KEY_FILE={VOLUME_KEY_FILE} from the read-only volume {v}; \
                 not in the container's environment"
            ),
            KeyMount::Env => "as SECRET_KEY in the container's environment: `docker inspect` shows it".to_owned(),
        }
    }

    /// The key volume, if the key is a file.
    pub(super) fn volume(&self) -> Option<&str> {
        match self {
            KeyMount::Volume(v) => Some(v.as_str()),
            KeyMount::Env => None,
        }
    }
}

/// Which container a body is for.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    App,
    Probe,
}

/// What decides whether a running container is already what a deploy asks
/// for: the image, and everything in its container spec (settings, limits,
/// hardening), with the generation's data volume and the key's value left out.
pub(super) fn spec_hash(plan: &Plan, image_id: &str, key: &KeyMount) -> String {
    let mut value = serde_json::to_value(body(plan, "", key, Role::App, Some("DATA"))).unwrap_or_default();
    let key_var = format!("{SECRET_KEY}=");
    if let Some(env) = value.pointer_mut("/Env").and_then(|e| e.as_array_mut()) {
        env.retain(|e| !e.as_str().is_some_and(|e| e.starts_with(&key_var)));
    }
    crate::vocab::plan::spec_hash(
        &serde_json::json!({ "image": image_id, "body": value, "key": plan.key.key_id().to_string() }),
    )
}

/// The container for `role`: the service (its port published, restarted
/// unless stopped, on `data`) or its probe (no port, in-memory data, the
/// contract's probe settings), both hardened and limited alike.
pub(super) fn body(plan: &Plan, spec: &str, key: &KeyMount, role: Role, data: Option<&str>) -> ContainerCreateBody {
    let service = &plan.service;
    let user = service.user;
    let mut labels = plan.labels(if role == Role::App { "app" } else { "probe" });
    labels.insert(LABEL_SPEC.to_owned(), spec.to_owned());
    let mut env = vec![format!("{}={}", boxcar_secrets::DEPLOY_ENV, plan.env)];
    let mut mounts = Vec::new();
    let mut tmpfs =
        HashMap::from([(crate::vocab::layout::TMP.to_owned(), "rw,noexec,nosuid,size=16m,mode=1777".to_owned())]);
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
            env.push(format!("{SECRET_KEY_FILE}={VOLUME_KEY_FILE}"));
            mounts.push(Mount {
                typ: Some(MountType::VOLUME),
                source: Some(volume.clone()),
                target: Some(VOLUME_KEY_DIR.to_owned()),
                read_only: Some(true),
                ..Mount::default()
            });
        }
        // Only where the operator chose it or the engine refused the file.
        KeyMount::Env => env.push(format!("{SECRET_KEY}={}", &*plan.key.to_base64())),
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
                typ: Some(crate::ops::deploy::LOG_DRIVER.to_owned()),
                config: Some(crate::ops::deploy::log_options()),
            }),
            ..HostConfig::default()
        })),
        ..ContainerCreateBody::default()
    }
}

pub(super) fn health(info: &ContainerInspectResponse) -> Option<HealthStatusEnum> {
    info.state.as_ref()?.health.as_ref()?.status
}

pub(super) fn running(info: &ContainerInspectResponse) -> bool {
    info.state.as_ref().and_then(|s| s.running).unwrap_or(false)
}

pub(super) async fn inspect(docker: &Docker, name: &str) -> Result<ContainerInspectResponse, resources::Error> {
    docker
        .inspect_container(name, None::<bollard::query_parameters::InspectContainerOptions>)
        .await
        .map_err(api(format!("inspecting the container {name}")))
}

pub(super) async fn stop(docker: &Docker, name: &str) -> Result<(), resources::Error> {
    let options = StopContainerOptionsBuilder::default().t(STOP_SECONDS).build();
    match docker.stop_container(name, Some(options)).await {
        // 304: already stopped.
        Ok(()) | Err(bollard::errors::Error::DockerResponseServerError { status_code: 304, .. }) => Ok(()),
        Err(e) => Err(api(format!("stopping {name}"))(e)),
    }
}

pub(super) async fn rename(docker: &Docker, from: &str, to: &str) -> Result<(), resources::Error> {
    docker
        .rename_container(from, RenameContainerOptions { name: to.to_owned() })
        .await
        .map_err(api(format!("renaming the container {from} to {to}")))
}

/// Starts a container and waits until the engine reports it healthy; the
/// error says why it did not, for a report.
pub(super) async fn start_and_wait(docker: &Docker, name: &str, timeout: Duration) -> Result<(), String> {
    let started = Instant::now();
    docker
        .start_container(name, None::<bollard::query_parameters::StartContainerOptions>)
        .await
        .map_err(|e| format!("the engine could not start it: {}", engine_message(&e)))?;
    eprintln!("waiting for {name} to pass its healthcheck (up to {})", humantime::format_duration(timeout));
    let deadline = started + timeout;
    loop {
        let info = inspect(docker, name).await.map_err(|e| chain(&e))?;
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

pub(super) fn short_id(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

/// The published port: `<host ip>:<host port> -> <port>/tcp` of the
/// container's first binding (a deployment publishes one).
pub(super) fn published(info: &ContainerInspectResponse) -> Option<String> {
    let ports = info.network_settings.as_ref()?.ports.as_ref()?;
    let (port, bindings) = ports.iter().find_map(|(p, b)| Some((p, b.as_ref()?.first()?)))?;
    let b = bindings;
    Some(format!("{}:{} -> {port}", b.host_ip.as_deref().unwrap_or(""), b.host_port.as_deref().unwrap_or("")))
}
