//! `cargo bench -p xtask --bench image`: what `cargo xtask image` costs on this
//! machine, each figure against the cheapest way to do the same job without it.
//!
//! In a scratch copy of this checkout (committed, with a `bench` environment
//! whose bot points at a closed port, so the app serves /healthz while it backs
//! off) it measures, for the release profile (what production gets) and the
//! fast one (`--profile fast`, the inner loop's):
//! 1. the runner image besides the binary, against distroless/static;
//! 2. a rebuild after a one-line change in `app`, against `cargo build` of the
//!    same change in a warm target directory of the same checkout;
//! 3. a rebuild with nothing changed (same image ID expected), and for the
//!    fast profile another one-line change linked by gcc's default linker
//!    (`BOXCAR_FAST_LINKER=ld`) against the same linked by mold;
//! 4. a cold build in a fresh target volume, against a native build in an empty
//!    target directory (both with the crate registry present). 2 to 6 minutes
//!    each on 2 cores: `BOXCAR_BENCH_SKIP_COLD=1` skips them, and the rebuilds
//!    then warm up on this checkout's target volume and on
//!    `target/boxcar-bench-native` (kept, like the volume, so the next quick
//!    run is quick);
//! 5. `cargo xtask dev`: from a one-line change written to the new version
//!    healthy, against the fast image rebuild alone;
//! 6. `docker run` to the first 200 from /healthz, against `docker run` of a
//!    static hello-world to its exit (median of 15 runs each, interleaved).
//!
//! Each `cargo xtask` command runs as `cargo xtask` runs it: the xtask built
//! in cargo's dev profile (in `target/bench-xtask`), not the optimised copy a
//! bench gets, since the host's share of an image build (hashing and
//! scanning the layer) is several times slower unoptimised.
//!
//! The first `cargo xtask demo` on a machine without an engine cannot be
//! reproduced here without removing this machine's engine:
//! `xtask/benches/first-run` measures that (see docs/IMAGE.md).
//!
//! Everything it creates is named `boxcar-imagebench-<pid>` (containers,
//! images, the cold target volume) and removed at the end, on error or panic
//! too. A Ctrl-C skips that: remove what carries the name by hand. The shared
//! volumes and every other image are left alone. It talks to 127.0.0.1 only.

use std::future::Future;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use bollard::Docker;
use bollard::models::{ContainerCreateBody, HostConfig, Mount, MountType, PortBinding};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, ImportImageOptionsBuilder, ListContainersOptionsBuilder, ListVolumesOptions,
    LogsOptionsBuilder, RemoveContainerOptionsBuilder, RemoveImageOptionsBuilder, RemoveVolumeOptionsBuilder,
};
use boxcar::ops::build::compile::Profile;
use futures::StreamExt as _;
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// Set (to anything but `0`) to skip the cold builds.
const SKIP_COLD: &str = "BOXCAR_BENCH_SKIP_COLD";
/// Timed `docker run`s of each image, after one untimed run each.
const RUNS: usize = 15;
/// The environment baked into the bench image.
const ENV: &str = "bench";
/// Any single engine request.
const API: Duration = Duration::from_secs(60);
const MUSL: &str = "x86_64-unknown-linux-musl";
/// Both profiles, release first (the size and start-up figures are its).
const PROFILES: [Profile; 2] = [Profile::Release, Profile::Fast];

/// The cold builds' target volume of `profile`.
fn profile_volume(volume: &str, profile: Profile) -> String {
    match profile {
        Profile::Release => volume.to_owned(),
        Profile::Fast => format!("{volume}-fast"),
    }
}

fn profile_arg(profile: Profile) -> &'static str {
    match profile {
        Profile::Release => "release",
        Profile::Fast => "fast",
    }
}

/// The builds of one profile.
struct Figures {
    profile: Profile,
    cold_image: Option<Ran>,
    cold_native: Option<Ran>,
    warm_image: Option<Ran>,
    warm_native: Option<Ran>,
    /// Container, native.
    noop: Option<(Ran, Ran)>,
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
    let cold = !matches!(std::env::var(SKIP_COLD).as_deref(), Ok(v) if !v.is_empty() && v != "0");
    let load_start = load();
    eprintln!("bench: load average at start: {load_start}");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().context("xtask lives in the workspace")?.to_owned();
    let name = format!("boxcar-imagebench-{}", std::process::id());
    let hello_image = format!("{name}-hello:latest");

    // Directories first, so the engine clean-up (dropped first) runs while they exist.
    eprintln!("bench: copying the checkout and making the `{ENV}` environment");
    let checkout = Checkout::new(&root)?;
    let hello_dir = tempfile::tempdir().context("creating a temporary directory")?;
    let fresh_target = tempfile::tempdir().context("creating a temporary directory")?;
    // A cold run warms the fresh directory; a quick run reuses a kept one.
    let native_target = if cold { fresh_target.path().to_owned() } else { root.join("target/boxcar-bench-native") };
    let mut cleanup = Cleanup {
        engine: Engine::connect()?,
        name: name.clone(),
        repos: ["", "-fast", "-dev", "-hello", "-demo", "-standin"].map(|s| format!("{name}{s}")).to_vec(),
        volumes: Vec::new(),
        xtask_pids: Vec::new(),
    };
    eprintln!("bench: everything it creates is named {name}*");

    eprintln!("bench: making the hello-world image {hello_image}");
    make_hello(&cleanup.engine, hello_dir.path(), &hello_image)?;

