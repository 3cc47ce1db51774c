//! Deploying to a Swarm cluster: the key as a Swarm secret (encrypted in the
//! managers' raft log, mounted into tasks as an in-memory file), the service as a
//! replicated service whose updates the engine health-checks and rolls back.
//!
//! Swarm secrets cannot change, so each key is its own secret,
//! `<name>-key-<key id>`; a rotation creates the new one, updates the service,
//! and removes the old one once the update has converged.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use bollard::Docker;
use bollard::models::{
    EndpointPortConfig, EndpointPortConfigPublishModeEnum, EndpointSpec, HealthConfig, Limit, Mount, MountTmpfsOptions,
    MountType, MountVolumeOptions, SecretSpec, Service, ServiceSpec, ServiceSpecMode, ServiceSpecModeReplicated,
    ServiceSpecRollbackConfig, ServiceSpecRollbackConfigFailureActionEnum, ServiceSpecRollbackConfigOrderEnum,
    ServiceSpecUpdateConfig, ServiceSpecUpdateConfigFailureActionEnum, ServiceSpecUpdateConfigOrderEnum,
    ServiceUpdateStatusStateEnum, TaskSpec, TaskSpecContainerSpec, TaskSpecContainerSpecFile,
    TaskSpecContainerSpecPrivileges, TaskSpecContainerSpecSecrets, TaskSpecLogDriver, TaskSpecResources,
    TaskSpecRestartPolicy, TaskSpecRestartPolicyConditionEnum, TaskState,
};
use bollard::query_parameters::{ListSecretsOptionsBuilder, ListTasksOptionsBuilder, UpdateServiceOptions};

use crate::adapters::engine::is_not_found;
use crate::ops::resources;
use crate::vocab::labels::{
    DEPLOYMENT as LABEL_DEPLOYMENT, IMAGE_ID as LABEL_IMAGE_ID, KEY_ID as LABEL_KEY_ID, SPEC as LABEL_SPEC,
};
use crate::vocab::layout::{KEY_FILE_NAME, SWARM_KEY_FILE};
use crate::vocab::plan::{HARDENING, Plan, PublishMode, filters};

fn not_ours(kind: &'static str, name: &str) -> anyhow::Error {
    resources::Error::NotOurs { kind, name: name.to_owned() }.into()
}

/// Healthcheck of the service's tasks: Swarm counts a task as running only
/// once it passes, and replaces (or rolls back) one that turns unhealthy.
const HEALTH_INTERVAL: Duration = Duration::from_secs(5);
const HEALTH_START: Duration = Duration::from_secs(5);
/// How long a new task must stay up for an update step to count as good:
/// longer than the 15 s (interval × retries) it takes to notice a task that
/// turned unhealthy right after its first passing check.
const UPDATE_MONITOR: Duration = Duration::from_secs(30);
/// Failed tasks of a first deploy before boxcar gives up and removes it.
const FIRST_DEPLOY_FAILURES: usize = 3;

/// Whether the engine is a Swarm manager (it can take service commands).
pub(crate) async fn is_manager(docker: &Docker) -> bool {
    match docker.info().await {
        Ok(info) => info.swarm.and_then(|s| s.control_available).unwrap_or(false),
        Err(_) => false,
    }
}

/// Whether this engine is a Swarm manager with a service `name`; an error
/// when the service is there and boxcar did not make it.
pub(crate) async fn service_here(docker: &Docker, name: &str) -> anyhow::Result<bool> {
    Ok(is_manager(docker).await && managed_service(docker, name).await?.is_some())
}

async fn managed_service(docker: &Docker, name: &str) -> anyhow::Result<Option<Service>> {
    let service = match docker.inspect_service(name, None::<bollard::query_parameters::InspectServiceOptions>).await {
        Ok(s) => s,
        Err(e) if is_not_found(&e) => return Ok(None),
        Err(e) => return Err(anyhow::Error::new(e).context(format!("inspecting the service {name}"))),
    };
    if service_label(&service, LABEL_DEPLOYMENT) != Some(name) {
        return Err(not_ours("service", name));
    }
    Ok(Some(service))
}

fn service_label<'a>(service: &'a Service, key: &str) -> Option<&'a str> {
    service.spec.as_ref()?.labels.as_ref()?.get(key).map(String::as_str)
}

/// The reference tasks run: the one asked for when it is pinned by digest,
/// else the image's registry digest when it has one (any node can pull it),
/// else the image ID (only this engine has it). Never a tag: a rollback must
/// bring back exactly the previous image, and a tag may have moved to the
/// broken one.
fn pinned_image(requested: &str, image: &bollard::models::ImageInspect, id: &str) -> (String, bool) {
    if crate::ops::publish::is_pinned(requested) {
        return (requested.to_owned(), true);
    }
    // The digest of the repository asked for (`REPO:TAG` → `REPO@sha256:…`),
    // else the first: an image pulled under several names has one of each.
    let repository = requested.rsplit_once(':').filter(|(_, tag)| !tag.contains('/')).map_or(requested, |(r, _)| r);
    let digests = image.repo_digests.as_deref().unwrap_or_default();
    let same = digests.iter().find(|d| d.split_once('@').is_some_and(|(r, _)| r == repository));
    match same.or(digests.first()) {
        Some(digest) => (digest.clone(), true),
        None => (id.to_owned(), false),
    }
}

/// Before anything is pulled or changed: the engine must be a Swarm
/// manager, and the Swarm's nodes able to run what is asked (`check_nodes`).
pub(crate) async fn check_cluster(docker: &Docker, ask: &NodesAsk<'_>) -> anyhow::Result<()> {
    if !is_manager(docker).await {
        bail!(
            "--swarm: this engine is not a Swarm manager; nothing was changed\n\
             hint: `docker swarm init` makes it one, or deploy without --swarm to run a single container"
        );
    }
    let nodes = docker
        .list_nodes(None::<bollard::query_parameters::ListNodesOptions>)
        .await
        .context("listing the Swarm's nodes")?;
    check_nodes(ask, &nodes)
}

/// What a deploy asks of a Swarm's nodes.
#[derive(Debug)]
pub(crate) struct NodesAsk<'a> {
    pub(crate) image: &'a str,
    pub(crate) publish_mode: PublishMode,
    pub(crate) port: u16,
    pub(crate) replicas: u64,
}

