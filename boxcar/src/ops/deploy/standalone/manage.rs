//! A standalone deployment after the deploy: its container's state
//! (`status`) and its removal with its key volumes, and with `purge` its
//! data (`undeploy`).

use bollard::Docker;
use bollard::query_parameters::{
    ListContainersOptionsBuilder, RemoveContainerOptionsBuilder, RemoveVolumeOptionsBuilder,
};
use boxcar_secrets::{SECRET_KEY, SECRET_KEY_FILE};

use super::container::{published, short_id, stop};
use super::volumes::volumes;
use crate::ops::deploy::Error;
use crate::ops::resources::{api, label, managed_container};
use crate::vocab::labels::{DATA as LABEL_DATA, KEY_ID as LABEL_KEY_ID, ROLE as LABEL_ROLE};
use crate::vocab::plan::filters;

/// Prints the state of the deployment's container; false when there is none.
pub(crate) async fn status(docker: &Docker, name: &str) -> Result<bool, Error> {
    let Some(info) = managed_container(docker, name, name).await? else { return Ok(false) };
    let state = info.state.clone().unwrap_or_default();
    let health = state.health.as_ref().and_then(|h| h.status).map(|s| s.to_string()).unwrap_or_else(|| "-".into());
    let config = info.config.clone().unwrap_or_default();
    let env = config.env.unwrap_or_default();
    let key = if env.iter().any(|e| e.starts_with(&format!("{SECRET_KEY_FILE}="))) {
        "file (SECRET_KEY_FILE)"
    } else if env.iter().any(|e| e.starts_with(&format!("{SECRET_KEY}="))) {
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
pub async fn undeploy(docker: &Docker, name: &str, purge: bool) -> Result<usize, Error> {
    // A container named `name` that boxcar did not make stops us here.
    managed_container(docker, name, name).await?;
    let options = ListContainersOptionsBuilder::default().all(true).filters(&filters(name)).build();
    let containers = docker.list_containers(Some(options)).await.map_err(api("listing containers"))?;
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
            .map_err(api(format!("removing the container {shown}")))?;
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
        docker.remove_volume(&v.name, Some(options)).await.map_err(api(format!("removing the volume {}", v.name)))?;
        println!("removed    volume {}", v.name);
        removed += 1;
    }
    Ok(removed)
}
