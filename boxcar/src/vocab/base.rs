//! The builders' Debian base: its release, the packages every builder needs
//! (in the base itself when boxcar bootstraps it, so the builder's own step
//! finds them installed), and where a bootstrap made ahead of time, while the
//! engine commands compile (`cli::handover`), waits to be imported.

use std::path::PathBuf;
use std::time::Duration;

use sha2::{Digest as _, Sha256};

/// The Debian release every builder runs.
pub const SUITE: &str = "bookworm";

/// What every builder installs on the base: the C toolchain and musl for the
/// static target, mold (the fast profile's linker), and what fetches rustup.
pub const PACKAGES: &[&str] = &["ca-certificates", "curl", "gcc", "libc6-dev", "mold", "musl-tools"];

/// How long a bootstrap made ahead may wait: Debian's archive moves on, and
/// one left by a run that failed before its import is not taken days later.
pub const MADE_AHEAD_FOR: Duration = Duration::from_secs(24 * 60 * 60);

/// Where a bootstrap made ahead waits (root's folder): named by the release
/// and the package list, so a base of another list is never taken for it.
pub fn made_ahead_path() -> PathBuf {
    let list = PACKAGES.join(" ");
    let hash = hex::encode(&Sha256::digest(format!("{SUITE}\n{list}"))[..6]);
    PathBuf::from("/var/cache/boxcar").join(format!("debian-{SUITE}-{hash}.tar"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_made_ahead_bootstrap_is_named_by_release_and_packages() {
        let path = super::made_ahead_path();
        let name = path.file_name().unwrap().to_str().unwrap();
        assert!(name.starts_with("debian-bookworm-") && name.ends_with(".tar"), "{name}");
        assert_eq!(name.len(), "debian-bookworm-".len() + 12 + ".tar".len());
        assert_eq!(path.parent().unwrap(), std::path::Path::new("/var/cache/boxcar"));
    }
}
