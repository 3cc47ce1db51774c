//! `cargo bench -p xtask --bench xtask_build`: how long a fresh checkout
//! waits before its first `cargo xtask` command, against a plain clap binary.
//!
//! In a scratch folder it makes two workspaces with this checkout's
//! Cargo.lock (the same crate versions, no registry look-up):
//! 1. a team's workspace as README's "Ship your own service" sets it up: an
//!    `xtask` package whose `main` is `boxcar::main`, boxcar by path (and, as
//!    README has it, with the `engine` feature as a dev-dependency only: the
//!    first build is the secrets commands, the engine's built at first use);
//! 2. the same with `features = ["engine"]`: every command in the first
//!    build, as every xtask was before the feature existed;
//! 3. the baseline: one binary that parses a clap derive command line, the
//!    least a `cargo xtask` could compile.
//!
//! For each, in an empty target folder, `cargo run --offline -- --help`:
//! the whole cold build and the first command, what a person waits for after
//! `git clone`; and for the first, then `image --help`: the first engine
//! command, which builds the rest. The crates are fetched first (untimed), as on a machine that
//! has built a Rust project before. Rounds alternate between the two; the
//! median counts. `--rounds N` (default 1; each is about 5 minutes on 2
//! cores). Everything is in a temporary folder removed at the end.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

/// The baseline's whole program.
const CLAP_MAIN: &str = r#"use clap::Parser;

/// A command line as small as a task runner's can be.
#[derive(Debug, Parser)]
enum Cli {
    /// Says hello.
    Hello { name: Option<String> },
}

fn main() {
    println!("{:?}", Cli::parse());
}
"#;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1).filter(|a| a != "--bench");
    let mut rounds = 1usize;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--rounds" => rounds = args.next().context("--rounds takes a number")?.parse()?,
            other => bail!("unknown argument `{other}`; this bench takes --rounds N"),
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().context("no workspace root")?.to_owned();
    let scratch = tempfile::Builder::new().prefix("boxcar-xtask-build-").tempdir()?;
    let team = team_workspace(&root, scratch.path(), "team", "")?;
    let whole = team_workspace(&root, scratch.path(), "whole", ", features = [\"engine\"]")?;
    let baseline = clap_workspace(&root, scratch.path())?;
    for ws in [&team, &whole, &baseline] {
        cargo(ws, &["fetch", "--locked"], None).with_context(|| format!("fetching the crates of {}", ws.display()))?;
    }
    let help = ["run", "--offline", "--locked", "-p", "xtask", "--", "--help"];
    let (mut xtask, mut engine, mut all, mut clap) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 1..=rounds {
        let took = cold_run(&baseline, &["run", "--offline", "--locked", "--", "--help"])?;
        eprintln!("round {round}: clap-only binary, cold build and --help: {:.1} s", took.as_secs_f64());
        clap.push(took);
        let took = cold_run(&team, &help)?;
        eprintln!("round {round}: a team's xtask on boxcar, cold build and --help: {:.1} s", took.as_secs_f64());
        xtask.push(took);
        // Its first engine command afterwards: the handover's build of the rest.
        let start = Instant::now();
        cargo(
            &team,
            &["run", "--offline", "--locked", "-p", "xtask", "--", "image", "--help"],
            Some(&team.join("target")),
        )?;
        let took = start.elapsed();
        eprintln!("round {round}: then its first engine command (image --help): {:.1} s", took.as_secs_f64());
        engine.push(took);
        let took = cold_run(&whole, &help)?;
        eprintln!(
            "round {round}: the xtask with every command (as before), cold build and --help: {:.1} s",
            took.as_secs_f64()
        );
        all.push(took);
    }
    let (xtask, engine, all, clap) = (median(xtask), median(engine), median(all), median(clap));
    let ratio = |d: Duration| d.as_secs_f64() / clap.as_secs_f64();
    println!("fresh checkout to the first `cargo xtask` (cold build + --help), median of {rounds} round(s):");
    println!("  xtask on boxcar (secrets commands)   {:>7.1} s  {:>5.1}x", xtask.as_secs_f64(), ratio(xtask));
    println!("    then the first engine command      {:>7.1} s", engine.as_secs_f64());
    println!("  xtask with every command (before)    {:>7.1} s  {:>5.1}x", all.as_secs_f64(), ratio(all));
    println!("  clap-only (baseline)                 {:>7.1} s   1.0x", clap.as_secs_f64());
    println!("  ({} cores; crates present, target folders empty)", std::thread::available_parallelism()?);
    Ok(())
}

