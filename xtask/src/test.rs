//! `cargo xtask test`: every check CI runs, in one command, with a summary.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use xshell::{Shell, cmd};

use boxcar::Context;
use boxcar::adapters::host::{self, Output, Recommends};

/// PyNaCl version the interoperability tests and the benchmark run against.
const PYNACL: &str = "pynacl==1.5.0";
/// The Kubernetes schemas (1.22 to 1.31, offline) the manifests test validates against.
const KUBERNETES_VALIDATE: &str = "kubernetes-validate==1.31.0";

/// Run the whole test suite: formatting, clippy, unit and integration tests
/// (with PyNaCl interoperability, the image, deploys, the demo in Chromium),
/// and a short fuzz run.
///
/// Sets up what the tests need first: a Docker engine (as root on Debian:
/// installs docker.io and starts it), Chromium, Debian's docker-registry and
/// haproxy (their services kept stopped), a Python virtualenv with
/// PyNaCl in target/venv, and cargo-fuzz. Every step runs even if an earlier one
/// failed; the summary at the end says which failed.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Seconds to fuzz each fuzz target for (0 skips fuzzing).
    #[arg(long, default_value_t = 60, value_name = "SECONDS")]
    fuzz_seconds: u64,
}

struct Step {
    name: &'static str,
    took: Duration,
    result: anyhow::Result<()>,
}

pub(crate) fn run(sh: &Shell, ctx: &Context, args: Args) -> anyhow::Result<()> {
    let mut steps = Vec::new();
    let mut step = |name: &'static str, f: &mut dyn FnMut() -> anyhow::Result<()>| {
        eprintln!("\n==> {name}");
        let start = Instant::now();
        let result = f();
        if let Err(err) = &result {
            eprintln!("--> {name} failed: {err:#}");
        }
        steps.push(Step { name, took: start.elapsed(), result });
    };

    step("rustfmt", &mut || Ok(cmd!(sh, "cargo fmt --all --check").run()?));
    step("clippy", &mut || {
        cmd!(sh, "cargo clippy --workspace --all-targets --locked --features xtask/engine -- -D warnings").run()?;
        // boxcar and the xtask alone get their default features: without the
        // engine, as a fresh checkout's xtask first builds them (the xtask's
        // tests need the engine commands: its binary only).
        cmd!(sh, "cargo clippy -p boxcar --all-targets --locked -- -D warnings").run()?;
        Ok(cmd!(sh, "cargo clippy -p xtask --bins --locked -- -D warnings").run()?)
    });
    // Built alone, the app gets deploy-config without the `seal` feature, as in
    // the image; in the workspace build, xtask's features are unified into it.
    step("app alone, without sealing", &mut || Ok(cmd!(sh, "cargo check -p app --locked").run()?));
    step("boxcar with the newest compatible crates", &mut || newest_crates(sh, &ctx.root));
    step("Docker, Chromium, registry, haproxy", &mut || {
        boxcar::adapters::engine::ensure()?;
        if !["chromium", "chromium-browser", "google-chrome"].into_iter().any(host::on_path) {
            host::apt_install(
                &["chromium"],
                Recommends::Install,
                "the dashboard test drives Chromium",
                &Output::Terminal,
            )?;
        }
        // The multi-node tests (xtask/tests/it/cluster.rs) run these programs
        // with configurations of their own.
        let missing: Vec<&str> = ["docker-registry", "haproxy"].into_iter().filter(|p| !host::on_path(p)).collect();
        if !missing.is_empty() {
            let why = "the multi-node tests run a registry and a load balancer";
            host::apt_install(&missing, Recommends::Skip, why, &Output::Terminal)?;
            keep_services_stopped(sh, &missing)?;
        }
        Ok(())
    });
    let mut python = None;
    step("python venv with PyNaCl", &mut || {
        python = Some(ensure_venv(sh, &ctx.root)?);
        Ok(())
    });
    // The approval vectors and the history rules' own tests come from an
    // implementation written from docs/FORMAT.md alone.
    step("python approval vectors and history", &mut || {
        let Some(python) = &python else { bail!("no Python venv") };
        let _dir = sh.push_dir(&ctx.root);
        cmd!(sh, "{python} tests/python/make_approval_vectors.py --check").run()?;
        cmd!(sh, "{python} tests/python/approval.py check-vectors boxcar-secrets/vectors/approval-v1.toml").run()?;
        // The history rules, written from docs/FORMAT.md alone, on repositories it makes.
        cmd!(sh, "{python} tests/python/history.py --self-test").run()?;
        Ok(())
    });
    let mut failed_tests = Failures::default();
    step("cargo test", &mut || {
        let _env = python.as_ref().map(|p| sh.push_env("BOXCAR_PYTHON", p));
        failed_tests.run(cmd!(sh, "cargo test --workspace --locked --no-fail-fast --features xtask/engine"))
    });
    // Every test removes what it made however it ends; this says whether one did not.
    step("nothing left on the engine", &mut || {
        let check = "support::nothing_with_a_test_name_is_left_on_the_engine";
        failed_tests
            .run(cmd!(sh, "cargo test --locked -p xtask --features engine --test it -- --ignored --exact {check}"))
    });
    if args.fuzz_seconds > 0 {
        step("fuzz parse_open", &mut || fuzz(sh, &ctx.root, "parse_open", args.fuzz_seconds));
    }

    eprintln!("\nsummary");
    let mut failed = 0;
    for s in &steps {
        let status = if s.result.is_ok() { "ok" } else { "FAILED" };
        eprintln!("  {:<36} {:<6} {:>6.1}s", s.name, status, s.took.as_secs_f64());
        failed += usize::from(s.result.is_err());
    }
    failed_tests.print();
    if failed > 0 {
        bail!("{failed} of {} step(s) failed", steps.len());
    }
    eprintln!("all {} steps passed", steps.len());
    Ok(())
}

