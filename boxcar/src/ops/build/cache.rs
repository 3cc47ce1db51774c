//! Where compiled binaries are kept between builds (`target/boxcar-image/`),
//! so a build whose sources did not change compiles nothing.

use std::path::{Path, PathBuf};

use sha2::Digest as _;

use super::error::{Result, on_file};

/// What a cache key adds for binaries compiled together: a hash of the set
/// of `(package, bin)`, in any order.
pub(super) fn set_key(mut set: Vec<(&str, &str)>) -> String {
    set.sort_unstable();
    set.dedup();
    let text: String = set.iter().map(|(p, b)| format!("{p}/{b}\n")).collect();
    format!("-with-{}", &hex::encode(sha2::Sha256::digest(text.as_bytes()))[..8])
}

/// Where a compiled binary is kept in `target/boxcar-image/`: by binary,
/// profile, builder and source hash, with the builder's CA bundle beside it.
pub(super) struct Cache {
    dir: PathBuf,
    /// What every cached binary of this binary, profile and builder starts with.
    prefix: String,
    bin: PathBuf,
    ca: PathBuf,
}

impl Cache {
    /// The place of binary `bin` built by `builder` with sources and set
    /// `key`, in a profile that says its name (`None`: release binaries keep
    /// the name they always had).
    pub(super) fn of(root: &Path, builder: &str, bin: &str, profile: Option<&str>, key: &str) -> Cache {
        let dir = root.join("target/boxcar-image");
        let builder_id = builder.rsplit(':').next().unwrap_or(builder);
        let prefix = match profile {
            None => format!("{bin}-{builder_id}-"),
            Some(profile) => format!("{bin}-{profile}-{builder_id}-"),
        };
        let (bin, ca) = (dir.join(format!("{prefix}{key}")), dir.join(format!("ca-{builder_id}.crt")));
        Cache { dir, prefix, bin, ca }
    }

    pub(super) fn read(&self) -> Option<(Vec<u8>, Vec<u8>)> {
        Some((std::fs::read(&self.bin).ok()?, std::fs::read(&self.ca).ok()?))
    }

    /// Keeps `binary` as the one cached binary of its kind (the newest), and the CA bundle.
    pub(super) fn write(&self, binary: &[u8], ca_bundle: &[u8]) -> Result<()> {
        std::fs::create_dir_all(&self.dir).map_err(on_file(format!("creating {}", self.dir.display())))?;
        if let Ok(entries) = std::fs::read_dir(&self.dir) {
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().starts_with(&self.prefix) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        boxcar_secrets::write_atomic(&self.bin, binary, Some(0o755))
            .map_err(on_file(format!("writing {}", self.bin.display())))?;
        boxcar_secrets::write_atomic(&self.ca, ca_bundle, Some(0o644))
            .map_err(on_file(format!("writing {}", self.ca.display())))?;
        Ok(())
    }
}
