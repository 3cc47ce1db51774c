//! The builder image: a Debian base (pulled, or bootstrapped with mmdebstrap
//! when no registry is reachable) plus the pinned Rust toolchain with the musl
//! target, tagged by a hash of everything it is made from.

use std::path::Path;

use super::error::{Error, Result, on_engine, on_file};
use crate::adapters::host;
use crate::vocab::base::{MADE_AHEAD_FOR, PACKAGES, SUITE};
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
pub(crate) async fn ensure_base(docker: &Docker) -> Result<String> {
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
        bootstrap(docker).await?;
    }
    let image = docker.inspect_image(BASE).await.map_err(on_engine("inspecting the base image"))?;
    Ok(image.id.unwrap_or_default())
}

/// The builders' Debian base bootstrapped and imported into the engine: the
/// bootstrap made ahead while the engine commands compiled, when there is a
/// usable one, else a bootstrap now. Either way the file is removed once
/// imported.
async fn bootstrap(docker: &Docker) -> Result<()> {
    let ahead = crate::vocab::base::made_ahead_path();
    let (archive, _work) = match made_ahead(&ahead) {
        Some(archive) => {
            eprintln!("using the Debian {SUITE} bootstrap made meanwhile ({})", archive.display());
            (archive, None)
        }
        None => {
            let work = tempfile::Builder::new()
                .prefix("boxcar-bootstrap-")
                .tempdir()
                .map_err(on_file("creating a work folder"))?;
            let archive = work.path().join("rootfs.tar");
            host::bootstrap_debian(SUITE, PACKAGES, &archive, &host::Output::Terminal)?;
            (archive, Some(work))
        }
    };
    eprintln!("importing the bootstrapped file system as {BASE}");
    // The whole archive in memory (some 300 MB, once per machine): bollard
    // takes a body, and reading it in one go keeps this simple.
    let bytes = std::fs::read(&archive).map_err(on_file(format!("reading {}", archive.display())))?;
    let options = CreateImageOptionsBuilder::default()
        .from_src("-")
        .repo("boxcar/debian")
        .tag(SUITE)
        .changes(vec!["CMD [\"/bin/bash\"]".to_owned()])
        .build();
    let mut stream = docker.create_image(Some(options), Some(bollard::body_full(bytes.into())), None);
    let mut imported = Ok(());
    while let Some(item) = stream.next().await {
        if let Err(e) = item {
            imported = Err(on_engine("importing the base image")(e));
            break;
        }
    }
    let _ = std::fs::remove_file(&archive);
    imported
}

/// Whether a bootstrap made ahead `age` ago may still be used.
fn young(age: std::time::Duration) -> bool {
    age < MADE_AHEAD_FOR
}

/// The bootstrap made ahead at `path`, if it may be used: a file of root's
/// that no one else may write, younger than [`MADE_AHEAD_FOR`]. One that is
/// not is removed.
fn made_ahead(path: &Path) -> Option<std::path::PathBuf> {
    use std::os::unix::fs::MetadataExt as _;
    let meta = std::fs::symlink_metadata(path).ok()?;
    let young = meta.modified().ok().and_then(|m| m.elapsed().ok()).is_some_and(young);
    let roots = meta.file_type().is_file() && meta.uid() == 0 && meta.mode() & 0o022 == 0;
    if young && roots {
        return Some(path.to_owned());
    }
    let _ = std::fs::remove_file(path);
    None
}

/// The builder image for this checkout and service, built if its tag does
/// not exist yet: the toolchain's builder, and on it, when the service lists
/// `build.packages`, a layer with those packages (built once per set).
/// Returns its tag.
pub(crate) async fn ensure_builder(
    sh: &Shell,
    docker: &Docker,
    root: &Path,
    ca_bundle: Option<&Path>,
    packages: &[String],
) -> Result<String> {
    // Several builds may start at once (the test suite runs three): one
    // bootstraps the base and builds the builder, the others wait and then
    // find both made, instead of each bootstrapping its own.
    let _lock = lock("boxcar-builder.lock", "another build to finish the base and builder images")?;
    let base_id = ensure_base(docker).await?;
    let dockerfile = BUILDER_DOCKERFILE.as_bytes().to_vec();
    let channel = toolchain_channel(sh, root)?;
    let toolchain = format!("[toolchain]\nchannel = \"{channel}\"\nprofile = \"minimal\"\n").into_bytes();
    let ca = match ca_bundle {
        Some(path) => std::fs::read(path).map_err(on_file(format!("reading the CA bundle {}", path.display())))?,
        None => Vec::new(),
    };
    let packages_arg = PACKAGES.join(" ");
    let tag = format!(
        "boxcar/builder:{}",
        hash_of(&[&dockerfile, &toolchain, base_id.as_bytes(), &ca, packages_arg.as_bytes()])
    );
    if docker.inspect_image(&tag).await.is_ok() {
        eprintln!("builder image {tag} is up to date");
    } else {
        eprintln!("building the builder image {tag} (Debian, gcc, musl-tools, Rust from rust-toolchain.toml)");
        let files =
            [("Dockerfile", &dockerfile[..]), ("rust-toolchain.toml", &toolchain[..]), ("host-ca.crt", &ca[..])];
        build_image(docker, &tag, &files, &[("BASE", BASE), ("TOOLCHAIN", &channel), ("BASE_PACKAGES", &packages_arg)])
            .await
            .map_err(|said| Error::Builder { tag: tag.clone(), said })?;
    }
    if packages.is_empty() {
        return Ok(tag);
    }
    let list = packages.join(" ");
    let with = format!("{tag}-{}", hash_of(&[PACKAGES_DOCKERFILE.as_bytes(), list.as_bytes()]));
    if docker.inspect_image(&with).await.is_ok() {
        eprintln!("builder image {with} (with {list}) is up to date");
        return Ok(with);
    }
    eprintln!("adding {list} to the builder, as {with} (once for this set of build.packages)");
    let files = [("Dockerfile", PACKAGES_DOCKERFILE.as_bytes())];
    build_image(docker, &with, &files, &[("BUILDER", &tag), ("PACKAGES", &list)])
        .await
        .map_err(|said| Error::Packages { list: list.clone(), said })?;
    Ok(with)
}

