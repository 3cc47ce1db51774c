//! `cargo bench -p xtask --bench profiles`: the data behind the workspace's
//! `[profile.release]` (see the comment there).
//!
//! For fat LTO and thin LTO, each with 1 and with 16 codegen units, in a
//! scratch clone of this checkout's committed `HEAD`, natively for the musl
//! target the image ships (the container adds a fixed cost to every variant
//! alike; the image benchmark measures that):
//! 1. the stripped `app` binary's size;
//! 2. a cold `cargo build --release` in an empty target directory (the crate
//!    registry present, so no download is timed);
//! 3. a rebuild after a one-line change in `app`;
//! 4. the app's throughput: case 1 of the app benchmark (`/bored` and `/help`
//!    bursts of 20,000 updates, three rounds, interleaved across variants, the
//!    median counts) run on each variant's binary in one run, beside the
//!    bench build the app benchmark always measures.
//!
//! The variants are set with `--config profile.release.…`, so nothing in the
//! checkout changes. About 25 minutes on 2 cores; everything it makes is in a
//! temporary folder removed at the end. `--quick` runs two variants (fat, 1
//! and thin, 16) with the app benchmark's quick sizes, to check the bench.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

const MUSL: &str = "x86_64-unknown-linux-musl";

struct Variant {
    label: &'static str,
    lto: &'static str,
    codegen_units: u32,
}

const VARIANTS: [Variant; 4] = [
    Variant { label: "fat-1", lto: "\"fat\"", codegen_units: 1 },
    Variant { label: "thin-1", lto: "\"thin\"", codegen_units: 1 },
    Variant { label: "fat-16", lto: "\"fat\"", codegen_units: 16 },
    Variant { label: "thin-16", lto: "\"thin\"", codegen_units: 16 },
];

struct Measured {
    label: &'static str,
    size: u64,
    cold: Duration,
    warm: Duration,
    binary: PathBuf,
}

