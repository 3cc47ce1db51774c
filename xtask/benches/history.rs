//! `cargo bench -p xtask --bench history`: what `cargo xtask check` costs as
//! history grows, the number a person waits for in CI.
//!
//! In a scratch repository of N commits (every 10th approves environment
//! `prod` again with a new setting, every 25th merges a side branch, the rest
//! change `Cargo.toml` or a source file, as a workspace's history does),
//! `cargo xtask check` runs through the workspace's alias (a debug build, as
//! people run it; built before anything is timed) from three bases: the root
//! commit (the whole history), HEAD~50, and HEAD (nothing to follow: the
//! baseline, what `check` costs besides history). Five runs each, the median
//! counts; ratios are against the baseline of the same size.
//!
//! `--quick` makes 100 commits only. Everything is made in a temporary
//! folder removed at the end.

use std::path::Path;
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use boxcar_secrets::{EnvDocument, SecretKey};

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
    let quick = std::env::args().any(|a| a == "--quick");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().context("the workspace")?.to_owned();
    // Build the debug xtask first, so no build is timed.
    let status = Command::new("cargo").args(["build", "--quiet", "--package", "xtask"]).current_dir(&root).status()?;
    if !status.success() {
        bail!("building xtask failed");
    }
    println!("{:>8}  {:<14} {:>9} {:>8}", "commits", "base", "median", "ratio");
    for commits in if quick { vec![100] } else { vec![100, 1000] } {
        let dir = tempfile::tempdir()?;
        let keys = tempfile::tempdir()?;
        let first = make_history(dir.path(), commits)?;
        let baseline = time(&root, dir.path(), keys.path(), "HEAD")?;
        for (label, base) in [("root", first.as_str()), ("HEAD~50", "HEAD~50"), ("HEAD", "HEAD")] {
            let took = if base == "HEAD" { baseline } else { time(&root, dir.path(), keys.path(), base)? };
            println!(
                "{commits:>8}  {label:<14} {:>7.2} s {:>7.2}x",
                took.as_secs_f64(),
                took.as_secs_f64() / baseline.as_secs_f64()
            );
        }
    }
    Ok(())
}

/// The median of five `cargo xtask check --base BASE` runs in `repo`.
fn time(workspace: &Path, repo: &Path, keys: &Path, base: &str) -> anyhow::Result<Duration> {
    let mut runs = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        let out = Command::new("cargo")
            .args(["xtask", "check", "--base", base])
            .current_dir(workspace)
            .env("BOXCAR_PROJECT_ROOT", repo)
            .env("BOXCAR_KEY_DIR", keys)
            .env_remove("SECRET_KEY")
            .env_remove("SECRET_KEY_FILE")
            .output()?;
        runs.push(started.elapsed());
        if !out.status.success() {
            bail!("check --base {base} failed:\n{}", String::from_utf8_lossy(&out.stdout));
        }
    }
    runs.sort();
    Ok(runs[runs.len() / 2])
}

/// Makes the history in `dir`; returns its root commit.
fn make_history(dir: &Path, commits: usize) -> anyhow::Result<String> {
    let git = |args: &[&str]| -> anyhow::Result<String> {
        let out = Command::new("git")
            .args(["-c", "user.name=bench", "-c", "user.email=bench@example.invalid"])
            .args(args)
            .current_dir(dir)
            .output()?;
        if !out.status.success() {
            bail!("git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8(out.stdout)?.trim().to_owned())
    };
    git(&["init", "-q", "-b", "main"])?;
    std::fs::create_dir_all(dir.join("deploy-config"))?;
    std::fs::create_dir_all(dir.join("src"))?;
    let key = SecretKey::generate();
    let env_file = dir.join("deploy-config/prod.toml");
    let approve = |n: usize| -> anyhow::Result<()> {
        let text = match std::fs::read_to_string(&env_file) {
            Ok(text) => text.replace(&format!("n = {}", n - 1), &format!("n = {n}")),
            Err(_) => format!("public_key = \"{}\"\n\n[app]\nn = {n}\n", key.public_key().to_base64()),
        };
        let mut doc = EnvDocument::parse(&env_file, &text)?;
        doc.approve(&key)?;
        std::fs::write(&env_file, doc.render())?;
        Ok(())
    };
    let mut approvals = 1;
    approve(approvals)?;
    std::fs::write(dir.join("Cargo.toml"), "[workspace]\n")?;
    git(&["add", "-A"])?;
    git(&["commit", "-qm", "start"])?;
    let first = git(&["rev-parse", "HEAD"])?;
    for i in 1..commits {
        if i % 25 == 0 {
            git(&["checkout", "-q", "-b", &format!("side{i}")])?;
            std::fs::write(dir.join(format!("src/side{i}.rs")), "// side\n")?;
            git(&["add", "-A"])?;
            git(&["commit", "-qm", "side"])?;
            git(&["checkout", "-q", "main"])?;
            git(&["merge", "-q", "--no-ff", &format!("side{i}"), "-m", "merge"])?;
            continue;
        }
        if i % 10 == 0 {
            approvals += 1;
            approve(approvals)?;
        } else if i % 2 == 0 {
            std::fs::write(dir.join("Cargo.toml"), format!("[workspace]\n# {i}\n"))?;
        } else {
            std::fs::write(dir.join("src/lib.rs"), format!("// {i}\n"))?;
        }
        git(&["add", "-A"])?;
        git(&["commit", "-qm", "commit"])?;
    }
    Ok(first)
}
