//! This machine, set up for the engine commands without an engine client:
//! Debian packages (apt-get), the Docker daemon started, a Debian file
//! system bootstrapped (mmdebstrap, or debootstrap). Apart from `engine.rs` so that an
//! xtask built without boxcar's `engine` feature can do all of it while the
//! engine commands compile.
//!
//! Every command runs with `std::process::Command` rather than xshell, since
//! its output goes either to the terminal or to a log file, and the secret
//! key's variables are taken out of each child's environment.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};

/// What goes wrong setting up this machine.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Packages are missing and this is not root on Debian.
    #[error("{why}: install {list} and run this again; on Debian or Ubuntu: sudo apt-get install {list}", list = .packages.join(" "))]
    InstallNeeded { why: String, packages: Vec<String> },
    /// A setup command could not start, or failed.
    #[error("{command} failed ({why}){log}", log = .log.as_ref().map(|l| format!("; its output is in {}", l.display())).unwrap_or_default())]
    Command { command: String, why: String, log: Option<PathBuf> },
    #[error("dockerd is not installed")]
    NoDaemon,
    #[error(
        "no registry is reachable and neither mmdebstrap nor debootstrap is installed\nhint: on Debian, `apt-get install mmdebstrap` (as root), then run this again"
    )]
    NoBootstrapper,
    #[error("bootstrapping a Debian base needs root (it installs packages with their owners); run this once as root")]
    BootstrapNeedsRoot,
    #[error(
        "bootstrapping Debian from {mirror} failed; is the Debian archive reachable? (set BOXCAR_DEBIAN_MIRROR for another mirror)"
    )]
    Bootstrap { mirror: String, source: Box<Error> },
    #[error("{what}")]
    Io { what: String, source: std::io::Error },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let what = what.into();
    move |source| Error::Io { what, source }
}

/// Where a command's output goes.
#[derive(Debug, Clone)]
pub enum Output {
    /// The terminal, each command shown first (`$ apt-get …`).
    Terminal,
    /// Work done in the background, beside a compile: the output appended
    /// to this file, the command at the lowest CPU priority (`nice -n 19`),
    /// so the compile keeps both cores whenever it can use them and this
    /// takes what it leaves (while it links, or compiles one crate alone).
    Background(PathBuf),
}

impl Output {
    /// Says `what` on the terminal; background work keeps quiet (its caller
    /// says what it does).
    fn say(&self, what: &str) {
        if let Output::Terminal = self {
            eprintln!("{what}");
        }
    }

    /// Runs `program` with `args`, its output where this says, without the
    /// secret key's variables.
    fn run(&self, program: &str, args: &[&str]) -> Result<(), Error> {
        let command = format!("{program} {}", args.join(" "));
        let mut child = match self {
            Output::Terminal => setup_command(program, args),
            Output::Background(_) => setup_command("nice", &[&["-n", "19", program], args].concat()),
        };
        let log = match self {
            Output::Terminal => {
                eprintln!("$ {command}");
                None
            }
            Output::Background(path) => {
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(io(format!("opening {}", path.display())))?;
                let err = file.try_clone().map_err(io(format!("opening {}", path.display())))?;
                child.stdout(file).stderr(err);
                Some(path.clone())
            }
        };
        let failed = |why: String| Error::Command { command: command.clone(), why, log: log.clone() };
        let status = child.status().map_err(|e| failed(e.to_string()))?;
        if !status.success() {
            return Err(failed(status.to_string()));
        }
        Ok(())
    }
}

/// A setup command: no input, no questions from dpkg, and not the secret
/// key's variables, so nothing it runs can read the key.
fn setup_command(program: &str, args: &[&str]) -> Command {
    let mut command = Command::new(program);
    command
        .args(args)
        .stdin(Stdio::null())
        .env("DEBIAN_FRONTEND", "noninteractive")
        .env_remove(boxcar_secrets::SECRET_KEY)
        .env_remove(boxcar_secrets::SECRET_KEY_FILE);
    command
}

/// Whether this process runs as root.
pub fn is_root() -> Result<bool, Error> {
    let me = std::fs::metadata("/proc/self").map_err(io("reading /proc/self"))?;
    Ok(std::os::unix::fs::MetadataExt::uid(&me) == 0)
}

/// Whether this is Debian (or a derivative) with apt-get.
pub fn is_debian() -> bool {
    Path::new("/etc/debian_version").exists() && on_path("apt-get")
}

/// Whether apt-get also installs the packages a package recommends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recommends {
    Install,
    Skip,
}

