//! boxcar: ship a Rust service with its credentials sealed in git.
//!
//! The library behind `cargo xtask`: key pairs and sealed values per
//! deployment environment, a small reproducible image of the service, and
//! deploys to a Docker engine or a Swarm with the key held by the engine.
//! What it knows of the service is what `boxcar.toml` declares
//! ([`contract`]); nothing else.
//!
//! A workspace's own xtask drives all of it in three lines
//! (`xtask/src/main.rs`):
//!
//! ```no_run
//! fn main() -> std::process::ExitCode {
//!     boxcar::main(env!("CARGO_MANIFEST_DIR"))
//! }
//! ```
//!
//! or adds commands of its own beside boxcar's [`Command`] (as boxcar's own
//! xtask does with `demo` and `test`), calling [`take_key`] first, then
//! [`start`] and [`Command::run`]. An xtask whose own commands need the
//! engine gives them an `engine` feature of its own and, built without it,
//! hands them over with [`hand_over_engine_commands`] before anything else.

// Without the `engine` feature, much of the vocabulary (image layout, key
// mounts, labels) has no user left; the build with it, which clippy checks
// with warnings as errors, is the one that says whether code is dead.
#![cfg_attr(not(feature = "engine"), allow(dead_code, unreachable_pub))]

// The layers, top to bottom: each imports only from those below it.
pub mod adapters;
pub mod cli;
pub mod ops;
pub mod vocab;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

pub use cli::Command;
pub use vocab::project::{Context, EnvKey};

/// boxcar: ship a Rust service with its credentials sealed in git.
///
/// Each deployment environment has a key pair. Its public key and sealed
/// values live in deploy-config/<env>.toml (safe to commit); its secret key
/// lives outside the repository and is handed to the running service as
/// SECRET_KEY_FILE (or SECRET_KEY). boxcar.toml declares the services.
#[derive(Debug, clap::Parser)]
#[command(name = "cargo xtask", bin_name = "cargo xtask", version, propagate_version = true, max_term_width = 100)]
#[cfg_attr(not(feature = "engine"), command(after_help = engine_note(&[])))]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// What `--help` adds in a build without the engine commands: which they
/// are (boxcar's, then `own`, the xtask's own) and how they come.
pub fn engine_note(own: &[&str]) -> String {
    let all: Vec<&str> = cli::handover::ENGINE_COMMANDS.iter().chain(own).copied().collect();
    format!(
        "Engine commands: {}. This xtask was built without them (boxcar's `engine` feature): the first one you run \
         builds them, once.",
        all.join(", ")
    )
}

/// The whole command line of a workspace's `cargo xtask`: `xtask_manifest_dir`
/// is the xtask crate's `env!("CARGO_MANIFEST_DIR")`, whose workspace is the
/// project.
pub fn main(xtask_manifest_dir: &str) -> ExitCode {
    #[cfg(not(feature = "engine"))]
    if let Some(failed) = hand_over_engine_commands(xtask_manifest_dir, &[], &[]) {
        return failed;
    }
    #[cfg(feature = "engine")]
    if let Err(why) = cli::handover::check_handed_over(Path::new(xtask_manifest_dir)) {
        eprintln!("error: {why}");
        return ExitCode::FAILURE;
    }
    let env_key = take_key();
    let cli = <Cli as clap::Parser>::parse();
    exit(start(Path::new(xtask_manifest_dir), env_key).and_then(|(sh, mut ctx)| cli.command.run(&sh, &mut ctx)))
}

/// For an xtask built without its engine commands: when the command line
/// asks for one (boxcar's, or one of `own`, the xtask's own commands that
/// need the engine), builds the xtask with them and runs it in this
/// process's place (`cli::handover`); returns the failure if that could not
/// be done, or None when this command runs here. Call it first in `main`,
/// before [`take_key`]: the engine binary takes the key itself. `set_up`
/// names the commands that install an engine where none is: for those, the
/// engine is installed and the builders' Debian bootstrapped meanwhile.
pub fn hand_over_engine_commands(xtask_manifest_dir: &str, own: &[&str], set_up: &[&str]) -> Option<ExitCode> {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let command = cli::handover::engine_command(&args, own)?;
    let lock_file = project_root(Path::new(xtask_manifest_dir)).join("Cargo.lock");
    let set_up = set_up.contains(&command);
    Some(cli::handover::hand_over(Path::new(xtask_manifest_dir), &lock_file, command, &args, set_up))
}

/// Takes SECRET_KEY / SECRET_KEY_FILE out of the environment. Call it first
/// in `main`, while the process has one thread, so no child process (cargo,
/// git) inherits the key.
pub fn take_key() -> EnvKey {
    boxcar_secrets::take_from_env()
}

/// Finds the project (`BOXCAR_PROJECT_ROOT`, else the workspace that holds
/// `xtask_manifest_dir`), moves there, and returns the shell and context
/// every command takes.
pub fn start(xtask_manifest_dir: &Path, env_key: EnvKey) -> anyhow::Result<(xshell::Shell, Context)> {
    let root = project_root(xtask_manifest_dir);
    let invoked_from = std::env::current_dir()?;
    std::env::set_current_dir(&root)
        .map_err(|e| anyhow::anyhow!("cannot enter the project root {}: {e}", root.display()))?;
    let sh = xshell::Shell::new()?;
    Ok((sh, Context::new(root, invoked_from, env_key)))
}

/// Prints an error the way every boxcar command does, as the exit code.
pub fn exit(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// `BOXCAR_PROJECT_ROOT` (the CLI tests point it at scratch projects), else
/// the nearest folder above `dir` whose Cargo.toml has `[workspace]`, else
/// `dir`'s parent.
fn project_root(dir: &Path) -> PathBuf {
    if let Some(root) = std::env::var_os("BOXCAR_PROJECT_ROOT") {
        return PathBuf::from(root);
    }
    let is_workspace = |d: &Path| {
        std::fs::read_to_string(d.join("Cargo.toml"))
            .ok()
            .and_then(|t| t.parse::<toml::Table>().ok())
            .is_some_and(|t| t.contains_key("workspace"))
    };
    dir.ancestors().find(|d| is_workspace(d)).or(dir.parent()).unwrap_or(dir).to_owned()
}

#[cfg(all(test, feature = "engine"))]
mod tests {
    /// The commands a build without the engine has, and hands over the rest.
    const SECRETS_COMMANDS: &[&str] = &["keygen", "encrypt-secret", "approve", "check", "verify", "rotate-key"];

    #[test]
    fn every_command_is_a_secrets_command_or_handed_over() {
        let cli = <super::Cli as clap::CommandFactory>::command();
        let all: Vec<&str> = cli.get_subcommands().map(clap::Command::get_name).collect();
        let engine: Vec<&str> = all.iter().copied().filter(|c| !SECRETS_COMMANDS.contains(c)).collect();
        assert_eq!(engine, super::cli::handover::ENGINE_COMMANDS);
        assert_eq!(all.len(), SECRETS_COMMANDS.len() + engine.len());
        for command in engine {
            assert!(
                super::engine_note(&[]).contains(&format!(" {command},"))
                    || super::engine_note(&["demo"]).contains(&format!(" {command}, demo."))
            );
        }
    }
}
