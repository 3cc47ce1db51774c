//! The static musl build, run in a container from the builder image with the
//! tracked source tree copied in and named volumes for the cargo registry and
//! the target directory, so a second build is incremental.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::error::{Error, Result, on_engine, on_file};
use bollard::Docker;
use bollard::models::{ContainerCreateBody, HostConfig, Mount, MountType};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, DownloadFromContainerOptionsBuilder, LogsOptionsBuilder,
    RemoveContainerOptionsBuilder, UploadToContainerOptionsBuilder,
};
use futures::StreamExt as _;
use sha2::{Digest as _, Sha256};

/// The registry volume the builds share; `BOXCAR_REGISTRY_VOLUME` names
/// another (the image benchmark measures a first run without emptying the
/// shared one).
fn registry_volume() -> String {
    std::env::var("BOXCAR_REGISTRY_VOLUME")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "boxcar-cargo-registry".to_owned())
}
/// Where the registry volume is in the builder (its `CARGO_HOME` is
/// `/usr/local/cargo`), as a path in a tar unpacked at `/`.
const REGISTRY_IN_BUILDER: &str = "usr/local/cargo/registry";
/// The target the builder compiles for.
const TARGET: &str = "x86_64-unknown-linux-musl";
/// `source` of a crate from crates.io in Cargo.lock.
const CRATES_IO: &str = "registry+https://github.com/rust-lang/crates.io-index";
const GIT_VOLUME: &str = "boxcar-cargo-git";
/// The target volume; `BOXCAR_TARGET_VOLUME` names another (the image
/// benchmark measures cold builds without emptying the shared one).
fn target_volume() -> String {
    std::env::var("BOXCAR_TARGET_VOLUME").ok().filter(|v| !v.is_empty()).unwrap_or_else(|| "boxcar-target".to_owned())
}
/// A binary target of the workspace, for the builder to compile, and the
/// profile to compile it with.
#[derive(Debug, Clone)]
pub struct Binary {
    pub package: String,
    pub bin: String,
    pub profile: Profile,
}

/// How the builder compiles: what production gets, or the inner loop's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Profile {
    /// The workspace's `release` profile: what production runs.
    #[default]
    Release,
    /// `release` without LTO, with 16 codegen units, incremental, at
    /// opt-level 1: a changed line relinks in seconds. Never for production.
    Fast,
}

impl Profile {
    /// The cargo profile's name, which is also its folder under the target.
    pub fn cargo_name(self) -> &'static str {
        match self {
            Profile::Release => "release",
            Profile::Fast => "boxcar-fast",
        }
    }

    /// cargo's arguments for the profile. The fast one is defined here, with
    /// `--config`, so any workspace has it without a line in its Cargo.toml
    /// (a `[profile.boxcar-fast]` there still refines it).
    pub fn cargo_args(self) -> Vec<String> {
        match self {
            Profile::Release => vec!["--release".to_owned()],
            Profile::Fast => {
                let mut args = vec!["--profile".to_owned(), "boxcar-fast".to_owned()];
                for setting in [
                    "inherits = \"release\"",
                    "lto = false",
                    "codegen-units = 16",
                    "incremental = true",
                    "opt-level = 1",
                ] {
                    args.extend(["--config".to_owned(), format!("profile.boxcar-fast.{setting}")]);
                }
                args
            }
        }
    }
}

/// The compiled binary and how it was obtained.
#[derive(Debug)]
pub struct Compiled {
    pub binary: Vec<u8>,
    /// Debian's CA bundle from the builder, for the runner image.
    pub ca_bundle: Vec<u8>,
    /// What happened: "cached", "warm" or "cold", with the reason.
    pub how: String,
    pub took: Duration,
}

/// Where the workspace is in the builder.
const SRC: &str = "/src";

/// A tree of files the build sees: its place on the host and in the builder,
/// and its files relative to it.
struct Tree {
    host: PathBuf,
    builder: PathBuf,
    files: Vec<PathBuf>,
}

