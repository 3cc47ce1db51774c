//! The first build on a machine: a `cargo fetch` on the host while the
//! builder image is made, and the crates it leaves in the host's cargo cache
//! copied into the builder's new registry volume, so the builder downloads
//! none the host has.

use std::path::{Path, PathBuf};

use bollard::Docker;
use sha2::{Digest as _, Sha256};

use super::base::{TARGET, registry_volume};
use super::error::{Error, Result, on_file};

/// Where the registry volume is in the builder (its `CARGO_HOME` is
/// `/usr/local/cargo`), as a path in a tar unpacked at `/`.
const REGISTRY_IN_BUILDER: &str = "usr/local/cargo/registry";
/// `source` of a crate from crates.io in Cargo.lock.
const CRATES_IO: &str = "registry+https://github.com/rust-lang/crates.io-index";
/// A `cargo fetch` on the host, started when the builder's registry volume
/// does not exist yet (a first build here), while the builder image is made:
/// the crates it leaves in the host's cargo cache seed the new volume, so the
/// builder downloads none that the host has.
#[derive(Debug)]
pub struct Prefetch(std::thread::JoinHandle<Result<(), String>>);

impl Prefetch {
    /// Starts the fetch when the registry volume is missing.
    pub async fn start(docker: &Docker, root: &Path) -> Option<Prefetch> {
        if docker.inspect_volume(&registry_volume()).await.is_ok() {
            return None;
        }
        eprintln!("first build here: fetching the locked crates on the host meanwhile, to seed the builder's registry");
        let root = root.to_owned();
        Some(Prefetch(std::thread::spawn(move || {
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let out = std::process::Command::new(cargo)
                .args(["fetch", "--locked", "--quiet", "--target", TARGET])
                .current_dir(&root)
                .stdin(std::process::Stdio::null())
                .output()
                .map_err(|e| format!("cannot run cargo: {e}"))?;
            match out.status.success() {
                true => Ok(()),
                false => Err(String::from_utf8_lossy(&out.stderr).trim().to_owned()),
            }
        })))
    }

    /// Waits for the fetch, then gathers the seed. Neither can fail the
    /// build: without a seed, the builder downloads what it needs.
    pub(super) async fn seed(self, root: &Path) -> Option<Seed> {
        match tokio::task::spawn_blocking(move || self.0.join()).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(why))) => eprintln!(
                "note: `cargo fetch` on the host failed; the builder downloads what the host lacks: {}",
                crate::vocab::show::escape(&why)
            ),
            _ => eprintln!("note: `cargo fetch` on the host did not finish; the builder downloads what the host lacks"),
        }
        let home = match std::env::var_os("CARGO_HOME") {
            Some(home) => PathBuf::from(home),
            None => PathBuf::from(std::env::var_os("HOME")?).join(".cargo"),
        };
        nonempty_seed(root, &home)
    }
}

/// The seed from `cargo_home`, if it holds any crate; a note otherwise.
fn nonempty_seed(root: &Path, cargo_home: &Path) -> Option<Seed> {
    match seed(root, cargo_home) {
        Ok(seed) => Some(seed).filter(|s| s.crates > 0),
        Err(e) => {
            eprintln!("note: no seed from the host's cargo cache ({e:#}); the builder downloads every crate");
            None
        }
    }
}

/// Crate archives and their index entries for the builder's registry volume.
pub(super) struct Seed {
    /// Unpacked at `/` in the build container.
    pub(super) tar: Vec<u8>,
    pub(super) crates: usize,
}

/// Every crates.io package of `root`'s Cargo.lock that the cargo cache at
/// `cargo_home` holds with the checksum the lock file pins (a partial or
/// foreign file is left out: the builder downloads that one), with the
/// sparse index's cached entries for them, at the paths cargo in the
/// builder reads them from.
///
/// By hand rather than with a crate: the layout is cargo's own (the same
/// cargo version on both sides, pinned by the toolchain file), and an entry
/// cargo does not find where it looks only costs a download.
fn seed(root: &Path, cargo_home: &Path) -> Result<Seed> {
    let lock = root.join("Cargo.lock");
    let text = std::fs::read_to_string(&lock).map_err(on_file(format!("reading {}", lock.display())))?;
    let table: toml::Table =
        text.parse().map_err(|source| Error::LockFile { path: lock.display().to_string(), source })?;
    let packages = table.get("package").and_then(toml::Value::as_array).map(Vec::as_slice).unwrap_or_default();
    let str_of = |p: &toml::Value, key: &str| p.get(key).and_then(toml::Value::as_str).map(ToOwned::to_owned);
    let mut tar = tar::Builder::new(Vec::new());
    let mut append = |path: String, data: &[u8]| {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        header.set_cksum();
        tar.append_data(&mut header, path, data)
    };
    let mut crates = 0;
    let caches = std::fs::read_dir(cargo_home.join("registry/cache"))
        .map_err(on_file(format!("reading {}", cargo_home.join("registry/cache").display())))?;
    for cache in caches.flatten() {
        let dir = cache.file_name().to_string_lossy().into_owned();
        if !dir.starts_with("index.crates.io-") {
            continue;
        }
        let index = cargo_home.join("registry/index").join(&dir);
        if let Ok(config) = std::fs::read(index.join("config.json")) {
            append(format!("{REGISTRY_IN_BUILDER}/index/{dir}/config.json"), &config)?;
        }
        for package in packages {
            let (Some(name), Some(version), Some(source), Some(checksum)) = (
                str_of(package, "name"),
                str_of(package, "version"),
                str_of(package, "source"),
                str_of(package, "checksum"),
            ) else {
                continue;
            };
            if source != CRATES_IO {
                continue;
            }
            let file = format!("{name}-{version}.crate");
            let Ok(data) = std::fs::read(cache.path().join(&file)) else { continue };
            if hex::encode(Sha256::digest(&data)) != checksum {
                continue;
            }
            append(format!("{REGISTRY_IN_BUILDER}/cache/{dir}/{file}"), &data)?;
            crates += 1;
            let entry = index_path(&name);
            if let Ok(data) = std::fs::read(index.join(".cache").join(&entry)) {
                append(format!("{REGISTRY_IN_BUILDER}/index/{dir}/.cache/{entry}"), &data)?;
            }
        }
    }
    Ok(Seed { tar: tar.into_inner()?, crates })
}

