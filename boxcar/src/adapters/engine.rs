//! The Docker engine connection every engine-facing command shares, and the
//! setup that gives a newcomer's machine an engine (`ensure`).

use std::process::ExitStatus;

use bollard::Docker;

use super::host::{self, DOCKERD_LOG, Output, Recommends};

/// What goes wrong reaching or setting up an engine.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("no Docker engine at {host}; {HINT}")]
    Connect { host: String, source: bollard::errors::Error },
    #[error("no Docker engine answers at {host}; {HINT}")]
    Negotiate { host: String, source: bollard::errors::Error },
    #[error("the Docker engine at {host} does not answer ping; {HINT}")]
    Ping { host: String, source: bollard::errors::Error },
    #[error("starting the async runtime")]
    Runtime(#[source] std::io::Error),
    /// `DOCKER_HOST` names an engine that does not answer: never replaced.
    #[error("no Docker engine answers at DOCKER_HOST={host}; start it, or unset DOCKER_HOST to use a local one")]
    ChosenHostSilent { host: String },
    #[error(
        "the Docker engine at /var/run/docker.sock does not answer this user: join the `docker` group \
         (`sudo usermod -aG docker $USER`, then log in again) or run as root; if it is stopped: \
         `sudo systemctl start docker`"
    )]
    NoPermission,
    #[error(
        "no Docker engine runs here. On Debian or Ubuntu: `sudo apt-get install docker.io mmdebstrap` and \
         `sudo systemctl start docker`; or run this as root and it does that itself"
    )]
    NotInstalled,
    /// Installing or starting the engine failed.
    #[error(transparent)]
    Host(#[from] host::Error),
    #[error("dockerd exited at once ({status}); its log is {DOCKERD_LOG}")]
    DaemonExited { status: ExitStatus },
    #[error("dockerd did not answer within 60 s; its log is {DOCKERD_LOG}")]
    DaemonSilent,
}

const HINT: &str =
    "start the Docker engine (on Debian: `apt-get install docker.io` and `dockerd &`), or point DOCKER_HOST at one";

/// Connects to the engine (`host`, else `DOCKER_HOST`, else the local socket),
/// agrees on an API version both sides speak (Debian's Docker 20.10 speaks
/// 1.41, older than bollard's default), and checks that it answers.
pub async fn connect(host: Option<&str>) -> Result<Docker, Error> {
    let host = match host {
        Some(h) => h.to_owned(),
        None => std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".to_owned()),
    };
    let docker = match Docker::connect_with_host(&host) {
        Ok(docker) => docker,
        Err(source) => return Err(Error::Connect { host, source }),
    };
    let docker = match docker.negotiate_version().await {
        Ok(docker) => docker,
        Err(source) => return Err(Error::Negotiate { host, source }),
    };
    match docker.ping().await {
        Ok(_) => Ok(docker),
        Err(source) => Err(Error::Ping { host, source }),
    }
}

/// Whether an error is the engine's 404 (no such image, container, volume).
pub fn is_not_found(err: &bollard::errors::Error) -> bool {
    matches!(err, bollard::errors::Error::DockerResponseServerError { status_code: 404, .. })
}

/// A single-threaded runtime for a command's engine work.
pub fn runtime() -> Result<tokio::runtime::Runtime, Error> {
    tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(Error::Runtime)
}

/// Makes sure a Docker engine answers, for commands a newcomer runs first
/// (`demo`, `test`). Where none does and this is root on Debian, installs
/// Debian's `docker.io` (with `mmdebstrap`, which bootstraps the base image
/// where no registry is reachable) and starts the daemon, saying so at each
/// step; anywhere else it says what to do. `DOCKER_HOST` means the user chose
/// an engine: it is never replaced by a local one.
pub fn ensure() -> Result<(), Error> {
    let rt = runtime()?;
    if rt.block_on(connect(None)).is_ok() {
        return Ok(());
    }
    if let Ok(host) = std::env::var("DOCKER_HOST") {
        return Err(Error::ChosenHostSilent { host });
    }
    if !host::is_root()? {
        if std::path::Path::new(host::DOCKER_SOCKET).exists() {
            return Err(Error::NoPermission);
        }
        return Err(Error::NotInstalled);
    }
    host::apt_install(&host::engine_packages_missing(), Recommends::Skip, "no Docker engine here", &Output::Terminal)?;
    let mut daemon = host::start_daemon(&Output::Terminal)?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while std::time::Instant::now() < deadline {
        if rt.block_on(connect(None)).is_ok() {
            eprintln!("the Docker engine answers");
            return Ok(());
        }
        if let Some(status) = daemon.exited() {
            return Err(Error::DaemonExited { status });
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    Err(Error::DaemonSilent)
}
