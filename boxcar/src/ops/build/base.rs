//! The builder image: a Debian base (pulled, or bootstrapped with debootstrap
//! when no registry is reachable) plus the pinned Rust toolchain with the musl
//! target, tagged by a hash of everything it is made from.

use std::path::Path;

use super::error::{Error, Result, on_engine, on_file};
use bollard::Docker;
use bollard::query_parameters::{BuildImageOptionsBuilder, CreateImageOptionsBuilder};
use futures::StreamExt as _;
use sha2::{Digest as _, Sha256};
use xshell::{Shell, cmd};

/// The Debian base every builder starts from.
pub(crate) const BASE: &str = "boxcar/debian:bookworm";
/// What a registry would have: tried first, when one is reachable.
const UPSTREAM: &str = "debian:bookworm-slim";

/// The registry volume the builds share; `BOXCAR_REGISTRY_VOLUME` names
/// another (the image benchmark measures a first run without emptying the
/// shared one).
pub(super) fn registry_volume() -> String {
    std::env::var("BOXCAR_REGISTRY_VOLUME")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "boxcar-cargo-registry".to_owned())
}
/// The target the builder compiles for.
pub(super) const TARGET: &str = "x86_64-unknown-linux-musl";

/// Makes sure the base image exists: present, pulled, or bootstrapped.
pub(crate) async fn ensure_base(sh: &Shell, docker: &Docker) -> Result<String> {
    if let Ok(image) = docker.inspect_image(BASE).await {
        return Ok(image.id.unwrap_or_default());
    }
    eprintln!("base image {BASE} not present; trying to pull {UPSTREAM}");
    let pull = CreateImageOptionsBuilder::default().from_image(UPSTREAM).build();
    let mut stream = docker.create_image(Some(pull), None, None);
    let mut pulled = true;
    while let Some(item) = stream.next().await {
        if let Err(e) = item {
            eprintln!("cannot pull {UPSTREAM} ({e}); bootstrapping Debian locally instead");
            pulled = false;
            break;
        }
    }
    if pulled {
        docker
            .tag_image(
                UPSTREAM,
                Some(
                    bollard::query_parameters::TagImageOptionsBuilder::default()
                        .repo("boxcar/debian")
                        .tag("bookworm")
                        .build(),
                ),
            )
            .await?;
    } else {
        bootstrap(sh, docker).await?;
    }
    let image = docker.inspect_image(BASE).await.map_err(on_engine("inspecting the base image"))?;
    Ok(image.id.unwrap_or_default())
}

/// debootstrap of Debian bookworm (minbase) into a folder, then an import into the engine.
async fn bootstrap(sh: &Shell, docker: &Docker) -> Result<()> {
    if cmd!(sh, "which debootstrap").quiet().ignore_stdout().ignore_stderr().run().is_err() {
        return Err(Error::NoDebootstrap);
    }
    let uid = cmd!(sh, "id -u").quiet().read()?;
    if uid.trim() != "0" {
        return Err(Error::BootstrapNeedsRoot);
    }
    let mirror = std::env::var("BOXCAR_DEBIAN_MIRROR").unwrap_or_else(|_| "http://deb.debian.org/debian".to_owned());
    // mkdtemp (0700): a predictable name could be prepared by another user.
    let work_dir =
        tempfile::Builder::new().prefix("boxcar-bootstrap-").tempdir().map_err(on_file("creating a work folder"))?;
    let work = work_dir.path().to_owned();
    let rootfs = work.join("rootfs");
    let archive = work.join("rootfs.tar");
    eprintln!("bootstrapping Debian bookworm from {mirror} into {} (a few minutes)", rootfs.display());
    let result = async {
        cmd!(sh, "debootstrap --variant=minbase bookworm {rootfs} {mirror}")
            .run()
            .map_err(|source| Error::Debootstrap { mirror: mirror.clone(), source })?;
        // Device nodes and kernel file systems are the engine's to provide.
        cmd!(
            sh,
            "tar --numeric-owner --exclude=./dev/* --exclude=./proc/* --exclude=./sys/* -C {rootfs} -cf {archive} ."
        )
        .quiet()
        .run()?;
        eprintln!("importing the bootstrapped file system as {BASE}");
        let bytes = std::fs::read(&archive).map_err(on_file(format!("reading {}", archive.display())))?;
        let options = CreateImageOptionsBuilder::default()
            .from_src("-")
            .repo("boxcar/debian")
            .tag("bookworm")
            .changes(vec!["CMD [\"/bin/bash\"]".to_owned()])
            .build();
        let mut stream = docker.create_image(Some(options), Some(bollard::body_full(bytes.into())), None);
        while let Some(item) = stream.next().await {
            item.map_err(on_engine("importing the base image"))?;
        }
        Ok::<(), Error>(())
    }
    .await;
    drop(work_dir);
    result
}

