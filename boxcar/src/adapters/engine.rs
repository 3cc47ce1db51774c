//! The Docker engine connection every engine-facing command shares.

use anyhow::Context as _;
use bollard::Docker;

/// Connects to the engine (`host`, else `DOCKER_HOST`, else the local socket),
/// agrees on an API version both sides speak (Debian's Docker 20.10 speaks
/// 1.41, older than bollard's default), and checks that it answers.
pub async fn connect(host: Option<&str>) -> anyhow::Result<Docker> {
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
pub fn is_not_found(err: &bollard::errors::Error) -> bool {
    matches!(err, bollard::errors::Error::DockerResponseServerError { status_code: 404, .. })
}

/// A single-threaded runtime for a command's engine work.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the async runtime")
}

/// Makes sure a Docker engine answers, for commands a newcomer runs first
/// (`demo`, `test`). Where none does and this is root on Debian, installs
/// Debian's `docker.io` (with `debootstrap`, which bootstraps the base image
/// where no registry is reachable) and starts the daemon, saying so at each
/// step; anywhere else it says what to do. `DOCKER_HOST` means the user chose
/// an engine: it is never replaced by a local one.
pub fn ensure(sh: &xshell::Shell) -> anyhow::Result<()> {
    let rt = runtime()?;
    if rt.block_on(connect(None)).is_ok() {
        return Ok(());
    }
    if let Ok(host) = std::env::var("DOCKER_HOST") {
        anyhow::bail!(
            "no Docker engine answers at DOCKER_HOST={host}; start it, or unset DOCKER_HOST to use a local one"
        );
    }
    if !is_root()? {
        if std::path::Path::new("/var/run/docker.sock").exists() {
            anyhow::bail!(
                "the Docker engine at /var/run/docker.sock does not answer this user: join the `docker` group \
                 (`sudo usermod -aG docker $USER`, then log in again) or run as root; if it is stopped: \
                 `sudo systemctl start docker`"
            );
        }
        anyhow::bail!(
            "no Docker engine runs here. On Debian or Ubuntu: `sudo apt-get install docker.io debootstrap` and \
             `sudo systemctl start docker`; or run this as root and it does that itself"
        );
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
            anyhow::bail!("dockerd exited at once ({status}); its log is {DOCKERD_LOG}");
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    anyhow::bail!("dockerd did not answer within 60 s; its log is {DOCKERD_LOG}")
}

fn is_root() -> anyhow::Result<bool> {
    Ok(std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self")?) == 0)
}

/// Whether apt-get also installs the packages a package recommends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recommends {
    Install,
    Skip,
}

/// Installs Debian `packages` with apt-get when this is root on Debian,
/// saying so first; anywhere else fails with the command to run.
pub fn apt_install(sh: &xshell::Shell, packages: &[&str], recommends: Recommends, why: &str) -> anyhow::Result<()> {
    if packages.is_empty() {
        return Ok(());
    }
    let list = packages.join(" ");
    let debian = std::path::Path::new("/etc/debian_version").exists() && on_path("apt-get");
    if !(is_root()? && debian) {
        anyhow::bail!("{why}: install {list} and run this again; on Debian or Ubuntu: sudo apt-get install {list}");
    }
    eprintln!("{why}: installing Debian's {list} (apt-get install, a minute or two)");
    xshell::cmd!(sh, "apt-get update -qq").run().context("apt-get update")?;
    // No pty for dpkg: its progress bars would fill a log line by line.
    let lean = (recommends == Recommends::Skip).then_some("--no-install-recommends");
    xshell::cmd!(sh, "apt-get install -y -qq -o Dpkg::Use-Pty=0 {lean...} {packages...}")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .run()
        .with_context(|| format!("apt-get install {list}"))?;
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
fn start_daemon(sh: &xshell::Shell) -> anyhow::Result<Option<std::process::Child>> {
    if std::path::Path::new("/run/systemd/system").exists() {
        eprintln!("starting the Docker engine: systemctl start docker");
        xshell::cmd!(sh, "systemctl start docker").run().context("systemctl start docker")?;
        return Ok(None);
    }
    let dockerd = find_program("dockerd").context("dockerd is not installed")?;
    eprintln!("starting the Docker engine: {} in the background (log: {DOCKERD_LOG})", dockerd.display());
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(DOCKERD_LOG)
        .with_context(|| format!("opening {DOCKERD_LOG}"))?;
    let mut command = std::process::Command::new(&dockerd);
    command.stdin(std::process::Stdio::null()).stdout(log.try_clone()?).stderr(log);
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    Ok(Some(command.spawn().context("starting dockerd")?))
}
