//! A service's own command run in a throwaway container of its image, as
//! `deploy` runs it: the contract's user, read-only, no network, no
//! capability, no key.

use std::time::Duration;

use bollard::Docker;
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::LogsOptionsBuilder;
use futures::StreamExt as _;

use super::{Answer, Error, describe};
use crate::ops::resources::{self, api};
use crate::vocab::contract::Service;
use crate::vocab::labels;

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