/// Installs Debian `packages` with apt-get when this is root on Debian,
/// saying so first; anywhere else fails with the command to run.
pub fn apt_install(packages: &[&str], recommends: Recommends, why: &str, output: &Output) -> Result<(), Error> {
    if packages.is_empty() {
        return Ok(());
    }
    let list = packages.join(" ");
    if !(is_root()? && is_debian()) {
        return Err(Error::InstallNeeded {
            why: why.to_owned(),
            packages: packages.iter().map(|p| (*p).to_owned()).collect(),
        });
    }
    output.say(&format!("{why}: installing Debian's {list} (apt-get install, a minute or two)"));
    output.run("apt-get", &["update", "-qq"])?;
    // No pty for dpkg: its progress bars would fill a log line by line.
    let mut args = vec!["install", "-y", "-qq", "-o", "Dpkg::Use-Pty=0"];
    if recommends == Recommends::Skip {
        args.push("--no-install-recommends");
    }
    args.extend_from_slice(packages);
    output.run("apt-get", &args)
}

/// The engine's Debian packages that are not installed: `docker.io`, and
/// `mmdebstrap`, which bootstraps the builders' base where no registry is
/// reachable. They are installed without their recommendations (apparmor,
/// needrestart, git, xz-utils, cgroupfs-mount; mmdebstrap's helpers): the
/// engine runs without them, and a first run waits less.
pub fn engine_packages_missing() -> Vec<&'static str> {
    [("dockerd", "docker.io"), ("mmdebstrap", "mmdebstrap")]
        .into_iter()
        .filter(|(program, _)| !on_path(program))
        .map(|(_, package)| package)
        .collect()
}

/// Whether `program` is in PATH or in the system folders.
pub fn on_path(program: &str) -> bool {
    find_program(program).is_some()
}

/// Where `program` is: in PATH, or in the system folders (dockerd lives in
/// /usr/sbin, which a user's PATH may lack).
pub fn find_program(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/bin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

/// Where a dockerd started here writes its log.
pub const DOCKERD_LOG: &str = "/var/log/boxcar-dockerd.log";

/// The local engine's socket.
pub const DOCKER_SOCKET: &str = "/var/run/docker.sock";

/// A daemon this process started.
#[derive(Debug)]
pub enum Started {
    /// By systemd (`systemctl start docker`).
    Systemd,
    /// As a child in its own process group, detached, so it outlives this
    /// command; kept to notice if it exits at once.
    Child(std::process::Child),
}

impl Started {
    /// How it exited, when it has.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        match self {
            Started::Systemd => None,
            Started::Child(child) => child.try_wait().ok().flatten(),
        }
    }
}

/// Starts the daemon: through systemd where it runs, else `dockerd` in its
/// own process group, its output in [`DOCKERD_LOG`].
pub fn start_daemon(output: &Output) -> Result<Started, Error> {
    if Path::new("/run/systemd/system").exists() {
        output.say("starting the Docker engine: systemctl start docker");
        output.run("systemctl", &["start", "docker"])?;
        return Ok(Started::Systemd);
    }
    let dockerd = find_program("dockerd").ok_or(Error::NoDaemon)?;
    output.say(&format!("starting the Docker engine: {} in the background (log: {DOCKERD_LOG})", dockerd.display()));
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(DOCKERD_LOG)
        .map_err(io(format!("opening {DOCKERD_LOG}")))?;
    let mut daemon = Command::new(&dockerd);
    daemon
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(io(format!("opening {DOCKERD_LOG}")))?)
        .stderr(log)
        .env_remove(boxcar_secrets::SECRET_KEY)
        .env_remove(boxcar_secrets::SECRET_KEY_FILE);
    std::os::unix::process::CommandExt::process_group(&mut daemon, 0);
    Ok(Started::Child(daemon.spawn().map_err(io("starting dockerd"))?))
}

/// Whether something accepts connections on the local engine's socket (the
/// engine answering its API is the engine client's to check).
pub fn socket_listens() -> bool {
    std::os::unix::net::UnixStream::connect(DOCKER_SOCKET).is_ok()
}

/// The Debian archive to bootstrap from: `BOXCAR_DEBIAN_MIRROR`, else Debian's.
pub fn debian_mirror() -> String {
    std::env::var("BOXCAR_DEBIAN_MIRROR").unwrap_or_else(|_| "http://deb.debian.org/debian".to_owned())
}