    let mut notes = Vec::new();
    let volume = cold.then(|| name.clone());
    if let Some(volume) = &volume {
        let inspect = within(API, "inspecting the volume", cleanup.engine.docker.inspect_volume(volume));
        if cleanup.engine.rt.block_on(inspect).is_ok() {
            bail!(
                "a volume {volume} already exists: remove it (`docker volume rm {volume}`) so the cold build is cold"
            );
        }
        cleanup.volumes.extend(PROFILES.map(|p| profile_volume(volume, p)));
    }
    let repo = |profile: Profile| match profile {
        Profile::Release => name.clone(),
        Profile::Fast => format!("{name}-fast"),
    };
    let image_with = |pids: &mut Vec<u32>,
                      profile: Profile,
                      limit: Duration,
                      what: &str,
                      env: &[(&str, &str)]|
     -> anyhow::Result<Ran> {
        let mut cmd = checkout.xtask(&["image", "--repo", &repo(profile)]);
        cmd.args(["--profile", profile_arg(profile)]).envs(env.iter().copied());
        if let Some(volume) = &volume {
            // A volume per profile, so xtask calls each one's first build cold.
            cmd.env("BOXCAR_TARGET_VOLUME", profile_volume(volume, profile));
        }
        let what = format!("{what}, {}", profile_arg(profile));
        let load = load();
        eprintln!("bench: {what}: cargo xtask image (load {load})");
        let ran = run(&mut cmd, b"", limit, &format!("`cargo xtask image` ({what})"), Some(pids))?;
        eprintln!("bench: {what}: {:.1} s, {}", ran.took.as_secs_f64(), xtask_how(&ran));
        Ok(ran.with_load(load))
    };
    let image = |pids: &mut Vec<u32>, profile: Profile, limit: Duration, what: &str| {
        image_with(pids, profile, limit, what, &[])
    };
    let native = |profile: Profile, limit: Duration, what: &str| -> anyhow::Result<Ran> {
        let mut args: Vec<String> = ["build", "--locked", "--target", MUSL, "-p", "app"].map(String::from).to_vec();
        args.extend(profile.cargo_args());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut cmd = checkout.cargo(&native_target, &args);
        let what = format!("{what}, {}", profile_arg(profile));
        let load = load();
        eprintln!("bench: {what}: cargo build (load {load})");
        let ran = run(&mut cmd, b"", limit, &format!("native `cargo build` ({what})"), None)?;
        eprintln!("bench: {what}: {:.1} s", ran.took.as_secs_f64());
        Ok(ran.with_load(load))
    };

    // The registry is present on both sides before anything is timed.
    run(&mut checkout.cargo(&native_target, &["fetch", "--locked"]), b"", mins(10), "cargo fetch", None)?;
    let long = mins(45);
    let mut figures = Vec::new();
    for profile in PROFILES {
        let (cold_image, cold_native) = if cold {
            let x = image(&mut cleanup.xtask_pids, profile, long, "cold, container")?;
            let n = native(profile, long, "cold, native")?;
            (Some(x), Some(n))
        } else {
            image(&mut cleanup.xtask_pids, profile, long, "warm-up, container")?;
            native(profile, long, "warm-up, native")?;
            (None, None)
        };
        figures.push(Figures { profile, cold_image, cold_native, warm_image: None, warm_native: None, noop: None });
    }
    checkout.change_one_line()?;
    for f in &mut figures {
        f.warm_image = Some(image(&mut cleanup.xtask_pids, f.profile, mins(20), "one-line change, container")?);
        f.warm_native = Some(native(f.profile, mins(20), "one-line change, native")?);
    }
    for f in &mut figures {
        let x = image(&mut cleanup.xtask_pids, f.profile, mins(5), "no-op, container")?;
        let n = native(f.profile, mins(5), "no-op, native")?;
        f.noop = Some((x, n));
    }

    // The fast profile's one-line rebuild again, linked by gcc's default
    // linker instead of mold (a link-time switch: the same crates reused).
    checkout.change_one_line()?;
    let ld = [("BOXCAR_FAST_LINKER", "ld")];
    let fast_ld = image_with(&mut cleanup.xtask_pids, Profile::Fast, mins(20), "one-line change, container, ld", &ld)?;
    for f in &figures {
        let expected = [
            (f.cold_image.as_ref(), "binary: cold"),
            (f.warm_image.as_ref(), "binary: warm"),
            (f.noop.as_ref().map(|(x, _)| x), "binary: cached"),
        ];
        for (ran, expected) in expected {
            if let Some(ran) = ran
                && !ran.stderr.contains(expected)
            {
                notes.push(format!(
                    "{}: expected `{expected}` from xtask, got `{}`",
                    profile_arg(f.profile),
                    xtask_how(ran)
                ));
            }
        }
        if let Some(x) = &f.cold_image
            && x.stderr.contains("Downloaded ")
        {
            notes.push("the cold container build downloaded crates: the registry volume was not complete".to_owned());
        }
    }

    let first = match cold {
        true => {
            cleanup.volumes.extend([format!("{name}-first"), format!("{name}-registry")]);
            Some(first_run(&checkout, &name, &mut cleanup.xtask_pids)?)
        }
        false => None,
    };

    eprintln!("bench: cargo xtask dev: one round, then a one-line change");
    let dev = dev_round(&checkout, &name, volume.as_deref(), &mut cleanup.xtask_pids)?;

    let release = &figures[0];
    let noop_image = &release.noop.as_ref().context("no no-op build")?.0;
    let noop_id = image_id(&noop_image.stdout)?;
    let (binary_kib, besides_kib) = sizes(&noop_image.stdout)?;

    eprintln!("bench: {RUNS} timed runs of each image (one untimed first)");
    let key = checkout.key_file()?;
    let (app_runs, hello_runs) = startups(&cleanup.engine, &name, &format!("{name}:latest"), &hello_image, &key)?;
    let ready = |runs: &[Timing]| runs.iter().map(|t| t.done).collect::<Vec<_>>();
    let started = |runs: &[Timing]| runs.iter().map(|t| t.started).collect::<Vec<_>>();
    let (app_ms, hello_ms) = (median_ms(&ready(&app_runs)), median_ms(&ready(&hello_runs)));

