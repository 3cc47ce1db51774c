//! A deployment after the deploy, wherever it runs (one container or a Swarm
//! service): its state (`status`), its log lines (`logs`), its removal
//! (`undeploy`).

use bollard::Docker;

use super::{Error, standalone, swarm};
use crate::ops::resources;

/// Shows deployment `name`: its container or service, image, health, key id, port.
pub async fn status(docker: &Docker, name: &str, env: &str) -> Result<(), Error> {
    if swarm::service_here(docker, name).await? {
        return swarm::status(docker, name).await;
    }
    if standalone::status(docker, name).await? {
        return Ok(());
    }
    Err(Error::NotDeployed { name: name.to_owned(), env: Some(env.to_owned()) })
}

/// Prints deployment `name`'s log lines: the last `tail`, then new ones when `follow`.
pub async fn logs(docker: &Docker, name: &str, follow: bool, tail: u64) -> Result<(), Error> {
    use futures::StreamExt as _;
    use std::io::Write as _;
    let swarm = swarm::service_here(docker, name).await?;
    if !swarm && resources::managed_container(docker, name, name).await?.is_none() {
        return Err(Error::NotDeployed { name: name.to_owned(), env: None });
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
        let item = item.map_err(resources::api(format!("reading the logs of `{name}`")))?;
        let written = match item {
            bollard::container::LogOutput::StdErr { message } => std::io::stderr().write_all(&message),
            other => std::io::stdout().write_all(&other.into_bytes()),
        };
        written.map_err(Error::Output)?;
    }
    Ok(())
}

/// Removes deployment `name`: its container or service and its key volumes
/// or secrets; its data volume too when `purge`.
pub async fn undeploy(docker: &Docker, name: &str, purge: bool) -> Result<(), Error> {
    let mut removed = 0;
    if swarm::is_manager(docker).await {
        removed += swarm::undeploy(docker, name).await?;
    }
    removed += standalone::undeploy(docker, name, purge).await?;
    if removed == 0 {
        return Err(Error::NotDeployed { name: name.to_owned(), env: None });
    }
    Ok(())
}