/// Refuses what a Swarm of these nodes cannot run: an image not pinned by a
/// registry digest on more than one node, and more tasks on one host-mode
/// port than there are nodes to take them.
fn check_nodes(ask: &NodesAsk<'_>, nodes: &[bollard::models::Node]) -> anyhow::Result<()> {
    use bollard::models::{NodeSpecAvailabilityEnum, NodeState};
    if nodes.len() > 1 && !crate::ops::publish::is_pinned(ask.image) {
        bail!(
            "this Swarm has {} nodes, and each must run the same bytes: --image must be a registry reference \
             pinned by digest (REGISTRY/REPO@sha256:…), not {}; nothing was changed\n\
             hint: `cargo xtask image --push REGISTRY/REPO` pushes the image and prints that reference",
            nodes.len(),
            crate::vocab::show::escape(ask.image)
        );
    }
    if ask.publish_mode == PublishMode::Host && ask.port != 0 && ask.replicas > 1 {
        let ready = nodes
            .iter()
            .filter(|n| n.status.as_ref().and_then(|s| s.state) == Some(NodeState::READY))
            .filter(|n| n.spec.as_ref().and_then(|s| s.availability) == Some(NodeSpecAvailabilityEnum::ACTIVE))
            .count();
        if ask.replicas as usize > ready {
            bail!(
                "--publish-mode host with port {} runs at most one task per node, and {ready} node(s) are ready \
                 for --replicas {}; nothing was changed\n\
                 hint: --publish 0 gives each task a free port, --publish-mode ingress shares one port, \
                 or ask for at most {ready} replicas",
                ask.port,
                ask.replicas
            );
        }
    }
    Ok(())
}

/// Deploys `plan` on a Swarm manager that `check_cluster` passed.
pub async fn deploy(
    docker: &Docker,
    plan: &Plan,
    image_id: &str,
    login: Option<bollard::auth::DockerCredentials>,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let name = &plan.name;
    let existing = managed_service(docker, name).await?;
    if resources::managed_container(docker, name, name).await?.is_some() {
        bail!(
            "`{name}` runs as a standalone container on this engine; `cargo xtask undeploy --env {}` it first \
             (the data volume stays), or deploy under another name with --name",
            plan.env
        );
    }
    let image = docker.inspect_image(image_id).await.context("inspecting the image")?;
    let (reference, pullable) = pinned_image(&plan.image, &image, image_id);
    if !pullable {
        eprintln!(
            "note: {} is in this engine only (no registry digest): tasks on other nodes cannot start it; \
             push it to a registry the nodes can reach for a multi-node swarm",
            plan.image
        );
    }
    eprintln!(
        "note: Swarm publishes port {} on every address of the nodes; the dashboard has no login, so keep \
         that port behind a firewall or proxy",
        plan.publish.port
    );
    check_data_volume(docker, plan).await?;

    let no_new_privileges = api_at_least(docker, 1, 46);
    let secret_name = plan.key_resource();
    let spec_label = spec_hash(&service_spec(plan, &reference, "", "", &secret_name, no_new_privileges));
    if let Some(service) = &existing
        && service_label(service, LABEL_SPEC) == Some(spec_label.as_str())
        && running_tasks(docker, name).await? as i64 == plan.replicas as i64
    {
        println!("unchanged  service {name} already runs {} with these settings; nothing to do", plan.image);
        return status(docker, name).await;
    }

    let (secret_id, secret_name, secret_created) = ensure_secret(docker, plan).await?;
    eprintln!(
        "key: Swarm secret {secret_name}, mounted at {SWARM_KEY_FILE} (SECRET_KEY_FILE); not in the service spec"
    );
    if !no_new_privileges {
        eprintln!(
            "note: this engine's API ({}) cannot set no-new-privileges on a service; the image has no \
             set-user-ID file and every capability is dropped",
            docker.client_version()
        );
    }
    let spec = service_spec(plan, &reference, &spec_label, &secret_id, &secret_name, no_new_privileges);

    let result = match &existing {
        None => create(docker, plan, spec, login).await,
        Some(service) => update(docker, plan, service, stop_first_if_port_held(spec, service), &reference, login).await,
    };
    match result {
        Ok(()) => {
            remove_unused_secrets(docker, name, &secret_name).await;
            println!("deployed   service {name}, {} task(s)", plan.replicas);
            println!("image      {} ({reference})", plan.image);
            println!("key        Swarm secret {secret_name}, a file at {SWARM_KEY_FILE}; not in the service spec");
            match &plan.service.data {
                Some(path) => println!("data       volume {} at {path} (on each node)", plan.data_volume()),
                None => println!("data       none (the service keeps no data)"),
            }
            println!("published  {}", published(docker, name).await.unwrap_or_else(|| "-".to_owned()));
            println!("healthy    after {:.1} s", started.elapsed().as_secs_f64());
            Ok(())
        }
        Err(e) => {
            if secret_created && !secret_in_use(docker, &secret_name).await {
                delete_secret(docker, &secret_name).await;
            }
            Err(e)
        }
    }
}

/// Whether the negotiated API version is at least `major.minor`.
fn api_at_least(docker: &Docker, major: usize, minor: usize) -> bool {
    let v = docker.client_version();
    (v.major_version, v.minor_version) >= (major, minor)
}

/// What decides whether the service already runs what a deploy asks for:
/// the whole spec boxcar would send (image, settings, limits, hardening).
fn spec_hash(spec: &ServiceSpec) -> String {
    crate::vocab::plan::spec_hash(&serde_json::to_value(spec).unwrap_or_default())
}

/// The data volume on this node must be boxcar's, if it exists (Swarm makes
/// it, with boxcar's labels, on each node that runs a task).
async fn check_data_volume(docker: &Docker, plan: &Plan) -> anyhow::Result<()> {
    let volume = plan.data_volume();
    match docker.inspect_volume(&volume).await {
        Ok(v) if v.labels.get(LABEL_DEPLOYMENT) != Some(&plan.name) => Err(not_ours("volume", &volume)),
        Ok(_) => Ok(()),
        Err(e) if is_not_found(&e) => Ok(()),
        Err(e) => Err(anyhow::Error::new(e).context(format!("inspecting the volume {volume}"))),
    }
}