    let load_end = load();
    let secs = |r: &Ran| r.took.as_secs_f64();
    let mut rows = vec![Row {
        figure: "image besides the binary".to_owned(),
        measured: format!("{besides_kib:.1} KiB"),
        baseline: "2048 KiB (distroless/static)".to_owned(),
        compare: format!("{:.2}×", besides_kib / 2048.0),
        target: "≤ 300 KiB",
        pass: Some(besides_kib <= 300.0),
    }];
    for f in &figures {
        let p = profile_arg(f.profile);
        let (Some(warm), Some(warm_native), Some((noop, noop_native))) = (&f.warm_image, &f.warm_native, &f.noop)
        else {
            bail!("a {p} build is missing");
        };
        let (warm_id, noop_id) = (image_id(&warm.stdout)?, image_id(&noop.stdout)?);
        // Release is held to its native build; fast to the inner loop's wait.
        let (target, pass) = match f.profile {
            Profile::Release => ("≤ 1.5×", secs(warm) <= 1.5 * secs(warm_native)),
            Profile::Fast => ("≤ 3 s", secs(warm) <= 3.0),
        };
        rows.push(Row {
            figure: format!("rebuild, one-line change ({p})"),
            measured: format!("{:.1} s", secs(warm)),
            baseline: format!("{:.1} s (cargo build)", secs(warm_native)),
            compare: format!("{:.2}×", secs(warm) / secs(warm_native)),
            target,
            pass: Some(pass),
        });
        if f.profile == Profile::Fast {
            rows.push(Row {
                figure: "rebuild, one-line change (fast, mold)".to_owned(),
                measured: format!("{:.1} s", secs(warm)),
                baseline: format!("{:.1} s (linked by gcc's ld)", secs(&fast_ld)),
                compare: format!("{:.2}×", secs(warm) / secs(&fast_ld)),
                target: "< 1×",
                pass: Some(secs(warm) < secs(&fast_ld)),
            });
        }
        rows.push(Row {
            figure: format!("rebuild, nothing changed ({p})"),
            measured: format!("{:.2} s, {} ID", secs(noop), if warm_id == noop_id { "same" } else { "new" }),
            baseline: format!("{:.2} s (cargo build)", secs(noop_native)),
            compare: format!("{:+.2} s", secs(noop) - secs(noop_native)),
            target: "< 1 s, same ID",
            pass: Some(secs(noop) < 1.0 && warm_id == noop_id),
        });
        rows.push(match (&f.cold_image, &f.cold_native) {
            (Some(x), Some(n)) => Row {
                figure: format!("cold build ({p})"),
                measured: format!("{:.1} s", secs(x)),
                baseline: format!("{:.1} s (cargo build)", secs(n)),
                compare: format!("{:.2}×", secs(x) / secs(n)),
                target: "≤ 1.3×",
                pass: Some(secs(x) <= 1.3 * secs(n)),
            },
            _ => Row {
                figure: format!("cold build ({p})"),
                measured: "skipped".to_owned(),
                baseline: format!("({SKIP_COLD} is set)"),
                compare: String::new(),
                target: "≤ 1.3×",
                pass: None,
            },
        });
    }
    let fast_warm = figures[1].warm_image.as_ref().map_or(f64::NAN, secs);
    rows.push(Row {
        figure: "cargo xtask dev: edit to healthy".to_owned(),
        measured: format!("{:.1} s", dev.edit_to_healthy.as_secs_f64()),
        baseline: format!("{fast_warm:.1} s (image, fast, one line)"),
        compare: format!("{:+.1} s", dev.edit_to_healthy.as_secs_f64() - fast_warm),
        target: "≤ 25 s",
        pass: Some(dev.edit_to_healthy <= Duration::from_secs(25)),
    });
    rows.push(Row {
        figure: "docker run to /healthz 200".to_owned(),
        measured: format!("{app_ms:.0} ms"),
        baseline: format!("{hello_ms:.0} ms (hello-world exits)"),
        compare: format!("{:+.0} ms", app_ms - hello_ms),
        target: "≤ +100 ms",
        pass: Some(app_ms - hello_ms <= 100.0),
    });
    rows.push(match &first {
        Some(f) => Row {
            figure: "first demo, engine and builder present".to_owned(),
            measured: format!("{:.0} s", (f.host_build + f.demo.took).as_secs_f64()),
            baseline: format!(
                "{:.0} s (image, fast, cold)",
                figures[1].cold_image.as_ref().map_or(f64::NAN, |r| r.took.as_secs_f64())
            ),
            compare: format!(
                "host build {:.0} s + demo {:.0} s",
                f.host_build.as_secs_f64(),
                f.demo.took.as_secs_f64()
            ),
            target: "(≤ 6 min with the engine: first-run)",
            pass: None,
        },
        None => Row {
            figure: "first demo, engine and builder present".to_owned(),
            measured: "skipped".to_owned(),
            baseline: format!("({SKIP_COLD} is set)"),
            compare: String::new(),
            target: "(≤ 6 min with the engine: first-run)",
            pass: None,
        },
    });

    print_table(&rows);
    println!();
    println!("binary {binary_kib:.1} KiB; image ID {noop_id}");
    println!("where the time goes (cargo's own figure is from its `Finished` line):");
    for f in &figures {
        let p = profile_arg(f.profile);
        let builds = [
            ("cold, container", f.cold_image.as_ref(), true),
            ("cold, native", f.cold_native.as_ref(), false),
            ("one-line change, container", f.warm_image.as_ref(), true),
            ("one-line change, native", f.warm_native.as_ref(), false),
            ("no-op, container", f.noop.as_ref().map(|(x, _)| x), true),
            ("no-op, native", f.noop.as_ref().map(|(_, n)| n), false),
        ];
        for (what, ran, container) in builds {
            if let Some(ran) = ran {
                println!("  {:<36} {}", format!("{what} ({p})"), breakdown(ran, container));
            }
        }
    }
    println!("  {:<36} {}", "cargo xtask dev, round 2", dev.said);
    if let Some(f) = &first {
        println!(
            "  {:<36} host build of xtask {:.1} s (empty target directory and CARGO_HOME); demo {:.1} s (new registry \
             and target volumes, no demo environment); not reproduced: the engine install, the Debian base and the \
             builder image (xtask/benches/first-run)",
            "first demo",
            f.host_build.as_secs_f64(),
            f.demo.took.as_secs_f64()
        );
    }
    for (what, runs, done) in [("app", &app_runs, "first 200"), ("hello-world", &hello_runs, "exit")] {
        println!(
            "  docker run, {what:<16} create+start returned {:.0} ms, {done} {:.0} ms (medians; {done} min–max {} ms)",
            median_ms(&started(runs)),
            median_ms(&ready(runs)),
            spread_ms(&ready(runs))
        );
    }
    println!("load average: start {load_start}; end {load_end}");
    for note in &notes {
        println!("note: {note}");
    }
    let missed = rows.iter().filter(|r| r.pass == Some(false)).count();
    println!("{missed} of {} targets missed", rows.iter().filter(|r| r.pass.is_some()).count());
    Ok(())
}

fn mins(n: u64) -> Duration {
    Duration::from_secs(60 * n)
}

/// The 1-, 5- and 15-minute load averages.
fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".to_owned())
}

