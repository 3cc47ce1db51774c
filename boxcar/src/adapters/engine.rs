//! The Docker engine connection every engine-facing command shares, and the
//! setup that gives a newcomer's machine an engine (`ensure`).

use std::process::ExitStatus;

use bollard::Docker;

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
        "no Docker engine runs here. On Debian or Ubuntu: `sudo apt-get install docker.io debootstrap` and \
         `sudo systemctl start docker`; or run this as root and it does that itself"
    )]
    NotInstalled,
    /// Packages are missing and this is not root on Debian.
    #[error("{why}: install {list} and run this again; on Debian or Ubuntu: sudo apt-get install {list}", list = .packages.join(" "))]
    InstallNeeded { why: String, packages: Vec<String> },
    /// A setup command failed (`apt-get`, `systemctl`).
    #[error("{command}")]
    Command { command: String, source: xshell::Error },
    #[error("dockerd is not installed")]
    NoDaemon,
    #[error("dockerd exited at once ({status}); its log is {DOCKERD_LOG}")]
    DaemonExited { status: ExitStatus },
    #[error("dockerd did not answer within 60 s; its log is {DOCKERD_LOG}")]
    DaemonSilent,
    #[error("{what}")]
    Io { what: String, source: std::io::Error },
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
/// Debian's `docker.io` (with `debootstrap`, which bootstraps the base image
/// where no registry is reachable) and starts the daemon, saying so at each
/// step; anywhere else it says what to do. `DOCKER_HOST` means the user chose
/// an engine: it is never replaced by a local one.
pub fn ensure(sh: &xshell::Shell) -> Result<(), Error> {
    let rt = runtime()?;
    if rt.block_on(connect(None)).is_ok() {
        return Ok(());
    }
    if let Ok(host) = std::env::var("DOCKER_HOST") {
        return Err(Error::ChosenHostSilent { host });
    }
    if !is_root()? {
        if std::path::Path::new("/var/run/docker.sock").exists() {
            return Err(Error::NoPermission);
        }
        return Err(Error::NotInstalled);
    }
    let missing: Vec<&str> = [("dockerd", "docker.io"), ("debootstrap", "debootstrap")]
        .into_iter()
        .filter(|(program, _)| find_program(program).is_none())
        .map(|(_, package)| package)
        .collect();
    // Without docker.io's recommendations (apparmor, needrestart, git,
    // xz-utils, cgroupfs-mount) and debootstrap's (gnupg): the engine runs
    // without them, and a first run waits less.
    apt_install(sh, &missing, Recommends::Skip, "no Docker engine here")?;
    let mut child = start_daemon(sh)?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while std::time::Instant::now() < deadline {
        if rt.block_on(connect(None)).is_ok() {
            eprintln!("the Docker engine answers");
            return Ok(());
        }
        if let Some(status) = child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
            return Err(Error::DaemonExited { status });
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    Err(Error::DaemonSilent)
}

fn is_root() -> Result<bool, Error> {
    let me =
        std::fs::metadata("/proc/self").map_err(|source| Error::Io { what: "reading /proc/self".into(), source })?;
    Ok(std::os::unix::fs::MetadataExt::uid(&me) == 0)
}

fn command(command: impl Into<String>) -> impl FnOnce(xshell::Error) -> Error {
    let command = command.into();
    move |source| Error::Command { command, source }
}

/// Whether apt-get also installs the packages a package recommends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recommends {
    Install,
    Skip,
}

/// Installs Debian `packages` with apt-get when this is root on Debian,
/// saying so first; anywhere else fails with the command to run.
pub fn apt_install(sh: &xshell::Shell, packages: &[&str], recommends: Recommends, why: &str) -> Result<(), Error> {
    if packages.is_empty() {
        return Ok(());
    }
    let list = packages.join(" ");
    let debian = std::path::Path::new("/etc/debian_version").exists() && on_path("apt-get");
    if !(is_root()? && debian) {
        return Err(Error::InstallNeeded {
            why: why.to_owned(),
            packages: packages.iter().map(|p| (*p).to_owned()).collect(),
        });
    }
    eprintln!("{why}: installing Debian's {list} (apt-get install, a minute or two)");
    xshell::cmd!(sh, "apt-get update -qq").run().map_err(command("apt-get update"))?;
    // No pty for dpkg: its progress bars would fill a log line by line.
    let lean = (recommends == Recommends::Skip).then_some("--no-install-recommends");
    xshell::cmd!(sh, "apt-get install -y -qq -o Dpkg::Use-Pty=0 {lean...} {packages...}")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .run()
        .map_err(command(format!("apt-get install {list}")))?;
    Ok(())
}

/// Whether `program` is in PATH or in the system folders.
pub fn on_path(program: &str) -> bool {
    find_program(program).is_some()
}

/// Where `program` is: in PATH, or in the system folders (dockerd lives in
/// /usr/sbin, which a user's PATH may lack).
fn find_program(program: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/bin", "/sbin"].map(std::path::PathBuf::from))
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

/// Where a dockerd started by `ensure` writes its log.
const DOCKERD_LOG: &str = "/var/log/boxcar-dockerd.log";

/// Starts the daemon: through systemd where it runs, else `dockerd` in its
/// own process group, detached, so it outlives this command (returned, to
/// notice if it exits at once).
fn start_daemon(sh: &xshell::Shell) -> Result<Option<std::process::Child>, Error> {
    if std::path::Path::new("/run/systemd/system").exists() {
        eprintln!("starting the Docker engine: systemctl start docker");
        xshell::cmd!(sh, "systemctl start docker").run().map_err(command("systemctl start docker"))?;
        return Ok(None);
    }
    let dockerd = find_program("dockerd").ok_or(Error::NoDaemon)?;
    eprintln!("starting the Docker engine: {} in the background (log: {DOCKERD_LOG})", dockerd.display());
    let io = |what: &str| {
        let what = what.to_owned();
        move |source| Error::Io { what, source }
    };
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(DOCKERD_LOG)
        .map_err(io(&format!("opening {DOCKERD_LOG}")))?;
    let mut daemon = std::process::Command::new(&dockerd);
    daemon.stdin(std::process::Stdio::null()).stdout(log.try_clone().map_err(io(&format!("opening {DOCKERD_LOG}")))?);
    daemon.stderr(log);
    std::os::unix::process::CommandExt::process_group(&mut daemon, 0);
    Ok(Some(daemon.spawn().map_err(io("starting dockerd"))?))
}