/// Debian `suite` (minbase, with `include`) bootstrapped into a tar at
/// `archive`, written under another name beside it and renamed, so `archive`
/// is whole or absent. Root only.
///
/// With mmdebstrap where it is installed: it writes the tar itself, and
/// installs with apt and without dpkg's syncs after every file, so it is
/// quicker than debootstrap (37 s against about 60 s for the builder's
/// base, 2 cores, 2026-12-08). Else debootstrap into a folder, then tar.
pub fn bootstrap_debian(suite: &str, include: &[&str], archive: &Path, output: &Output) -> Result<(), Error> {
    let mmdebstrap = on_path("mmdebstrap");
    if !mmdebstrap && !on_path("debootstrap") {
        return Err(Error::NoBootstrapper);
    }
    if !is_root()? {
        return Err(Error::BootstrapNeedsRoot);
    }
    let mirror = debian_mirror();
    let parent = archive.parent().ok_or_else(|| Error::Io {
        what: format!("{} has no folder", archive.display()),
        source: std::io::ErrorKind::InvalidInput.into(),
    })?;
    std::fs::create_dir_all(parent).map_err(io(format!("creating {}", parent.display())))?;
    // mkdtemp (0700): a predictable name could be prepared by another user.
    let work = tempfile::Builder::new()
        .prefix("boxcar-bootstrap-")
        .tempdir_in(parent)
        .map_err(io(format!("creating a work folder in {}", parent.display())))?;
    let partial = work.path().join("rootfs.tar");
    let partial_arg = partial.to_string_lossy();
    let include = (!include.is_empty()).then(|| format!("--include={}", include.join(",")));
    let failed = |source| Error::Bootstrap { mirror: mirror.clone(), source: Box::new(source) };
    if mmdebstrap {
        output.say(&format!("bootstrapping Debian {suite} from {mirror} (mmdebstrap, a minute or so)"));
        // Device nodes are the engine's to provide.
        let mut args = vec!["--variant=minbase", "--skip=output/dev"];
        args.extend(include.as_deref());
        args.extend_from_slice(&[suite, &partial_arg, &mirror]);
        output.run("mmdebstrap", &args).map_err(failed)?;
    } else {
        let rootfs = work.path().join("rootfs");
        let rootfs_arg = rootfs.to_string_lossy();
        output
            .say(&format!("bootstrapping Debian {suite} from {mirror} into {rootfs_arg} (debootstrap, a few minutes)"));
        let mut args = vec!["--variant=minbase"];
        args.extend(include.as_deref());
        args.extend_from_slice(&[suite, &rootfs_arg, &mirror]);
        output.run("debootstrap", &args).map_err(failed)?;
        // Device nodes and kernel file systems are the engine's to provide.
        output.run(
            "tar",
            &[
                "--numeric-owner",
                "--exclude=./dev/*",
                "--exclude=./proc/*",
                "--exclude=./sys/*",
                "-C",
                &rootfs_arg,
                "-cf",
                &partial_arg,
                ".",
            ],
        )?;
    }
    std::fs::rename(&partial, archive).map_err(io(format!("moving the bootstrap to {}", archive.display())))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn background_work_logs_its_output_yields_the_cpu_and_names_the_log_when_it_fails() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("setup.log");
        let output = Output::Background(log.clone());
        output.run("sh", &["-c", "echo said; echo warned >&2; nice"]).unwrap();
        let err = output.run("sh", &["-c", "echo broke >&2; exit 3"]).unwrap_err().to_string();
        // `nice` prints the niceness it runs at: the lowest priority.
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "said\nwarned\n19\nbroke\n");
        assert!(err.starts_with("sh -c echo broke >&2; exit 3 failed (exit status: 3); its output is in "), "{err}");
        assert!(err.ends_with("setup.log"), "{err}");
        let missing = output.run("/nonexistent/program", &[]).unwrap_err().to_string();
        assert!(missing.starts_with("/nonexistent/program  failed (exit status: 127); its output is in "), "{missing}");
        assert!(std::fs::read_to_string(&log).unwrap().contains("No such file"));
        let terminal = Output::Terminal.run("/nonexistent/program", &[]).unwrap_err().to_string();
        assert!(terminal.starts_with("/nonexistent/program  failed (No such file"), "{terminal}");
    }

    #[test]
    fn the_key_never_reaches_a_setup_command() {
        let command = setup_command("apt-get", &["update"]);
        let envs: Vec<_> = command.get_envs().map(|(k, v)| (k.to_owned(), v.map(ToOwned::to_owned))).collect();
        assert_eq!(
            envs,
            [
                ("DEBIAN_FRONTEND".into(), Some("noninteractive".into())),
                (boxcar_secrets::SECRET_KEY.into(), None),
                (boxcar_secrets::SECRET_KEY_FILE.into(), None),
            ]
        );
    }

    #[test]
    fn programs_are_found_in_the_system_folders_too() {
        assert!(on_path("sh"));
        assert!(!on_path("boxcar-no-such-program"));
    }
}