fn main() -> ExitCode {
    match bench() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn bench() -> anyhow::Result<()> {
    let quick = std::env::args().any(|a| a == "--quick");
    if Command::new("musl-gcc").arg("--version").output().is_err() {
        bail!("musl-gcc is not installed (the app's bundled SQLite is C): on Debian, `apt-get install musl-tools`");
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().context("xtask lives in the workspace")?.to_owned();
    let scratch = tempfile::tempdir().context("creating a temporary directory")?;
    let clone = scratch.path().join("checkout");
    eprintln!("profiles: cloning HEAD of {} into {}", root.display(), clone.display());
    run(Command::new("git").args(["clone", "--quiet", "--no-hardlinks"]).arg(&root).arg(&clone), "git clone")?;
    run(cargo(&clone, &scratch.path().join("fetch")).args(["fetch", "--locked"]), "cargo fetch")?;

    let commands = clone.join("app/src/commands.rs");
    let original = std::fs::read_to_string(&commands).with_context(|| format!("reading {}", commands.display()))?;
    let Some(at) = original.find("reply(\"").map(|at| at + "reply(\"".len()) else {
        bail!("{} has no `reply(\"…` to change; pick another one-line change", commands.display());
    };
    let changed = format!("{}(bench) {}", &original[..at], &original[at..]);

    let variants: Vec<&Variant> =
        VARIANTS.iter().filter(|v| !quick || v.label == "fat-1" || v.label == "thin-16").collect();
    let mut measured = Vec::new();
    for v in &variants {
        let target = scratch.path().join(format!("target-{}", v.label));
        let build = || {
            let mut cmd = cargo(&clone, &target);
            cmd.args(["build", "--release", "--locked", "--target", MUSL, "-p", "app"])
                .args(["--config", &format!("profile.release.lto={}", v.lto)])
                .args(["--config", &format!("profile.release.codegen-units={}", v.codegen_units)]);
            cmd
        };
        std::fs::write(&commands, &original).with_context(|| format!("writing {}", commands.display()))?;
        eprintln!("profiles: {}: cold build (load {})", v.label, load());
        let cold = run(&mut build(), "cold cargo build")?;
        std::fs::write(&commands, &changed).with_context(|| format!("writing {}", commands.display()))?;
        eprintln!("profiles: {}: one-line change (load {})", v.label, load());
        let warm = run(&mut build(), "cargo build after a one-line change")?;
        let binary = target.join(MUSL).join("release/app");
        let size = std::fs::metadata(&binary).with_context(|| format!("reading {}", binary.display()))?.len();
        eprintln!("profiles: {}: {} KiB, cold {:.1} s, one line {:.1} s", v.label, size / 1024, secs(cold), secs(warm));
        measured.push(Measured { label: v.label, size, cold, warm, binary });
    }

    // The app benchmark's bursts, from this workspace (its bench build is
    // warm here), with every variant's binary beside its own.
    eprintln!("profiles: the app benchmark's bursts on every variant (load {})", load());
    let mut bursts = cargo(&root, &root.join("target"));
    bursts.args(["bench", "--locked", "-p", "app", "--bench", "runner", "--", "--bursts-only", "--no-musl"]);
    if quick {
        bursts.arg("--quick");
    }
    for m in &measured {
        bursts.arg("--binary").arg(format!("{}={}", m.label, m.binary.display()));
    }
    let output = bursts.stderr(Stdio::inherit()).output().context("starting the app benchmark")?;
    let report = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        bail!("the app benchmark failed ({}):\n{report}", output.status);
    }

    let base = &measured[0];
    println!("\nrelease profile variants (musl, native; ratios against {})\n", base.label);
    let header = ["variant", "binary", "cold build", "one-line rebuild", "/bored updates/s", "/help updates/s"];
    let mut lines = vec![header.map(String::from).to_vec()];
    for m in &measured {
        let rate = |command: &str| {
            let ours = throughput(&report, command, m.label);
            match (ours, throughput(&report, command, base.label)) {
                (Some(r), Some(b)) => format!("{r:.0} ({:.2}×)", r / b),
                (Some(r), None) => format!("{r:.0}"),
                _ => "not measured".to_owned(),
            }
        };
        lines.push(vec![
            m.label.to_owned(),
            format!("{} KiB ({:.2}×)", m.size / 1024, m.size as f64 / base.size as f64),
            format!("{:.1} s ({:.2}×)", secs(m.cold), secs(m.cold) / secs(base.cold)),
            format!("{:.1} s ({:.2}×)", secs(m.warm), secs(m.warm) / secs(base.warm)),
            rate("/bored"),
            rate("/help"),
        ]);
    }
    print_table(&lines);
    println!("\nthe app benchmark's own report (glibc: its bench build, release settings with line tables):");
    print!("{report}");
    Ok(())
}

/// cargo in `dir` with its own target directory, no progress bar, no flags
/// from the environment.
fn cargo(dir: &Path, target: &Path) -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(dir)
        .env("CARGO_TARGET_DIR", target)
        .env("CARGO_TERM_PROGRESS_WHEN", "never")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS");
    cmd
}

/// Runs `cmd` to its end (its output to this one's stderr) and times it.
fn run(cmd: &mut Command, what: &str) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let status = cmd.stdout(Stdio::null()).status().with_context(|| format!("starting {what}"))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(start.elapsed())
}

/// The median burst rate the app benchmark reported for `label`.
fn throughput(report: &str, command: &str, label: &str) -> Option<f64> {
    let figure = format!("× {command} pushed at once ({label})");
    let line = report.lines().find(|l| l.starts_with("updates/s") && l.contains(&figure))?;
    let value = line.split_once(&figure)?.1.trim_start();
    value.split_once("/s")?.0.parse().ok()
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".to_owned())
}

fn print_table(lines: &[Vec<String>]) {
    let mut widths = vec![0; lines[0].len()];
    for line in lines {
        for (w, cell) in widths.iter_mut().zip(line) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for line in lines {
        let padded: Vec<String> =
            line.iter().zip(&widths).map(|(c, w)| format!("{c}{}", " ".repeat(w - c.chars().count()))).collect();
        println!("{}", padded.join("  ").trim_end());
    }
}
