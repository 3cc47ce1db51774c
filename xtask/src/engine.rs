//! The Docker engine connection every engine-facing command shares.

use anyhow::Context as _;
use bollard::Docker;

/// Connects to the engine (`host`, else `DOCKER_HOST`, else the local socket),
/// agrees on an API version both sides speak (Debian's Docker 20.10 speaks
/// 1.41, older than bollard's default), and checks that it answers.
pub(crate) async fn connect(host: Option<&str>) -> anyhow::Result<Docker> {
    let hint = "start the Docker engine (on Debian: `apt-get install docker.io` and `dockerd &`), \
                or point DOCKER_HOST at one";
    let where_ = match host {
        Some(h) => h.to_owned(),
        None => std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".to_owned()),
    };
    let docker = Docker::connect_with_host(&where_).with_context(|| format!("no Docker engine at {where_}; {hint}"))?;
    let docker =
        docker.negotiate_version().await.with_context(|| format!("no Docker engine answers at {where_}; {hint}"))?;
    docker.ping().await.with_context(|| format!("the Docker engine at {where_} does not answer ping; {hint}"))?;
    Ok(docker)
}

/// Whether an error is the engine's 404 (no such image, container, volume).
pub(crate) fn is_not_found(err: &bollard::errors::Error) -> bool {
    matches!(err, bollard::errors::Error::DockerResponseServerError { status_code: 404, .. })
}

/// A single-threaded runtime for a command's engine work.
pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the async runtime")
}