/// The data volume (one per node, shared by a node's old and new tasks), if
/// the service keeps data, and an in-memory /tmp.
fn mounts(plan: &Plan) -> Vec<Mount> {
    let mut mounts = Vec::new();
    if let Some(path) = &plan.service.data {
        mounts.push(Mount {
            typ: Some(MountType::VOLUME),
            source: Some(plan.data_volume()),
            target: Some(path.clone()),
            volume_options: Some(MountVolumeOptions { labels: Some(plan.labels("data")), ..Default::default() }),
            ..Mount::default()
        });
    }
    mounts.push(Mount {
        typ: Some(MountType::TMPFS),
        target: Some("/tmp".to_owned()),
        tmpfs_options: Some(MountTmpfsOptions {
            size_bytes: Some(16 * 1024 * 1024),
            mode: Some(0o1777),
            ..Default::default()
        }),
        ..Mount::default()
    });
    mounts
}

fn service_spec(
    plan: &Plan,
    reference: &str,
    spec_label: &str,
    secret_id: &str,
    secret_name: &str,
    no_new_privileges: bool,
) -> ServiceSpec {
    let nanos = |d: Duration| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX);
    let mut labels = plan.labels("app");
    labels.insert(LABEL_SPEC.to_owned(), spec_label.to_owned());
    labels.insert(LABEL_IMAGE_ID.to_owned(), reference.to_owned());
    // One instance at a time: the old task stops before the new one starts.
    // Several: the new task starts first, no gap, unless it would need the
    // port the old one holds on the node.
    let host_port_held = plan.publish_mode == PublishMode::Host && plan.publish.port != 0;
    let (order, rollback_order) = if plan.many && !host_port_held {
        (ServiceSpecUpdateConfigOrderEnum::START_FIRST, ServiceSpecRollbackConfigOrderEnum::START_FIRST)
    } else {
        (ServiceSpecUpdateConfigOrderEnum::STOP_FIRST, ServiceSpecRollbackConfigOrderEnum::STOP_FIRST)
    };
    let file_name = KEY_FILE_NAME;
    let container = TaskSpecContainerSpec {
        image: Some(reference.to_owned()),
        // The spec label on the task makes every change a rolling update.
        labels: Some(labels.clone()),
        env: Some(vec![
            format!("{}={}", boxcar_secrets::DEPLOY_ENV, plan.env),
            format!("SECRET_KEY_FILE={SWARM_KEY_FILE}"),
        ]),
        user: Some(format!("{0}:{0}", plan.service.user)),
        read_only: Some(HARDENING.read_only_root),
        capability_drop: Some(HARDENING.cap_drop()),
        privileges: (no_new_privileges && HARDENING.no_new_privileges)
            .then(|| TaskSpecContainerSpecPrivileges { no_new_privileges: Some(true), ..Default::default() }),
        mounts: Some(mounts(plan)),
        stop_grace_period: Some(nanos(Duration::from_secs(10))),
        health_check: Some(HealthConfig {
            // No test: the engine keeps the image's HEALTHCHECK command and
            // takes only the timing from here.
            test: None,
            interval: Some(nanos(HEALTH_INTERVAL)),
            timeout: Some(nanos(Duration::from_secs(3))),
            retries: Some(3),
            start_period: Some(nanos(HEALTH_START)),
            start_interval: None,
        }),
        secrets: Some(vec![TaskSpecContainerSpecSecrets {
            file: Some(TaskSpecContainerSpecFile {
                name: Some(file_name.to_owned()),
                uid: Some(plan.service.user.to_string()),
                gid: Some(plan.service.user.to_string()),
                mode: Some(0o400),
            }),
            secret_id: Some(secret_id.to_owned()),
            secret_name: Some(secret_name.to_owned()),
        }]),
        ..TaskSpecContainerSpec::default()
    };
    ServiceSpec {
        name: Some(plan.name.clone()),
        labels: Some(labels),
        task_template: Some(TaskSpec {
            container_spec: Some(container),
            resources: Some(TaskSpecResources {
                limits: Some(Limit { memory_bytes: Some(plan.memory_bytes), pids: Some(plan.pids()), nano_cpus: None }),
                ..TaskSpecResources::default()
            }),
            restart_policy: Some(TaskSpecRestartPolicy {
                condition: Some(TaskSpecRestartPolicyConditionEnum::ANY),
                delay: Some(nanos(Duration::from_secs(5))),
                max_attempts: None,
                window: None,
            }),
            log_driver: Some(TaskSpecLogDriver {
                name: Some("json-file".to_owned()),
                options: Some(HashMap::from([
                    ("max-size".to_owned(), "10m".to_owned()),
                    ("max-file".to_owned(), "3".to_owned()),
                ])),
            }),
            ..TaskSpec::default()
        }),
        mode: Some(ServiceSpecMode {
            replicated: Some(ServiceSpecModeReplicated { replicas: Some(plan.replicas as i64) }),
            ..ServiceSpecMode::default()
        }),
        update_config: Some(ServiceSpecUpdateConfig {
            parallelism: Some(1),
            delay: Some(0),
            failure_action: Some(ServiceSpecUpdateConfigFailureActionEnum::ROLLBACK),
            monitor: Some(nanos(UPDATE_MONITOR)),
            max_failure_ratio: Some(0.0),
            order: Some(order),
        }),
        rollback_config: Some(ServiceSpecRollbackConfig {
            parallelism: Some(1),
            delay: Some(0),
            failure_action: Some(ServiceSpecRollbackConfigFailureActionEnum::PAUSE),
            monitor: Some(nanos(UPDATE_MONITOR)),
            max_failure_ratio: Some(0.0),
            order: Some(rollback_order),
        }),
        endpoint_spec: Some(EndpointSpec {
            ports: Some(vec![EndpointPortConfig {
                target_port: Some(i64::from(plan.service.port)),
                published_port: (plan.publish.port != 0).then_some(i64::from(plan.publish.port)),
                protocol: Some(bollard::models::EndpointPortConfigProtocolEnum::TCP),
                publish_mode: Some(match plan.publish_mode {
                    PublishMode::Ingress => EndpointPortConfigPublishModeEnum::INGRESS,
                    PublishMode::Host => EndpointPortConfigPublishModeEnum::HOST,
                }),
                name: None,
            }]),
            ..EndpointSpec::default()
        }),
        ..ServiceSpec::default()
    }
}