/// The files a build sees: what git tracks plus new files it does not ignore,
/// never `target/` and never key files. `excluded` (the environment files and
/// boxcar.toml) are left out too: the service reads the environment files at
/// run time and the image gets them and the contract's settings from the
/// host, so sealing a value or changing a label recompiles nothing.
///
/// Path dependencies outside the workspace (a boxcar checkout beside it, say)
/// come along: the work tree that holds each is copied to where the
/// dependency's relative path leads from `/src` in the builder.
fn source_trees(sh: &xshell::Shell, root: &Path, excluded: &[PathBuf]) -> Result<Vec<Tree>> {
    let keep = |p: &PathBuf| !p.starts_with("target") && p.extension().is_none_or(|e| e != "key");
    let mut files = crate::adapters::git::tracked_files(sh, root)?;
    files.retain(|p| keep(p) && !excluded.contains(p));
    let mut trees = vec![Tree { host: root.to_owned(), builder: PathBuf::from(SRC), files }];
    for (host, builder) in outside_trees(root)? {
        let _dir = sh.push_dir(&host);
        let mut files = crate::adapters::git::tracked_files(sh, &host)?;
        files.retain(keep);
        eprintln!(
            "the build also needs {} (a path dependency outside the workspace): in the builder at {}",
            host.display(),
            builder.display()
        );
        trees.push(Tree { host, builder, files });
    }
    Ok(trees)
}

/// The work trees (git top levels, else the folders) of path dependencies
/// that lie outside `root`, read from every workspace member's manifest, and
/// where each goes in the builder: where cargo there follows the relative
/// path as written (so `..` is taken as written, not through symlinks).
fn outside_trees(root: &Path) -> Result<Vec<(PathBuf, PathBuf)>> {
    let canonical_root = root.canonicalize().map_err(on_file(format!("resolving {}", root.display())))?;
    let metadata = crate::vocab::contract::workspace(root)?;
    let mut manifests: Vec<PathBuf> = metadata
        .packages
        .iter()
        .map(|p| {
            // cargo reports canonical paths: read them back against the root as given.
            let path: PathBuf = p.manifest_path.clone().into();
            path.strip_prefix(&canonical_root).map(|rel| root.join(rel)).unwrap_or(path)
        })
        .collect();
    manifests.push(root.join("Cargo.toml"));
    let mut out: Vec<(PathBuf, PathBuf)> = Vec::new();
    for manifest in manifests {
        let Ok(text) = std::fs::read_to_string(&manifest) else { continue };
        let Ok(table) = text.parse::<toml::Table>() else { continue };
        let dir = manifest.parent().unwrap_or(root).to_owned();
        for path in dependency_paths(&table) {
            let lexical = normalize(&dir.join(&path));
            let Ok(dep) = lexical.canonicalize() else { continue };
            if dep.starts_with(&canonical_root) {
                continue;
            }
            let top = std::process::Command::new("git")
                .args(["rev-parse", "--show-toplevel"])
                .current_dir(&dep)
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
                .unwrap_or_else(|| dep.clone());
            // The same folder as written: `lexical` less what lies below `top`.
            let below = dep.strip_prefix(&top).unwrap_or(Path::new("")).components().count();
            let mut lexical_top = lexical.clone();
            for _ in 0..below {
                lexical_top.pop();
            }
            if !out.iter().any(|(t, _)| top.starts_with(t)) {
                out.retain(|(t, _)| !t.starts_with(&top));
                out.push((top, builder_path(root, &lexical_top)));
            }
        }
    }
    Ok(out)
}

/// `path` with `.` and `..` taken lexically, as cargo reads a relative
/// path dependency.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// Every `path = "…"` of a manifest's dependency tables.
fn dependency_paths(table: &toml::Table) -> Vec<String> {
    let mut tables: Vec<&toml::Table> = Vec::new();
    let sections = ["dependencies", "dev-dependencies", "build-dependencies"];
    for section in sections {
        tables.extend(table.get(section).and_then(toml::Value::as_table));
    }
    if let Some(ws) = table.get("workspace").and_then(toml::Value::as_table) {
        tables.extend(ws.get("dependencies").and_then(toml::Value::as_table));
    }
    if let Some(targets) = table.get("target").and_then(toml::Value::as_table) {
        for target in targets.values().filter_map(toml::Value::as_table) {
            for section in sections {
                tables.extend(target.get(section).and_then(toml::Value::as_table));
            }
        }
    }
    tables
        .into_iter()
        .flat_map(|t| t.values())
        .filter_map(|d| d.get("path").and_then(toml::Value::as_str).map(ToOwned::to_owned))
        .collect()
}

