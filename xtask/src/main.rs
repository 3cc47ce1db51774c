//! `cargo xtask`: boxcar's project commands (keys, sealed secrets, images,
//! deploys, the test suite).
//!
//! One module per command, each with an `Args` and a `run`. `main` parses the
//! command line, takes the secret key out of the environment before anything
//! else can copy it, moves to the project root and dispatches.

mod check;
mod demo;
mod deploy;
mod encrypt_secret;
mod engine;
mod image;
mod keygen;
mod keys;
mod manifests;
mod rotate_key;
mod test;
mod verify;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// boxcar: ship a Rust service with its credentials sealed in git.
///
/// Each deployment environment has a key pair. Its public key and sealed
/// values live in deploy-config/<env>.toml (safe to commit); its secret key
/// lives outside the repository and is handed to the running app as
/// SECRET_KEY_FILE (or SECRET_KEY).
#[derive(Debug, Parser)]
#[command(name = "cargo xtask", bin_name = "cargo xtask", version, propagate_version = true, max_term_width = 100)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Keygen(keygen::Args),
    EncryptSecret(encrypt_secret::Args),
    Check(check::Args),
    Verify(verify::Args),
    RotateKey(rotate_key::Args),
    Image(image::Args),
    ImageCheck(image::CheckCommand),
    Demo(demo::Args),
    Deploy(deploy::Args),
    Status(deploy::StatusArgs),
    Logs(deploy::LogsArgs),
    Undeploy(deploy::UndeployArgs),
    Manifests(manifests::Args),
    Test(test::Args),
}

fn main() -> ExitCode {
    // First, while the process has one thread: take SECRET_KEY/SECRET_KEY_FILE
    // out of the environment so no child process (cargo, git, python) inherits it.
    let env_key = boxcar_secrets::take_from_env();
    let cli = Cli::parse();
    match run(cli, env_key) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli, env_key: keys::EnvKey) -> anyhow::Result<()> {
    let root = project_root();
    let invoked_from = std::env::current_dir()?;
    std::env::set_current_dir(&root)
        .map_err(|e| anyhow::anyhow!("cannot enter the project root {}: {e}", root.display()))?;
    let sh = xshell::Shell::new()?;
    let mut ctx = keys::Context { root, invoked_from, env_key };
    match cli.command {
        Command::Keygen(args) => keygen::run(&ctx, args),
        Command::EncryptSecret(args) => encrypt_secret::run(&ctx, args),
        Command::Check(args) => check::run(&sh, &ctx, args),
        Command::Verify(args) => verify::run(&mut ctx, args),
        Command::RotateKey(args) => rotate_key::run(&mut ctx, args),
        Command::Image(args) => image::run(&sh, &mut ctx, args),
        Command::ImageCheck(args) => image::run_check(&mut ctx, args),
        Command::Demo(args) => demo::run(&sh, &mut ctx, args),
        Command::Deploy(args) => deploy::run(&mut ctx, args),
        Command::Status(args) => deploy::status(args),
        Command::Logs(args) => deploy::logs(args),
        Command::Undeploy(args) => deploy::undeploy(args),
        Command::Manifests(args) => manifests::run(&ctx, args),
        Command::Test(args) => test::run(&sh, &ctx, args),
    }
}

/// The workspace root. `BOXCAR_PROJECT_ROOT` points the commands at another
/// checkout; the CLI tests use it to work in a scratch repository.
fn project_root() -> PathBuf {
    match std::env::var_os("BOXCAR_PROJECT_ROOT") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the workspace").to_owned(),
    }
}
