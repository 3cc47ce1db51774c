//! What building an image can end in, from the inputs checked before any
//! engine is asked to the image the engine reports after loading it.

use crate::ops::resources;
use crate::vocab::show::lines;

/// A failed image build or image check.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `git rev-parse HEAD` failed: no checkout, or no commit yet.
    #[error("the image is built from a git checkout with at least one commit")]
    NoCommit { source: xshell::Error },
    /// An environment file that would ship is unreadable, unapproved, or
    /// does not approve the service's run-time contract.
    #[error(
        "{} problem(s) in the environment files that would ship in the image; nothing was built \
         (`cargo xtask check` lists them too):{}",
        .problems.len(),
        lines(.problems)
    )]
    EnvFiles { problems: Vec<String> },
    /// A key given to search for belongs to no environment.
    #[error(
        "the key from {from} (key id {key_id}) belongs to no environment in {dir}/{}",
        .unreadable.iter().map(|e| format!("\n  (could not read: {e})")).collect::<String>()
    )]
    KeyOfNoEnvironment { from: String, key_id: String, dir: String, unreadable: Vec<String> },
    /// A file the contract puts into the image cannot be read.
    #[error("{file}: service `{service}`: files: from = `{from}` cannot be read", file = crate::vocab::contract::FILE)]
    ExtraFile { service: String, from: String, source: std::io::Error },
    #[error("--ca-bundle {path}: no such file")]
    CaBundleMissing { path: String },
    #[error("SOURCE_DATE_EPOCH `{value}` is not a number of seconds")]
    Epoch { value: String, source: std::num::ParseIntError },

    /// Bootstrapping the Debian base failed.
    #[error(transparent)]
    Host(#[from] crate::adapters::host::Error),
    /// The engine's build of the builder image said it failed.
    #[error("building {tag} failed: {said}")]
    Builder { tag: String, said: String },
    /// apt-get in the builder could not install `build.packages`.
    #[error(
        "{file}: build.packages: the builder could not install {list}: {said}; check each name against Debian bookworm (packages.debian.org); nothing was built",
        file = crate::vocab::contract::FILE
    )]
    Packages { list: String, said: String },
    #[error("{}: no toolchain.channel rustup could take (like channel = \"1.95.0\"); the builder installs that toolchain", path.display())]
    Toolchain { path: std::path::PathBuf },
    #[error(
        "BOXCAR_FAST_LINKER `{value}` is not a linker the builder has: `mold` (the default) or `ld` (gcc's default); nothing was built"
    )]
    FastLinker { value: String },
    #[error("`rustc --version` said no version")]
    RustcVersion,
    /// Cargo.lock is not TOML.
    #[error("reading {path}")]
    LockFile { path: String, source: toml::de::Error },

    /// cargo in the builder failed; `said` is the end of its output.
    /// `hints`: a line for each tool or library the output says is missing,
    /// each starting with a newline (empty when none), after the output.
    #[error("the build failed (exit {code}); no image was built. The compiler said:\n{said}{hints}")]
    Compile { code: i64, said: String, hints: String },
    #[error("the build container vanished")]
    Vanished,
    #[error("{path} in the builder is a symlink; expected a file")]
    Symlink { path: String },
    #[error("{path} is not in the build container")]
    NotInContainer { path: String },
    #[error("compiling boxcar-probe")]
    Probe { source: Box<Error> },

    #[error("the compiled binary is not static: {why}; no image was built")]
    NotStatic { why: String },
    /// The image check found a secret, a key, a dynamic executable or an
    /// image over its size budget.
    #[error(
        "the image check found {} problem(s); nothing was tagged or written:{}",
        .problems.len(),
        lines(&.problems.iter().map(|p| format!("image check: {p}")).collect::<Vec<_>>())
    )]
    CheckFailed { problems: Vec<String> },
    /// An image archive without the parts every image has.
    #[error("{problem}")]
    Archive { problem: String },
    #[error("the engine reports image ID {reported:?} for {tag}, not the built {built}")]
    LoadedOther { reported: Option<String>, tag: String, built: String },

    /// A file could not be read or written; `doing` says which.
    #[error("{doing}")]
    File { doing: String, source: std::io::Error },
    /// A command on the host failed; `doing` says which.
    #[error("{doing}")]
    Command { doing: String, source: xshell::Error },
    #[error(transparent)]
    Engine(#[from] resources::Error),
    #[error(transparent)]
    Project(#[from] crate::vocab::project::Error),
    #[error(transparent)]
    Contract(#[from] crate::vocab::contract::Error),
    #[error(transparent)]
    Git(#[from] crate::adapters::git::Error),
    #[error(transparent)]
    Secrets(#[from] boxcar_secrets::Error),
    #[error(transparent)]
    Intake(#[from] boxcar_secrets::IntakeError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    #[error(transparent)]
    Shell(#[from] xshell::Error),
    #[error(transparent)]
    Api(#[from] bollard::errors::Error),
    #[error(transparent)]
    NoEngine(#[from] crate::adapters::engine::Error),
    #[error(transparent)]
    Number(#[from] std::num::ParseIntError),
    #[error(transparent)]
    Base64(#[from] base64::DecodeError),
}

/// Maps an I/O error to [`Error::File`] saying what was done.
pub(crate) fn on_file(doing: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let doing = doing.into();
    move |source| Error::File { doing, source }
}

/// Maps an engine error to [`Error::Engine`] saying what was asked.
pub(crate) fn on_engine(doing: impl Into<String>) -> impl FnOnce(bollard::errors::Error) -> Error {
    let doing = doing.into();
    move |source| Error::Engine(resources::Error::Api { doing, source })
}

/// A build step's result.
pub(crate) type Result<T, E = Error> = std::result::Result<T, E>;
