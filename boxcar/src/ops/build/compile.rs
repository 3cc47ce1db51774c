//! The static musl build, run in a container from the builder image with the
//! tracked source tree copied in and named volumes for the cargo registry and
//! the target directory, so a second build is incremental.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::base::{TARGET, registry_volume};
use super::cache::Cache;
use super::error::{Error, Result, on_engine};
use super::target::{build_lock, create_target_volume, target_volume};
use bollard::Docker;
use bollard::models::{ContainerCreateBody, HostConfig, Mount, MountType};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, DownloadFromContainerOptionsBuilder, LogsOptionsBuilder,
    RemoveContainerOptionsBuilder, UploadToContainerOptionsBuilder,
};
use futures::StreamExt as _;

const GIT_VOLUME: &str = "boxcar-cargo-git";
/// A binary target of the workspace, for the builder to compile, and the
/// profile to compile it with.
#[derive(Debug, Clone)]
pub struct Binary {
    pub package: String,
    pub bin: String,
    pub profile: Profile,
    /// Other binaries `(package, bin)` compiled in the same cargo run, for
    /// builds of theirs that follow: cargo resolves features once for all of
    /// them, so a dependency they share compiles once, not once per feature
    /// set. Every binary of the run is cached under the name of the whole
    /// set, so a build of one of them alone never takes a binary compiled
    /// with the others' features.
    pub along: Vec<(String, String)>,
}

impl Binary {
    /// What the cache key adds for a binary compiled along others: a hash of
    /// the whole set, this one included, in any order.
    fn set_key(&self) -> String {
        if self.along.is_empty() {
            return String::new();
        }
        let mut set: Vec<(&str, &str)> = self.along.iter().map(|(p, b)| (p.as_str(), b.as_str())).collect();
        set.push((&self.package, &self.bin));
        super::cache::set_key(set)
    }

    /// The binaries compiled along this one, each as the build of its own
    /// that follows asks for it.
    fn companions(&self) -> Vec<Binary> {
        self.along
            .iter()
            .filter(|(p, b)| (p, b) != (&self.package, &self.bin))
            .map(|(package, bin)| {
                let mut along = self.along.clone();
                along.retain(|(p, b)| (p, b) != (package, bin));
                along.push((self.package.clone(), self.bin.clone()));
                Binary { package: package.clone(), bin: bin.clone(), profile: self.profile, along }
            })
            .collect()
    }
}

/// How the builder compiles: what production gets, or the inner loop's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Profile {
    /// The workspace's `release` profile: what production runs.
    #[default]
    Release,
    /// `release` without LTO, with 16 codegen units, incremental, without
    /// optimisation, linked by mold: a changed line is a new binary in
    /// seconds. Never for production.
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

    /// The profile's name in the binary cache: none for release, whose
    /// binaries keep the name they always had.
    fn cache_name(self) -> Option<&'static str> {
        (self != Profile::Release).then(|| self.cargo_name())
    }

    /// cargo's arguments for the profile. The fast one is defined here, with
    /// `--config`, so any workspace has it without a line in its Cargo.toml.
    /// These settings win over a `[profile.boxcar-fast]` there; its other
    /// settings and its package overrides (`[profile.boxcar-fast.package."*"]
    /// opt-level = 1`) still apply.
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
                    // Not 1: a changed line of the app took 12 s to compile
                    // at 1 and 2 s at 0, and a cold build twice as long
                    // (measured by hand on a busy machine; the image bench
                    // measures the one-line rebuild).
                    "opt-level = 0",
                ] {
                    args.extend(["--config".to_owned(), format!("profile.boxcar-fast.{setting}")]);
                }
                args
            }
        }
    }

    /// cargo's arguments in the builder: the profile's, and for the fast one
    /// the builder's linker wrapper, which links with mold (see
    /// builder.Dockerfile); release links as gcc does by default, where its
    /// link step is a small part of the build (LTO is the rest).
    pub fn builder_args(self) -> Vec<String> {
        let mut args = self.cargo_args();
        if self == Profile::Fast {
            args.extend(["--config".to_owned(), format!("target.{TARGET}.linker = \"boxcar-fast-cc\"")]);
        }
        args
    }
}

