//! Benchmark of opening sealed values, with libsodium measured on the same values in the same run for comparison.
//!
//! Two cases, each what the app does at start-up:
//!
//! - `open/one`: `SealedValue::parse` and `open` of one value;
//! - `open/hundred`: `EnvFile::parse` and `open_all` of an environment file
//!   holding 100 values;
//! - `open/approval`: `EnvFile::parse` of the same file, approved, and
//!   `approval_with` (the approval key derived from the secret key, the
//!   content encoded, one Ed25519 verification): what approval adds;
//! - `open/startup`: `EnvFile::parse` and `open_approved` of the approved
//!   file: the whole cost a service pays at startup.
//!
//! The last two have no libsodium counterpart; the table gives approval's
//! share of the startup cost, both measured in this run.
//!
//! Criterion measures them, then `tests/python/libsodium_bench.py` times
//! libsodium's `crypto_box_seal_open` (through PyNaCl) on the very same
//! values, doing the same frame checks, and a table gives the ratio of the
//! medians. A ratio against a figure from another machine, or from the same
//! machine under another load, says little; both sides run here, one after the
//! other, so the ratio means something. (The Python side does not parse the
//! TOML around the values; the `hundred` ratio pays for that, by a few per cent.)
//!
//! The Python interpreter is `$BOXCAR_PYTHON`, else `target/venv/bin/python`
//! at the workspace root (which `cargo xtask test` creates). Without one that
//! has PyNaCl the bench says how to get it and exits non-zero: a silent
//! boxcar-only run would look like a complete one.
//!
//! ```text
//! cargo bench -p boxcar-secrets --bench open
//! cargo bench -p boxcar-secrets --bench open -- --warm-up-time 1 --measurement-time 3
//! ```

use std::hint::black_box;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, SystemTime};

use boxcar_secrets::{EnvFile, SealedValue, SecretKey};
use criterion::Criterion;
use serde_json::{Value, json};

/// Criterion's group; the cases are `open/one` and `open/hundred`.
const GROUP: &str = "open";
const ENV: &str = "bench";
const FILE: &str = "bench.toml";
/// Values in the environment file of the `hundred` case.
const COUNT: usize = 100;

/// Where the libsodium side lives, from the workspace root.
const PYTHON_SCRIPT: &str = "tests/python/libsodium_bench.py";
/// What `tests/python/libsodium_bench.py` exits with when PyNaCl is missing.
const EXIT_NO_PYNACL: i32 = 3;

/// The values both sides open: one freshly generated key, and 100 values sealed
/// to it, as an environment file and as `(name, sealed text)` pairs.
struct Fixture {
    key: SecretKey,
    file_text: String,
    approved_text: String,
    values: Vec<(String, String)>,
}

fn fixture() -> Fixture {
    let key = SecretKey::generate();
    let mut file_text = format!("public_key = \"{}\"\n\n[secrets]\n", key.public_key().to_base64());
    let mut values = Vec::with_capacity(COUNT);
    for i in 0..COUNT {
        let name = format!("secret_{i:03}");
        // The size of a real bot token (46 bytes); passwords and API keys are
        // in the same range, and the cost of an open barely depends on it.
        let value = format!("{:010}:{}", 1_000_000_000 + i, "A".repeat(35));
        let sealed = boxcar_secrets::seal(key.public_key(), ENV, &name, value.as_bytes())
            .expect("sealing a bench value")
            .to_string();
        file_text.push_str(&format!("{name} = \"{sealed}\"\n"));
        values.push((name, sealed));
    }
    let approved_text =
        boxcar_secrets::approved_text(Path::new(FILE), &file_text, &key).expect("approving the bench file");
    Fixture { key, file_text, approved_text, values }
}

fn bench(c: &mut Criterion, fixture: &Fixture) {
    let mut group = c.benchmark_group(GROUP);
    let (name, text) = &fixture.values[0];
    group.bench_function("one", |b| {
        b.iter(|| {
            let sealed = SealedValue::parse(black_box(text)).expect("parsing a bench value");
            sealed.open(&fixture.key, ENV, name).expect("opening a bench value")
        })
    });
    group.bench_function("hundred", |b| {
        b.iter(|| {
            let file = EnvFile::parse(Path::new(FILE), black_box(&fixture.file_text)).expect("parsing the bench file");
            file.open_all(&fixture.key).expect("opening the bench file")
        })
    });
    group.bench_function("approval", |b| {
        b.iter(|| {
            let file =
                EnvFile::parse(Path::new(FILE), black_box(&fixture.approved_text)).expect("parsing the bench file");
            file.approval_with(&fixture.key).expect("checking the bench file's approval")
        })
    });
    group.bench_function("startup", |b| {
        b.iter(|| {
            let file =
                EnvFile::parse(Path::new(FILE), black_box(&fixture.approved_text)).expect("parsing the bench file");
            file.open_approved(&fixture.key).expect("opening the approved bench file")
        })
    });
    group.finish();
}

