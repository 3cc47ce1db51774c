//! `cargo xtask`: this workspace's project commands. boxcar's own commands
//! (keys, sealed secrets, images, deploys) come from the `boxcar` library, as
//! they would in any workspace; `demo` and `test` are this project's.
//!
//! Built without its `engine` feature (a fresh checkout's first build),
//! `main` first hands every engine command, `demo` and `test` among them, to
//! the xtask built with it. Then it takes the secret key out of the
//! environment before anything else can copy it, parses the command line,
//! moves to the project root and dispatches.

#[cfg(feature = "engine")]
mod demo;
#[cfg(feature = "engine")]
mod test;

/// This project's own commands, which need the engine: a build without it
/// hands them over. Both install an engine on a newcomer's machine: the
/// handover does so while the engine commands compile.
#[cfg(not(feature = "engine"))]
const OWN_ENGINE_COMMANDS: &[&str] = &["demo", "test"];

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
    #[cfg(feature = "engine")]
    Demo(demo::Args),
    #[cfg(feature = "engine")]
    Test(test::Args),
}

fn main() -> ExitCode {
    #[cfg(not(feature = "engine"))]
    if let Some(failed) =
        boxcar::hand_over_engine_commands(env!("CARGO_MANIFEST_DIR"), OWN_ENGINE_COMMANDS, OWN_ENGINE_COMMANDS)
    {
        return failed;
    }
    #[cfg(feature = "engine")]
    if let Err(why) = boxcar::cli::handover::check_handed_over(env!("CARGO_MANIFEST_DIR").as_ref()) {
        eprintln!("error: {why}");
        return ExitCode::FAILURE;
    }
    // First, while the process has one thread: take SECRET_KEY/SECRET_KEY_FILE
    // out of the environment so no child process (cargo, git, python) inherits it.
    let env_key = boxcar::take_key();
    #[cfg(feature = "engine")]
    let cli = Cli::parse();
    #[cfg(not(feature = "engine"))]
    let cli = {
        use clap::{CommandFactory as _, FromArgMatches as _};
        let matches = Cli::command().after_help(boxcar::engine_note(OWN_ENGINE_COMMANDS)).get_matches();
        Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
    };
    boxcar::exit(boxcar::start(env!("CARGO_MANIFEST_DIR").as_ref(), env_key).and_then(
        |(sh, mut ctx)| match cli.command {
            Command::Boxcar(command) => command.run(&sh, &mut ctx),
            #[cfg(feature = "engine")]
            Command::Demo(args) => demo::run(&sh, &mut ctx, args),
            #[cfg(feature = "engine")]
            Command::Test(args) => test::run(&sh, &ctx, args),
        },
    ))
}