/// The tests that failed in `cargo test` runs, each with where it panicked
/// and the first lines of its message, for the summary: the end of the
/// output is what a CI log shows, and libtest says which tests failed and
/// why only in the middle of it, at the end of each test binary's run.
#[derive(Debug, Default)]
struct Failures {
    /// Each failed test's name and what it said (possibly nothing).
    tests: Vec<(String, Vec<String>)>,
}

/// Lines of a failed test's panic message kept for the summary.
const MESSAGE_LINES: usize = 4;

impl Failures {
    /// Runs `cmd` (a `cargo test`), passing its output through as it comes
    /// and keeping what its failures said.
    fn run(&mut self, cmd: xshell::Cmd<'_>) -> anyhow::Result<()> {
        use std::io::{BufRead as _, Write as _};
        eprintln!("$ {cmd}");
        let mut command = std::process::Command::from(cmd);
        let mut child = command.stdout(std::process::Stdio::piped()).spawn().context("starting cargo test")?;
        let stdout = child.stdout.take().context("no output from cargo test")?;
        let mut reader = Reader::default();
        for line in std::io::BufReader::new(stdout).lines() {
            let line = line.context("reading cargo test's output")?;
            let mut out = std::io::stdout().lock();
            // A closed stdout (a pager that quit) must not stop the tests.
            let _ = writeln!(out, "{line}");
            reader.read(&line, &mut self.tests);
        }
        let status = child.wait().context("waiting for cargo test")?;
        if !status.success() {
            bail!("cargo test failed ({status})");
        }
        Ok(())
    }

    fn print(&self) {
        if self.tests.is_empty() {
            return;
        }
        eprintln!("\nfailed tests ({}):", self.tests.len());
        for (name, said) in &self.tests {
            eprintln!("  {name}");
            for line in said {
                eprintln!("      {line}");
            }
        }
    }
}

/// What libtest's output is in, line by line.
#[derive(Debug, Default)]
struct Reader {
    /// The test whose captured output (`---- NAME stdout ----`) this is.
    block: Option<String>,
    /// Lines of a panic message still to keep.
    keep: usize,
}