/// The secret for the plan's key: reused when boxcar made it before, created
/// otherwise. Returns its ID, name, and whether it was created now.
async fn ensure_secret(docker: &Docker, plan: &Plan) -> anyhow::Result<(String, String, bool)> {
    let name = plan.key_resource();
    if let Some(secret) = find_secret(docker, &name).await? {
        let labels = secret.spec.as_ref().and_then(|s| s.labels.clone()).unwrap_or_default();
        if labels.get(LABEL_DEPLOYMENT) != Some(&plan.name) {
            return Err(not_ours("Swarm secret", &name));
        }
        return Ok((secret.id.unwrap_or_default(), name, false));
    }
    let created =
        docker.create_secret(secret_spec(plan)).await.with_context(|| format!("creating the Swarm secret {name}"))?;
    Ok((created.id, name, true))
}

/// The Swarm secret of the plan's key: the key file's bytes, base64 as the
/// API takes them, named and labelled for the deployment.
fn secret_spec(plan: &Plan) -> SecretSpec {
    let mut data = zeroize::Zeroizing::new(base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        &plan.key_file_bytes()[..],
    ));
    SecretSpec {
        name: Some(plan.key_resource()),
        labels: Some(plan.labels("key")),
        // Moved out of the wiping wrapper into the request, which cannot wipe it.
        data: Some(std::mem::take(&mut *data)),
        ..SecretSpec::default()
    }
}

async fn find_secret(docker: &Docker, name: &str) -> anyhow::Result<Option<bollard::models::Secret>> {
    let filters: HashMap<String, Vec<String>> = [("name".to_owned(), vec![name.to_owned()])].into();
    let options = ListSecretsOptionsBuilder::default().filters(&filters).build();
    let secrets = docker.list_secrets(Some(options)).await.context("listing Swarm secrets")?;
    // The name filter matches prefixes too.
    Ok(secrets.into_iter().find(|s| s.spec.as_ref().and_then(|s| s.name.as_deref()) == Some(name)))
}

async fn secret_in_use(docker: &Docker, secret_name: &str) -> bool {
    let services = docker.list_services(None::<bollard::query_parameters::ListServicesOptions>).await;
    services.unwrap_or_default().iter().any(|s| {
        let secrets = s.spec.as_ref().and_then(|s| s.task_template.as_ref()).and_then(|t| t.container_spec.as_ref());
        secrets
            .and_then(|c| c.secrets.as_ref())
            .is_some_and(|list| list.iter().any(|r| r.secret_name.as_deref() == Some(secret_name)))
    })
}

async fn delete_secret(docker: &Docker, name: &str) {
    match docker.delete_secret(name).await {
        Ok(()) => eprintln!("removed the Swarm secret {name}"),
        Err(e) => eprintln!("warning: could not remove the Swarm secret {name}: {e}"),
    }
}

/// Removes this deployment's key secrets other than `keep` that no service uses.
async fn remove_unused_secrets(docker: &Docker, name: &str, keep: &str) {
    let options = ListSecretsOptionsBuilder::default().filters(&filters(name)).build();
    for secret in docker.list_secrets(Some(options)).await.unwrap_or_default() {
        let Some(secret_name) = secret.spec.as_ref().and_then(|s| s.name.clone()) else { continue };
        if secret_name != keep && !secret_in_use(docker, &secret_name).await {
            delete_secret(docker, &secret_name).await;
        }
    }
}

