//! The static musl build, run in a container from the builder image with the
//! tracked source tree copied in and named volumes for the cargo registry and
//! the target directory, so a second build is incremental.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use bollard::Docker;
use bollard::models::{ContainerCreateBody, HostConfig, Mount, MountType};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, DownloadFromContainerOptionsBuilder, LogsOptionsBuilder,
    RemoveContainerOptionsBuilder, UploadToContainerOptionsBuilder,
};
use futures::StreamExt as _;
use sha2::{Digest as _, Sha256};

/// Named volumes the builds share.
const REGISTRY_VOLUME: &str = "boxcar-cargo-registry";
const GIT_VOLUME: &str = "boxcar-cargo-git";
/// The target volume; `BOXCAR_TARGET_VOLUME` names another (the image
/// benchmark measures cold builds without emptying the shared one).
fn target_volume() -> String {
    std::env::var("BOXCAR_TARGET_VOLUME").ok().filter(|v| !v.is_empty()).unwrap_or_else(|| "boxcar-target".to_owned())
}
/// A binary target of the workspace, for the builder to compile.
#[derive(Debug, Clone)]
pub struct Binary {
    pub package: String,
    pub bin: String,
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
fn source_trees(sh: &xshell::Shell, root: &Path, excluded: &[PathBuf]) -> anyhow::Result<Vec<Tree>> {
    let keep = |p: &PathBuf| !p.starts_with("target") && p.extension().is_none_or(|e| e != "key");
    let mut files = crate::check::tracked_files(sh, root)?;
    files.retain(|p| keep(p) && !excluded.contains(p));
    let mut trees = vec![Tree { host: root.to_owned(), builder: PathBuf::from(SRC), files }];
    for (host, builder) in outside_trees(root)? {
        let _dir = sh.push_dir(&host);
        let mut files = crate::check::tracked_files(sh, &host)?;
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
fn outside_trees(root: &Path) -> anyhow::Result<Vec<(PathBuf, PathBuf)>> {
    let canonical_root = root.canonicalize().with_context(|| format!("resolving {}", root.display()))?;
    let metadata = crate::contract::workspace(root)?;
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

/// A tar of the source trees, to unpack at `/` in the builder (real modes and
/// modification times, so cargo's change detection works as it does on the
/// host), and a hash of their names and contents.
fn source_tar(trees: &[Tree]) -> anyhow::Result<(Vec<u8>, String)> {
    let mut tar = tar::Builder::new(Vec::new());
    tar.follow_symlinks(false);
    let mut hash = Sha256::new();
    for tree in trees {
        let base = tree.builder.strip_prefix("/").unwrap_or(&tree.builder);
        for file in &tree.files {
            let full = tree.host.join(file);
            let name = base.join(file);
            let data = std::fs::read(&full).with_context(|| format!("reading {}", full.display()))?;
            hash.update((name.as_os_str().len() as u64).to_le_bytes());
            hash.update(name.as_os_str().as_encoded_bytes());
            hash.update((data.len() as u64).to_le_bytes());
            hash.update(&data);
            tar.append_path_with_name(&full, &name).with_context(|| format!("archiving {}", full.display()))?;
        }
    }
    Ok((tar.into_inner()?, super::base::hex(&hash.finalize())))
}

/// Builds (or reuses) the binary `what` for the current sources.
pub async fn compile(
    sh: &xshell::Shell,
    docker: &Docker,
    root: &Path,
    builder: &str,
    what: &Binary,
    profile: Profile,
    excluded: &[PathBuf],
) -> anyhow::Result<Compiled> {
    let start = Instant::now();
    let bin = what.bin.as_str();
    let trees = source_trees(sh, root, excluded)?;
    let files: usize = trees.iter().map(|t| t.files.len()).sum();
    let (context, source_hash) = source_tar(&trees)?;
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
            ["cargo", "build", "--locked", "--target", "x86_64-unknown-linux-musl"]
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
                mount(REGISTRY_VOLUME, "/usr/local/cargo/registry"),
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
        .context("creating the build container")?;
    let output = format!("/target/x86_64-unknown-linux-musl/{}/{bin}", profile.cargo_name());
    let result = run_build(docker, &name, context, files, &output).await;
    let _ = docker
        .remove_container(&name, Some(RemoveContainerOptionsBuilder::default().force(true).v(true).build()))
        .await;
    let (binary, ca_bundle) = result?;

    std::fs::create_dir_all(&cache_dir).with_context(|| format!("creating {}", cache_dir.display()))?;
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
        .with_context(|| format!("writing {}", cached_bin.display()))?;
    boxcar_secrets::write_atomic(&cached_ca, &ca_bundle, Some(0o644))
        .with_context(|| format!("writing {}", cached_ca.display()))?;
    let how =
        cold_reason.unwrap_or_else(|| format!("warm: {target} holds the previous build; only what changed compiled"));
    Ok(Compiled { binary, ca_bundle, how, took: start.elapsed() })
}

/// The source of boxcar's health probe (see the file's own docs).
const PROBE_SOURCE: &str = include_str!("../../probe/boxcar-probe.rs");

/// Compiles (or reuses) `boxcar-probe`, the static health probe an image
/// carries when its service has no check command of its own: one file, the
/// builder's rustc, no crate and no workspace, so it builds the same in any
/// project. Cached in `target/boxcar-image/` by builder and source.
pub async fn probe(docker: &Docker, root: &Path, builder: &str) -> anyhow::Result<Vec<u8>> {
    let builder_id = builder.rsplit(':').next().unwrap_or(builder);
    let hash = super::base::hex(&Sha256::digest(PROBE_SOURCE.as_bytes()));
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
        .context("creating the probe's build container")?;
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
    let (binary, _) = result.context("compiling boxcar-probe")?;
    if let Some(dir) = cached.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    boxcar_secrets::write_atomic(&cached, &binary, Some(0o755))
        .with_context(|| format!("writing {}", cached.display()))?;
    Ok(binary)
}

async fn run_build(
    docker: &Docker,
    name: &str,
    context: Vec<u8>,
    files: usize,
    output: &str,
) -> anyhow::Result<(Vec<u8>, Vec<u8>)> {
    eprintln!("copying {files} source files into {name}");
    docker
        .upload_to_container(
            name,
            Some(UploadToContainerOptionsBuilder::default().path("/").build()),
            bollard::body_full(context.into()),
        )
        .await
        .context("copying the sources into the build container")?;
    docker.start_container(name, None::<bollard::query_parameters::StartContainerOptions>).await?;
    let mut logs =
        docker.logs(name, Some(LogsOptionsBuilder::default().follow(true).stdout(true).stderr(true).build()));
    let mut tail = std::collections::VecDeque::new();
    while let Some(item) = logs.next().await {
        let text = item.context("reading the build output")?.to_string();
        eprint!("  | {text}");
        for line in text.lines() {
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
        Some(Err(e)) => return Err(e).context("waiting for the build"),
        None => bail!("the build container vanished"),
    };
    if code != 0 {
        bail!(
            "the build failed (exit {code}); no image was built. The compiler said:\n{}",
            tail.iter().cloned().collect::<Vec<_>>().join("\n")
        );
    }
    let binary = download(docker, name, output).await?;
    let ca = download(docker, name, "/etc/ssl/certs/ca-certificates.crt").await?;
    Ok((binary, ca))
}

/// Copies one file out of a container.
async fn download(docker: &Docker, name: &str, path: &str) -> anyhow::Result<Vec<u8>> {
    let mut stream =
        docker.download_from_container(name, Some(DownloadFromContainerOptionsBuilder::default().path(path).build()));
    let mut archive = Vec::new();
    while let Some(chunk) = stream.next().await {
        archive.extend_from_slice(&chunk.with_context(|| format!("copying {path} out of the build container"))?);
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
            bail!("{path} in the builder is a symlink; expected a file");
        }
    }
    bail!("{path} is not in the build container")
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