impl Reader {
    fn read(&mut self, line: &str, tests: &mut Vec<(String, Vec<String>)>) {
        let entry = |tests: &mut Vec<(String, Vec<String>)>, name: &str| -> usize {
            match tests.iter().position(|(n, _)| n == name) {
                Some(i) => i,
                None => {
                    tests.push((name.to_owned(), Vec::new()));
                    tests.len() - 1
                }
            }
        };
        if let Some(name) = line.strip_prefix("test ").and_then(|l| l.strip_suffix(" ... FAILED")) {
            entry(tests, name);
            return;
        }
        if let Some(name) = line.strip_prefix("---- ").and_then(|l| l.strip_suffix(" stdout ----")) {
            self.block = Some(name.to_owned());
            self.keep = 0;
            return;
        }
        if line == "failures:" || line.starts_with("test result: ") {
            self.block = None;
            return;
        }
        let Some(name) = self.block.clone() else { return };
        if line.starts_with("thread '") && line.contains(" panicked at ") {
            let i = entry(tests, &name);
            tests[i].1.push(line.to_owned());
            self.keep = MESSAGE_LINES;
        } else if self.keep > 0 {
            self.keep -= 1;
            if line.starts_with("stack backtrace:") || line.starts_with("note: run with `RUST_BACKTRACE") {
                self.keep = 0;
                return;
            }
            let i = entry(tests, &name);
            let mut line = line.to_owned();
            if line.len() > 300 {
                line.truncate(line.floor_char_boundary(300));
                line.push('…');
            }
            tests[i].1.push(line);
        }
    }
}

/// Checks the libraries as a team's workspace gets them: a scratch
/// workspace (in `target/newest/`) whose lock file cargo writes fresh, so it
/// holds the newest versions every requirement of boxcar and boxcar-secrets
/// allows for this toolchain, checked with warnings as errors. A path
/// dependency's warnings are shown where it is used, so a deprecation in a
/// newer compatible release (rustls 0.23.48 deprecated ring's provider)
/// reaches every user of boxcar unless it fails here first. With the engine
/// feature and without.
fn newest_crates(sh: &Shell, root: &Path) -> anyhow::Result<()> {
    let ws = root.join("target/newest");
    let toolchain = std::fs::read_to_string(root.join("rust-toolchain.toml"))?;
    let channel = toolchain
        .lines()
        .find_map(|l| l.trim().strip_prefix("channel = \"")?.strip_suffix('"'))
        .context("rust-toolchain.toml has no channel")?;
    let (boxcar, secrets) = (root.join("boxcar"), root.join("boxcar-secrets"));
    let manifest = format!(
        "[workspace]\nresolver = \"3\"\n\n[package]\nname = \"newest\"\nversion = \"0.0.0\"\nedition = \"2024\"\n\
         rust-version = \"{channel}\"\npublish = false\n\n[dependencies]\nboxcar = {{ path = {boxcar:?} }}\n\
         boxcar-secrets = {{ path = {secrets:?} }}\n"
    );
    std::fs::create_dir_all(ws.join("src"))?;
    std::fs::write(ws.join("Cargo.toml"), manifest)?;
    std::fs::write(ws.join("rust-toolchain.toml"), &toolchain)?;
    std::fs::write(
        ws.join("src/main.rs"),
        "fn main() -> std::process::ExitCode {\n    boxcar::main(env!(\"CARGO_MANIFEST_DIR\"))\n}\n",
    )?;
    let _dir = sh.push_dir(&ws);
    let _flags = sh.push_env("RUSTFLAGS", "-D warnings");
    let _target = sh.push_env("CARGO_TARGET_DIR", ws.join("target"));
    cmd!(sh, "cargo generate-lockfile").run()?;
    cmd!(sh, "cargo check --locked").run()?;
    cmd!(sh, "cargo check --locked --features boxcar/engine").run()?;
    Ok(())
}

/// Stops and disables the services of packages just installed. Their
/// maintainer scripts start them where the init system lets them (systemd; a
/// plain init without a policy-rc.d that forbids it): docker-registry would
/// then listen on port 5000 of every interface, with the package's
/// configuration, for as long as the machine runs. The tests need the
/// programs only.
fn keep_services_stopped(sh: &Shell, services: &[&str]) -> anyhow::Result<()> {
    for service in services {
        let script = Path::new("/etc/init.d").join(service);
        if Path::new("/run/systemd/system").exists() {
            cmd!(sh, "systemctl disable --now {service}").run()?;
        } else if script.exists() {
            // `stop` fails when the service never started: nothing to stop.
            let _ = cmd!(sh, "{script} stop").quiet().ignore_stdout().ignore_stderr().run();
            cmd!(sh, "update-rc.d {service} disable").run()?;
        }
    }
    Ok(())
}