/// The builder image for this checkout, built if its tag does not exist yet.
/// Returns its tag.
pub(crate) async fn ensure_builder(
    sh: &Shell,
    docker: &Docker,
    root: &Path,
    ca_bundle: Option<&Path>,
) -> Result<String> {
    // Several builds may start at once (the test suite runs three): one
    // bootstraps the base and builds the builder, the others wait and then
    // find both made, instead of each bootstrapping its own.
    let _lock = lock("boxcar-builder.lock", "another build to finish the base and builder images")?;
    let base_id = ensure_base(sh, docker).await?;
    let dockerfile = BUILDER_DOCKERFILE.as_bytes().to_vec();
    let toolchain = toolchain_file(sh, root)?;
    let ca = match ca_bundle {
        Some(path) => std::fs::read(path).map_err(on_file(format!("reading the CA bundle {}", path.display())))?,
        None => Vec::new(),
    };
    let mut hash = Sha256::new();
    for part in [&dockerfile[..], &toolchain[..], base_id.as_bytes(), &ca[..]] {
        hash.update((part.len() as u64).to_le_bytes());
        hash.update(part);
    }
    let digest = hash.finalize();
    let tag = format!("boxcar/builder:{}", hex::encode(&digest[..6]));
    if docker.inspect_image(&tag).await.is_ok() {
        eprintln!("builder image {tag} is up to date");
        return Ok(tag);
    }
    eprintln!("building the builder image {tag} (Debian, gcc, musl-tools, Rust from rust-toolchain.toml)");

    let mut context = tar::Builder::new(Vec::new());
    for (name, data) in [("Dockerfile", &dockerfile), ("rust-toolchain.toml", &toolchain), ("host-ca.crt", &ca)] {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(0);
        header.set_cksum();
        context.append_data(&mut header, name, &data[..])?;
    }
    let context = context.into_inner()?;
    let options = BuildImageOptionsBuilder::default()
        .dockerfile("Dockerfile")
        .t(&tag)
        .rm(true)
        .forcerm(true)
        .buildargs(&std::collections::HashMap::from([("BASE".to_owned(), BASE.to_owned())]))
        .build();
    let mut stream = docker.build_image(options, None, Some(bollard::body_full(context.into())));
    let mut last = std::collections::VecDeque::new();
    while let Some(item) = stream.next().await {
        let info = item.map_err(on_engine(format!("building {tag}")))?;
        if let Some(text) = info.stream {
            eprint!("{text}");
            last.push_back(text);
            if last.len() > 20 {
                last.pop_front();
            }
        }
        if let Some(err) = info.error_detail.and_then(|d| d.message) {
            return Err(Error::Builder { tag, said: err });
        }
    }
    if docker.inspect_image(&tag).await.is_err() {
        return Err(Error::NoBuilder { tag });
    }
    Ok(tag)
}

/// The builder's Dockerfile: part of the library, since the projects it
/// builds have none of their own.
const BUILDER_DOCKERFILE: &str = include_str!("../../../builder.Dockerfile");

/// The project's rust-toolchain.toml, which pins the builder's toolchain;
/// where a project has none, one that pins the host's `rustc`, so the
/// builder compiles with what the project compiles with here.
fn toolchain_file(sh: &Shell, root: &Path) -> Result<Vec<u8>> {
    match std::fs::read(root.join("rust-toolchain.toml")) {
        Ok(bytes) => Ok(bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let version = cmd!(sh, "rustc --version")
                .quiet()
                .read()
                .map_err(|source| Error::Command { doing: "asking the host's rustc its version".to_owned(), source })?;
            let channel = version.split_whitespace().nth(1).ok_or(Error::RustcVersion)?;
            Ok(format!("[toolchain]\nchannel = \"{channel}\"\n").into_bytes())
        }
        Err(e) => Err(on_file("reading rust-toolchain.toml")(e)),
    }
}

/// An exclusive lock on a file in the temporary folder, held until dropped;
/// says so when it has to wait.
pub(crate) fn lock(name: &str, waiting_for: &str) -> Result<std::fs::File> {
    let path = std::env::temp_dir().join(name);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(on_file(format!("opening {}", path.display())))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            eprintln!("waiting for {waiting_for} ({})", path.display());
            file.lock().map_err(on_file(format!("locking {}", path.display())))?;
        }
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(on_file(format!("locking {}", path.display()))(e));
        }
    }
    Ok(file)
}
