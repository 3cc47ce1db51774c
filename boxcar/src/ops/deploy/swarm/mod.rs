//! Deploying to a Swarm cluster: the key as a Swarm secret (encrypted in the
//! managers' raft log, mounted into tasks as an in-memory file), the service as a
//! replicated service whose updates the engine health-checks and rolls back.
//!
//! Swarm secrets cannot change, so each key is its own secret,
//! `<name>-key-<key id>`; a rotation creates the new one, updates the service,
//! and removes the old one once the update has converged.
//!
//! Here: `deploy` in its steps and the checks on what is there already; the
//! cluster's checks in `cluster`, the service spec in `spec`, the key secret
//! in `secrets`, the rollout in `rollout`, the tasks in `tasks`, `status`
//! and `undeploy` in `manage`.

mod cluster;
mod manage;
mod rollout;
mod secrets;
mod spec;
mod tasks;

use std::time::Instant;

use bollard::Docker;
use bollard::auth::DockerCredentials;
use bollard::models::Service;

pub(crate) use cluster::{NodesAsk, check_cluster, is_manager};
pub(crate) use manage::{status, undeploy};

use self::rollout::{create, update};
use self::secrets::{delete_secret, ensure_secret, remove_unused_secrets, secret_in_use};
use self::spec::{pinned_image, service_spec, spec_hash, stop_first_if_port_held};
use self::tasks::{published, running_tasks};
use crate::adapters::engine::is_not_found;
use crate::ops::deploy::Error;
use crate::ops::resources::{self, api};
use crate::vocab::labels::{DEPLOYMENT as LABEL_DEPLOYMENT, SPEC as LABEL_SPEC};
use crate::vocab::layout::SWARM_KEY_FILE;
use crate::vocab::plan::Plan;

/// Whether this engine is a Swarm manager with a service `name`; an error
/// when the service is there and boxcar did not make it.
pub(crate) async fn service_here(docker: &Docker, name: &str) -> Result<bool, resources::Error> {
    Ok(is_manager(docker).await && managed_service(docker, name).await?.is_some())
}

/// The service `name`, if there is one and boxcar made it; an error if
/// there is one that boxcar did not make.
async fn managed_service(docker: &Docker, name: &str) -> Result<Option<Service>, resources::Error> {
    let service = match docker.inspect_service(name, None::<bollard::query_parameters::InspectServiceOptions>).await {
        Ok(s) => s,
        Err(e) if is_not_found(&e) => return Ok(None),
        Err(e) => return Err(api(format!("inspecting the service {name}"))(e)),
    };
    if service_label(&service, LABEL_DEPLOYMENT) != Some(name) {
        return Err(resources::Error::NotOurs { kind: "service", name: name.to_owned() });
    }
    Ok(Some(service))
}

fn service_label<'a>(service: &'a Service, key: &str) -> Option<&'a str> {
    service.spec.as_ref()?.labels.as_ref()?.get(key).map(String::as_str)
}

/// Deploys `plan` on a Swarm manager that `check_cluster` passed: nothing
/// when the service already runs as asked; else the key's secret, then the
/// service created or updated, and a secret left by a failed first use removed.
pub(crate) async fn deploy(
    docker: &Docker,
    plan: &Plan,
    image_id: &str,
    login: Option<DockerCredentials>,
) -> Result<(), Error> {
    let started = Instant::now();
    let name = &plan.name;
    let existing = managed_service(docker, name).await?;
    if resources::managed_container(docker, name, name).await?.is_some() {
        return Err(Error::StandaloneHere { name: name.clone(), env: plan.env.clone() });
    }
    let reference = reference(docker, plan, image_id).await?;
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
            "note: this engine's API ({}) cannot set {} on a service; the image has no \
             set-user-ID file and every capability is dropped",
            docker.client_version(),
            crate::vocab::plan::HARDENING.security_opt().join(", ")
        );
    }
    let spec = service_spec(plan, &reference, &spec_label, &secret_id, &secret_name, no_new_privileges);

    let result = match &existing {
        None => create(docker, plan, spec, login).await,
        Some(service) => update(docker, plan, service, stop_first_if_port_held(spec, service), &reference, login).await,
    };
    if let Err(e) = result {
        if secret_created && !secret_in_use(docker, &secret_name).await {
            delete_secret(docker, &secret_name).await;
        }
        return Err(e);
    }
    remove_unused_secrets(docker, name, &secret_name).await;
    report(docker, plan, &reference, &secret_name, started).await;
    Ok(())
}

/// The reference the tasks run (`pinned_image`), with what it means for the
/// nodes and the published port said.
async fn reference(docker: &Docker, plan: &Plan, image_id: &str) -> Result<String, Error> {
    let image = docker.inspect_image(image_id).await.map_err(api("inspecting the image"))?;
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
    Ok(reference)
}

/// What was deployed, as `deploy` prints it.
async fn report(docker: &Docker, plan: &Plan, reference: &str, secret_name: &str, started: Instant) {
    let name = &plan.name;
    println!("deployed   service {name}, {} task(s)", plan.replicas);
    println!("image      {} ({reference})", plan.image);
    println!("key        Swarm secret {secret_name}, a file at {SWARM_KEY_FILE}; not in the service spec");
    match &plan.service.data {
        Some(path) => println!("data       volume {} at {path} (on each node)", plan.data_volume()),
        None => println!("data       none (the service keeps no data)"),
    }
    println!("published  {}", published(docker, name).await.unwrap_or_else(|| "-".to_owned()));
    println!("healthy    after {:.1} s", started.elapsed().as_secs_f64());
}

/// Whether the negotiated API version is at least `major.minor`.
fn api_at_least(docker: &Docker, major: usize, minor: usize) -> bool {
    let v = docker.client_version();
    (v.major_version, v.minor_version) >= (major, minor)
}

/// The data volume on this node must be boxcar's, if it exists (Swarm makes
/// it, with boxcar's labels, on each node that runs a task).
async fn check_data_volume(docker: &Docker, plan: &Plan) -> Result<(), resources::Error> {
    let volume = plan.data_volume();
    match docker.inspect_volume(&volume).await {
        Ok(v) if v.labels.get(LABEL_DEPLOYMENT) != Some(&plan.name) => {
            Err(resources::Error::NotOurs { kind: "volume", name: volume })
        }
        Ok(_) => Ok(()),
        Err(e) if is_not_found(&e) => Ok(()),
        Err(e) => Err(api(format!("inspecting the volume {volume}"))(e)),
    }
}