/// Makes target/venv with PyNaCl, once; returns its interpreter.
fn ensure_venv(sh: &Shell, root: &Path) -> anyhow::Result<PathBuf> {
    let venv = root.join("target/venv");
    let python = venv.join("bin/python");
    if python.exists()
        && cmd!(sh, "{python} -c 'import nacl, kubernetes_validate'").quiet().ignore_stderr().run().is_ok()
    {
        eprintln!("target/venv already has PyNaCl and kubernetes-validate");
        return Ok(python);
    }
    if cmd!(sh, "python3 -m venv --help").quiet().ignore_stdout().ignore_stderr().run().is_err() {
        host::apt_install(
            &["python3-venv"],
            Recommends::Install,
            "the PyNaCl tests need Python's venv module",
            &Output::Terminal,
        )?;
    }
    if !python.exists() {
        cmd!(sh, "python3 -m venv {venv}").run().context("creating target/venv (is python3-venv installed?)")?;
    }
    // Behind a TLS-inspecting proxy, pip must trust the host's bundle.
    let cert: Vec<String> = match std::env::var("SSL_CERT_FILE") {
        Ok(path) if Path::new(&path).exists() => vec!["--cert".into(), path],
        _ => Vec::new(),
    };
    cmd!(sh, "{python} -m pip install --quiet --disable-pip-version-check {cert...} {PYNACL} {KUBERNETES_VALIDATE}")
        .run()?;
    Ok(python)
}

/// Runs one cargo-fuzz target for `seconds`, installing cargo-fuzz if needed.
/// libFuzzer needs nightly-only flags: use the nightly toolchain when there is
/// one, else let the pinned stable compiler accept them (RUSTC_BOOTSTRAP).
fn fuzz(sh: &Shell, root: &Path, target: &str, seconds: u64) -> anyhow::Result<()> {
    if cmd!(sh, "cargo fuzz --version").quiet().ignore_stderr().ignore_stdout().run().is_err() {
        eprintln!("installing cargo-fuzz (once)");
        cmd!(sh, "cargo install cargo-fuzz --locked").run()?;
    }
    let _dir = sh.push_dir(root.join("boxcar-secrets"));
    let seeds = format!("fuzz/seeds/{target}");
    let corpus = format!("fuzz/corpus/{target}");
    std::fs::create_dir_all(root.join("boxcar-secrets").join(&corpus))?;
    let max_time = format!("-max_total_time={seconds}");
    let has_nightly = cmd!(sh, "rustup toolchain list").quiet().read().is_ok_and(|l| l.contains("nightly"));
    if has_nightly {
        cmd!(sh, "cargo +nightly fuzz run {target} {corpus} {seeds} -- {max_time}").run()?;
    } else {
        let _boot = sh.push_env("RUSTC_BOOTSTRAP", "1");
        cmd!(sh, "cargo fuzz run {target} {corpus} {seeds} -- {max_time}").run()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_tests_are_read_with_their_panic_messages() {
        let output = "\
running 3 tests
test a::passes ... ok
test a::fails ... FAILED
test b::fails_quietly ... FAILED

failures:

---- a::fails stdout ----
figure: something the test printed
thread 'a::fails' (123) panicked at xtask/tests/it/a.rs:10:5:
the tests left these on the engine:
volume dtest-1-k-data
stack backtrace:
   0: __rustc::rust_begin_unwind

failures:
    a::fails
    b::fails_quietly

test result: FAILED. 1 passed; 2 failed; 0 ignored
";
        let (mut reader, mut tests) = (Reader::default(), Vec::new());
        for line in output.lines() {
            reader.read(line, &mut tests);
        }
        assert_eq!(
            tests,
            [
                (
                    "a::fails".to_owned(),
                    vec![
                        "thread 'a::fails' (123) panicked at xtask/tests/it/a.rs:10:5:".to_owned(),
                        "the tests left these on the engine:".to_owned(),
                        "volume dtest-1-k-data".to_owned(),
                    ]
                ),
                ("b::fails_quietly".to_owned(), vec![]),
            ]
        );
    }
}