/// README's xtask, with this checkout's boxcar by path, in `scratch/name`;
/// `features` goes into its boxcar dependency.
fn team_workspace(root: &Path, scratch: &Path, name: &str, features: &str) -> anyhow::Result<PathBuf> {
    let ws = scratch.join(name);
    std::fs::create_dir_all(ws.join("xtask/src"))?;
    std::fs::write(ws.join("Cargo.toml"), "[workspace]\nresolver = \"3\"\nmembers = [\"xtask\"]\n")?;
    std::fs::write(
        ws.join("xtask/Cargo.toml"),
        format!(
            "[package]\nname = \"xtask\"\nversion = \"0.1.0\"\nedition = \"2024\"\npublish = false\n\n\
             [dependencies]\nboxcar = {{ path = {0:?}{features} }}\n\n\
             [dev-dependencies]\nboxcar = {{ path = {0:?}, features = [\"engine\"] }}\n",
            root.join("boxcar")
        ),
    )?;
    std::fs::write(
        ws.join("xtask/src/main.rs"),
        "fn main() -> std::process::ExitCode {\n    boxcar::main(env!(\"CARGO_MANIFEST_DIR\"))\n}\n",
    )?;
    lock_like(root, &ws)?;
    Ok(ws)
}

/// One clap derive binary, clap as this workspace has it.
fn clap_workspace(root: &Path, scratch: &Path) -> anyhow::Result<PathBuf> {
    let manifest = std::fs::read_to_string(root.join("Cargo.toml"))?;
    let clap = manifest
        .lines()
        .find(|l| l.starts_with("clap = "))
        .context("the workspace's Cargo.toml has no clap line")?
        .to_owned();
    let ws = scratch.join("clap-only");
    std::fs::create_dir_all(ws.join("src"))?;
    std::fs::write(
        ws.join("Cargo.toml"),
        format!(
            "[package]\nname = \"clap-only\"\nversion = \"0.1.0\"\nedition = \"2024\"\npublish = false\n\n\
             [dependencies]\n{clap}\n"
        ),
    )?;
    std::fs::write(ws.join("src/main.rs"), CLAP_MAIN)?;
    lock_like(root, &ws)?;
    Ok(ws)
}

/// This checkout's Cargo.lock, trimmed by cargo to what `ws` uses (every
/// version one this checkout has; cargo may read the registry's index for
/// crates of other platforms, untimed).
fn lock_like(root: &Path, ws: &Path) -> anyhow::Result<()> {
    std::fs::copy(root.join("Cargo.lock"), ws.join("Cargo.lock"))?;
    std::fs::copy(root.join("rust-toolchain.toml"), ws.join("rust-toolchain.toml"))?;
    cargo(ws, &["metadata", "--format-version", "1"], None)?;
    Ok(())
}

/// `cargo args` in `ws` with an empty target folder, timed.
fn cold_run(ws: &Path, args: &[&str]) -> anyhow::Result<Duration> {
    let target = ws.join("target");
    if target.exists() {
        std::fs::remove_dir_all(&target)?;
    }
    let start = Instant::now();
    cargo(ws, args, Some(&target))?;
    Ok(start.elapsed())
}

fn cargo(ws: &Path, args: &[&str], target: Option<&Path>) -> anyhow::Result<()> {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.args(args).current_dir(ws).stdout(Stdio::null()).stderr(Stdio::piped());
    // The bench's own settings must not reach the builds it times.
    for var in ["CARGO_TARGET_DIR", "RUSTFLAGS", "CARGO_BUILD_RUSTFLAGS", "CARGO_ENCODED_RUSTFLAGS"] {
        cmd.env_remove(var);
    }
    if let Some(target) = target {
        cmd.env("CARGO_TARGET_DIR", target);
    }
    let out = cmd.output().with_context(|| format!("running cargo {}", args.join(" ")))?;
    if !out.status.success() {
        bail!("cargo {} in {} failed:\n{}", args.join(" "), ws.display(), String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}