/// Where `outside` lands in the builder: its path relative to `root`, taken
/// from `/src` (`..` stops at `/`), which is where cargo in the builder
/// follows the relative path to it.
fn builder_path(root: &Path, outside: &Path) -> PathBuf {
    let root: Vec<_> = root.components().collect();
    let outside_parts: Vec<_> = outside.components().collect();
    let common = root.iter().zip(&outside_parts).take_while(|(a, b)| a == b).count();
    let mut path = PathBuf::from(SRC);
    for _ in common..root.len() {
        path.pop();
    }
    for part in &outside_parts[common..] {
        path.push(part);
    }
    path
}

/// One file of the source trees, read once.
struct Source {
    /// Where it goes in the builder, relative to `/`.
    name: PathBuf,
    full: PathBuf,
    /// Of the path itself (a symlink stays one).
    meta: std::fs::Metadata,
    data: Vec<u8>,
    /// Of its content.
    hash: String,
}

/// The files of the source trees, and a hash of their names and contents.
fn read_sources(trees: &[Tree]) -> Result<(Vec<Source>, String)> {
    let mut sources = Vec::new();
    let mut hash = Sha256::new();
    for tree in trees {
        let base = tree.builder.strip_prefix("/").unwrap_or(&tree.builder);
        for file in &tree.files {
            let full = tree.host.join(file);
            let name = base.join(file);
            let data = std::fs::read(&full).map_err(on_file(format!("reading {}", full.display())))?;
            hash.update((name.as_os_str().len() as u64).to_le_bytes());
            hash.update(name.as_os_str().as_encoded_bytes());
            hash.update((data.len() as u64).to_le_bytes());
            hash.update(&data);
            let meta = std::fs::symlink_metadata(&full).map_err(on_file(format!("reading {}", full.display())))?;
            let file_hash = hex::encode(Sha256::digest(&data));
            sources.push(Source { name, full, meta, data, hash: file_hash });
        }
    }
    Ok((sources, hex::encode(hash.finalize())))
}

/// Where the target volume records the content of every source file its
/// builds were given (builder path → SHA-256), as a path in a tar unpacked
/// at `/`.
const SOURCES_RECORD: &str = "target/.boxcar-sources.json";

/// A tar of the sources, to unpack at `/` in the builder, with the volume's
/// updated record of them.
///
/// cargo decides what to recompile by modification times: a file is stale
/// when it is newer than the start of the compile that last read it. Host
/// times alone can lie to it: a file saved while a build ran (after the
/// sources were copied, before the compile started), or a file of another
/// checkout sharing the target volume, can carry a time older than that
/// compile with other content, and cargo would keep a binary of the old
/// code. So a file whose content differs from what `record` says the volume
/// was last given gets the time `bump_to` (after every compile so far); the
/// others keep their own, and an unchanged tree recompiles nothing.
/// Returns the tar and how many files were bumped.
fn source_tar(
    sources: &[Source],
    mut record: std::collections::BTreeMap<String, String>,
    bump_to: u64,
) -> Result<(Vec<u8>, usize)> {
    let mut tar = tar::Builder::new(Vec::new());
    tar.follow_symlinks(false);
    let mut bumped = 0;
    for source in sources {
        let key = source.name.to_string_lossy().into_owned();
        let meta =
            std::fs::symlink_metadata(&source.full).map_err(on_file(format!("reading {}", source.full.display())))?;
        if meta.file_type().is_symlink() {
            tar.append_path_with_name(&source.full, &source.name)
                .map_err(on_file(format!("archiving {}", source.full.display())))?;
        } else {
            let mut header = tar::Header::new_gnu();
            header.set_metadata(&source.meta);
            if record.get(&key) != Some(&source.hash) {
                header.set_mtime(bump_to.max(header.mtime().unwrap_or(0)));
                bumped += 1;
            }
            header.set_cksum();
            tar.append_data(&mut header, &source.name, &source.data[..])
                .map_err(on_file(format!("archiving {}", source.full.display())))?;
        }
        record.insert(key, source.hash.clone());
    }
    let json = serde_json::to_vec_pretty(&record)?;
    let mut header = tar::Header::new_gnu();
    header.set_size(json.len() as u64);
    header.set_mode(0o644);
    header.set_mtime(bump_to);
    header.set_cksum();
    tar.append_data(&mut header, SOURCES_RECORD, &json[..])?;
    Ok((tar.into_inner()?, bumped))
}

