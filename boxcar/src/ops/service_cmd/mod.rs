//! A service's own commands, which its contract names: `check` (is this
//! environment file right for the service?) and `instances` (may several
//! instances run on it?). boxcar knows nothing of what a service's settings
//! mean; the service answers for itself.
//!
//! The protocol: the service's binary runs with the contract's arguments and
//! the environment file's path appended, with no key and no network. Exit 0
//! means yes (for `check`: no problem); otherwise each output line is a
//! problem. `instances` prints `one` or `many`.
//!
//! `check` and `manifests` run the binary built on the host from the working
//! tree (`cargo build`); `deploy` runs it in a throwaway container of the very
//! image it deploys, on the environment file that image carries.

use std::path::{Path, PathBuf};

use xshell::{Shell, cmd};

use crate::vocab::contract::{self, Service};

#[cfg(feature = "engine")]
mod image;
#[cfg(feature = "engine")]
pub use image::{files_in_image, in_image};

/// What goes wrong running a service's own command.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("building `{package}` on this machine to run its own commands")]
    Build { package: String, source: xshell::Error },
    #[error(transparent)]
    Contract(#[from] contract::Error),
    #[error("running {}", .binary.display())]
    Run { binary: PathBuf, source: std::io::Error },
    #[cfg(feature = "engine")]
    #[error(transparent)]
    Engine(#[from] crate::ops::resources::Error),
    /// The command failed to run in the image (`command` as messages show it).
    #[error("running `{command}` in {image}")]
    InImage { command: String, image: String, source: Box<Error> },
    #[error("it did not finish within 60 s")]
    Timeout,
    #[error("the container vanished")]
    Vanished,
    #[error("reading {path} from the image")]
    Read { path: String, source: std::io::Error },
    /// `instances` printed something other than `one` or `many`.
    #[error("`{command}` should print `one` or `many`; it said (exit {code}):\n  {}", .lines.join("\n  "))]
    Answer { command: String, code: i64, lines: Vec<String> },
}

/// What a service's command said.
#[derive(Debug)]
pub struct Answer {
    pub code: i64,
    pub stdout: String,
    pub stderr: String,
}

impl Answer {
    /// Its output, one escaped problem a line.
    pub fn lines(&self) -> Vec<String> {
        let text = format!("{}\n{}", self.stdout, self.stderr);
        let lines: Vec<String> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(|l| crate::vocab::show::escape(l.strip_prefix("error: ").unwrap_or(l)).into_owned())
            .collect();
        if lines.is_empty() { vec![format!("it exited with code {} and said nothing", self.code)] } else { lines }
    }
}

/// How to show a command of `service` in messages: `hello check-config`.
pub fn describe(service: &Service, args: &[String]) -> String {
    crate::vocab::show::escape(&format!("{} {}", service.bin, args.join(" "))).into_owned()
}

/// Builds the service on the host (debug, as the tests do); returns its
/// binary, for [`native`] to run as often as needed.
pub fn build_native(sh: &Shell, root: &Path, service: &Service) -> Result<PathBuf, Error> {
    let (package, bin) = (&service.package, &service.bin);
    cmd!(sh, "cargo build --quiet --locked -p {package} --bin {bin}")
        .run()
        .map_err(|source| Error::Build { package: package.clone(), source })?;
    let metadata = contract::workspace(root)?;
    Ok(metadata.target_directory.as_std_path().join("debug").join(bin))
}

/// Runs the service's `binary` (from [`build_native`]) with `args` and `file`.
pub fn native(binary: &Path, args: &[String], file: &Path) -> Result<Answer, Error> {
    let output = std::process::Command::new(binary)
        .args(args)
        .arg(file)
        .env_remove(boxcar_secrets::SECRET_KEY)
        .env_remove(boxcar_secrets::SECRET_KEY_FILE)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|source| Error::Run { binary: binary.to_owned(), source })?;
    Ok(Answer {
        code: i64::from(output.status.code().unwrap_or(-1)),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    })
}

/// The service's answer to `instances`: true for `many`.
pub fn many_from(service: &Service, args: &[String], answer: &Answer) -> Result<bool, Error> {
    match (answer.code, answer.stdout.trim()) {
        (0, "many") => Ok(true),
        (0, "one") => Ok(false),
        _ => Err(Error::Answer { command: describe(service, args), code: answer.code, lines: answer.lines() }),
    }
}
