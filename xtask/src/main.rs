//! `cargo xtask`: this workspace's project commands. boxcar's own commands
//! (keys, sealed secrets, images, deploys) come from the `boxcar` library, as
//! they would in any workspace; `demo` and `test` are this project's.
//!
//! `main` takes the secret key out of the environment before anything else
//! can copy it, parses the command line, moves to the project root and
//! dispatches.

mod demo;
mod test;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// boxcar: ship a Rust service with its credentials sealed in git.
///
/// Each deployment environment has a key pair. Its public key and sealed
/// values live in deploy-config/<env>.toml (safe to commit); its secret key
/// lives outside the repository and is handed to the running service as
/// SECRET_KEY_FILE (or SECRET_KEY). boxcar.toml declares the services.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask", bin_name = "cargo xtask", version, propagate_version = true, max_term_width = 100)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    #[command(flatten)]
    Boxcar(boxcar::Command),
    Demo(demo::Args),
    Test(test::Args),
}

fn main() -> ExitCode {
    // First, while the process has one thread: take SECRET_KEY/SECRET_KEY_FILE
    // out of the environment so no child process (cargo, git, python) inherits it.
    let env_key = boxcar::take_key();
    let cli = Cli::parse();
    boxcar::exit(boxcar::start(env!("CARGO_MANIFEST_DIR").as_ref(), env_key).and_then(
        |(sh, mut ctx)| match cli.command {
            Command::Boxcar(command) => command.run(&sh, &mut ctx),
            Command::Demo(args) => demo::run(&sh, &mut ctx, args),
            Command::Test(args) => test::run(&sh, &ctx, args),
        },
    ))
}