/// The target volume's record of the sources it was given (empty when it
/// has none or it cannot be read: every file then counts as changed).
async fn sources_record(docker: &Docker, container: &str) -> std::collections::BTreeMap<String, String> {
    match download(docker, container, &format!("/{SOURCES_RECORD}")).await {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_default(),
        Err(_) => Default::default(),
    }
}

/// Builds (or reuses) the binary `what` for the current sources.
pub async fn compile(
    sh: &xshell::Shell,
    docker: &Docker,
    root: &Path,
    builder: &str,
    what: &Binary,
    excluded: &[PathBuf],
    prefetch: Option<Prefetch>,
) -> Result<Compiled> {
    let start = Instant::now();
    let profile = what.profile;
    let bin = what.bin.as_str();
    let trees = source_trees(sh, root, excluded)?;
    let files: usize = trees.iter().map(|t| t.files.len()).sum();
    let (sources, source_hash) = read_sources(&trees)?;
    let cache_dir = root.join("target/boxcar-image");
    let key = &source_hash[..16];
    let builder_id = builder.rsplit(':').next().unwrap_or(builder);
    // Release binaries keep the name they always had; others say their profile.
    let prefix = match profile {
        Profile::Release => format!("{bin}-{builder_id}-"),
        other => format!("{bin}-{}-{builder_id}-", other.cargo_name()),
    };
    let cached_bin = cache_dir.join(format!("{prefix}{key}"));
    let cached_ca = cache_dir.join(format!("ca-{builder_id}.crt"));
    if let (Ok(binary), Ok(ca_bundle)) = (std::fs::read(&cached_bin), std::fs::read(&cached_ca)) {
        return Ok(Compiled {
            binary,
            ca_bundle,
            how: format!("cached: sources unchanged since the last build (source hash {key})"),
            took: start.elapsed(),
        });
    }

    // One build at a time on this machine: the builds share the registry and
    // target volumes, and cargo's download lock lives outside them.
    let _lock = super::base::lock("boxcar-build.lock", "another build to finish")?;
    let seed = match prefetch {
        Some(prefetch) => prefetch.seed(root).await,
        None => None,
    };
    let target = target_volume();
    let cold_reason = match docker.inspect_volume(&target).await {
        Ok(_) => None,
        Err(_) => Some(format!("cold: no {target} volume yet, every dependency compiles")),
    };
    let name = format!("boxcar-build-{}-{}", std::process::id(), &source_hash[..8]);
    let mount = |source: &str, target: &str| Mount {
        source: Some(source.to_owned()),
        target: Some(target.to_owned()),
        typ: Some(MountType::VOLUME),
        ..Mount::default()
    };
    let body = ContainerCreateBody {
        image: Some(builder.to_owned()),
        cmd: Some(
            ["cargo", "build", "--locked", "--target", TARGET]
                .into_iter()
                .map(String::from)
                .chain(profile.cargo_args())
                .chain(["-p", what.package.as_str(), "--bin", bin].map(String::from))
                .collect(),
        ),
        working_dir: Some(SRC.to_owned()),
        env: Some(vec!["CARGO_TARGET_DIR=/target".to_owned(), "CARGO_TERM_PROGRESS_WHEN=never".to_owned()]),
        host_config: Some(HostConfig {
            mounts: Some(vec![
                mount(&registry_volume(), "/usr/local/cargo/registry"),
                mount(GIT_VOLUME, "/usr/local/cargo/git"),
                mount(&target, "/target"),
            ]),
            ..HostConfig::default()
        }),
        ..ContainerCreateBody::default()
    };
    docker
        .create_container(Some(CreateContainerOptionsBuilder::default().name(&name).build()), body)
        .await
        .map_err(on_engine("creating the build container"))?;
    let output = format!("/target/{TARGET}/{}/{bin}", profile.cargo_name());
    let result = async {
        if let Some(seed) = seed {
            eprintln!(
                "seeding the builder's crate registry with {} crates ({:.1} MiB) the host's cargo already has",
                seed.crates,
                seed.tar.len() as f64 / (1024.0 * 1024.0)
            );
            docker
                .upload_to_container(
                    &name,
                    Some(UploadToContainerOptionsBuilder::default().path("/").build()),
                    bollard::body_full(seed.tar.into()),
                )
                .await
                .map_err(on_engine("copying the host's crates into the builder's registry volume"))?;
        }
        let record = sources_record(docker, &name).await;
        // A second past now: later than the start of every compile before.
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs();
        let (context, bumped) = source_tar(&sources, record, now + 1)?;
        if bumped > 0 && bumped < files {
            eprintln!("{bumped} source file(s) differ from what {target} was last given");
        }
        run_build(docker, &name, context, files, &output).await
    }
    .await;
    let _ = docker
        .remove_container(&name, Some(RemoveContainerOptionsBuilder::default().force(true).v(true).build()))
        .await;
    let (binary, ca_bundle, compiled) = result?;

    std::fs::create_dir_all(&cache_dir).map_err(on_file(format!("creating {}", cache_dir.display())))?;
    // Keep one cached binary per builder: the newest.
    if let Ok(entries) = std::fs::read_dir(&cache_dir) {
        for e in entries.flatten() {
            let n = e.file_name();
            if n.to_string_lossy().starts_with(&prefix) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    boxcar_secrets::write_atomic(&cached_bin, &binary, Some(0o755))
        .map_err(on_file(format!("writing {}", cached_bin.display())))?;
    boxcar_secrets::write_atomic(&cached_ca, &ca_bundle, Some(0o644))
        .map_err(on_file(format!("writing {}", cached_ca.display())))?;
    // The volume says whether anything was built before, not for which
    // profile: cargo's own count says how much compiled this time.
    let how = cold_reason.unwrap_or_else(|| {
        format!("warm: {target} holds earlier builds; {compiled} crate(s) compiled, the rest reused")
    });
    Ok(Compiled { binary, ca_bundle, how, took: start.elapsed() })
}

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
    async fn seed(self, root: &Path) -> Option<Seed> {
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
struct Seed {
    /// Unpacked at `/` in the build container.
    tar: Vec<u8>,
    crates: usize,
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

/// The source of boxcar's health probe (see the file's own docs).
const PROBE_SOURCE: &str = include_str!("../../../probe/boxcar-probe.rs");

/// Compiles (or reuses) `boxcar-probe`, the static health probe an image
/// carries when its service has no check command of its own: one file, the
/// builder's rustc, no crate and no workspace, so it builds the same in any
/// project. Cached in `target/boxcar-image/` by builder and source.
pub async fn probe(docker: &Docker, root: &Path, builder: &str) -> Result<Vec<u8>> {
    let builder_id = builder.rsplit(':').next().unwrap_or(builder);
    let hash = hex::encode(Sha256::digest(PROBE_SOURCE.as_bytes()));
    let cached = root.join("target/boxcar-image").join(format!("boxcar-probe-{builder_id}-{}", &hash[..16]));
    if let Ok(binary) = std::fs::read(&cached) {
        return Ok(binary);
    }
    let name = format!("boxcar-probe-build-{}-{}", std::process::id(), &hash[..8]);
    let body = ContainerCreateBody {
        image: Some(builder.to_owned()),
        cmd: Some(
            [
                "rustc",
                "--edition=2021",
                "--target=x86_64-unknown-linux-musl",
                "-Copt-level=s",
                "-Cpanic=abort",
                "-Ccodegen-units=1",
                "-Clto=fat",
                "-Cstrip=symbols",
                "--remap-path-prefix=/probe=probe",
                "-o",
                "/probe/boxcar-probe",
                "/probe/boxcar-probe.rs",
            ]
            .map(String::from)
            .to_vec(),
        ),
        working_dir: Some("/probe".to_owned()),
        ..ContainerCreateBody::default()
    };
    docker
        .create_container(Some(CreateContainerOptionsBuilder::default().name(&name).build()), body)
        .await
        .map_err(on_engine("creating the probe's build container"))?;
    let mut tar = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(PROBE_SOURCE.len() as u64);
    header.set_mode(0o644);
    header.set_mtime(0);
    header.set_cksum();
    tar.append_data(&mut header, "probe/boxcar-probe.rs", PROBE_SOURCE.as_bytes())?;
    let result = run_build(docker, &name, tar.into_inner()?, 1, "/probe/boxcar-probe").await;
    let _ = docker
        .remove_container(&name, Some(RemoveContainerOptionsBuilder::default().force(true).v(true).build()))
        .await;
    let (binary, _, _) = result.map_err(|e| Error::Probe { source: Box::new(e) })?;
    if let Some(dir) = cached.parent() {
        std::fs::create_dir_all(dir).map_err(on_file(format!("creating {}", dir.display())))?;
    }
    boxcar_secrets::write_atomic(&cached, &binary, Some(0o755))
        .map_err(on_file(format!("writing {}", cached.display())))?;
    Ok(binary)
}

async fn run_build(
    docker: &Docker,
    name: &str,
    context: Vec<u8>,
    files: usize,
    output: &str,
) -> Result<(Vec<u8>, Vec<u8>, usize)> {
    eprintln!("copying {files} source files into {name}");
    docker
        .upload_to_container(
            name,
            Some(UploadToContainerOptionsBuilder::default().path("/").build()),
            bollard::body_full(context.into()),
        )
        .await
        .map_err(on_engine("copying the sources into the build container"))?;
    docker.start_container(name, None::<bollard::query_parameters::StartContainerOptions>).await?;
    let mut logs =
        docker.logs(name, Some(LogsOptionsBuilder::default().follow(true).stdout(true).stderr(true).build()));
    let mut tail = std::collections::VecDeque::new();
    let mut compiled = 0;
    while let Some(item) = logs.next().await {
        let text = item.map_err(on_engine("reading the build output"))?.to_string();
        eprint!("  | {text}");
        for line in text.lines() {
            compiled += usize::from(line.trim_start().starts_with("Compiling "));
            tail.push_back(line.to_owned());
            if tail.len() > 60 {
                tail.pop_front();
            }
        }
    }
    let mut wait = docker.wait_container(name, None::<bollard::query_parameters::WaitContainerOptions>);
    let code = match wait.next().await {
        Some(Ok(r)) => r.status_code,
        // bollard reports a non-zero exit as an error carrying the code.
        Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => code,
        Some(Err(e)) => return Err(on_engine("waiting for the build")(e)),
        None => return Err(Error::Vanished),
    };
    if code != 0 {
        return Err(Error::Compile { code, said: tail.iter().cloned().collect::<Vec<_>>().join("\n") });
    }
    let binary = download(docker, name, output).await?;
    let ca = download(docker, name, "/etc/ssl/certs/ca-certificates.crt").await?;
    Ok((binary, ca, compiled))
}

/// Copies one file out of a container.
async fn download(docker: &Docker, name: &str, path: &str) -> Result<Vec<u8>> {
    let mut stream =
        docker.download_from_container(name, Some(DownloadFromContainerOptionsBuilder::default().path(path).build()));
    let mut archive = Vec::new();
    while let Some(chunk) = stream.next().await {
        archive.extend_from_slice(&chunk.map_err(on_engine(format!("copying {path} out of the build container")))?);
    }
    let mut tar = tar::Archive::new(&archive[..]);
    for entry in tar.entries()? {
        let mut entry = entry?;
        if entry.header().entry_type().is_file() {
            let mut out = Vec::new();
            entry.read_to_end(&mut out)?;
            return Ok(out);
        }
        if entry.header().entry_type().is_symlink() {
            return Err(Error::Symlink { path: path.to_owned() });
        }
    }
    Err(Error::NotInContainer { path: path.to_owned() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outside_trees_land_where_relative_paths_lead_from_src() {
        let p = |s: &str| PathBuf::from(s);
        assert_eq!(builder_path(&p("/tmp/x/ws"), &p("/tmp/x/boxcar")), p("/boxcar"));
        assert_eq!(builder_path(&p("/tmp/x/ws"), &p("/tmp/x/ws2/lib")), p("/ws2/lib"));
        assert_eq!(builder_path(&p("/a/b"), &p("/c/d")), p("/c/d"));
        assert_eq!(normalize(&p("/tmp/x/ws/svc/../../boxcar/./lib")), p("/tmp/x/boxcar/lib"));
        let table: toml::Table = r#"
            [dependencies]
            a = { path = "../a" }
            b = "1"
            [workspace.dependencies]
            c = { path = "c" }
            [target.'cfg(unix)'.dev-dependencies]
            d = { path = "/abs/d" }
        "#
        .parse()
        .unwrap();
        let mut paths = dependency_paths(&table);
        paths.sort();
        assert_eq!(paths, ["../a", "/abs/d", "c"]);
    }

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
    fn files_whose_content_the_volume_has_not_seen_are_newer_than_every_compile() {
        let dir = tempfile::tempdir().unwrap();
        let host = dir.path().join("ws");
        std::fs::create_dir_all(host.join("src")).unwrap();
        for (file, text) in [("src/same.rs", "same"), ("src/edited.rs", "new text"), ("src/added.rs", "added")] {
            std::fs::write(host.join(file), text).unwrap();
        }
        let old = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
        for file in ["src/same.rs", "src/edited.rs", "src/added.rs"] {
            std::fs::File::options().write(true).open(host.join(file)).unwrap().set_modified(old).unwrap();
        }
        let files = ["src/added.rs", "src/edited.rs", "src/same.rs"].map(PathBuf::from).to_vec();
        let trees = [Tree { host, builder: PathBuf::from("/src"), files }];
        let (sources, _) = read_sources(&trees).unwrap();
        let sum = |text: &str| hex::encode(Sha256::digest(text.as_bytes()));
        let record: std::collections::BTreeMap<String, String> = [
            ("src/src/same.rs".to_owned(), sum("same")),
            ("src/src/edited.rs".to_owned(), sum("old text")),
            ("other/checkout.rs".to_owned(), sum("kept")),
        ]
        .into();
        let (tar, bumped) = source_tar(&sources, record, 2_000_000).unwrap();
        assert_eq!(bumped, 2);
        let mut archive = tar::Archive::new(&tar[..]);
        let mut seen = std::collections::BTreeMap::new();
        let mut new_record = String::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let path = entry.path().unwrap().display().to_string();
            if path == SOURCES_RECORD {
                entry.read_to_string(&mut new_record).unwrap();
            } else {
                seen.insert(path, entry.header().mtime().unwrap());
            }
        }
        assert_eq!(
            seen,
            [
                ("src/src/added.rs".to_owned(), 2_000_000),
                ("src/src/edited.rs".to_owned(), 2_000_000),
                ("src/src/same.rs".to_owned(), 1_000_000),
            ]
            .into()
        );
        let new_record: std::collections::BTreeMap<String, String> = serde_json::from_str(&new_record).unwrap();
        assert_eq!(new_record["src/src/edited.rs"], sum("new text"));
        assert_eq!(new_record["src/src/added.rs"], sum("added"));
        assert_eq!(new_record["other/checkout.rs"], sum("kept"));
        assert_eq!(new_record.len(), 4);
    }

    #[test]
    fn index_paths_follow_the_crates_io_layout() {
        assert_eq!(index_path("a"), "1/a");
        assert_eq!(index_path("ab"), "2/ab");
        assert_eq!(index_path("abc"), "3/a/abc");
        assert_eq!(index_path("Serde_JSON"), "se/rd/serde_json");
        assert_eq!(index_path("toml"), "to/ml/toml");
    }

    #[test]
    fn the_fast_profile_is_release_without_what_makes_it_slow() {
        assert_eq!(Profile::Release.cargo_args(), ["--release"]);
        let fast = Profile::Fast.cargo_args().join(" ");
        assert!(
            fast.starts_with("--profile boxcar-fast --config profile.boxcar-fast.inherits = \"release\""),
            "{fast}"
        );
        for setting in ["lto = false", "codegen-units = 16", "incremental = true", "opt-level = 1"] {
            assert!(fast.contains(&format!("--config profile.boxcar-fast.{setting}")), "{fast}");
        }
        assert_eq!(Profile::Fast.cargo_name(), "boxcar-fast");
    }
}