async fn create(
    docker: &Docker,
    plan: &Plan,
    spec: ServiceSpec,
    login: Option<bollard::auth::DockerCredentials>,
) -> anyhow::Result<()> {
    let name = &plan.name;
    docker.create_service(spec, login).await.with_context(|| format!("creating the service {name}"))?;
    eprintln!("waiting for {} task(s) of {name} to pass their healthcheck", plan.replicas);
    let deadline = Instant::now() + plan.timeout;
    loop {
        let tasks = tasks(docker, name).await?;
        let running = tasks.iter().filter(|t| serving(t)).count();
        let failed: Vec<&bollard::models::Task> = tasks.iter().filter(|t| failed(t)).collect();
        if running as u64 >= plan.replicas {
            return Ok(());
        }
        let why = if failed.len() >= FIRST_DEPLOY_FAILURES {
            Some(format!("{} task(s) failed", failed.len()))
        } else if Instant::now() > deadline {
            Some(format!("not every task was healthy after {}", humantime::format_duration(plan.timeout)))
        } else {
            None
        };
        if let Some(why) = why {
            let report = task_report(docker, &failed).await;
            remove_service(docker, name).await;
            bail!("the service {name} did not start: {why}; it was removed\n{report}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// An update away from a fixed host-mode port stops each old task first,
/// as one to it does: a new task started beside an old one that holds the
/// port on its node waits forever ("host-mode port already in use"), on
/// Docker 20.10 even when the new spec asks for another port.
fn stop_first_if_port_held(mut spec: ServiceSpec, running: &Service) -> ServiceSpec {
    let ports = running.spec.as_ref().and_then(|s| s.endpoint_spec.as_ref()).and_then(|e| e.ports.as_ref());
    let held = ports.is_some_and(|ports| {
        ports.iter().any(|p| {
            p.publish_mode == Some(EndpointPortConfigPublishModeEnum::HOST) && p.published_port.is_some_and(|n| n != 0)
        })
    });
    if held && let Some(update) = spec.update_config.as_mut() {
        update.order = Some(ServiceSpecUpdateConfigOrderEnum::STOP_FIRST);
    }
    spec
}

async fn update(
    docker: &Docker,
    plan: &Plan,
    service: &Service,
    spec: ServiceSpec,
    new_image: &str,
    login: Option<bollard::auth::DockerCredentials>,
) -> anyhow::Result<()> {
    let name = &plan.name;
    let version = service.version.as_ref().and_then(|v| v.index).context("the service has no version")?;
    let before = service.update_status.as_ref().map(|s| format!("{:?}", s.started_at));
    let options = UpdateServiceOptions {
        version: i32::try_from(version).context("service version out of range")?,
        ..UpdateServiceOptions::default()
    };
    let started = Instant::now();
    docker.update_service(name, spec, options, login).await.with_context(|| format!("updating the service {name}"))?;
    eprintln!("waiting for the update of {name} to converge (one task at a time, rolled back on failure)");
    let deadline = started + plan.timeout;
    let mut last_state = None;
    // Why the engine rolled back, as it said when it started to.
    let mut reason = None;
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = docker
            .inspect_service(name, None::<bollard::query_parameters::InspectServiceOptions>)
            .await
            .with_context(|| format!("inspecting the service {name}"))?;
        let status = now.update_status.clone().unwrap_or_default();
        let fresh = status.started_at.is_some() && Some(format!("{:?}", status.started_at)) != before;
        if fresh && status.state != last_state {
            if let Some(s) = status.state {
                eprintln!("update: {s} ({:.1} s)", started.elapsed().as_secs_f64());
            }
            last_state = status.state;
        }
        let message = status.message.clone().unwrap_or_default();
        if fresh && reason.is_none() && status.state == Some(ServiceUpdateStatusStateEnum::ROLLBACK_STARTED) {
            reason = Some(message.clone());
        }
        match status.state.filter(|_| fresh) {
            Some(ServiceUpdateStatusStateEnum::COMPLETED) => return Ok(()),
            Some(
                ServiceUpdateStatusStateEnum::ROLLBACK_COMPLETED
                | ServiceUpdateStatusStateEnum::ROLLBACK_PAUSED
                | ServiceUpdateStatusStateEnum::PAUSED,
            ) => {
                if status.state == Some(ServiceUpdateStatusStateEnum::ROLLBACK_COMPLETED) {
                    settle(docker, name, plan.replicas).await?;
                }
                let tasks = tasks(docker, name).await?;
                // The new version's tasks the engine stopped: failed, or
                // shut down by the rollback while still starting.
                let failed: Vec<&bollard::models::Task> = tasks
                    .iter()
                    .filter(|t| task_image(t).as_deref() == Some(new_image))
                    .filter(|t| failed(t) || t.desired_state != Some(TaskState::RUNNING))
                    .collect();
                let report = task_report(docker, &failed).await;
                let message = match &reason {
                    Some(why) if !why.is_empty() => {
                        format!("{} ({})", crate::vocab::show::escape(&message), crate::vocab::show::escape(why))
                    }
                    _ => crate::vocab::show::escape(&message).into_owned(),
                };
                let outcome = match status.state {
                    Some(ServiceUpdateStatusStateEnum::ROLLBACK_COMPLETED) => {
                        "the engine rolled it back: the previous version runs"
                    }
                    _ => "the update is paused; `cargo xtask status` shows the tasks",
                };
                bail!(
                    "the update of {name} failed after {:.1} s: {message}; {outcome}\n{report}",
                    started.elapsed().as_secs_f64()
                );
            }
            _ => {}
        }
        if Instant::now() > deadline {
            bail!(
                "the update of {name} did not converge within {} (state: {}); `cargo xtask status` shows it",
                humantime::format_duration(plan.timeout),
                status.state.map(|s| s.to_string()).unwrap_or_else(|| "not started".to_owned())
            );
        }
    }
}

/// After the engine says a rollback completed, its last replaced task may
/// still be stopping beside its successor: waits (up to 30 s) until exactly
/// `replicas` tasks serve, so that "the previous version runs" is what
/// `status` shows when `deploy` returns.
async fn settle(docker: &Docker, name: &str, replicas: u64) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let serving = tasks(docker, name).await?.iter().filter(|t| serving(t)).count() as u64;
        if serving == replicas || Instant::now() > deadline {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The image a service's spec runs.
fn image_of(service: &Service) -> Option<String> {
    service.spec.as_ref()?.task_template.as_ref()?.container_spec.as_ref()?.image.clone()
}

fn task_image(task: &bollard::models::Task) -> Option<String> {
    task.spec.as_ref()?.container_spec.as_ref()?.image.clone()
}

fn state(task: &bollard::models::Task) -> Option<TaskState> {
    task.status.as_ref()?.state
}

/// A task that should run and does (Swarm counts it as running once healthy).
fn serving(task: &bollard::models::Task) -> bool {
    task.desired_state == Some(TaskState::RUNNING) && state(task) == Some(TaskState::RUNNING)
}

fn failed(task: &bollard::models::Task) -> bool {
    matches!(state(task), Some(TaskState::FAILED | TaskState::REJECTED))
}

/// Tasks that should run and do (Swarm counts a task as running once healthy).
async fn running_tasks(docker: &Docker, service: &str) -> anyhow::Result<usize> {
    let tasks = tasks(docker, service).await?;
    Ok(tasks.iter().filter(|t| serving(t)).count())
}

async fn tasks(docker: &Docker, service: &str) -> anyhow::Result<Vec<bollard::models::Task>> {
    let filters: HashMap<String, Vec<String>> = [("service".to_owned(), vec![service.to_owned()])].into();
    let options = ListTasksOptionsBuilder::default().filters(&filters).build();
    docker.list_tasks(Some(options)).await.with_context(|| format!("listing the tasks of {service}"))
}

/// Why tasks failed and on which node, with the last log lines of the
/// latest one (read through the manager, wherever the task ran).
async fn task_report(docker: &Docker, failed: &[&bollard::models::Task]) -> String {
    let nodes = node_names(docker).await;
    let host_of = |id: Option<&str>| id.and_then(|id| nodes.get(id)).cloned().unwrap_or_else(|| "?".to_owned());
    let mut out = String::new();
    let mut latest: Option<&bollard::models::Task> = None;
    let mut pull_failed = BTreeSet::new();
    let mut stopped_early = false;
    for t in failed {
        let status = t.status.clone().unwrap_or_default();
        let why = status.err.or(status.message).unwrap_or_default();
        if why.contains("No such image") || why.contains("pull") {
            pull_failed.insert(host_of(t.node_id.as_deref()));
        }
        stopped_early |= matches!(status.state, Some(TaskState::COMPLETE | TaskState::SHUTDOWN));
        out.push_str(&format!(
            "task {} on node {}: {}: {}\n",
            t.id.as_deref().map(|i| i.get(..12).unwrap_or(i)).unwrap_or("?"),
            crate::vocab::show::escape(&host_of(t.node_id.as_deref())),
            status.state.map(|s| s.to_string()).unwrap_or_else(|| "?".to_owned()),
            crate::vocab::show::escape(&why)
        ));
        if latest.is_none_or(|l| format!("{:?}", l.updated_at) < format!("{:?}", t.updated_at)) {
            latest = Some(t);
        }
    }
    if !pull_failed.is_empty() {
        let image = failed.iter().find_map(|t| task_image(t)).unwrap_or_default();
        let registry =
            crate::vocab::show::escape(&crate::ops::publish::registry_of(&image).unwrap_or_default()).into_owned();
        let nodes: Vec<String> = pull_failed.iter().map(|n| crate::vocab::show::escape(n).into_owned()).collect();
        out.push_str(&format!(
            "node(s) {} could not pull the image from {registry}: each node must reach {registry} \
             (network, firewall), trust its CA ({}/{registry}/ca.crt on the node), and be let in with the \
             login `deploy` hands over (Docker's config.json where `deploy` runs)\n",
            nodes.join(", "),
            crate::ops::publish::DOCKER_CERTS_DIR
        ));
    }
    if stopped_early {
        out.push_str(
            "a task that exits or fails its health check before the update's monitor period ends counts as \
             failed: check the image's health check against what the new version serves\n",
        );
    }
    // A task the node rejected never ran: it has no log.
    if let Some(task) = latest.filter(|t| state(t) != Some(TaskState::REJECTED))
        && let Some(id) = task.id.as_deref()
    {
        out.push_str("last log lines of the failed task:\n");
        out.push_str(&task_log_lines(docker, id, 30).await);
    }
    out
}

/// Node ID → host name, of the Swarm's nodes (empty if the manager does not say).
async fn node_names(docker: &Docker) -> HashMap<String, String> {
    let nodes = docker.list_nodes(None::<bollard::query_parameters::ListNodesOptions>).await.unwrap_or_default();
    nodes.into_iter().filter_map(|n| Some((n.id?, n.description?.hostname?))).collect()
}

/// The last lines of a task's log, from whichever node ran it.
async fn task_log_lines(docker: &Docker, task: &str, n: usize) -> String {
    resources::read_log(docker.task_logs(task, Some(resources::tail_options(n)))).await
}

async fn remove_service(docker: &Docker, name: &str) {
    if let Err(e) = docker.delete_service(name).await {
        eprintln!("warning: could not remove the service {name}: {e}");
    }
}

/// Where the service is reachable: the ingress port, or each running task's
/// port on its node.
async fn published(docker: &Docker, name: &str) -> Option<String> {
    let service = docker.inspect_service(name, None::<bollard::query_parameters::InspectServiceOptions>).await.ok()?;
    let ports = service.endpoint?.ports?;
    let p = ports.first()?;
    if p.publish_mode != Some(EndpointPortConfigPublishModeEnum::HOST) {
        return Some(format!("*:{} -> {} (ingress: every node)", p.published_port?, p.target_port?));
    }
    let tasks = tasks(docker, name).await.ok()?;
    let mut host_ports: Vec<String> = tasks
        .iter()
        .filter(|t| serving(t))
        .filter_map(|t| {
            let port = t.status.as_ref()?.port_status.as_ref()?.ports.as_ref()?.first()?.published_port?;
            Some(format!("*:{port} -> {} (host mode, slot {})", p.target_port.unwrap_or(0), t.slot.unwrap_or(0)))
        })
        .collect();
    host_ports.sort();
    (!host_ports.is_empty()).then(|| host_ports.join(", "))
}

/// Prints the service, its update state and its tasks.
pub(crate) async fn status(docker: &Docker, name: &str) -> anyhow::Result<()> {
    let Some(service) = managed_service(docker, name).await? else {
        bail!("no service `{name}`");
    };
    let spec = service.spec.clone().unwrap_or_default();
    let replicas = spec.mode.and_then(|m| m.replicated).and_then(|r| r.replicas).unwrap_or(0);
    let tasks = tasks(docker, name).await?;
    let running = tasks.iter().filter(|t| serving(t)).count();
    println!("service    {name}, Swarm");
    println!("tasks      {running}/{replicas} running and healthy");
    if let Some(u) = &service.update_status {
        println!(
            "update     {}{}",
            u.state.map(|s| s.to_string()).unwrap_or_default(),
            u.message.as_deref().map(|m| format!(": {}", crate::vocab::show::escape(m))).unwrap_or_default()
        );
    }
    println!("image      {}", image_of(&service).unwrap_or_default());
    println!(
        "key        id {}, Swarm secret {}-key-{0} at {SWARM_KEY_FILE}",
        service_label(&service, LABEL_KEY_ID).unwrap_or("?"),
        name
    );
    println!("published  {}", published(docker, name).await.unwrap_or_else(|| "-".to_owned()));
    let mut shown: Vec<&bollard::models::Task> =
        tasks.iter().filter(|t| t.desired_state == Some(TaskState::RUNNING) || failed(t)).collect();
    shown.sort_by_key(|t| std::cmp::Reverse(format!("{:?}", t.updated_at)));
    let nodes = node_names(docker).await;
    for t in shown.iter().take(8) {
        let status = t.status.clone().unwrap_or_default();
        let host = t.node_id.as_ref().and_then(|id| nodes.get(id));
        println!(
            "task       {} {} {}{}{}",
            t.id.as_deref().map(|i| i.get(..12).unwrap_or(i)).unwrap_or("?"),
            t.slot.map(|s| format!("slot {s}")).unwrap_or_default(),
            status.state.map(|s| s.to_string()).unwrap_or_default(),
            host.map(|h| format!(" on {}", crate::vocab::show::escape(h))).unwrap_or_default(),
            status.err.map(|e| format!(": {}", crate::vocab::show::escape(&e))).unwrap_or_default()
        );
    }
    Ok(())
}

/// Removes the service and its key secrets; returns how many things it removed.
/// Waits for the tasks' containers to go, so the data volume can be removed.
pub(crate) async fn undeploy(docker: &Docker, name: &str) -> anyhow::Result<usize> {
    let mut removed = 0;
    if managed_service(docker, name).await?.is_some() {
        docker.delete_service(name).await.with_context(|| format!("removing the service {name}"))?;
        println!("removed    service {name}");
        removed += 1;
        let deadline = Instant::now() + Duration::from_secs(30);
        let filters: HashMap<String, Vec<String>> =
            [("label".to_owned(), vec![format!("com.docker.swarm.service.name={name}")])].into();
        loop {
            let options =
                bollard::query_parameters::ListContainersOptionsBuilder::default().all(true).filters(&filters).build();
            let left = docker.list_containers(Some(options)).await.map(|c| c.len()).unwrap_or(0);
            if left == 0 {
                break;
            }
            if Instant::now() > deadline {
                eprintln!(
                    "warning: {left} task container(s) of {name} are still stopping; the data volume stays in use until they go"
                );
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    let options = ListSecretsOptionsBuilder::default().filters(&filters(name)).build();
    for secret in docker.list_secrets(Some(options)).await.context("listing Swarm secrets")? {
        let Some(secret_name) = secret.spec.as_ref().and_then(|s| s.name.clone()) else { continue };
        docker.delete_secret(&secret_name).await.with_context(|| format!("removing the Swarm secret {secret_name}"))?;
        println!("removed    Swarm secret {secret_name}");
        removed += 1;
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vocab::plan::{Deployment, KeyDelivery, Publish, Request};

    fn plan(many: bool) -> Plan {
        let key = boxcar_secrets::SecretKey::generate();
        let request = Request {
            env: "production".into(),
            name: None,
            replicas: 1,
            many,
            memory_mib: None,
            publish: Publish { address: None, port: 9000 },
            publish_mode: PublishMode::Ingress,
        };
        let deployment = Deployment::new(&crate::vocab::contract::tests::service(), request, key.key_id()).unwrap();
        Plan {
            deployment,
            key: std::sync::Arc::new(key),
            image: "svc:latest".into(),
            key_delivery: KeyDelivery::Auto,
            timeout: Duration::from_secs(60),
            network: None,
        }
    }

    fn node(ready: bool, active: bool) -> bollard::models::Node {
        use bollard::models::{NodeSpec, NodeSpecAvailabilityEnum, NodeState, NodeStatus};
        bollard::models::Node {
            status: Some(NodeStatus {
                state: Some(if ready { NodeState::READY } else { NodeState::DOWN }),
                ..Default::default()
            }),
            spec: Some(NodeSpec {
                availability: Some(if active {
                    NodeSpecAvailabilityEnum::ACTIVE
                } else {
                    NodeSpecAvailabilityEnum::DRAIN
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn ask(replicas: u64, port: u16, image: &str) -> NodesAsk<'_> {
        NodesAsk { image, publish_mode: PublishMode::Host, port, replicas }
    }

    #[test]
    fn several_nodes_need_a_pinned_image_and_a_node_per_host_port() {
        let pinned = format!("reg.io:5000/svc@sha256:{}", "a".repeat(64));
        let three = [node(true, true), node(true, true), node(true, true)];
        check_nodes(&ask(3, 9000, &pinned), &three).unwrap();
        check_nodes(&ask(1, 9000, "svc:latest"), &three[..1]).unwrap();
        // One task needs no node of its own for its port.
        check_nodes(&ask(1, 9000, "svc:latest"), &[node(false, true)]).unwrap();
        let hub = format!("svc@sha256:{}", "a".repeat(64));
        for unpinned in ["svc:latest", "reg.io:5000/svc:v1", "sha256:abc", hub.as_str()] {
            let err = check_nodes(&ask(1, 9000, unpinned), &three[..2]).unwrap_err().to_string();
            assert!(err.contains("has 2 nodes") && err.contains("image --push"), "{err}");
        }
        // A node down or drained takes no task on the port.
        for nodes in [
            vec![node(true, true), node(true, true), node(false, true)],
            vec![node(true, true), node(true, true), node(true, false)],
        ] {
            let err = check_nodes(&ask(3, 9000, &pinned), &nodes).unwrap_err().to_string();
            assert!(err.contains("2 node(s) are ready for --replicas 3"), "{err}");
            check_nodes(&ask(2, 9000, &pinned), &nodes).unwrap();
            check_nodes(&ask(3, 0, &pinned), &nodes).unwrap();
            check_nodes(&NodesAsk { publish_mode: PublishMode::Ingress, ..ask(3, 9000, &pinned) }, &nodes).unwrap();
        }
    }

    #[test]
    fn leaving_a_fixed_host_port_stops_first() {
        let p = plan(true);
        let new = service_spec(&p, "i", "h", "sid", "n", false);
        assert_eq!(new.update_config.as_ref().unwrap().order, Some(ServiceSpecUpdateConfigOrderEnum::START_FIRST));
        let running = |mode, port| Service {
            spec: Some(ServiceSpec {
                endpoint_spec: Some(EndpointSpec {
                    ports: Some(vec![EndpointPortConfig {
                        publish_mode: Some(mode),
                        published_port: port,
                        ..Default::default()
                    }]),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let order = |s: ServiceSpec| s.update_config.unwrap().order;
        let host = EndpointPortConfigPublishModeEnum::HOST;
        let ingress = EndpointPortConfigPublishModeEnum::INGRESS;
        assert_eq!(
            order(stop_first_if_port_held(new.clone(), &running(host, Some(9000)))),
            Some(ServiceSpecUpdateConfigOrderEnum::STOP_FIRST)
        );
        for (mode, port) in [(host, Some(0)), (host, None), (ingress, Some(9000))] {
            assert_eq!(
                order(stop_first_if_port_held(new.clone(), &running(mode, port))),
                Some(ServiceSpecUpdateConfigOrderEnum::START_FIRST),
                "{mode:?} {port:?}"
            );
        }
        assert_eq!(order(stop_first_if_port_held(new.clone(), &Service::default())), order(new));
    }

    #[test]
    fn the_pinned_reference_wins() {
        let pinned = format!("reg.io/svc@sha256:{}", "b".repeat(64));
        let digest = format!("reg.io/svc@sha256:{}", "c".repeat(64));
        let with = bollard::models::ImageInspect { repo_digests: Some(vec![digest.clone()]), ..Default::default() };
        let without = bollard::models::ImageInspect::default();
        assert_eq!(pinned_image(&pinned, &with, "sha256:id"), (pinned.clone(), true));
        assert_eq!(pinned_image("reg.io/svc:v1", &with, "sha256:id"), (digest.clone(), true));
        // Pulled under two names: the digest of the one asked for.
        let other = format!("other.io:5000/team/svc@sha256:{}", "d".repeat(64));
        let both = bollard::models::ImageInspect {
            repo_digests: Some(vec![digest.clone(), other.clone()]),
            ..Default::default()
        };
        assert_eq!(pinned_image("other.io:5000/team/svc:v1", &both, "sha256:id"), (other, true));
        assert_eq!(
            pinned_image("other.io:5000/team/svc", &both, "sha256:id").0,
            format!("other.io:5000/team/svc@sha256:{}", "d".repeat(64))
        );
        assert_eq!(pinned_image("svc:latest", &both, "sha256:id"), (digest, true));
        assert_eq!(pinned_image("svc:latest", &without, "sha256:id"), ("sha256:id".to_owned(), false));
    }

    #[test]
    fn one_instance_stops_first_and_many_start_first() {
        let spec = service_spec(&plan(false), "sha256:1", "h", "sid", "svc-production-key-x", false);
        let update = spec.update_config.unwrap();
        assert_eq!(update.order, Some(ServiceSpecUpdateConfigOrderEnum::STOP_FIRST));
        assert_eq!(update.failure_action, Some(ServiceSpecUpdateConfigFailureActionEnum::ROLLBACK));
        let spec = service_spec(&plan(true), "sha256:1", "h", "sid", "svc-production-key-x", false);
        assert_eq!(spec.update_config.unwrap().order, Some(ServiceSpecUpdateConfigOrderEnum::START_FIRST));
        // Several on a fixed host port: the old task holds the port, so it stops first.
        for (port, order) in
            [(9000, ServiceSpecUpdateConfigOrderEnum::STOP_FIRST), (0, ServiceSpecUpdateConfigOrderEnum::START_FIRST)]
        {
            let mut p = plan(true);
            let request = Request {
                env: "production".into(),
                name: None,
                replicas: 3,
                many: true,
                memory_mib: None,
                publish: Publish { address: None, port },
                publish_mode: PublishMode::Host,
            };
            p.deployment = Deployment::new(&crate::vocab::contract::tests::service(), request, p.key.key_id()).unwrap();
            let spec = service_spec(&p, "sha256:1", "h", "sid", "svc-production-key-x", false);
            assert_eq!(spec.update_config.unwrap().order, Some(order), "port {port}");
        }
    }

    #[test]
    fn the_spec_holds_the_secret_by_reference_only() {
        let p = plan(false);
        let spec = service_spec(&p, "sha256:1", "h", "sid", "svc-production-key-x", true);
        let json = serde_json::to_string(&spec).unwrap();
        assert!(!json.contains(p.key.to_base64().as_str()));
        let c = spec.task_template.unwrap().container_spec.unwrap();
        assert_eq!(c.user.as_deref(), Some("1000:1000"));
        assert_eq!(c.read_only, Some(true));
        assert_eq!(c.capability_drop.unwrap(), ["ALL"]);
        assert!(c.env.unwrap().contains(&format!("SECRET_KEY_FILE={SWARM_KEY_FILE}")));
        let secret = &c.secrets.unwrap()[0];
        assert_eq!(secret.file.as_ref().unwrap().mode, Some(0o400));
        assert_eq!(secret.file.as_ref().unwrap().uid.as_deref(), Some("1000"));
        assert_eq!(secret.file.as_ref().unwrap().name.as_deref(), Some("boxcar-key"));
        let mounts = c.mounts.unwrap();
        assert_eq!(mounts[0].target.as_deref(), Some("/var/lib/svc"));
        assert_eq!(mounts[0].source.as_deref(), Some("svc-production-data"));
    }

    #[test]
    fn the_spec_is_the_whole_deployment() {
        let p = plan(true);
        let spec = service_spec(&p, "reg.io/svc@sha256:1", "hash", "sid", "svc-production-key-x", true);
        assert_eq!(spec.name.as_deref(), Some("svc-production"));
        let labels = spec.labels.clone().unwrap();
        assert_eq!(labels[LABEL_DEPLOYMENT], "svc-production");
        assert_eq!((labels[LABEL_SPEC].as_str(), labels[LABEL_IMAGE_ID].as_str()), ("hash", "reg.io/svc@sha256:1"));
        let task = spec.task_template.clone().unwrap();
        let c = task.container_spec.clone().unwrap();
        assert_eq!(c.image.as_deref(), Some("reg.io/svc@sha256:1"));
        assert_eq!(c.labels.as_ref(), Some(&labels), "the task carries the spec label: every change rolls");
        assert_eq!(c.privileges.and_then(|p| p.no_new_privileges), Some(true));
        assert_eq!(c.stop_grace_period, Some(10_000_000_000));
        let health = c.health_check.unwrap();
        assert_eq!(health.test, None, "the image's own HEALTHCHECK command");
        assert_eq!(
            (health.interval, health.retries, health.start_period),
            (Some(5_000_000_000), Some(3), Some(5_000_000_000))
        );
        let mounts = c.mounts.unwrap();
        assert_eq!(mounts[0].typ, Some(MountType::VOLUME));
        assert_eq!(mounts[0].volume_options.as_ref().and_then(|o| o.labels.as_ref()), Some(&p.labels("data")));
        assert_eq!((mounts[1].typ, mounts[1].target.as_deref()), (Some(MountType::TMPFS), Some("/tmp")));
        let tmpfs = mounts[1].tmpfs_options.clone().unwrap();
        assert_eq!((tmpfs.size_bytes, tmpfs.mode), (Some(16 * 1024 * 1024), Some(0o1777)));
        let limits = task.resources.unwrap().limits.unwrap();
        assert_eq!((limits.memory_bytes, limits.pids), (Some(p.memory_bytes), Some(p.pids())));
        assert_eq!(task.restart_policy.unwrap().condition, Some(TaskSpecRestartPolicyConditionEnum::ANY));
        let log = task.log_driver.unwrap();
        assert_eq!((log.name.as_deref(), log.options.unwrap()["max-size"].as_str()), (Some("json-file"), "10m"));
        assert_eq!(spec.mode.unwrap().replicated.unwrap().replicas, Some(p.replicas as i64));
        let rollback = spec.rollback_config.unwrap();
        assert_eq!(rollback.order, Some(ServiceSpecRollbackConfigOrderEnum::START_FIRST));
        assert_eq!(rollback.failure_action, Some(ServiceSpecRollbackConfigFailureActionEnum::PAUSE));
        let port = &spec.endpoint_spec.unwrap().ports.unwrap()[0];
        assert_eq!((port.target_port, port.published_port), (Some(9000), Some(9000)));
        assert_eq!(port.publish_mode, Some(EndpointPortConfigPublishModeEnum::INGRESS));
        // No new privileges only where the engine's API can say so.
        let old_api = service_spec(&p, "i", "h", "sid", "n", false);
        assert!(old_api.task_template.unwrap().container_spec.unwrap().privileges.is_none());
    }

    #[test]
    fn the_secret_holds_the_key_file() {
        let p = plan(false);
        let spec = secret_spec(&p);
        assert_eq!(spec.name, Some(p.key_resource()));
        assert_eq!(spec.labels, Some(p.labels("key")));
        let data = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, spec.data.unwrap()).unwrap();
        assert_eq!(data, p.key_file_bytes()[..]);
        assert!(!format!("{:?}", SecretSpec { data: None, ..secret_spec(&p) }).contains(p.key.to_base64().as_str()));
    }
}