struct Row {
    figure: String,
    measured: String,
    baseline: String,
    compare: String,
    target: &'static str,
    /// `None` when skipped.
    pass: Option<bool>,
}

fn print_table(rows: &[Row]) {
    let cells = |r: &Row| {
        let result = match r.pass {
            Some(true) => "pass",
            Some(false) => "MISS",
            None => "skipped",
        };
        [
            r.figure.clone(),
            r.measured.clone(),
            r.baseline.clone(),
            r.compare.clone(),
            r.target.to_owned(),
            result.into(),
        ]
    };
    let header = ["figure", "measured", "baseline", "vs baseline", "target", "result"].map(String::from);
    let body: Vec<[String; 6]> = rows.iter().map(cells).collect();
    let mut widths = [0; 6];
    for line in std::iter::once(&header).chain(&body) {
        for (w, cell) in widths.iter_mut().zip(line) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for line in std::iter::once(&header).chain(&body) {
        let padded: Vec<String> = line
            .iter()
            .zip(widths)
            .map(|(cell, w)| format!("{cell}{}", " ".repeat(w - cell.chars().count())))
            .collect();
        println!("{}", padded.join("  ").trim_end());
    }
}

// ---------------------------------------------------------------------------
// Processes.

struct Ran {
    stdout: String,
    stderr: String,
    took: Duration,
    /// Load average when it started.
    load: String,
}

impl Ran {
    fn with_load(self, load: String) -> Ran {
        Ran { load, ..self }
    }
}

/// Runs `cmd` to completion within `limit`, capturing its output; fails when
/// it fails. `pids` records the child's id (xtask names its build container
/// after it, so the clean-up can find one a timeout left behind).
fn run(
    cmd: &mut Command,
    stdin: &[u8],
    limit: Duration,
    what: &str,
    pids: Option<&mut Vec<u32>>,
) -> anyhow::Result<Ran> {
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {what}"))?;
    if let Some(pids) = pids {
        pids.push(child.id());
    }
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    if let Some(mut pipe) = child.stdin.take() {
        // Small enough for the pipe buffer; a child that exits without reading is fine.
        let _ = pipe.write_all(stdin);
    }
    let status = loop {
        if let Some(status) = child.try_wait().with_context(|| format!("waiting for {what}"))? {
            break status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{what} did not finish within {} s; stopped it", limit.as_secs());
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let took = start.elapsed();
    let text =
        |h: std::thread::JoinHandle<Vec<u8>>| String::from_utf8_lossy(&h.join().unwrap_or_default()).into_owned();
    let (stdout, stderr) = (text(stdout), text(stderr));
    if !status.success() {
        let tail: Vec<&str> = stderr.lines().rev().take(60).collect::<Vec<_>>().into_iter().rev().collect();
        bail!("{what} failed ({status})\nstdout:\n{stdout}\nstderr (last lines):\n{}", tail.join("\n"));
    }
    Ok(Ran { stdout, stderr, took, load: String::new() })
}

/// Reads a child's pipe to its end on a thread of its own, so neither pipe can fill and block the child.
fn drain(pipe: Option<impl std::io::Read + Send + 'static>) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut out = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut out);
        }
        out
    })
}

fn git(dir: &Path, args: &[&str]) -> anyhow::Result<String> {
    let mut cmd = Command::new("git");
    cmd.args(args).current_dir(dir);
    for who in ["AUTHOR", "COMMITTER"] {
        cmd.env(format!("GIT_{who}_DATE"), "2026-01-01T00:00:00Z")
            .env(format!("GIT_{who}_NAME"), "bench")
            .env(format!("GIT_{who}_EMAIL"), "bench@example.invalid");
    }
    Ok(run(&mut cmd, b"", Duration::from_secs(60), &format!("git {}", args.join(" ")), None)?.stdout)
}

/// A copy of the working tree (tracked and new files) committed in a scratch
/// repository, with the `bench` environment and its key folder.
struct Checkout {
    dir: tempfile::TempDir,
    keys: tempfile::TempDir,
    /// The checkout it is a copy of.
    origin: PathBuf,
    /// The xtask the commands run: `cargo xtask`'s, in cargo's dev profile.
    xtask: PathBuf,
}

impl Checkout {
    fn new(root: &Path) -> anyhow::Result<Checkout> {
        // What a person runs is `cargo xtask`: the dev profile, unoptimised,
        // where hashing and scanning an image take several times as long as
        // in the bench profile this bench's own copy of xtask is built in.
        let target = root.join("target/bench-xtask");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        eprintln!("bench: building the xtask as `cargo xtask` does (dev profile)");
        let built = Command::new(cargo)
            .args(["build", "--locked", "--quiet", "-p", "xtask", "--features", "engine", "--target-dir"])
            .arg(&target)
            .current_dir(root)
            .status()
            .context("running cargo build -p xtask")?;
        if !built.success() {
            bail!("cargo build -p xtask (dev profile) failed");
        }
        let xtask = target.join("debug/xtask");
        let dir = tempfile::tempdir().context("creating a temporary directory")?;
        let keys = tempfile::tempdir().context("creating a temporary directory")?;
        let list = git(root, &["ls-files", "-z", "--cached", "--others", "--exclude-standard"])?;
        for rel in list.split('\0').filter(|s| !s.is_empty()) {
            let from = root.join(rel);
            if !from.is_file() {
                continue;
            }
            let to = dir.path().join(rel);
            if let Some(parent) = to.parent() {
                std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
            }
            std::fs::copy(&from, &to).with_context(|| format!("copying {}", from.display()))?;
        }
        git(dir.path(), &["init", "-q"])?;
        let c = Checkout { dir, keys, origin: root.to_owned(), xtask };
        let minute = Duration::from_secs(60);
        run(&mut c.xtask(&["keygen", "--env", ENV]), b"", minute, "xtask keygen", None)?;
        let token = b"4001:bench-token-AAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
        run(
            &mut c.xtask(&["encrypt-secret", "--env", ENV, "bench_token"]),
            token,
            minute,
            "xtask encrypt-secret",
            None,
        )?;
        let env_file = c.dir.path().join(format!("deploy-config/{ENV}.toml"));
        let text = std::fs::read_to_string(&env_file).with_context(|| format!("reading {}", env_file.display()))?;
        // Port 9 is closed: the bot backs off and the app serves /healthz meanwhile.
        let settings = "\n[app]\napi_base = \"http://127.0.0.1:9\"\n\n[[bots]]\nname = \"bench\"\ntoken_secret = \"bench_token\"\n";
        std::fs::write(&env_file, format!("{text}{settings}"))
            .with_context(|| format!("writing {}", env_file.display()))?;
        c.commit("scratch")?;
        Ok(c)
    }

