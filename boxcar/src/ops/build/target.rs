//! The target volume a build compiles in: the checkout's own, and the lock
//! that has builds on one volume take turns.

use std::path::Path;

use super::error::{Result, on_engine};
use bollard::Docker;
use bollard::models::VolumeCreateRequest;
use sha2::{Digest as _, Sha256};

/// The label a target volume carries: the workspace it was made for.
const WORKSPACE_LABEL: &str = "boxcar.workspace";

/// The target volume for the workspace at `root`: its own, named by a hash
/// of the workspace's path, as cargo gives each checkout its own `target/`,
/// so builds of different checkouts neither wait for each other nor replace
/// each other's compiled crates. `BOXCAR_TARGET_VOLUME` names another:
/// checkouts given the same one share it and take turns (the image
/// benchmark measures cold builds on a volume of its own with it).
pub fn target_volume(root: &Path) -> String {
    volume_for(root, std::env::var("BOXCAR_TARGET_VOLUME").ok())
}

fn volume_for(root: &Path, named: Option<String>) -> String {
    if let Some(named) = named.filter(|v| !v.is_empty()) {
        return named;
    }
    let path = root.canonicalize().unwrap_or_else(|_| root.to_owned());
    let hash = Sha256::digest(path.as_os_str().as_encoded_bytes());
    format!("boxcar-target-{}", &hex::encode(hash)[..12])
}

/// The lock a build holds on its target volume (in the temporary folder):
/// one build at a time per volume, since cargo's own lock on a target
/// folder does not reach across build containers that each start it anew.
pub(super) fn build_lock(volume: &str) -> String {
    format!("boxcar-build-{volume}.lock")
}

/// Makes the target volume, labelled with the workspace it is for, so that
/// `docker volume ls --filter label=boxcar.workspace` shows whose it is.
pub(super) async fn create_target_volume(docker: &Docker, volume: &str, root: &Path) -> Result<()> {
    let labels = [(WORKSPACE_LABEL.to_owned(), root.display().to_string())].into();
    let request = VolumeCreateRequest { name: Some(volume.to_owned()), labels: Some(labels), ..Default::default() };
    docker.create_volume(request).await.map_err(on_engine(format!("creating the target volume {volume}")))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_checkout_has_its_own_target_volume_and_lock() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (va, vb) = (volume_for(a.path(), None), volume_for(b.path(), None));
        assert_ne!(va, vb);
        assert_eq!(va, volume_for(a.path(), Some(String::new())), "the same checkout, the same volume");
        // The same folder by another path is the same checkout.
        std::fs::create_dir(a.path().join("x")).unwrap();
        assert_eq!(va, volume_for(&a.path().join("x/.."), None));
        for v in [&va, &vb] {
            assert!(v.starts_with("boxcar-target-") && v.len() == "boxcar-target-".len() + 12, "{v}");
        }
        assert_ne!(build_lock(&va), build_lock(&vb));
        assert_eq!(build_lock("shared"), "boxcar-build-shared.lock");
        let shared = || Some("shared".to_owned());
        assert_eq!(
            (volume_for(a.path(), shared()), volume_for(b.path(), shared())),
            ("shared".into(), "shared".into())
        );
    }
}
