//! Where things are in a runner image and in its running container, defined
//! here and nowhere else: the paths the image assembly fills (which a
//! contract's extra files and data folder may not take: the contract's check
//! and the assembly read the same list, and a test of the assembly holds it
//! to this list), the variables boxcar sets, the CA bundle, and where a
//! deployment mounts the key.

/// `/usr/local/bin`, written once for the paths below.
macro_rules! bin_dir {
    () => {
        "/usr/local/bin"
    };
}

/// `/run/secrets`, written once for the paths below.
macro_rules! secrets_dir {
    () => {
        "/run/secrets"
    };
}

/// Where Debian keeps its CA bundle: on the host (`image --push` trusts it),
/// in the builder (the runner image's copy comes from there), and where the
/// runner image carries it.
pub(crate) const CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";
/// The folder of the service's binary (and the probe): the image's PATH.
pub(crate) const BIN_DIR: &str = bin_dir!();
/// Where the probe lives in the image, when the service has no check command.
pub(crate) const PROBE_PATH: &str = concat!(bin_dir!(), "/boxcar-probe");
/// The image's users and groups: root and the service's numeric user.
pub(crate) const PASSWD: &str = "/etc/passwd";
pub(crate) const GROUP: &str = "/etc/group";
/// The service user's home folder.
pub(crate) const HOME: &str = "/home/nonroot";
/// The writable temporary folder (mode 1777).
pub(crate) const TMP: &str = "/tmp";
/// Where the image holds the environment files (the secrets library's convention).
pub(crate) const CONFIG_DIR: &str = boxcar_secrets::IMAGE_CONFIG_DIR;
/// The run-time contract the image was built with (the secrets library's convention).
pub(crate) const SERVICE_FILE: &str = boxcar_secrets::IMAGE_SERVICE_FILE;

/// Files and folders (ending in `/`) the assembly fills: a contract's extra
/// file may not go there.
pub(crate) const FILLED: &[&str] = &[PASSWD, GROUP, "/etc/boxcar/", concat!(bin_dir!(), "/"), "/etc/ssl/", "/tmp/"];

/// Folders the image or the kernel fills, which a data volume must not hide.
pub(crate) const SYSTEM_FOLDERS: &[&str] =
    &[TMP, "/etc", "/usr", "/proc", "/sys", "/dev", "/run", "/bin", "/sbin", "/lib", "/home"];

/// Whether an extra file at `path` would land where the assembly writes, or
/// inside the service's `data` folder (a volume hides it).
pub(crate) fn is_filled(path: &str, data: Option<&str>) -> bool {
    FILLED.iter().any(|f| if f.ends_with('/') { path.starts_with(f) } else { path == *f })
        || data.is_some_and(|d| path.starts_with(&format!("{d}/")))
}

/// Variables the image sets for `PATH` and the CA bundle.
pub(crate) const PATH_VAR: &str = "PATH";
pub(crate) const CA_BUNDLE_VAR: &str = "SSL_CERT_FILE";

/// Variables boxcar sets itself (the image, or a deployment for the key and
/// the environment); a contract cannot set them.
pub(crate) const RESERVED_ENV: &[&str] =
    &[PATH_VAR, CA_BUNDLE_VAR, boxcar_secrets::SECRET_KEY, boxcar_secrets::SECRET_KEY_FILE, boxcar_secrets::DEPLOY_ENV];

/// The folder a Swarm secret or a Kubernetes Secret is mounted in.
pub(crate) const SECRETS_DIR: &str = secrets_dir!();
/// The key's file name inside it (and the Secret's key).
pub(crate) const KEY_FILE_NAME: &str = "boxcar-key";
/// Where the Swarm secret (or Kubernetes Secret) with the key is mounted as a file.
pub(crate) const SWARM_KEY_FILE: &str = concat!(secrets_dir!(), "/boxcar-key");
/// On a standalone engine the key lives in its own volume, mounted read-only here.
pub(crate) const VOLUME_KEY_DIR: &str = concat!(secrets_dir!(), "/boxcar");
/// The key's file in that volume.
pub(crate) const VOLUME_KEY_FILE: &str = concat!(secrets_dir!(), "/boxcar/key");
/// Its name.
pub(crate) const VOLUME_KEY_FILE_NAME: &str = "key";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_file_is_in_the_secrets_folder() {
        assert_eq!(SWARM_KEY_FILE, format!("{SECRETS_DIR}/{KEY_FILE_NAME}"));
        assert!(VOLUME_KEY_DIR.starts_with(SECRETS_DIR));
        assert_eq!(VOLUME_KEY_FILE, format!("{VOLUME_KEY_DIR}/{VOLUME_KEY_FILE_NAME}"));
        assert!(PROBE_PATH.starts_with(BIN_DIR));
    }

    #[test]
    fn filled_paths() {
        assert!(is_filled("/etc/passwd", None));
        assert!(!is_filled("/etc/passwd2", None));
        assert!(is_filled("/usr/local/bin/x", None));
        assert!(is_filled("/etc/boxcar/deploy-config/x.toml", None));
        assert!(!is_filled("/usr/share/x", None));
        assert!(is_filled("/var/lib/svc/x", Some("/var/lib/svc")));
        assert!(!is_filled("/var/lib/svcx", Some("/var/lib/svc")));
    }
}
