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
/// A binary the builder can compile: the app, or the Bot API stand-in the
/// demo runs beside it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Binary {
    pub(crate) package: &'static str,
    pub(crate) bin: &'static str,
}

pub(crate) const APP: Binary = Binary { package: "app", bin: "app" };
pub(crate) const STANDIN: Binary = Binary { package: "bot-api-standin", bin: "bot-api-standin" };

/// The compiled binary and how it was obtained.
#[derive(Debug)]
pub(crate) struct Compiled {
    pub(crate) binary: Vec<u8>,
    /// Debian's CA bundle from the builder, for the runner image.
    pub(crate) ca_bundle: Vec<u8>,
    /// What happened: "cached", "warm" or "cold", with the reason.
    pub(crate) how: String,
    pub(crate) took: Duration,
}

/// The files a build sees: what git tracks plus new files it does not ignore,
/// never `target/` and never key files. The environment files are left out
/// too: the app reads them at run time and the image gets them from the
/// host, so sealing a value or rotating a key does not recompile anything.
fn source_files(sh: &xshell::Shell, root: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = crate::check::tracked_files(sh, root)?;
    let env_files: Vec<PathBuf> = boxcar_secrets::env_files(&root.join("deploy-config"))?
        .into_iter()
        .filter_map(|p| p.strip_prefix(root).ok().map(Path::to_path_buf))
        .collect();
    files.retain(|p| !p.starts_with("target") && p.extension().is_none_or(|e| e != "key") && !env_files.contains(p));
    Ok(files)
}

/// A tar of the source files (real modes and modification times, so cargo's
/// change detection works as it does on the host) and a hash of their
/// names and contents.
fn source_tar(root: &Path, files: &[PathBuf]) -> anyhow::Result<(Vec<u8>, String)> {
    let mut tar = tar::Builder::new(Vec::new());
    tar.follow_symlinks(false);
    let mut hash = Sha256::new();
    for file in files {
        let full = root.join(file);
        let data = std::fs::read(&full).with_context(|| format!("reading {}", full.display()))?;
        hash.update((file.as_os_str().len() as u64).to_le_bytes());
        hash.update(file.as_os_str().as_encoded_bytes());
        hash.update((data.len() as u64).to_le_bytes());
        hash.update(&data);
        tar.append_path_with_name(&full, file).with_context(|| format!("archiving {}", full.display()))?;
    }
    Ok((tar.into_inner()?, super::base::hex(&hash.finalize())))
}

/// Builds (or reuses) the app binary for the current sources.
pub(crate) async fn compile(
    sh: &xshell::Shell,
    docker: &Docker,
    root: &Path,
    builder: &str,
    what: Binary,
) -> anyhow::Result<Compiled> {
    let start = Instant::now();
    let bin = what.bin;
    let files = source_files(sh, root)?;
    let (context, source_hash) = source_tar(root, &files)?;
    let cache_dir = root.join("target/boxcar-image");
    let key = &source_hash[..16];
    let builder_id = builder.rsplit(':').next().unwrap_or(builder);
    let cached_bin = cache_dir.join(format!("{bin}-{builder_id}-{key}"));
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
            ["cargo", "build", "--release", "--locked", "--target", "x86_64-unknown-linux-musl"]
                .into_iter()
                .chain(["-p", what.package, "--bin", bin])
                .map(String::from)
                .collect(),
        ),
        working_dir: Some("/src".to_owned()),
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
    let result = run_build(docker, &name, context, files.len(), bin).await;
    let _ = docker
        .remove_container(&name, Some(RemoveContainerOptionsBuilder::default().force(true).v(true).build()))
        .await;
    let (binary, ca_bundle) = result?;

    std::fs::create_dir_all(&cache_dir).with_context(|| format!("creating {}", cache_dir.display()))?;
    // Keep one cached binary per builder: the newest.
    if let Ok(entries) = std::fs::read_dir(&cache_dir) {
        for e in entries.flatten() {
            let n = e.file_name();
            if n.to_string_lossy().starts_with(&format!("{bin}-{builder_id}-")) {
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

async fn run_build(
    docker: &Docker,
    name: &str,
    context: Vec<u8>,
    files: usize,
    bin: &str,
) -> anyhow::Result<(Vec<u8>, Vec<u8>)> {
    eprintln!("copying {files} source files into {name}");
    docker
        .upload_to_container(
            name,
            Some(UploadToContainerOptionsBuilder::default().path("/src").build()),
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
    let binary = download(docker, name, &format!("/target/x86_64-unknown-linux-musl/release/{bin}")).await?;
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