/// apt's error lines (`E: Unable to locate package foo`) in a build's
/// output, joined, escaped for a terminal; None when it said none.
///
/// The engine colours each piece of a step's stderr (`ESC[91m` … `ESC[0m`),
/// and apt writes a line in pieces, so the colours are taken out first. Those
/// colour codes (CSI sequences) are all there is to take out, so this is a
/// loop rather than a crate.
fn apt_errors(output: &str) -> Option<String> {
    let mut plain = String::with_capacity(output.len());
    let mut chars = output.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // ESC [ parameters… final byte (@ to ~).
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
            continue;
        }
        plain.push(c);
    }
    let lines: Vec<String> =
        plain.lines().filter(|l| l.starts_with("E: ")).map(|l| crate::vocab::show::escape(l).into_owned()).collect();
    (!lines.is_empty()).then(|| lines.join("; "))
}

/// The first 12 hex digits of the SHA-256 of the parts, each preceded by its
/// length (so no two lists of parts hash alike).
fn hash_of(parts: &[&[u8]]) -> String {
    let mut hash = Sha256::new();
    for part in parts {
        hash.update((part.len() as u64).to_le_bytes());
        hash.update(part);
    }
    hex::encode(&hash.finalize()[..6])
}

/// The packages' layer on a builder. Their names are checked when the
/// contract is read (nothing a shell would read), and reach the command as a
/// build argument.
const PACKAGES_DOCKERFILE: &str = "\
ARG BUILDER
FROM ${BUILDER}
ARG PACKAGES
RUN apt-get update \\
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ${PACKAGES} \\
 && rm -rf /var/lib/apt/lists/*
";

/// Builds `tag` from the files given as its context (classic builder),
/// showing its output; on failure, what it said went wrong: apt's `E:` lines
/// when there are any (the one line that names a missing package), else the
/// engine's message.
async fn build_image(
    docker: &Docker,
    tag: &str,
    files: &[(&str, &[u8])],
    args: &[(&str, &str)],
) -> std::result::Result<(), String> {
    let mut context = tar::Builder::new(Vec::new());
    for (name, data) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(0);
        header.set_cksum();
        context.append_data(&mut header, name, *data).map_err(|e| format!("writing the build context: {e}"))?;
    }
    let context = context.into_inner().map_err(|e| format!("writing the build context: {e}"))?;
    let args = args.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    let options = BuildImageOptionsBuilder::default()
        .dockerfile("Dockerfile")
        .t(tag)
        .rm(true)
        .forcerm(true)
        .buildargs(&args)
        .build();
    let mut stream = docker.build_image(options, None, Some(bollard::body_full(context.into())));
    // The output, kept (its last 64 KiB) for apt's own lines should it fail.
    let mut output = String::new();
    while let Some(item) = stream.next().await {
        let info = match item {
            Ok(info) => info,
            Err(e) => return Err(apt_errors(&output).unwrap_or_else(|| e.to_string())),
        };
        if let Some(text) = info.stream {
            eprint!("{text}");
            output.push_str(&text);
            if output.len() > 128 * 1024 {
                let cut = output.ceil_char_boundary(output.len() - 64 * 1024);
                output.drain(..cut);
            }
        }
        if let Some(err) = info.error_detail.and_then(|d| d.message) {
            return Err(apt_errors(&output).unwrap_or(err));
        }
    }
    if docker.inspect_image(tag).await.is_err() {
        return Err("the build ended without an image".to_owned());
    }
    Ok(())
}

/// The builder's Dockerfile: part of the library, since the projects it
/// builds have none of their own.
const BUILDER_DOCKERFILE: &str = include_str!("../../../builder.Dockerfile");

/// The toolchain the builder installs (the `rust-toolchain.toml` it is
/// given holds this and nothing else): only the channel, from the project's
/// file or, where a project has none, the host's `rustc`, so the builder compiles with what the project
/// compiles with here. Only the channel, because that is all a build in the
/// builder uses (its target is always musl, and components such as clippy
/// or rustfmt are the host's business): one builder per toolchain, whatever
/// says which it is and however the file is written.
fn toolchain_channel(sh: &Shell, root: &Path) -> Result<String> {
    let path = root.join("rust-toolchain.toml");
    match std::fs::read_to_string(&path) {
        Ok(text) => channel_of(&text).ok_or(Error::Toolchain { path }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let version = cmd!(sh, "rustc --version")
                .quiet()
                .read()
                .map_err(|source| Error::Command { doing: "asking the host's rustc its version".to_owned(), source })?;
            Ok(version.split_whitespace().nth(1).ok_or(Error::RustcVersion)?.to_owned())
        }
        Err(e) => Err(on_file("reading rust-toolchain.toml")(e)),
    }
}

/// `toolchain.channel` of a `rust-toolchain.toml`, when it is a name rustup
/// could take (letters, digits, `.`, `-`, `_`: a version, `stable`, a dated
/// nightly), so it can stand in the file the builder is given.
fn channel_of(text: &str) -> Option<String> {
    let file: toml::Table = text.parse().ok()?;
    let channel = file.get("toolchain")?.get("channel")?.as_str()?;
    let ok =
        !channel.is_empty() && channel.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
    ok.then(|| channel.to_owned())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apt_errors_are_read_through_the_engines_colours() {
        // As the engine streamed it, apt's line in three coloured pieces.
        let output = "Reading state information...\n\u{1b}[91mE\u{1b}[0m\u{1b}[91m: \u{1b}[0m\u{1b}[91mUnable to locate \
                      package nope-zz\u{1b}[0m\u{1b}[91m\n\u{1b}[0mRemoving intermediate container 277ab12e2ea0\n";
        assert_eq!(apt_errors(output).as_deref(), Some("E: Unable to locate package nope-zz"));
        let two = "E: Unable to locate package a\nE: Unable to locate package b\n";
        assert_eq!(apt_errors(two).as_deref(), Some("E: Unable to locate package a; E: Unable to locate package b"));
        assert_eq!(apt_errors("Step 1/3 : FROM x\n error: E: in the middle\n"), None);
        // A control character in apt's line reaches the terminal escaped.
        assert_eq!(apt_errors("E: bad \u{7}name\n").as_deref(), Some("E: bad \\u{7}name"));
    }

    #[test]
    fn a_toolchain_is_its_channel() {
        assert_eq!(channel_of("[toolchain]\nchannel = \"1.95.0\"\n").as_deref(), Some("1.95.0"));
        let commented =
            "# pinned\n[toolchain]\nprofile = \"default\"\ncomponents = [\"clippy\"]\nchannel = \"1.95.0\"\n";
        assert_eq!(channel_of(commented).as_deref(), Some("1.95.0"));
        assert_eq!(
            channel_of("[toolchain]\nchannel = \"nightly-2026-01-01\"\n").as_deref(),
            Some("nightly-2026-01-01")
        );
        for bad in [
            "",
            "[toolchain]\n",
            "[toolchain]\nchannel = \"\"\n",
            "[toolchain]\nchannel = \"1.95\\\"; x\"\n",
            "channel = 1",
        ] {
            assert_eq!(channel_of(bad), None, "{bad}");
        }
    }

    #[test]
    fn only_a_young_bootstrap_of_roots_that_no_one_else_may_write_is_taken() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("debian.tar");
        let write = |mode: u32, age_hours: u64| {
            std::fs::write(&path, b"rootfs").unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            let when = std::time::SystemTime::now() - std::time::Duration::from_secs(age_hours * 3600);
            std::fs::File::options().write(true).open(&path).unwrap().set_modified(when).unwrap();
        };
        let root = host::is_root().unwrap();
        write(0o644, 1);
        // Only root's file is taken: the test's own is when it runs as root.
        assert_eq!(made_ahead(&path).is_some(), root);
        if root {
            assert!(path.exists(), "a usable bootstrap stays for its import");
        }
        for (mode, age_hours, why) in [(0o664, 1, "group-writable"), (0o646, 1, "world-writable"), (0o644, 25, "old")] {
            write(mode, age_hours);
            assert_eq!(made_ahead(&path), None, "{why}");
            assert!(!path.exists(), "a {why} bootstrap is removed");
        }
        // A link is not followed, and nothing is there to take.
        std::fs::write(dir.path().join("elsewhere"), b"rootfs").unwrap();
        std::os::unix::fs::symlink(dir.path().join("elsewhere"), &path).unwrap();
        assert_eq!(made_ahead(&path), None);
        assert_eq!(made_ahead(&dir.path().join("missing.tar")), None);
        assert!(young(MADE_AHEAD_FOR - std::time::Duration::from_nanos(1)));
        assert!(!young(MADE_AHEAD_FOR));
    }
}
