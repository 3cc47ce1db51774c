//! What boxcar makes on an engine (containers, volumes, services, secrets),
//! the ways every operation handles them alike: found by their label and
//! refused when boxcar did not make them, hardened, removed quietly on a path
//! that already reports something, their logs read for a report; and the
//! error an engine call ends in.

use bollard::Docker;
use bollard::models::{ContainerCreateBody, ContainerInspectResponse, HostConfig};
use bollard::query_parameters::{CreateContainerOptionsBuilder, RemoveContainerOptionsBuilder};

use crate::adapters::engine::is_not_found;
use crate::vocab::labels;
use crate::vocab::plan::HARDENING;

/// An engine call that failed, or a resource in the way.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The engine refused or failed a call; `doing` says what was asked.
    #[error("{doing}")]
    Api { doing: String, source: bollard::errors::Error },
    /// A resource has the deployment's name but not boxcar's label.
    #[error(
        "a {kind} named `{name}` exists and boxcar did not create it; nothing was changed\n\
         hint: remove or rename it, or deploy under another name with --name"
    )]
    NotOurs { kind: &'static str, name: String },
}

/// Maps an engine error to [`Error::Api`] saying what was asked.
pub fn api(doing: impl Into<String>) -> impl FnOnce(bollard::errors::Error) -> Error {
    let doing = doing.into();
    move |source| Error::Api { doing, source }
}

/// The engine's own message, without bollard's wrapping.
pub fn engine_message(e: &bollard::errors::Error) -> String {
    match e {
        bollard::errors::Error::DockerResponseServerError { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

/// `host` with the hardening every container boxcar runs gets
/// ([`HARDENING`]): read-only root, no capabilities, no new privileges.
pub fn hardened(host: HostConfig) -> HostConfig {
    HostConfig {
        readonly_rootfs: Some(HARDENING.read_only_root),
        cap_drop: Some(HARDENING.cap_drop()),
        security_opt: Some(HARDENING.security_opt()),
        ..host
    }
}

/// The container `name`, if there is one and boxcar made it for
/// `deployment`; an error if there is one that boxcar did not make.
pub async fn managed_container(
    docker: &Docker,
    name: &str,
    deployment: &str,
) -> Result<Option<ContainerInspectResponse>, Error> {
    let info = match docker.inspect_container(name, None::<bollard::query_parameters::InspectContainerOptions>).await {
        Ok(info) => info,
        Err(e) if is_not_found(&e) => return Ok(None),
        Err(e) => return Err(api(format!("inspecting the container {name}"))(e)),
    };
    if label(&info, labels::DEPLOYMENT) != Some(deployment) {
        return Err(Error::NotOurs { kind: "container", name: name.to_owned() });
    }
    Ok(Some(info))
}

/// A container's label.
pub fn label<'a>(info: &'a ContainerInspectResponse, key: &str) -> Option<&'a str> {
    info.config.as_ref()?.labels.as_ref()?.get(key).map(String::as_str)
}

/// Creates the container `name`.
pub async fn create(docker: &Docker, name: &str, body: ContainerCreateBody) -> Result<(), Error> {
    docker
        .create_container(Some(CreateContainerOptionsBuilder::default().name(name).build()), body)
        .await
        .map_err(api(format!("creating the container {name}")))?;
    Ok(())
}

/// Stops and removes a container; failures are reported, not returned: this
/// runs on paths that are already reporting something more important.
pub async fn remove(docker: &Docker, name: &str) {
    // `v`: also the anonymous volume an image's volume gives a container
    // that does not mount one (a loader, a check); named volumes stay.
    let options = RemoveContainerOptionsBuilder::default().force(true).v(true).build();
    if let Err(e) = docker.remove_container(name, Some(options)).await
        && !is_not_found(&e)
    {
        eprintln!("warning: could not remove the container {name}: {e}");
    }
}

/// The last lines of a container's log, for failure reports.
pub async fn last_log_lines(docker: &Docker, container: &str, n: usize) -> String {
    read_log(docker.logs(container, Some(tail_options(n)))).await
}

/// Both streams of a log, its last `n` lines.
pub fn tail_options(n: usize) -> bollard::query_parameters::LogsOptions {
    bollard::query_parameters::LogsOptionsBuilder::default().stdout(true).stderr(true).tail(&n.to_string()).build()
}

/// A log stream read to its end, each line escaped and indented.
pub async fn read_log(
    stream: impl futures::Stream<Item = Result<bollard::container::LogOutput, bollard::errors::Error>>,
) -> String {
    use futures::StreamExt as _;
    let mut stream = std::pin::pin!(stream);
    let mut out = String::new();
    while let Some(Ok(item)) = stream.next().await {
        out.push_str(&String::from_utf8_lossy(&item.into_bytes()));
    }
    let lines: Vec<String> = out.lines().map(|l| crate::vocab::show::escape(l).into_owned()).collect();
    indent(&lines.join("\n"))
}

/// Lines of a log or a service's output, indented under a report.
pub fn indent(text: &str) -> String {
    let lines: Vec<String> = text.lines().map(|l| format!("  | {l}")).collect();
    if lines.is_empty() { "  | (no output)".to_owned() } else { lines.join("\n") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_are_indented_and_an_empty_one_says_so() {
        assert_eq!(indent("a\nb"), "  | a\n  | b");
        assert_eq!(indent(""), "  | (no output)");
    }

    #[test]
    fn hardening_is_applied_whole() {
        let host = hardened(HostConfig { memory: Some(1), ..HostConfig::default() });
        assert_eq!(host.memory, Some(1));
        assert_eq!(host.readonly_rootfs, Some(true));
        assert_eq!(host.cap_drop.unwrap(), ["ALL"]);
        assert_eq!(host.security_opt.unwrap(), ["no-new-privileges"]);
    }
}
