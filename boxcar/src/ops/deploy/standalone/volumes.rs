//! The volumes of a standalone deployment: made with its labels and refused
//! when boxcar did not make them (`ensure_volume`), the key file written into
//! one and the data copied into a new one through a loader container that is
//! never started (`fill_key_volume`, `copy_data`, `with_loader`), and the
//! ones a deploy no longer needs removed.

use std::collections::HashMap;

use bollard::Docker;
use bollard::models::{ContainerCreateBody, HostConfig, Mount, MountType, VolumeCreateRequest};
use bollard::query_parameters::{
    DownloadFromContainerOptionsBuilder, ListVolumesOptionsBuilder, UploadToContainerOptionsBuilder,
};
use futures::StreamExt as _;

use crate::adapters::engine::is_not_found;
use crate::ops::deploy::Error;
use crate::ops::resources::{self, api, engine_message, remove};
use crate::vocab::labels::{DEPLOYMENT as LABEL_DEPLOYMENT, KEY_ID as LABEL_KEY_ID, ROLE as LABEL_ROLE};
use crate::vocab::layout::{VOLUME_KEY_DIR, VOLUME_KEY_FILE_NAME};
use crate::vocab::plan::{Plan, filters};

/// Copies the data folder `path` of the (stopped) container `from` into
/// `volume` through the archive API: out of one container, into a loader
/// container that mounts the new volume and is never started. Returns the
/// archive's size.
pub(super) async fn copy_data(
    docker: &Docker,
    plan: &Plan,
    from: &str,
    path: &str,
    volume: &str,
) -> Result<usize, Error> {
    let options = DownloadFromContainerOptionsBuilder::default().path(path).build();
    let mut stream = docker.download_from_container(from, Some(options));
    let mut archive = Vec::new();
    while let Some(chunk) = stream.next().await {
        archive.extend_from_slice(&chunk.map_err(api(format!("copying {path} out of {from}")))?);
    }
    let size = archive.len();
    // The archive's entries are `<last part of path>/...`: unpacked in the
    // folder above, they land in the new volume mounted at `path`, owners
    // and modes kept.
    let parent = std::path::Path::new(path).parent().and_then(|p| p.to_str()).unwrap_or("/").to_owned();
    with_loader(docker, plan, volume, path, |loader| async move {
        let options = UploadToContainerOptionsBuilder::default().path(&parent).build();
        docker
            .upload_to_container(&loader, Some(options), bollard::body_full(archive.into()))
            .await
            .map_err(|e| Error::CopyData { volume: volume.to_owned(), message: engine_message(&e) })
    })
    .await??;
    Ok(size)
}

/// Runs `f` with a loader container: made from the deployment's image, never
/// started, no network, `volume` mounted read-write at `target`.
/// The outer error is about the loader itself, the inner one is `f`'s.
async fn with_loader<F, Fut>(
    docker: &Docker,
    plan: &Plan,
    volume: &str,
    target: &str,
    f: F,
) -> Result<Result<(), Error>, resources::Error>
where
    F: FnOnce(String) -> Fut,
    Fut: std::future::Future<Output = Result<(), Error>>,
{
    let loader = format!("{}-load-{:08x}", plan.name, fastrand::u32(..));
    let body = ContainerCreateBody {
        image: Some(plan.image.clone()),
        labels: Some(plan.labels("loader")),
        network_disabled: Some(true),
        host_config: Some(HostConfig {
            mounts: Some(vec![Mount {
                typ: Some(MountType::VOLUME),
                source: Some(volume.to_owned()),
                target: Some(target.to_owned()),
                ..Mount::default()
            }]),
            ..HostConfig::default()
        }),
        ..ContainerCreateBody::default()
    };
    resources::create(docker, &loader, body).await?;
    let result = f(loader.clone()).await;
    remove(docker, &loader).await;
    Ok(result)
}

