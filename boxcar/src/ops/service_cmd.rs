//! A service's own commands, which its contract names: `check` (is this
//! environment file right for the service?) and `instances` (may several
//! instances run on it?). boxcar knows nothing of what a service's settings
//! mean; the service answers for itself.
//!
//! The protocol: the service's binary runs with the contract's arguments and
//! the environment file's path appended, with no key and no network. Exit 0
//! means yes (for `check`: no problem); otherwise each output line is a
//! problem. `instances` prints `one` or `many`.
//!
//! `check` and `manifests` run the binary built on the host from the working
//! tree (`cargo build`); `deploy` runs it in a throwaway container of the very
//! image it deploys, on the environment file that image carries.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bollard::Docker;
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::LogsOptionsBuilder;
use futures::StreamExt as _;
use xshell::{Shell, cmd};

use crate::ops::resources::{self, api};
use crate::vocab::contract::{self, Service};
use crate::vocab::labels;

/// What goes wrong running a service's own command.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("building `{package}` on this machine to run its own commands")]
    Build { package: String, source: xshell::Error },
    #[error(transparent)]
    Contract(#[from] contract::Error),
    #[error("running {}", .binary.display())]
    Run { binary: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Engine(#[from] resources::Error),
    /// The command failed to run in the image (`command` as messages show it).
    #[error("running `{command}` in {image}")]
    InImage { command: String, image: String, source: Box<Error> },
    #[error("it did not finish within 60 s")]
    Timeout,
    #[error("the container vanished")]
    Vanished,
    #[error("reading {path} from the image")]
    Read { path: String, source: std::io::Error },
    /// `instances` printed something other than `one` or `many`.
    #[error("`{command}` should print `one` or `many`; it said (exit {code}):\n  {}", .lines.join("\n  "))]
    Answer { command: String, code: i64, lines: Vec<String> },
}

/// What a service's command said.
#[derive(Debug)]
pub struct Answer {
    pub code: i64,
    pub stdout: String,
    pub stderr: String,
}

impl Answer {
    /// Its output, one escaped problem a line.
    pub fn lines(&self) -> Vec<String> {
        let text = format!("{}\n{}", self.stdout, self.stderr);
        let lines: Vec<String> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(|l| crate::vocab::show::escape(l.strip_prefix("error: ").unwrap_or(l)).into_owned())
            .collect();
        if lines.is_empty() { vec![format!("it exited with code {} and said nothing", self.code)] } else { lines }
    }
}

/// How to show a command of `service` in messages: `hello check-config`.
pub fn describe(service: &Service, args: &[String]) -> String {
    crate::vocab::show::escape(&format!("{} {}", service.bin, args.join(" "))).into_owned()
}

/// Builds the service on the host (debug, as the tests do); returns its
/// binary, for [`native`] to run as often as needed.
pub fn build_native(sh: &Shell, root: &Path, service: &Service) -> Result<PathBuf, Error> {
    let (package, bin) = (&service.package, &service.bin);
    cmd!(sh, "cargo build --quiet --locked -p {package} --bin {bin}")
        .run()
        .map_err(|source| Error::Build { package: package.clone(), source })?;
    let metadata = contract::workspace(root)?;
    Ok(metadata.target_directory.as_std_path().join("debug").join(bin))
}

/// Runs the service's `binary` (from [`build_native`]) with `args` and `file`.
pub fn native(binary: &Path, args: &[String], file: &Path) -> Result<Answer, Error> {
    let output = std::process::Command::new(binary)
        .args(args)
        .arg(file)
        .env_remove(boxcar_secrets::SECRET_KEY)
        .env_remove(boxcar_secrets::SECRET_KEY_FILE)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|source| Error::Run { binary: binary.to_owned(), source })?;
    Ok(Answer {
        code: i64::from(output.status.code().unwrap_or(-1)),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    })
}

/// Runs the service's binary in a container of `image` that is created for
/// this and removed after: the contract's user, read-only, no network, no
/// capability, no key; labelled as `deployment`'s.
pub async fn in_image(
    docker: &Docker,
    image: &str,
    deployment: &str,
    service: &Service,
    args: &[String],
    file: &str,
) -> Result<Answer, Error> {
    let name = format!("{deployment}-check-{:08x}", fastrand::u32(..));
    let mut cmd = args.to_vec();
    cmd.push(file.to_owned());
    let body = ContainerCreateBody {
        image: Some(image.to_owned()),
        cmd: Some(cmd),
        user: Some(format!("{0}:{0}", service.user)),
        network_disabled: Some(true),
        labels: Some(role_labels(deployment, "check")),
        // Without a healthcheck: the image's would only slow the removal.
        healthcheck: Some(bollard::models::HealthConfig { test: Some(vec!["NONE".to_owned()]), ..Default::default() }),
        host_config: Some(resources::hardened(HostConfig {
            memory: Some(128 * 1024 * 1024),
            // The data folder too: the image declares it a volume, and a
            // check needs no volume, not even an anonymous one.
            tmpfs: Some(
                std::iter::once("/tmp")
                    .chain(service.data.as_deref())
                    .map(|path| (path.to_owned(), "rw,noexec,nosuid,size=16m".to_owned()))
                    .collect(),
            ),
            ..HostConfig::default()
        })),
        ..ContainerCreateBody::default()
    };
    let command = describe(service, args);
    docker
        .create_container(
            Some(bollard::query_parameters::CreateContainerOptionsBuilder::default().name(&name).build()),
            body,
        )
        .await
        .map_err(api(format!("creating the container {name} to run `{command}`")))?;
    let result = run_to_end(docker, &name).await;
    resources::remove(docker, &name).await;
    result.map_err(|e| Error::InImage { command, image: image.to_owned(), source: Box::new(e) })
}

/// The labels of a container boxcar runs for `deployment` in `role`.
fn role_labels(deployment: &str, role: &str) -> std::collections::HashMap<String, String> {
    [(labels::DEPLOYMENT.to_owned(), deployment.to_owned()), (labels::ROLE.to_owned(), role.to_owned())].into()
}

/// The files at `paths` (absolute) in `image`, read from a container that is
/// created for this, never started, and removed after; `None` for a path
/// the image does not have.
pub async fn files_in_image(
    docker: &Docker,
    image: &str,
    deployment: &str,
    paths: &[&str],
) -> Result<Vec<Option<Vec<u8>>>, Error> {
    let name = format!("{deployment}-read-{:08x}", fastrand::u32(..));
    let body = ContainerCreateBody {
        image: Some(image.to_owned()),
        network_disabled: Some(true),
        labels: Some(role_labels(deployment, "read")),
        ..ContainerCreateBody::default()
    };
    docker
        .create_container(
            Some(bollard::query_parameters::CreateContainerOptionsBuilder::default().name(&name).build()),
            body,
        )
        .await
        .map_err(api(format!("creating the container {name} to read files of {image}")))?;
    let mut out = Vec::new();
    let mut result = Ok(());
    for path in paths {
        match read_from(docker, &name, path).await {
            Ok(file) => out.push(file),
            Err(e) => {
                result = Err(e);
                break;
            }
        }
    }
    resources::remove(docker, &name).await;
    result.map(|()| out)
}

/// One file of a created container, through the archive API.
async fn read_from(docker: &Docker, container: &str, path: &str) -> Result<Option<Vec<u8>>, Error> {
    let options = bollard::query_parameters::DownloadFromContainerOptionsBuilder::default().path(path).build();
    let mut stream = docker.download_from_container(container, Some(options));
    let mut archive = Vec::new();
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(bytes) => archive.extend_from_slice(&bytes),
            Err(e) if crate::adapters::engine::is_not_found(&e) => return Ok(None),
            Err(e) => return Err(api(format!("reading {path} from the image"))(e).into()),
        }
    }
    let read = |source| Error::Read { path: path.to_owned(), source };
    let mut tar = tar::Archive::new(&archive[..]);
    for entry in tar.entries().map_err(read)? {
        let mut entry = entry.map_err(read)?;
        if entry.header().entry_type().is_file() {
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut data).map_err(read)?;
            return Ok(Some(data));
        }
    }
    Ok(None)
}