fn main() -> ExitCode {
    let fixture = fixture();
    // Estimates older than this come from an earlier run (the case was
    // filtered out this time) and must not be compared with a fresh libsodium
    // figure. The slack covers file systems that store whole seconds.
    let started = SystemTime::now() - Duration::from_secs(1);
    let mut criterion = Criterion::default().configure_from_args();
    bench(&mut criterion, &fixture);
    criterion.final_summary();

    // `cargo test --benches` runs each case once to see that it works, and
    // `--list` or `--profile-time` measure nothing: no comparison to make.
    if !measuring() {
        return ExitCode::SUCCESS;
    }
    match compare(&fixture, started) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("\n{message}");
            ExitCode::FAILURE
        }
    }
}

/// Whether criterion was asked to measure, by the same reading of the
/// arguments as `Criterion::configure_from_args` (which keeps its mode private).
fn measuring() -> bool {
    let args: Vec<String> = std::env::args_os().skip(1).map(|a| a.to_string_lossy().into_owned()).collect();
    let has = |flag: &str| args.iter().any(|a| a == flag || a.starts_with(&format!("{flag}=")));
    has("--bench") && !has("--test") && !has("--list") && !has("--profile-time")
}

/// One row of the table: a case whose criterion estimate is from this run.
struct Row {
    case: &'static str,
    boxcar_ns: f64,
    libsodium_key: &'static str,
}

fn compare(fixture: &Fixture, started: SystemTime) -> Result<(), String> {
    let criterion_dir = criterion_dir();
    let mut rows = Vec::new();
    for (case, libsodium_key) in [("one", "one_ns"), ("hundred", "hundred_ns")] {
        let path = criterion_dir.join(GROUP).join(case).join("new").join("estimates.json");
        match fresh_median(&path, started)? {
            Some(boxcar_ns) => rows.push(Row { case, boxcar_ns, libsodium_key }),
            None => println!("{GROUP}/{case}: no estimate from this run in {}, left out", path.display()),
        }
    }
    if rows.is_empty() {
        // A filter that matched nothing, or `--discard-baseline` and friends,
        // which keep criterion from writing its estimates.
        println!("libsodium comparison skipped: criterion saved no estimates in this run");
        return Ok(());
    }

    let (libsodium, interpreter) = run_libsodium(fixture)?;
    let field = |key: &str| libsodium.get(key).and_then(Value::as_f64);
    let text = |key: &str| libsodium.get(key).and_then(Value::as_str).unwrap_or("?").to_owned();
    println!(
        "\nboxcar against libsodium (PyNaCl {}, Python {} at {}), medians from this machine in this run:\n",
        text("pynacl"),
        text("python"),
        interpreter.display(),
    );
    println!("{:<14} {:>12} {:>12} {:>7}", "case", "boxcar", "libsodium", "ratio");
    for row in rows {
        let case = format!("{GROUP}/{}", row.case);
        let Some(libsodium_ns) = field(row.libsodium_key) else {
            return Err(format!("{PYTHON_SCRIPT} printed no `{}`: {libsodium}", row.libsodium_key));
        };
        let ratio = row.boxcar_ns / libsodium_ns;
        let flag = if ratio > 1.0 { "  above the 1.0 target" } else { "" };
        println!("{case:<14} {:>12} {:>12} {ratio:>7.2}{flag}", format_ns(row.boxcar_ns), format_ns(libsodium_ns));
    }
    println!("\nratio = boxcar / libsodium; the target is at most 1.0");

    // What approval costs a service at startup, both sides from this run.
    let median = |case: &str| {
        let path = criterion_dir.join(GROUP).join(case).join("new").join("estimates.json");
        fresh_median(&path, started)
    };
    if let (Some(approval), Some(startup)) = (median("approval")?, median("startup")?) {
        println!(
            "\nstartup with approval, 100 values: {} (the approval check: {}, {:.1}% of it)",
            format_ns(startup),
            format_ns(approval),
            100.0 * approval / startup
        );
    }
    Ok(())
}

/// Where criterion writes its results, found the way criterion finds it,
/// except that the workspace's `target/` stands in for asking `cargo metadata`.
fn criterion_dir() -> PathBuf {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return PathBuf::from(home);
    }
    if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(target).join("criterion");
    }
    // Run without cargo (the binary started by hand), criterion cannot ask
    // cargo and writes under the current directory.
    if std::env::var_os("CARGO").is_none() {
        return PathBuf::from("target/criterion");
    }
    workspace_root().join("target").join("criterion")
}

fn workspace_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir.parent().unwrap_or(manifest_dir).to_owned()
}