    fn commit(&self, message: &str) -> anyhow::Result<()> {
        git(self.dir.path(), &["add", "-A"])?;
        git(self.dir.path(), &["commit", "-qm", message])?;
        Ok(())
    }

    /// The built xtask, pointed at this checkout and its key folder.
    fn xtask(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.xtask);
        cmd.args(args)
            .current_dir(self.dir.path())
            .env("BOXCAR_PROJECT_ROOT", self.dir.path())
            .env("BOXCAR_KEY_DIR", self.keys.path())
            // This checkout's target volume, not the scratch copy's own (a
            // new one each run): the quick run's rebuilds are warm. The cold
            // builds name a volume of their own over this.
            .env("BOXCAR_TARGET_VOLUME", boxcar::ops::build::target::target_volume(&self.origin))
            .env_remove("SECRET_KEY")
            .env_remove("SECRET_KEY_FILE");
        cmd
    }

    /// Native cargo in this checkout, with the builder container's settings:
    /// no extra flags, no progress bar.
    fn cargo(&self, target_dir: &Path, args: &[&str]) -> Command {
        let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
        cmd.args(args)
            .current_dir(self.dir.path())
            .env("CARGO_TARGET_DIR", target_dir)
            .env("CARGO_TERM_PROGRESS_WHEN", "never")
            .env("CARGO_TERM_COLOR", "never")
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_ENCODED_RUSTFLAGS");
        cmd
    }

    /// Changes one string the app replies with, and commits.
    fn change_one_line(&self) -> anyhow::Result<()> {
        let path = self.dir.path().join("app/src/commands.rs");
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        let Some(at) = text.find("reply(\"") else {
            bail!("{} has no `reply(\"…` to change; pick another one-line change", path.display());
        };
        let at = at + "reply(\"".len();
        std::fs::write(&path, format!("{}(bench) {}", &text[..at], &text[at..]))
            .with_context(|| format!("writing {}", path.display()))?;
        self.commit("one-line change")
    }

    /// The `bench` environment's key file (the first demo adds another).
    fn key_file(&self) -> anyhow::Result<PathBuf> {
        let entries = std::fs::read_dir(self.keys.path()).context("reading the key folder")?;
        let prefix = format!("{ENV}-");
        for entry in entries {
            let path = entry.context("reading the key folder")?.path();
            if path.file_name().is_some_and(|n| n.to_string_lossy().starts_with(&prefix)) {
                return Ok(path);
            }
        }
        bail!("keygen wrote no key file for `{ENV}` in {}", self.keys.path().display())
    }
}

// ---------------------------------------------------------------------------
// A first `cargo xtask demo`.

struct FirstRun {
    host_build: Duration,
    demo: Ran,
}

/// A first `cargo xtask demo` as far as it can be reproduced with this
/// machine's engine left alone: xtask built in an empty target directory with
/// an empty `CARGO_HOME` (every crate downloaded), then the demo under the
/// bench's names with new registry and target volumes and no demo
/// environment. Installing the engine, bootstrapping the Debian base and
/// building the builder image are not reproduced (`xtask/benches/first-run`
/// removes the engine to measure those). The demo is stopped after.
fn first_run(checkout: &Checkout, name: &str, pids: &mut Vec<u32>) -> anyhow::Result<FirstRun> {
    let home = tempfile::tempdir().context("creating a temporary directory")?;
    let target = tempfile::tempdir().context("creating a temporary directory")?;
    let mut build = checkout.cargo(target.path(), &["build", "--locked", "-p", "xtask", "--features", "engine"]);
    build.env("CARGO_HOME", home.path());
    eprintln!(
        "bench: first demo: cargo build -p xtask --features engine, empty target and CARGO_HOME (load {})",
        load()
    );
    let host = run(&mut build, b"", mins(20), "the host build of xtask", None)?;
    eprintln!("bench: first demo: host build {:.1} s", host.took.as_secs_f64());

    let xtask = target.path().join("debug/xtask");
    // The binaries the builds before left: a first run has none.
    let cache = checkout.dir.path().join("target/boxcar-image");
    if cache.exists() {
        std::fs::remove_dir_all(&cache).with_context(|| format!("removing {}", cache.display()))?;
    }
    let prefix = format!("{name}-demo");
    let demo_args = |extra: &[&str]| {
        let mut cmd = Command::new(&xtask);
        cmd.current_dir(checkout.dir.path())
            .env("BOXCAR_PROJECT_ROOT", checkout.dir.path())
            .env("BOXCAR_KEY_DIR", checkout.keys.path())
            .env("CARGO_HOME", home.path())
            .env("BOXCAR_TARGET_VOLUME", format!("{name}-first"))
            .env("BOXCAR_REGISTRY_VOLUME", format!("{name}-registry"))
            .env_remove("SECRET_KEY")
            .env_remove("SECRET_KEY_FILE")
            .args(["demo", "--prefix", &prefix])
            .args(extra);
        cmd
    };
    let mut demo = demo_args(&["--repo", &prefix, "--standin-repo", &format!("{name}-standin")]);
    demo.args(["--dashboard-port", "0", "--chat-port", "0"]);
    eprintln!("bench: first demo: cargo xtask demo (load {})", load());
    let ran = run(&mut demo, b"", mins(30), "the first `cargo xtask demo`", Some(pids));
    let down = run(&mut demo_args(&["--down"]), b"", mins(2), "cargo xtask demo --down", None);
    let ran = ran?.with_load(load());
    if let Err(e) = down {
        eprintln!("bench: first demo: {e:#}");
    }
    eprintln!("bench: first demo: {:.1} s", ran.took.as_secs_f64());
    Ok(FirstRun { host_build: host.took, demo: ran })
}

// ---------------------------------------------------------------------------
// `cargo xtask dev`.

struct DevRound {
    /// From the bench writing the change to dev's line that the new version is healthy.
    edit_to_healthy: Duration,
    /// That line.
    said: String,
}