async fn run_to_end(docker: &Docker, name: &str) -> Result<Answer, Error> {
    docker
        .start_container(name, None::<bollard::query_parameters::StartContainerOptions>)
        .await
        .map_err(api(format!("starting the container {name}")))?;
    let mut wait = docker.wait_container(name, None::<bollard::query_parameters::WaitContainerOptions>);
    let code = match tokio::time::timeout(Duration::from_secs(60), wait.next()).await {
        Err(_) => return Err(Error::Timeout),
        Ok(Some(Ok(r))) => r.status_code,
        // bollard reports a non-zero exit as an error carrying the code.
        Ok(Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. }))) => code,
        Ok(Some(Err(e))) => return Err(api(format!("waiting for the container {name}"))(e).into()),
        Ok(None) => return Err(Error::Vanished),
    };
    let mut logs = docker.logs(name, Some(LogsOptionsBuilder::default().stdout(true).stderr(true).build()));
    let (mut stdout, mut stderr) = (String::new(), String::new());
    while let Some(item) = logs.next().await {
        match item.map_err(api(format!("reading the output of the container {name}")))? {
            bollard::container::LogOutput::StdErr { message } => stderr.push_str(&String::from_utf8_lossy(&message)),
            other => stdout.push_str(&String::from_utf8_lossy(&other.into_bytes())),
        }
    }
    Ok(Answer { code, stdout, stderr })
}

/// The service's answer to `instances`: true for `many`.
pub fn many_from(service: &Service, args: &[String], answer: &Answer) -> Result<bool, Error> {
    match (answer.code, answer.stdout.trim()) {
        (0, "many") => Ok(true),
        (0, "one") => Ok(false),
        _ => Err(Error::Answer { command: describe(service, args), code: answer.code, lines: answer.lines() }),
    }
}
