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

use anyhow::{Context as _, bail};
use bollard::Docker;
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{CreateContainerOptionsBuilder, LogsOptionsBuilder, RemoveContainerOptionsBuilder};
use futures::StreamExt as _;
use xshell::{Shell, cmd};

use crate::vocab::contract::Service;
use crate::vocab::plan::{LABEL_DEPLOYMENT, LABEL_ROLE};

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
pub fn build_native(sh: &Shell, root: &Path, service: &Service) -> anyhow::Result<PathBuf> {
    let (package, bin) = (&service.package, &service.bin);
    cmd!(sh, "cargo build --quiet --locked -p {package} --bin {bin}")
        .run()
        .with_context(|| format!("building `{package}` on this machine to run its own commands"))?;
    let metadata = crate::vocab::contract::workspace(root)?;
    Ok(metadata.target_directory.as_std_path().join("debug").join(bin))
}

/// Runs the service's `binary` (from [`build_native`]) with `args` and `file`.
pub fn native(binary: &Path, args: &[String], file: &Path) -> anyhow::Result<Answer> {
    let output = std::process::Command::new(binary)
        .args(args)
        .arg(file)
        .env_remove(boxcar_secrets::SECRET_KEY)
        .env_remove(boxcar_secrets::SECRET_KEY_FILE)
        .stdin(std::process::Stdio::null())
        .output()
        .with_context(|| format!("running {}", binary.display()))?;
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
) -> anyhow::Result<Answer> {
    let name = format!("{deployment}-check-{:08x}", fastrand::u32(..));
    let mut cmd = args.to_vec();
    cmd.push(file.to_owned());
    let body = ContainerCreateBody {
        image: Some(image.to_owned()),
        cmd: Some(cmd),
        user: Some(format!("{0}:{0}", service.user)),
        network_disabled: Some(true),
        labels: Some(
            [(LABEL_DEPLOYMENT.to_owned(), deployment.to_owned()), (LABEL_ROLE.to_owned(), "check".to_owned())].into(),
        ),
        // Without a healthcheck: the image's would only slow the removal.
        healthcheck: Some(bollard::models::HealthConfig { test: Some(vec!["NONE".to_owned()]), ..Default::default() }),
        host_config: Some(HostConfig {
            readonly_rootfs: Some(true),
            cap_drop: Some(vec!["ALL".to_owned()]),
            security_opt: Some(vec!["no-new-privileges".to_owned()]),
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
        }),
        ..ContainerCreateBody::default()
    };
    docker
        .create_container(Some(CreateContainerOptionsBuilder::default().name(&name).build()), body)
        .await
        .with_context(|| format!("creating the container {name} to run `{}`", describe(service, args)))?;
    let result = run_to_end(docker, &name).await;
    // `v`: an anonymous volume, should the image declare one the contract does not name.
    let _ = docker
        .remove_container(&name, Some(RemoveContainerOptionsBuilder::default().force(true).v(true).build()))
        .await;
    result.with_context(|| format!("running `{}` in {image}", describe(service, args)))
}

/// The files at `paths` (absolute) in `image`, read from a container that is
/// created for this, never started, and removed after; `None` for a path
/// the image does not have.
pub async fn files_in_image(
    docker: &Docker,
    image: &str,
    deployment: &str,
    paths: &[&str],
) -> anyhow::Result<Vec<Option<Vec<u8>>>> {
    let name = format!("{deployment}-read-{:08x}", fastrand::u32(..));
    let body = ContainerCreateBody {
        image: Some(image.to_owned()),
        network_disabled: Some(true),
        labels: Some(
            [(LABEL_DEPLOYMENT.to_owned(), deployment.to_owned()), (LABEL_ROLE.to_owned(), "read".to_owned())].into(),
        ),
        ..ContainerCreateBody::default()
    };
    docker
        .create_container(Some(CreateContainerOptionsBuilder::default().name(&name).build()), body)
        .await
        .with_context(|| format!("creating the container {name} to read files of {image}"))?;
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
    let _ = docker
        .remove_container(&name, Some(RemoveContainerOptionsBuilder::default().force(true).v(true).build()))
        .await;
    result.map(|()| out)
}

/// One file of a created container, through the archive API.
async fn read_from(docker: &Docker, container: &str, path: &str) -> anyhow::Result<Option<Vec<u8>>> {
    let options = bollard::query_parameters::DownloadFromContainerOptionsBuilder::default().path(path).build();
    let mut stream = docker.download_from_container(container, Some(options));
    let mut archive = Vec::new();
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(bytes) => archive.extend_from_slice(&bytes),
            Err(e) if crate::adapters::engine::is_not_found(&e) => return Ok(None),
            Err(e) => return Err(anyhow::Error::new(e).context(format!("reading {path} from the image"))),
        }
    }
    let mut tar = tar::Archive::new(&archive[..]);
    for entry in tar.entries().with_context(|| format!("reading {path} from the image"))? {
        let mut entry = entry?;
        if entry.header().entry_type().is_file() {
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut data)?;
            return Ok(Some(data));
        }
    }
    Ok(None)
}

async fn run_to_end(docker: &Docker, name: &str) -> anyhow::Result<Answer> {
    docker.start_container(name, None::<bollard::query_parameters::StartContainerOptions>).await?;
    let mut wait = docker.wait_container(name, None::<bollard::query_parameters::WaitContainerOptions>);
    let code = match tokio::time::timeout(Duration::from_secs(60), wait.next()).await {
        Err(_) => bail!("it did not finish within 60 s"),
        Ok(Some(Ok(r))) => r.status_code,
        // bollard reports a non-zero exit as an error carrying the code.
        Ok(Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. }))) => code,
        Ok(Some(Err(e))) => return Err(e.into()),
        Ok(None) => bail!("the container vanished"),
    };
    let mut logs = docker.logs(name, Some(LogsOptionsBuilder::default().stdout(true).stderr(true).build()));
    let (mut stdout, mut stderr) = (String::new(), String::new());
    while let Some(item) = logs.next().await {
        match item? {
            bollard::container::LogOutput::StdErr { message } => stderr.push_str(&String::from_utf8_lossy(&message)),
            other => stdout.push_str(&String::from_utf8_lossy(&other.into_bytes())),
        }
    }
    Ok(Answer { code, stdout, stderr })
}

/// The service's answer to `instances`: true for `many`.
pub fn many_from(service: &Service, args: &[String], answer: &Answer) -> anyhow::Result<bool> {
    match (answer.code, answer.stdout.trim()) {
        (0, "many") => Ok(true),
        (0, "one") => Ok(false),
        _ => bail!(
            "`{}` should print `one` or `many`; it said (exit {}):\n  {}",
            describe(service, args),
            answer.code,
            answer.lines().join("\n  ")
        ),
    }
}