/// The median point estimate, in ns, from `estimates.json` at `path`, or
/// `None` when the file is missing or older than `started`.
fn fresh_median(path: &Path, started: SystemTime) -> Result<Option<f64>, String> {
    let modified = match std::fs::metadata(path).and_then(|m| m.modified()) {
        Ok(modified) => modified,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("reading {}: {e}", path.display())),
    };
    if modified < started {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    let estimates: Value =
        serde_json::from_str(&text).map_err(|e| format!("parsing {} as JSON: {e}", path.display()))?;
    let median = estimates.pointer("/median/point_estimate").and_then(Value::as_f64);
    median.map(Some).ok_or_else(|| format!("{} has no median.point_estimate", path.display()))
}

/// Runs the libsodium side with the first interpreter that can, returning its
/// figures and the interpreter used. When none can, the error lists why each
/// failed and how to get PyNaCl.
fn run_libsodium(fixture: &Fixture) -> Result<(Value, PathBuf), String> {
    let input = libsodium_input(fixture)?;
    let mut candidates: Vec<(String, PathBuf)> = Vec::new();
    if let Some(python) = std::env::var_os("BOXCAR_PYTHON").filter(|p| !p.is_empty()) {
        candidates.push((format!("BOXCAR_PYTHON={}", Path::new(&python).display()), PathBuf::from(python)));
    }
    let venv = workspace_root().join("target").join("venv").join("bin").join("python");
    candidates.push((venv.display().to_string(), venv));

    let mut failures = Vec::new();
    for (label, python) in candidates {
        println!("\ntiming libsodium through PyNaCl with {label}");
        match run_python(&python, &input) {
            Ok(figures) => return Ok((figures, python)),
            Err(why) => {
                println!("that did not work: {why}");
                failures.push(format!("  {label}: {why}"));
            }
        }
    }
    Err(format!(
        "libsodium comparison skipped: no Python interpreter could run {PYTHON_SCRIPT}\n{}\n\
         The boxcar figures above were measured, but there is nothing to compare them with.\n\
         The libsodium side needs Python 3 with PyNaCl. `cargo xtask test` creates target/venv with it; or, \
         from the workspace root:\n    \
         python3 -m venv target/venv && target/venv/bin/pip install pynacl\n\
         or set BOXCAR_PYTHON to a Python 3 that has PyNaCl.",
        failures.join("\n"),
    ))
}

/// The JSON document the script reads: the key and the raw base64 bodies.
/// The key is a throwaway, generated for this run; it still goes through a
/// pipe rather than an argument, which other processes could read.
fn libsodium_input(fixture: &Fixture) -> Result<Vec<u8>, String> {
    let entry = |(name, text): &(String, String)| -> Result<Value, String> {
        // `sealed:v1:<key id>:<base64>`: base64 has no `:`.
        let (_, body) = text.rsplit_once(':').ok_or_else(|| format!("{name} is not a sealed value"))?;
        Ok(json!({ "name": name, "sealed": body }))
    };
    let hundred = fixture.values.iter().map(entry).collect::<Result<Vec<_>, _>>()?;
    let document = json!({
        "secret_key": fixture.key.to_base64().as_str(),
        "env": ENV,
        "one": entry(&fixture.values[0])?,
        "hundred": hundred,
    });
    serde_json::to_vec(&document).map_err(|e| format!("writing the libsodium input: {e}"))
}

fn run_python(python: &Path, input: &[u8]) -> Result<Value, String> {
    let script = workspace_root().join(PYTHON_SCRIPT);
    let mut child = Command::new(python)
        .arg(&script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run it: {e}"))?;
    // A write error means the script exited early (PyNaCl missing, say); its
    // exit status and stderr below say why, better than a broken pipe would.
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(input);
    }
    let output = child.wait_with_output().map_err(|e| format!("waiting for it: {e}"))?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stderr = stderr.trim();
    if output.status.code() == Some(EXIT_NO_PYNACL) {
        // The script names the interpreter and the import error.
        return Err(if stderr.is_empty() { "PyNaCl is not installed for it".to_owned() } else { stderr.to_owned() });
    }
    if !output.status.success() {
        return Err(format!("{} failed ({}):\n{stderr}", script.display(), output.status));
    }
    serde_json::from_slice(&output.stdout).map_err(|e| {
        format!(
            "{} printed something other than JSON ({e}): {}",
            script.display(),
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

/// A duration in ns, in the unit criterion would print it in.
fn format_ns(ns: f64) -> String {
    let (value, unit) = match ns {
        ns if ns < 1e3 => (ns, "ns"),
        ns if ns < 1e6 => (ns / 1e3, "µs"),
        ns if ns < 1e9 => (ns / 1e6, "ms"),
        ns => (ns / 1e9, "s"),
    };
    format!("{value:.2} {unit}")
}