/// `cargo xtask dev` in the checkout (on the cold builds' target volume, if
/// any): waits for its first round to deploy, changes one line, and times
/// the change to dev's line that the new version runs and is healthy.
fn dev_round(checkout: &Checkout, name: &str, volume: Option<&str>, pids: &mut Vec<u32>) -> anyhow::Result<DevRound> {
    let deployment = format!("{name}-dev");
    let mut cmd = checkout.xtask(&["dev", "--env", ENV, "--rounds", "2", "--repo", &deployment, "--name", &deployment]);
    cmd.args(["--publish", "127.0.0.1:0"]).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
    if let Some(volume) = volume {
        cmd.env("BOXCAR_TARGET_VOLUME", profile_volume(volume, Profile::Fast));
    }
    let mut child = Child(cmd.spawn().context("starting cargo xtask dev")?);
    pids.push(child.0.id());
    let stderr = child.0.stderr.take().context("no stderr from cargo xtask dev")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(stderr)).map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut said = Vec::new();
    let mut wait_for = |round: u32| -> anyhow::Result<String> {
        let deadline = Instant::now() + mins(10);
        let prefix = format!("dev: round {round}: ");
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match rx.recv_timeout(left) {
                Ok(line) => line,
                Err(_) => bail!(
                    "cargo xtask dev: round {round} did not end within 10 minutes (or dev exited); it said:\n{}",
                    said.join("\n")
                ),
            };
            said.push(line.clone());
            if let Some(rest) = line.strip_prefix(&prefix) {
                if rest.contains("runs the change") {
                    return Ok(line);
                }
                if rest.contains("failed") || rest.contains("not deployed") {
                    bail!("cargo xtask dev: {line}\nit said:\n{}", said.join("\n"));
                }
            }
        }
    };
    wait_for(1)?;
    let edited = Instant::now();
    checkout.change_one_line()?;
    let line = wait_for(2)?;
    let edit_to_healthy = edited.elapsed();
    let said = line.split_once(": build").map_or(line.clone(), |(_, rest)| format!("build{rest}"));
    Ok(DevRound {
        edit_to_healthy,
        said: format!("{:.1} s by the bench's clock; dev said: {said}", edit_to_healthy.as_secs_f64()),
    })
}

/// A child process killed when dropped.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

// ---------------------------------------------------------------------------
// What xtask and cargo printed.

fn image_id(stdout: &str) -> anyhow::Result<String> {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("image      sha256:"))
        .map(|id| format!("sha256:{id}"))
        .with_context(|| format!("no image ID in xtask's table:\n{stdout}"))
}

/// `(binary KiB, image KiB besides the binary)` from xtask's table.
fn sizes(stdout: &str) -> anyhow::Result<(f64, f64)> {
    let kib = |s: &str| s.trim().trim_end_matches("KiB").trim().parse::<f64>().ok();
    let binary = stdout
        .lines()
        .find_map(|l| l.strip_prefix("binary     ")?.split(" KiB").next().and_then(kib))
        .with_context(|| format!("no binary size in xtask's table:\n{stdout}"))?;
    let besides = stdout
        .lines()
        .find_map(|l| {
            l.strip_prefix("image      ")?.split("; ").nth(1)?.strip_suffix(" besides the binary").and_then(kib)
        })
        .with_context(|| format!("no `besides the binary` size in xtask's table:\n{stdout}"))?;
    Ok((binary, besides))
}

/// xtask's `binary: …` line.
fn xtask_how(ran: &Ran) -> String {
    ran.stderr.lines().find(|l| l.starts_with("binary: ")).unwrap_or("no `binary:` line").to_owned()
}

/// Cargo's `Finished … in 1m 05s` / `in 4.21s`, in seconds (the last one).
fn cargo_finished(text: &str) -> Option<f64> {
    // xtask echoes the container's lines after `  | `.
    let line = text.lines().rev().find(|l| l.split_whitespace().any(|w| w == "Finished"))?;
    let (_, took) = line.rsplit_once(" in ")?;
    let mut secs = 0.0;
    for part in took.split_whitespace() {
        let (number, unit) = part.split_at(part.len().checked_sub(1)?);
        let factor = match unit {
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        secs += factor * number.parse::<f64>().ok()?;
    }
    Some(secs)
}

/// The trailing `(12.3 s)` of xtask's `binary:` line: the compile phase.
fn xtask_compile_secs(ran: &Ran) -> Option<f64> {
    let how = xtask_how(ran);
    how.rsplit_once('(')?.1.strip_suffix(" s)")?.parse().ok()
}

fn breakdown(ran: &Ran, container: bool) -> String {
    let total = ran.took.as_secs_f64();
    let cargo = cargo_finished(&ran.stderr);
    let show = |v: Option<f64>| v.map_or("?".to_owned(), |v| format!("{v:.1} s"));
    if !container {
        return format!("{total:.1} s wall; cargo {} (load {})", show(cargo), ran.load);
    }
    if xtask_how(ran).starts_with("binary: cached") {
        return format!("{total:.1} s wall, no compile (cached binary); load {}", ran.load);
    }
    let compile = xtask_compile_secs(ran);
    let rest = compile.map(|c| total - c);
    let overhead = match (compile, cargo) {
        (Some(c), Some(g)) => format!("; copy in, container start/stop, copy out {:.1} s", c - g),
        _ => String::new(),
    };
    format!(
        "{total:.1} s wall = compile phase {} (cargo {}{overhead}) + the rest {} (builder check, assemble, image check, load, process start); load {}",
        show(compile),
        show(cargo),
        show(rest),
        ran.load
    )
}

// ---------------------------------------------------------------------------
// The engine, and the clean-up guard.

struct Engine {
    rt: tokio::runtime::Runtime,
    docker: Docker,
}

impl Engine {
    fn connect() -> anyhow::Result<Engine> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting a runtime")?;
        let docker = rt.block_on(async {
            let docker = Docker::connect_with_defaults().context("connecting to the Docker engine")?;
            let docker = within(API, "negotiating the engine's API version", docker.negotiate_version()).await?;
            within(API, "pinging the engine", docker.ping()).await?;
            anyhow::Ok(docker)
        })?;
        Ok(Engine { rt, docker })
    }
}