/// The fast profile's linker in the builder, from `BOXCAR_FAST_LINKER`:
/// `mold` (the default) or `ld`, gcc's default, for a service whose link mold
/// gets wrong. Checked here, before anything is built.
fn fast_linker(value: Option<String>) -> Result<&'static str> {
    match value.as_deref() {
        None | Some("" | "mold") => Ok("mold"),
        Some("ld") => Ok("ld"),
        Some(other) => Err(Error::FastLinker { value: crate::vocab::show::escape(other).into_owned() }),
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

/// Builds (or reuses) the binary `what` for the current sources.
pub async fn compile(
    sh: &xshell::Shell,
    docker: &Docker,
    root: &Path,
    builder: &str,
    what: &Binary,
    excluded: &[PathBuf],
    prefetch: Option<super::prefetch::Prefetch>,
) -> Result<Compiled> {
    let start = Instant::now();
    let linker = fast_linker(std::env::var("BOXCAR_FAST_LINKER").ok())?;
    let trees = super::sources::trees(sh, root, excluded)?;
    let files: usize = trees.iter().map(|t| t.files.len()).sum();
    let (sources, source_hash) = super::sources::read(&trees)?;
    let key = format!("{}{}", &source_hash[..16], what.set_key());
    let cache = Cache::of(root, builder, &what.bin, what.profile.cache_name(), &key);
    if let Some((binary, ca_bundle)) = cache.read() {
        let how = format!("cached: sources unchanged since the last build (source hash {})", &source_hash[..16]);
        return Ok(Compiled { binary, ca_bundle, how, took: start.elapsed() });
    }

    // One build at a time per target volume. Builds on other volumes run
    // alongside: the registry volume they share is guarded by cargo's own
    // package-cache lock, which the builder keeps in that volume.
    let target = target_volume(root);
    let _lock = super::base::lock(&build_lock(&target), &format!("another build on {target} to finish"))?;
    let seed = match prefetch {
        Some(prefetch) => prefetch.seed(root).await,
        None => None,
    };
    let cold_reason = match docker.inspect_volume(&target).await {
        Ok(_) => None,
        Err(_) => {
            create_target_volume(docker, &target, root).await?;
            Some(format!("cold: no {target} volume yet, every dependency compiles"))
        }
    };
    let name = format!("boxcar-build-{}-{}", std::process::id(), &source_hash[..8]);
    docker
        .create_container(
            Some(CreateContainerOptionsBuilder::default().name(&name).build()),
            build_container(builder, what, &target, linker),
        )
        .await
        .map_err(on_engine("creating the build container"))?;
    let output = format!("/target/{TARGET}/{}/{}", what.profile.cargo_name(), what.bin);
    let mut profile_cold = None;
    let result = async {
        if let Some(seed) = seed {
            seed_registry(docker, &name, seed).await?;
        }
        let record = sources_record(docker, &name).await;
        if cold_reason.is_none() && !profile_built(docker, &name, what.profile).await {
            // Said before the compile, which takes minutes.
            let reason = format!(
                "cold for the {} profile: {target} holds other profiles' builds only, and cargo keeps each \
                 profile's compiled crates in a folder of its own (their settings differ: opt-level, LTO, codegen \
                 units), so every dependency compiles once for this one",
                what.profile.cargo_name()
            );
            eprintln!("{reason}");
            profile_cold = Some(reason);
        }
        // A second past now: later than the start of every compile before.
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs();
        let (context, bumped) = super::sources::tar(&sources, record, now + 1)?;
        if bumped > 0 && bumped < files {
            eprintln!("{bumped} source file(s) differ from what {target} was last given");
        }
        let built = run_build(docker, &name, context, files, &output).await?;
        let mut companions = Vec::new();
        for companion in what.companions() {
            let path = format!("/target/{TARGET}/{}/{}", what.profile.cargo_name(), companion.bin);
            companions.push((download(docker, &name, &path).await?, companion));
        }
        Ok::<_, Error>((built, companions))
    }
    .await;
    let _ = docker
        .remove_container(&name, Some(RemoveContainerOptionsBuilder::default().force(true).v(true).build()))
        .await;
    let ((binary, ca_bundle, compiled), companions) = result?;
    cache.write(&binary, &ca_bundle)?;
    for (companion_binary, companion) in companions {
        Cache::of(root, builder, &companion.bin, companion.profile.cache_name(), &key)
            .write(&companion_binary, &ca_bundle)?;
    }
    // cargo's own count says how much compiled this time.
    let how = cold_reason.or(profile_cold).unwrap_or_else(|| {
        format!("warm: {target} holds earlier builds; {compiled} crate(s) compiled, the rest reused")
    });
    Ok(Compiled { binary, ca_bundle, how, took: start.elapsed() })
}

/// The build container: `cargo build` of `what` in the builder, with the
/// registry, git and target volumes mounted.
fn build_container(builder: &str, what: &Binary, target: &str, linker: &str) -> ContainerCreateBody {
    let mount = |source: &str, target: &str| Mount {
        source: Some(source.to_owned()),
        target: Some(target.to_owned()),
        typ: Some(MountType::VOLUME),
        ..Mount::default()
    };
    ContainerCreateBody {
        image: Some(builder.to_owned()),
        cmd: Some(
            // --keep-going: every build script that lacks a tool says so in
            // one round, and each gets its hint.
            ["cargo", "build", "--locked", "--keep-going", "--target", TARGET]
                .into_iter()
                .map(String::from)
                .chain(what.profile.builder_args())
                .chain(["-p", what.package.as_str(), "--bin", what.bin.as_str()].map(String::from))
                .chain(what.along.iter().flat_map(|(p, b)| ["-p".to_owned(), p.clone(), "--bin".to_owned(), b.clone()]))
                .collect(),
        ),
        working_dir: Some(super::sources::SRC.to_owned()),
        env: Some(vec![
            "CARGO_TARGET_DIR=/target".to_owned(),
            "CARGO_TERM_PROGRESS_WHEN=never".to_owned(),
            format!("BOXCAR_FAST_LINKER={linker}"),
        ]),
        host_config: Some(HostConfig {
            mounts: Some(vec![
                mount(&registry_volume(), "/usr/local/cargo/registry"),
                mount(GIT_VOLUME, "/usr/local/cargo/git"),
                mount(target, "/target"),
            ]),
            ..HostConfig::default()
        }),
        ..ContainerCreateBody::default()
    }
}

/// Copies the host's crates into the build container's registry volume.
/// Two first builds on other target volumes may both seed it: one at a time.
async fn seed_registry(docker: &Docker, name: &str, seed: super::prefetch::Seed) -> Result<()> {
    let _seeding = super::base::lock("boxcar-registry-seed.lock", "another build to seed the crate registry")?;
    eprintln!(
        "seeding the builder's crate registry with {} crates ({:.1} MiB) the host's cargo already has",
        seed.crates,
        seed.tar.len() as f64 / (1024.0 * 1024.0)
    );
    docker
        .upload_to_container(
            name,
            Some(UploadToContainerOptionsBuilder::default().path("/").build()),
            bollard::body_full(seed.tar.into()),
        )
        .await
        .map_err(on_engine("copying the host's crates into the builder's registry volume"))
}

pub(super) async fn run_build(
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
    let mut hints = super::hints::Hints::default();
    while let Some(item) = logs.next().await {
        let text = item.map_err(on_engine("reading the build output"))?.to_string();
        eprint!("  | {text}");
        for line in text.lines() {
            hints.read(line);
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
        let said = tail.iter().cloned().collect::<Vec<_>>().join("\n");
        return Err(Error::Compile { code, said, hints: hints.lines() });
    }
    let binary = download(docker, name, output).await?;
    let ca = download(docker, name, crate::vocab::layout::CA_BUNDLE).await?;
    Ok((binary, ca, compiled))
}

/// Copies one file out of a container.
pub(super) async fn download(docker: &Docker, name: &str, path: &str) -> Result<Vec<u8>> {
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

/// Whether the target volume holds a build in `profile` (cargo's lock file
/// in the profile's folder, there from its first build on).
async fn profile_built(docker: &Docker, container: &str, profile: Profile) -> bool {
    download(docker, container, &format!("/target/{TARGET}/{}/.cargo-lock", profile.cargo_name())).await.is_ok()
}

/// The target volume's record of the sources it was given (empty when it
/// has none or it cannot be read: every file then counts as changed).
async fn sources_record(docker: &Docker, container: &str) -> std::collections::BTreeMap<String, String> {
    match download(docker, container, &format!("/{}", super::sources::SOURCES_RECORD)).await {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_default(),
        Err(_) => Default::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fast_profile_is_release_without_what_makes_it_slow() {
        assert_eq!(Profile::Release.cargo_args(), ["--release"]);
        let fast = Profile::Fast.cargo_args().join(" ");
        assert!(
            fast.starts_with("--profile boxcar-fast --config profile.boxcar-fast.inherits = \"release\""),
            "{fast}"
        );
        for setting in ["lto = false", "codegen-units = 16", "incremental = true", "opt-level = 0"] {
            assert!(fast.contains(&format!("--config profile.boxcar-fast.{setting}")), "{fast}");
        }
        assert_eq!(Profile::Fast.cargo_name(), "boxcar-fast");
    }

    #[test]
    fn the_fast_profile_links_with_the_builders_wrapper_and_release_as_before() {
        assert_eq!(Profile::Release.builder_args(), Profile::Release.cargo_args());
        let fast = Profile::Fast.builder_args();
        assert_eq!(&fast[..fast.len() - 2], &Profile::Fast.cargo_args()[..]);
        assert_eq!(
            fast[fast.len() - 2..],
            ["--config", "target.x86_64-unknown-linux-musl.linker = \"boxcar-fast-cc\""]
        );
        assert_eq!(fast_linker(None).unwrap(), "mold");
        assert_eq!(fast_linker(Some(String::new())).unwrap(), "mold");
        assert_eq!(fast_linker(Some("mold".into())).unwrap(), "mold");
        assert_eq!(fast_linker(Some("ld".into())).unwrap(), "ld");
        let bad = fast_linker(Some("lld\u{1b}[2J".into())).unwrap_err().to_string();
        assert!(bad.starts_with("BOXCAR_FAST_LINKER `lld\\u{1b}[2J` is not a linker"), "{bad}");
    }

    fn binary(package: &str, bin: &str, along: &[(&str, &str)]) -> Binary {
        let along = along.iter().map(|(p, b)| ((*p).to_owned(), (*b).to_owned())).collect();
        Binary { package: package.into(), bin: bin.into(), profile: Profile::Fast, along }
    }

    #[test]
    fn binaries_compiled_together_are_cached_under_their_set() {
        let alone = binary("app", "app", &[]);
        assert_eq!(alone.set_key(), "");
        assert!(alone.companions().is_empty());
        let app = binary("app", "app", &[("standin", "standin")]);
        let key = app.set_key();
        assert!(key.starts_with("-with-") && key.len() == "-with-".len() + 8, "{key}");
        // The companion's own build asks for the set from its side: same key.
        let companions = app.companions();
        assert_eq!(companions.len(), 1);
        let standin = &companions[0];
        assert_eq!((standin.package.as_str(), standin.bin.as_str()), ("standin", "standin"));
        assert_eq!(standin.along, [("app".to_owned(), "app".to_owned())]);
        assert_eq!(standin.set_key(), key);
        assert_eq!(binary("standin", "standin", &[("app", "app")]).set_key(), key);
        // Another set, or another binary of a package, is another key.
        assert_ne!(binary("app", "app", &[("standin", "other")]).set_key(), key);
        assert_ne!(binary("app", "app", &[("standin", "standin"), ("x", "x")]).set_key(), key);
        let three = binary("app", "app", &[("b", "b"), ("c", "c")]);
        let keys: Vec<String> = three.companions().iter().map(Binary::set_key).collect();
        assert_eq!(keys, [three.set_key(), three.set_key()]);
    }

    #[test]
    fn binaries_compiled_together_are_one_cargo_run() {
        let app = binary("app", "app", &[("standin", "standin")]);
        let cmd = build_container("b:1", &app, "t", "mold").cmd.unwrap().join(" ");
        assert!(cmd.ends_with("-p app --bin app -p standin --bin standin"), "{cmd}");
        let cmd = build_container("b:1", &binary("app", "app", &[]), "t", "mold").cmd.unwrap().join(" ");
        assert!(cmd.ends_with("-p app --bin app"), "{cmd}");
    }
}