/// Creates a labelled volume unless it exists; true when it was created.
pub(super) async fn ensure_volume(
    docker: &Docker,
    plan: &Plan,
    volume: &str,
    role: &str,
) -> Result<bool, resources::Error> {
    match docker.inspect_volume(volume).await {
        Ok(v) => {
            if v.labels.get(LABEL_DEPLOYMENT).map(String::as_str) != Some(plan.name.as_str()) {
                return Err(resources::Error::NotOurs { kind: "volume", name: volume.to_owned() });
            }
            Ok(false)
        }
        Err(e) if is_not_found(&e) => {
            let request = VolumeCreateRequest {
                name: Some(volume.to_owned()),
                labels: Some(plan.labels(role)),
                ..VolumeCreateRequest::default()
            };
            docker.create_volume(request).await.map_err(api(format!("creating the volume {volume}")))?;
            Ok(true)
        }
        Err(e) => Err(api(format!("inspecting the volume {volume}"))(e)),
    }
}

/// Puts the key file into the volume `<name>-key-<key id>` (owned by the service's user,
/// mode 0400) through a container that is created and never started: the
/// engine's archive upload is the one way to write a file there that works on
/// a remote engine too. The volume keeps the key across restarts and reboots,
/// as the restart policy needs; it lives under the engine's data directory,
/// readable by root only. The outer error is about the volume or the loader,
/// the inner one says why the engine did not take the file.
pub(super) async fn fill_key_volume(
    docker: &Docker,
    plan: &Plan,
    created: &mut Vec<String>,
) -> Result<Result<String, Error>, resources::Error> {
    let volume = plan.key_resource();
    if ensure_volume(docker, plan, &volume, "key").await? {
        created.push(volume.clone());
    }
    let shown = volume.clone();
    let upload = with_loader(docker, plan, &volume, VOLUME_KEY_DIR, |loader| async move {
        // Room for the whole archive up front (one 512-byte header, one data
        // block, the end marker), so no reallocation leaves a copy behind.
        let mut archive = tar::Builder::new(Vec::with_capacity(4096));
        let bytes = plan.key_file_bytes();
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o400);
        header.set_uid(u64::from(plan.service.user));
        header.set_gid(u64::from(plan.service.user));
        header.set_mtime(0);
        let packing = |source| Error::PackKey { source };
        archive.append_data(&mut header, VOLUME_KEY_FILE_NAME, &bytes[..]).map_err(packing)?;
        // Moved, not copied, into the request body: bollard takes ownership
        // and cannot wipe it, so a wiped copy here would only add one more.
        let tar = archive.into_inner().map_err(packing)?;
        let options = UploadToContainerOptionsBuilder::default().path(VOLUME_KEY_DIR).build();
        docker
            .upload_to_container(&loader, Some(options), bollard::body_full(tar.into()))
            .await
            .map_err(|e| Error::WriteKey { volume: shown, message: engine_message(&e) })
    })
    .await?;
    Ok(upload.map(|()| volume))
}

/// Removes volumes on a path that already reports something: failures are
/// warnings.
pub(super) async fn remove_volumes(docker: &Docker, volumes: &[String]) {
    for v in volumes {
        if let Err(e) = docker.remove_volume(v, None::<bollard::query_parameters::RemoveVolumeOptions>).await {
            eprintln!("warning: could not remove the volume {v}: {e}");
        }
    }
}

/// Removes this deployment's key volumes other than `keep`.
pub(super) async fn prune_key_volumes(docker: &Docker, name: &str, keep: Option<&str>) {
    for v in volumes(docker, name).await.unwrap_or_default() {
        if v.labels.get(LABEL_ROLE).map(String::as_str) == Some("key") && Some(v.name.as_str()) != keep {
            match docker.remove_volume(&v.name, None::<bollard::query_parameters::RemoveVolumeOptions>).await {
                Ok(()) => eprintln!("removed the key volume {} (key id {})", v.name, label_or(&v.labels, LABEL_KEY_ID)),
                Err(e) => eprintln!("warning: could not remove the old key volume {}: {e}", v.name),
            }
        }
    }
}

fn label_or<'a>(labels: &'a HashMap<String, String>, key: &str) -> &'a str {
    labels.get(key).map(String::as_str).unwrap_or("?")
}

/// The deployment's volumes (key, data), found by its label.
pub(super) async fn volumes(docker: &Docker, name: &str) -> Result<Vec<bollard::models::Volume>, resources::Error> {
    let options = ListVolumesOptionsBuilder::default().filters(&filters(name)).build();
    let list = docker.list_volumes(Some(options)).await.map_err(api("listing volumes"))?;
    Ok(list.volumes.unwrap_or_default())
}