/// `f`, or an error naming `what` when it fails or takes longer than `limit`.
async fn within<T, E>(limit: Duration, what: &str, f: impl Future<Output = Result<T, E>>) -> anyhow::Result<T>
where
    E: std::error::Error + Send + Sync + 'static,
{
    match tokio::time::timeout(limit, f).await {
        Ok(result) => result.with_context(|| what.to_owned()),
        Err(_) => bail!("{what}: no answer within {} s", limit.as_secs()),
    }
}

/// Removes what the bench created, whatever happens to it.
struct Cleanup {
    engine: Engine,
    /// Prefix of every container name.
    name: String,
    /// Image repositories whose tags are removed.
    repos: Vec<String>,
    /// Volumes the bench made (the cold runs' target and registry volumes).
    volumes: Vec<String>,
    /// xtask processes: a build container a timeout left is named after one.
    xtask_pids: Vec<u32>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let docker = &self.engine.docker;
        let result: anyhow::Result<()> = self.engine.rt.block_on(async {
            let all = ListContainersOptionsBuilder::default().all(true).build();
            let containers = within(API, "listing containers", docker.list_containers(Some(all))).await?;
            let prefixes: Vec<String> = std::iter::once(format!("/{}-", self.name))
                .chain(self.xtask_pids.iter().map(|pid| format!("/boxcar-build-{pid}-")))
                .collect();
            for c in containers {
                let names = c.names.unwrap_or_default();
                if let Some(n) = names.iter().find(|n| prefixes.iter().any(|p| n.starts_with(p))) {
                    remove_container(docker, n.trim_start_matches('/')).await;
                }
            }
            let images =
                within(API, "listing images", docker.list_images(None::<bollard::query_parameters::ListImagesOptions>))
                    .await?;
            for tag in images.iter().flat_map(|i| &i.repo_tags) {
                if tag.rsplit_once(':').is_some_and(|(repo, _)| self.repos.iter().any(|r| r == repo)) {
                    let force = RemoveImageOptionsBuilder::default().force(true).build();
                    if let Err(e) = within(API, "removing an image", docker.remove_image(tag, Some(force), None)).await
                    {
                        eprintln!("bench: clean-up: {tag}: {e:#}");
                    }
                }
            }
            // Every volume under the bench's name: the ones it made, and the
            // data and key volumes of the deployment `dev` made.
            let listed = within(API, "listing volumes", docker.list_volumes(None::<ListVolumesOptions>)).await?;
            let named: Vec<String> = listed
                .volumes
                .unwrap_or_default()
                .into_iter()
                .map(|v| v.name)
                .filter(|n| n.starts_with(&format!("{}-", self.name)) && !self.volumes.contains(n))
                .collect();
            for volume in self.volumes.iter().chain(&named) {
                let force = RemoveVolumeOptionsBuilder::default().force(true).build();
                match within(API, "removing the volume", docker.remove_volume(volume, Some(force))).await {
                    Ok(()) => {}
                    Err(e) if e.downcast_ref::<bollard::errors::Error>().is_some_and(is_not_found) => {}
                    Err(e) => eprintln!("bench: clean-up: volume {volume}: {e:#}"),
                }
            }
            Ok(())
        });
        if let Err(e) = result {
            eprintln!("bench: clean-up failed: {e:#}; remove what is named {}* by hand", self.name);
        }
    }
}

fn is_not_found(err: &bollard::errors::Error) -> bool {
    matches!(err, bollard::errors::Error::DockerResponseServerError { status_code: 404, .. })
}

/// Removes a container and its anonymous volumes (the image declares /data).
async fn remove_container(docker: &Docker, name: &str) {
    let options = RemoveContainerOptionsBuilder::default().force(true).v(true).build();
    match within(API, "removing a container", docker.remove_container(name, Some(options))).await {
        Ok(()) => {}
        Err(e) if e.downcast_ref::<bollard::errors::Error>().is_some_and(is_not_found) => {}
        Err(e) => eprintln!("bench: clean-up: container {name}: {e:#}"),
    }
}

// ---------------------------------------------------------------------------
// The hello-world image and the timed runs.

const HELLO_C: &str = "#include <unistd.h>\n\
int main(void) {\n    static const char m[] = \"hello\\n\";\n    return write(1, m, sizeof m - 1) < 0;\n}\n";

/// A static hello-world compiled with musl-gcc, in a one-layer docker-archive
/// loaded as `tag`.
fn make_hello(engine: &Engine, dir: &Path, tag: &str) -> anyhow::Result<()> {
    let source = dir.join("hello.c");
    std::fs::write(&source, HELLO_C).with_context(|| format!("writing {}", source.display()))?;
    let binary = dir.join("hello");
    let mut cc = Command::new("musl-gcc");
    cc.arg("-static").arg("-Os").arg("-s").arg("-o").arg(&binary).arg(&source);
    run(&mut cc, b"", Duration::from_secs(60), "musl-gcc (is musl-tools installed?)", None)?;
    let binary = std::fs::read(&binary).with_context(|| format!("reading {}", binary.display()))?;

    let entry = |tar: &mut tar::Builder<Vec<u8>>, path: &str, mode: u32, data: &[u8]| {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(mode);
        header.set_mtime(0);
        header.set_cksum();
        tar.append_data(&mut header, path, data).with_context(|| format!("archiving {path}"))
    };
    let hex = |data: &[u8]| Sha256::digest(data).iter().map(|b| format!("{b:02x}")).collect::<String>();
    let mut layer = tar::Builder::new(Vec::new());
    entry(&mut layer, "hello", 0o755, &binary)?;
    let layer = layer.into_inner().context("finishing the layer")?;
    let diff_id = hex(&layer);
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": { "Cmd": ["/hello"] },
        "rootfs": { "type": "layers", "diff_ids": [format!("sha256:{diff_id}")] },
    }))?;
    let config_name = format!("{}.json", hex(&config));
    let layer_name = format!("{diff_id}/layer.tar");
    let manifest = serde_json::to_vec(&serde_json::json!([
        { "Config": config_name, "RepoTags": [tag], "Layers": [layer_name] }
    ]))?;
    let mut archive = tar::Builder::new(Vec::new());
    entry(&mut archive, "manifest.json", 0o644, &manifest)?;
    entry(&mut archive, &config_name, 0o644, &config)?;
    entry(&mut archive, &layer_name, 0o644, &layer)?;
    let archive = archive.into_inner().context("finishing the archive")?;

    engine.rt.block_on(async {
        let options = ImportImageOptionsBuilder::default().quiet(true).build();
        let mut stream = engine.docker.import_image(options, bollard::body_full(archive.into()), None);
        let drain = async {
            while let Some(item) = stream.next().await {
                item?;
            }
            Ok::<_, bollard::errors::Error>(())
        };
        within(API, "loading the hello-world image", drain).await
    })
}