/// Where a crate's entry lies in a crates.io index (the layout the index
/// itself documents: `1/a`, `2/ab`, `3/a/abc`, `ab/cd/abcd…`).
fn index_path(name: &str) -> String {
    let name = name.to_lowercase();
    match name.len() {
        1 => format!("1/{name}"),
        2 => format!("2/{name}"),
        3 => format!("3/{}/{name}", &name[..1]),
        _ => format!("{}/{}/{name}", &name[..2], &name[2..4]),
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read as _;

    use super::*;

    #[test]
    fn the_seed_holds_the_locked_crates_the_host_has_with_their_checksums() {
        let dir = tempfile::tempdir().unwrap();
        let (root, home) = (dir.path().join("ws"), dir.path().join("cargo"));
        let registry = "index.crates.io-1949cf8c6b5b557f";
        let cache = home.join("registry/cache").join(registry);
        let index = home.join("registry/index").join(registry);
        for d in [&root, &cache, &index.join(".cache/se/rd"), &index.join(".cache/3/a")] {
            std::fs::create_dir_all(d).unwrap();
        }
        // Another registry's cache is not crates.io's: left alone.
        std::fs::create_dir_all(home.join("registry/cache/other-0123")).unwrap();
        std::fs::write(home.join("registry/cache/other-0123/serde-1.0.0.crate"), b"x").unwrap();
        std::fs::write(index.join("config.json"), b"{}").unwrap();
        let sum = |data: &[u8]| hex::encode(Sha256::digest(data));
        std::fs::write(cache.join("serde-1.0.0.crate"), b"serde").unwrap();
        std::fs::write(index.join(".cache/se/rd/serde"), b"serde entry").unwrap();
        std::fs::write(cache.join("abc-0.1.0.crate"), b"tampered").unwrap();
        std::fs::write(index.join(".cache/3/a/abc"), b"abc entry").unwrap();
        std::fs::write(cache.join("git-dep-0.1.0.crate"), b"git").unwrap();
        let lock = format!(
            "version = 4\n\
             [[package]]\nname = \"serde\"\nversion = \"1.0.0\"\nsource = \"{CRATES_IO}\"\nchecksum = \"{}\"\n\
             [[package]]\nname = \"abc\"\nversion = \"0.1.0\"\nsource = \"{CRATES_IO}\"\nchecksum = \"{}\"\n\
             [[package]]\nname = \"git-dep\"\nversion = \"0.1.0\"\nsource = \"git+https://example.invalid/x\"\n\
             [[package]]\nname = \"missing\"\nversion = \"2.0.0\"\nsource = \"{CRATES_IO}\"\nchecksum = \"{}\"\n\
             [[package]]\nname = \"ws\"\nversion = \"0.1.0\"\n",
            sum(b"serde"),
            sum(b"abc"),
            sum(b"missing"),
        );
        std::fs::write(root.join("Cargo.lock"), lock).unwrap();

        let seeded = seed(&root, &home).unwrap();
        assert_eq!(seeded.crates, 1);
        let mut archive = tar::Archive::new(&seeded.tar[..]);
        let mut entries: Vec<(String, Vec<u8>, u32)> = archive
            .entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let mut data = Vec::new();
                e.read_to_end(&mut data).unwrap();
                (e.path().unwrap().display().to_string(), data, e.header().mode().unwrap())
            })
            .collect();
        entries.sort();
        let at = |rest: &str| format!("usr/local/cargo/registry/{rest}");
        assert_eq!(
            entries,
            [
                (at(&format!("cache/{registry}/serde-1.0.0.crate")), b"serde".to_vec(), 0o644),
                (at(&format!("index/{registry}/.cache/se/rd/serde")), b"serde entry".to_vec(), 0o644),
                (at(&format!("index/{registry}/config.json")), b"{}".to_vec(), 0o644),
            ]
        );
        assert!(seed(&root, &dir.path().join("no-cargo-home")).is_err());
        assert_eq!(nonempty_seed(&root, &home).map(|s| s.crates), Some(1));
        assert!(nonempty_seed(&root, &dir.path().join("no-cargo-home")).is_none());
        // A cache that holds none of the locked crates seeds nothing.
        std::fs::remove_file(cache.join("serde-1.0.0.crate")).unwrap();
        assert!(nonempty_seed(&root, &home).is_none());
    }

    #[test]
    fn index_paths_follow_the_crates_io_layout() {
        assert_eq!(index_path("a"), "1/a");
        assert_eq!(index_path("ab"), "2/ab");
        assert_eq!(index_path("abc"), "3/a/abc");
        assert_eq!(index_path("Serde_JSON"), "se/rd/serde_json");
        assert_eq!(index_path("toml"), "to/ml/toml");
    }
}
