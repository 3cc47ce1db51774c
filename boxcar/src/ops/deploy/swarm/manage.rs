//! A Swarm deployment after the deploy: the service, its update state and
//! its tasks (`status`), and its removal with its key secrets (`undeploy`).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::models::{Task, TaskState};
use bollard::query_parameters::ListSecretsOptionsBuilder;

use super::cluster::node_names;
use super::tasks::{failed, image_of, published, serving, tasks};
use super::{managed_service, service_label};
use crate::ops::deploy::Error;
use crate::ops::resources::api;
use crate::vocab::labels::KEY_ID as LABEL_KEY_ID;
use crate::vocab::layout::SWARM_KEY_FILE;
use crate::vocab::plan::filters;

/// Prints the service, its update state and its tasks.
pub(crate) async fn status(docker: &Docker, name: &str) -> Result<(), Error> {
    let Some(service) = managed_service(docker, name).await? else {
        return Err(Error::NoService { name: name.to_owned() });
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
    let mut shown: Vec<&Task> =
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
pub(crate) async fn undeploy(docker: &Docker, name: &str) -> Result<usize, Error> {
    let mut removed = 0;
    if managed_service(docker, name).await?.is_some() {
        docker.delete_service(name).await.map_err(api(format!("removing the service {name}")))?;
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
    for secret in docker.list_secrets(Some(options)).await.map_err(api("listing Swarm secrets"))? {
        let Some(secret_name) = secret.spec.as_ref().and_then(|s| s.name.clone()) else { continue };
        docker.delete_secret(&secret_name).await.map_err(api(format!("removing the Swarm secret {secret_name}")))?;
        println!("removed    Swarm secret {secret_name}");
        removed += 1;
    }
    Ok(removed)
}