/// Interleaved runs of the app image (to the first 200 from /healthz) and of
/// hello-world (to its exit), after one untimed run of each.
fn startups(
    engine: &Engine,
    name: &str,
    app: &str,
    hello: &str,
    key: &Path,
) -> anyhow::Result<(Vec<Timing>, Vec<Timing>)> {
    // The key file is 0600 and the app runs as 65532.
    std::fs::set_permissions(key, std::os::unix::fs::PermissionsExt::from_mode(0o644))
        .with_context(|| format!("making {} readable", key.display()))?;
    let (mut apps, mut hellos) = (Vec::new(), Vec::new());
    for i in 0..=RUNS {
        let h = engine.rt.block_on(run_hello(&engine.docker, &format!("{name}-hello-{i}"), hello))?;
        let a = engine.rt.block_on(run_app(&engine.docker, &format!("{name}-app-{i}"), app, key))?;
        if i > 0 {
            hellos.push(h);
            apps.push(a);
        }
    }
    Ok((apps, hellos))
}

/// One timed `docker run`, from the create request.
struct Timing {
    /// When the engine's start request returned.
    started: Duration,
    /// When the app first answered 200, or hello-world's exit was reported.
    done: Duration,
}

async fn run_hello(docker: &Docker, name: &str, image: &str) -> anyhow::Result<Timing> {
    let body = ContainerCreateBody { image: Some(image.to_owned()), ..ContainerCreateBody::default() };
    let start = Instant::now();
    let result = async {
        let options = CreateContainerOptionsBuilder::default().name(name).build();
        within(API, "creating the hello-world container", docker.create_container(Some(options), body)).await?;
        let none = None::<bollard::query_parameters::StartContainerOptions>;
        within(API, "starting the hello-world container", docker.start_container(name, none)).await?;
        let started = start.elapsed();
        let mut wait = docker.wait_container(name, None::<bollard::query_parameters::WaitContainerOptions>);
        match tokio::time::timeout(Duration::from_secs(30), wait.next()).await {
            Ok(Some(Ok(r))) if r.status_code == 0 => Ok(Timing { started, done: start.elapsed() }),
            Ok(other) => bail!("hello-world did not exit 0: {other:?}"),
            Err(_) => bail!("hello-world did not exit within 30 s"),
        }
    }
    .await;
    remove_container(docker, name).await;
    result
}

async fn run_app(docker: &Docker, name: &str, image: &str, key: &Path) -> anyhow::Result<Timing> {
    // A free port chosen here rather than by the engine, so no inspect sits in
    // the timed path.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .context("finding a free port on 127.0.0.1")?
        .port();
    let body = ContainerCreateBody {
        image: Some(image.to_owned()),
        env: Some(vec!["SECRET_KEY_FILE=/run/secrets/app_key".to_owned()]),
        host_config: Some(HostConfig {
            readonly_rootfs: Some(true),
            cap_drop: Some(vec!["ALL".to_owned()]),
            security_opt: Some(vec!["no-new-privileges".to_owned()]),
            tmpfs: Some([("/tmp".to_owned(), String::new())].into()),
            mounts: Some(vec![Mount {
                source: Some(key.display().to_string()),
                target: Some("/run/secrets/app_key".to_owned()),
                typ: Some(MountType::BIND),
                read_only: Some(true),
                ..Mount::default()
            }]),
            port_bindings: Some(
                [(
                    "8080/tcp".to_owned(),
                    Some(vec![PortBinding {
                        host_ip: Some("127.0.0.1".to_owned()),
                        host_port: Some(port.to_string()),
                    }]),
                )]
                .into(),
            ),
            ..HostConfig::default()
        }),
        ..ContainerCreateBody::default()
    };
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let start = Instant::now();
    let result = async {
        let options = CreateContainerOptionsBuilder::default().name(name).build();
        within(API, "creating the app container", docker.create_container(Some(options), body)).await?;
        let none = None::<bollard::query_parameters::StartContainerOptions>;
        within(API, "starting the app container", docker.start_container(name, none)).await?;
        let started = start.elapsed();
        let limit = Duration::from_secs(30);
        loop {
            if healthz(addr).await {
                return Ok(Timing { started, done: start.elapsed() });
            }
            if start.elapsed() > limit {
                bail!("no 200 from http://{addr}/healthz within 30 s; the app said:\n{}", logs(docker, name).await);
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    .await;
    remove_container(docker, name).await;
    result
}

/// Whether /healthz answers 200 now. Before the app listens, the engine's
/// proxy accepts and then closes the connection.
async fn healthz(addr: SocketAddr) -> bool {
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream.write_all(b"GET /healthz HTTP/1.0\r\nHost: localhost\r\n\r\n").await?;
        let mut head = [0; 12];
        stream.read_exact(&mut head).await?;
        std::io::Result::Ok(head)
    };
    matches!(tokio::time::timeout(Duration::from_secs(2), attempt).await, Ok(Ok(head)) if head.starts_with(b"HTTP/1.") && &head[9..12] == b"200")
}

async fn logs(docker: &Docker, name: &str) -> String {
    let options = LogsOptionsBuilder::default().stdout(true).stderr(true).tail("30").build();
    let mut stream = docker.logs(name, Some(options));
    let mut out = String::new();
    let collect = async {
        while let Some(Ok(chunk)) = stream.next().await {
            out.push_str(&chunk.to_string());
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(10), collect).await;
    out
}

fn median_ms(runs: &[Duration]) -> f64 {
    let mut ms: Vec<f64> = runs.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    ms.sort_by(f64::total_cmp);
    match ms.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => ms[n / 2],
        n => (ms[n / 2 - 1] + ms[n / 2]) / 2.0,
    }
}

fn spread_ms(runs: &[Duration]) -> String {
    let ms = runs.iter().map(|d| d.as_secs_f64() * 1000.0);
    let min = ms.clone().fold(f64::INFINITY, f64::min);
    let max = ms.fold(0.0, f64::max);
    format!("{min:.0}–{max:.0}")
}
