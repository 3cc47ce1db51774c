//! An xtask built without boxcar's `engine` feature (the default: a fresh
//! checkout compiles the secrets commands only, in a fraction of the time)
//! hands an engine command to the same xtask built with it: `cargo build
//! --features boxcar/engine` once (cargo keeps it beside the first, and
//! rebuilds neither after), then that binary in this process's place, with
//! the same arguments and environment. An xtask with engine commands of its
//! own declares its own `engine` feature (enabling boxcar's), and the build
//! is `--features engine`.
//!
//! For a command that installs an engine where none is (a newcomer's first
//! `demo` or `test`), the engine is installed and started, and the builders'
//! Debian base bootstrapped, while cargo compiles: a first run waits for the
//! longer of the two instead of both.
//!
//! The key (`SECRET_KEY`, `SECRET_KEY_FILE`) is kept from cargo and
//! everything it runs (build scripts, rustc); the engine binary gets it as
//! this process did, and takes it out of its environment first thing.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

/// The commands that need the `engine` feature.
pub const ENGINE_COMMANDS: &[&str] =
    &["image", "image-check", "deploy", "dev", "status", "logs", "undeploy", "manifests"];

/// Set in the engine binary's environment to `<process id>:<xtask folder>`,
/// so a build that still lacks the feature says so instead of handing over
/// again, and the engine binary can tell it is this workspace's (see
/// [`check_handed_over`]). The process id is the one the handover ran in,
/// which `exec` keeps: every process the engine binary starts inherits the
/// variable with another id, and takes it for no handover of its own (an
/// xtask run by another's `cargo xtask test` is one).
const HANDED_OVER: &str = "BOXCAR_ENGINE_HANDOVER";

/// The xtask folder a handover to this very process names, if one does.
fn handed_over_to_me(marker: Option<&std::ffi::OsStr>, me: u32) -> Option<PathBuf> {
    let marker = marker?.to_str()?;
    let (pid, dir) = marker.split_once(':')?;
    (pid.parse::<u32>().ok()? == me).then(|| PathBuf::from(dir))
}

/// In the engine binary: whether what handed over was this xtask. cargo
/// puts every workspace's `xtask` binary at `<target>/debug/xtask`, so with a
/// target folder shared between workspaces (`CARGO_TARGET_DIR`), another
/// workspace's build may replace the file between the build and its start.
pub fn check_handed_over(xtask_manifest_dir: &Path) -> Result<(), String> {
    let marker = std::env::var_os(HANDED_OVER);
    handed_over_from(handed_over_to_me(marker.as_deref(), std::process::id()).as_deref(), xtask_manifest_dir)
}

fn handed_over_from(from: Option<&Path>, xtask_manifest_dir: &Path) -> Result<(), String> {
    match from {
        Some(from) if from != xtask_manifest_dir => Err(format!(
            "the xtask of {} was to run, and this is the one of {}: another workspace's build replaced it in the \
             target folder they share (CARGO_TARGET_DIR); run the command again, or give each workspace its own target",
            from.display(),
            xtask_manifest_dir.display()
        )),
        _ => Ok(()),
    }
}

/// The engine command `args` (the whole command line) asks for, if any:
/// the first argument that is not an option, or the one after `help`; one of
/// boxcar's or of `own` (the xtask's own engine commands).
pub fn engine_command<'a>(args: &[OsString], own: &[&'a str]) -> Option<&'a str> {
    let mut words = args.iter().skip(1).filter_map(|a| a.to_str()).filter(|a| !a.starts_with('-'));
    let first = words.next()?;
    let name = if first == "help" { words.next()? } else { first };
    ENGINE_COMMANDS.iter().chain(own).find(|c| **c == name).copied()
}

/// Builds the xtask at `xtask_manifest_dir` with the `engine` feature and
/// runs it in this process's place with `args`; with `set_up`, installs and
/// starts an engine meanwhile where none is (see [`set_up_meanwhile`]).
/// Returns only on failure.
pub fn hand_over(
    xtask_manifest_dir: &Path,
    lock_file: &Path,
    command: &str,
    args: &[OsString],
    set_up: bool,
) -> ExitCode {
    let feature = engine_feature(xtask_manifest_dir);
    if handed_over_to_me(std::env::var_os(HANDED_OVER).as_deref(), std::process::id()).is_some() {
        eprintln!(
            "error: `{command}` needs boxcar's engine feature, and the xtask built with `--features {feature}` \
             lacks it: another build replaced it meanwhile (run the command again), or {} names boxcar in a way \
             this does not follow (add `features = [\"engine\"]` to its boxcar dependency, or, for a command of \
             the xtask's own, an `engine` feature of the xtask's that enables boxcar's)",
            xtask_manifest_dir.join("Cargo.toml").display()
        );
        return ExitCode::FAILURE;
    }
    // cargo builds an optional dependency's crates that the lock file does
    // not hold at whatever version is newest, and asks the registry each
    // time: say how to lock them.
    if !locks_the_engine(&std::fs::read_to_string(lock_file).unwrap_or_default()) {
        eprintln!("warning: {}", unlocked(xtask_manifest_dir));
    }
    let meanwhile = if set_up { set_up_meanwhile() } else { None };
    let built = build(xtask_manifest_dir, &feature);
    if let Some(meanwhile) = meanwhile {
        let _ = meanwhile.join();
    }
    let binary = match built {
        Ok(binary) => binary,
        Err(why) => {
            eprintln!("error: {why}");
            return ExitCode::FAILURE;
        }
    };
    let mut engine = Command::new(&binary);
    let marker = format!("{}:{}", std::process::id(), xtask_manifest_dir.display());
    engine.args(args.iter().skip(1)).env(HANDED_OVER, marker);
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt as _;
        let error = engine.exec();
        eprintln!("error: running {}: {error}", binary.display());
        ExitCode::FAILURE
    }
    #[cfg(not(unix))]
    match engine.status() {
        Ok(status) => ExitCode::from(status.code().and_then(|c| u8::try_from(c).ok()).unwrap_or(1)),
        Err(error) => {
            eprintln!("error: running {}: {error}", binary.display());
            ExitCode::FAILURE
        }
    }
}

/// `cargo build --features <boxcar>/engine` of the xtask; the binary it made.
/// cargo's progress is shown when it compiles anything (a first time, or
/// after boxcar changed), under a line saying why; when all is built already,
/// nothing is shown.
fn build(xtask_manifest_dir: &Path, feature: &str) -> Result<PathBuf, String> {
    use std::io::{BufRead as _, Read as _};

    let manifest = xtask_manifest_dir.join("Cargo.toml");
    let mut child = cargo_build(&manifest, feature)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("running cargo: {e}"))?;
    let mut stdout = child.stdout.take().ok_or("cargo's output")?;
    let messages = std::thread::spawn(move || {
        let mut text = String::new();
        stdout.read_to_string(&mut text).map(|_| text)
    });
    let started = std::time::Instant::now();
    let mut held = Vec::new();
    let mut showing = false;
    for line in std::io::BufReader::new(child.stderr.take().ok_or("cargo's progress")?).lines() {
        let line = line.map_err(|e| format!("reading cargo's progress: {e}"))?;
        if !showing && line.trim_start().starts_with("Finished") {
            held.push(line);
            continue;
        }
        if !showing {
            showing = true;
            eprintln!("building boxcar's engine commands into this xtask, once (cargo build --features {feature})");
            held.drain(..).for_each(|l| eprintln!("{l}"));
        }
        eprintln!("{line}");
    }
    let status = child.wait().map_err(|e| format!("waiting for cargo: {e}"))?;
    let messages = messages.join().map_err(|_| "reading cargo's output".to_owned())?;
    let messages = messages.map_err(|e| format!("reading cargo's output: {e}"))?;
    if !status.success() {
        return Err(format!(
            "`cargo build --features {feature}` of {} failed (its output is above)",
            manifest.display()
        ));
    }
    if showing {
        eprintln!("built in {:.0} s; the next engine command starts at once", started.elapsed().as_secs_f64());
    }
    executables(&messages)
        .pop()
        .ok_or_else(|| format!("`cargo build --features {feature}` of {} made no binary", manifest.display()))
}

/// Whether a lock file holds the engine's crates (bollard, its engine client,
/// stands for them).
fn locks_the_engine(lock: &str) -> bool {
    lock.lines().any(|l| l == "name = \"bollard\"")
}

/// Why the engine's crates are not locked, and what to add. cargo
/// locks an optional dependency of a crate outside the workspace only while
/// something asks for it: a dev-dependency with the feature keeps the
/// engine's crates in the lock without building them into the xtask.
fn unlocked(xtask_manifest_dir: &Path) -> String {
    let manifest = xtask_manifest_dir.join("Cargo.toml");
    let name = dependency_name(xtask_manifest_dir);
    let text = std::fs::read_to_string(&manifest).unwrap_or_default();
    let table: toml::Table = text.parse().unwrap_or_default();
    let path = table
        .get("dependencies")
        .and_then(|deps| deps.get(&name))
        .and_then(|spec| spec.get("path"))
        .and_then(toml::Value::as_str)
        .map_or_else(|| "PATH".to_owned(), |p| crate::vocab::show::escape(p).into_owned());
    let package = if name == "boxcar" { String::new() } else { "package = \"boxcar\", ".to_owned() };
    format!(
        "Cargo.lock does not lock the crates of boxcar's engine commands, so cargo takes the newest it finds each \
         time. Add to {}:\n\n[dev-dependencies]\n{name} = {{ {package}path = \"{path}\", features = [\"engine\"] }}\n\n\
         so the lock file holds them (the xtask's own build stays without them); cargo adds them to Cargo.lock at \
         its next build, for you to commit",
        manifest.display()
    )
}

/// The engine build's command: the key is not in its environment, so no
/// build script or compiler it runs can read it.
fn cargo_build(manifest: &Path, feature: &str) -> Command {
    let mut cargo = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    // --locked: the lock file is the team's; cargo does not change it.
    cargo
        .args(["build", "--locked", "--message-format=json-render-diagnostics", "--features", feature])
        .arg("--manifest-path")
        .arg(manifest)
        .env_remove(boxcar_secrets::SECRET_KEY)
        .env_remove(boxcar_secrets::SECRET_KEY_FILE);
    cargo
}

/// The binaries cargo's JSON messages say it made, in order.
fn executables(messages: &str) -> Vec<PathBuf> {
    messages
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|m| m["reason"] == "compiler-artifact")
        .filter_map(|m| m["executable"].as_str().map(PathBuf::from))
        .collect()
}

/// The feature the engine build asks for: the xtask's own `engine` when its
/// Cargo.toml declares one, else boxcar's (under the name the xtask gives it).
fn engine_feature(xtask_manifest_dir: &Path) -> String {
    let manifest = std::fs::read_to_string(xtask_manifest_dir.join("Cargo.toml")).unwrap_or_default();
    let table: toml::Table = manifest.parse().unwrap_or_default();
    if table.get("features").and_then(|f| f.get("engine")).is_some() {
        return "engine".to_owned();
    }
    format!("{}/engine", dependency_name(xtask_manifest_dir))
}

/// Where the work done meanwhile writes its output.
const SETUP_LOG: &str = "/var/log/boxcar-setup.log";

/// For a command that installs an engine where none is, as
/// `adapters::engine::ensure` does: when no engine is installed here, no
/// other is chosen (`DOCKER_HOST`) and this is root on Debian, a thread that
/// installs and starts it, then bootstraps the builders' Debian base (an
/// engine installed just now holds no base image) to where the image build
/// finds it ([`crate::vocab::base::made_ahead_path`]). Its commands run at
/// the lowest CPU priority, their output in a log, with a line on the
/// terminal as each part begins and ends. Best
/// effort: what fails here the engine command does again, and reports.
fn set_up_meanwhile() -> Option<std::thread::JoinHandle<()>> {
    use crate::adapters::host::{self, Output, Recommends};

    let missing = host::engine_packages_missing();
    let wanted = std::env::var_os("DOCKER_HOST").is_none()
        && !host::on_path("dockerd")
        && !host::socket_listens()
        && host::is_root().unwrap_or(false)
        && host::is_debian();
    if !wanted {
        return None;
    }
    Some(std::thread::spawn(move || {
        let started = std::time::Instant::now();
        let log = Output::Background(PathBuf::from(SETUP_LOG));
        let said =
            |what: &str| eprintln!("meanwhile: {what} ({:.0} s; log: {SETUP_LOG})", started.elapsed().as_secs_f64());
        said(&format!("no Docker engine here: installing Debian's {}", missing.join(" ")));
        let engine = host::apt_install(&missing, Recommends::Skip, "no Docker engine here", &log)
            .and_then(|()| host::start_daemon(&log));
        match engine {
            Ok(mut daemon) => {
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
                while !host::socket_listens() && daemon.exited().is_none() && std::time::Instant::now() < deadline {
                    std::thread::sleep(std::time::Duration::from_millis(200));
                }
                said("the Docker engine is installed and started");
            }
            Err(why) => return said(&format!("{why}; the command tries again")),
        }
        let archive = crate::vocab::base::made_ahead_path();
        if archive.exists() {
            return said(&format!("a bootstrap of the builder's Debian waits already at {}", archive.display()));
        }
        let suite = crate::vocab::base::SUITE;
        said(&format!("bootstrapping Debian {suite} for the builder"));
        match host::bootstrap_debian(suite, crate::vocab::base::PACKAGES, &archive, &log) {
            Ok(()) => said(&format!("bootstrapped Debian {suite} into {}", archive.display())),
            Err(why) => said(&format!("{why}; the image build tries again")),
        }
    }))
}

/// What the xtask's Cargo.toml calls boxcar among its dependencies: the key
/// of the entry whose `package` is `boxcar`, else `boxcar`.
fn dependency_name(xtask_manifest_dir: &Path) -> String {
    let manifest = std::fs::read_to_string(xtask_manifest_dir.join("Cargo.toml")).unwrap_or_default();
    let table: toml::Table = manifest.parse().unwrap_or_default();
    table
        .get("dependencies")
        .and_then(toml::Value::as_table)
        .and_then(|deps| {
            deps.iter().find(|(_, spec)| spec.get("package").and_then(toml::Value::as_str) == Some("boxcar"))
        })
        .map_or_else(|| "boxcar".to_owned(), |(name, _)| name.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<OsString> {
        std::iter::once("xtask").chain(list.iter().copied()).map(OsString::from).collect()
    }

    #[test]
    fn engine_commands_are_found_by_name_or_after_help() {
        assert_eq!(engine_command(&args(&["image", "--service", "app"]), &[]), Some("image"));
        assert_eq!(engine_command(&args(&["help", "deploy"]), &[]), Some("deploy"));
        assert_eq!(engine_command(&args(&["image-check", "x.tar"]), &[]), Some("image-check"));
        assert_eq!(engine_command(&args(&["--quiet", "demo", "--down"]), &["test", "demo"]), Some("demo"));
        assert_eq!(engine_command(&args(&["help", "test"]), &["test"]), Some("test"));
        assert_eq!(engine_command(&args(&["demo"]), &["test"]), None);
        for light in [&["keygen", "--env", "image"][..], &["check"], &["--help"], &[], &["help"], &["imagex"]] {
            assert_eq!(engine_command(&args(light), &["demo"]), None, "{light:?}");
        }
    }

    #[test]
    fn the_built_binary_is_read_from_cargos_messages() {
        let messages = r#"{"reason":"compiler-artifact","package_id":"a","executable":null}
{"reason":"build-script-executed","package_id":"b"}
{"reason":"compiler-artifact","package_id":"xtask","executable":"/w/target/debug/xtask"}
{"reason":"build-finished","success":true}"#;
        assert_eq!(executables(messages), [PathBuf::from("/w/target/debug/xtask")]);
    }

    #[test]
    fn only_this_workspaces_xtask_runs_what_it_handed_over() {
        let here = Path::new("/w/xtask");
        assert_eq!(handed_over_from(None, here), Ok(()));
        assert_eq!(handed_over_from(Some("/w/xtask".as_ref()), here), Ok(()));
        let other = handed_over_from(Some("/v/xtask".as_ref()), here).unwrap_err();
        assert!(other.starts_with("the xtask of /v/xtask was to run, and this is the one of /w/xtask"), "{other}");
    }

    #[test]
    fn only_a_handover_to_this_very_process_counts() {
        let marker = |text: &str| Some(std::ffi::OsString::from(text));
        // exec keeps the process id: the engine binary sees its own.
        assert_eq!(handed_over_to_me(marker("42:/w/x:tra/xtask").as_deref(), 42), Some("/w/x:tra/xtask".into()));
        // Inherited from an xtask further up (its `cargo xtask test` running
        // another workspace's xtask): not a handover to this process.
        assert_eq!(handed_over_to_me(marker("41:/w/xtask").as_deref(), 42), None);
        assert_eq!(handed_over_to_me(marker("/w/xtask").as_deref(), 42), None);
        assert_eq!(handed_over_to_me(marker("x:/w/xtask").as_deref(), 42), None);
        assert_eq!(handed_over_to_me(None, 42), None);
    }

    #[test]
    fn a_lock_file_holds_the_engine_or_not() {
        let locked = "[[package]]\nname = \"boxcar\"\n\n[[package]]\nname = \"bollard\"\nversion = \"0.21.1\"\n";
        assert!(locks_the_engine(locked));
        assert!(!locks_the_engine("[[package]]\nname = \"boxcar\"\ndependencies = [\n \"bollard\",\n]\n"));
        assert!(!locks_the_engine("[[package]]\nname = \"bollard-stubs\"\n"));
        assert!(!locks_the_engine(""));
    }

    #[test]
    fn the_key_never_reaches_cargo() {
        let build = cargo_build(Path::new("/w/xtask/Cargo.toml"), "boxcar/engine");
        let removed: Vec<_> = build.get_envs().filter(|(_, v)| v.is_none()).map(|(k, _)| k.to_owned()).collect();
        assert_eq!(removed, [boxcar_secrets::SECRET_KEY, boxcar_secrets::SECRET_KEY_FILE]);
        let args: Vec<_> = build.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
        assert_eq!(
            args,
            [
                "build",
                "--locked",
                "--message-format=json-render-diagnostics",
                "--features",
                "boxcar/engine",
                "--manifest-path",
                "/w/xtask/Cargo.toml"
            ]
        );
    }

    #[test]
    fn an_outdated_lock_says_what_to_add() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("Cargo.toml"), "[dependencies]\nboxcar = { path = \"../boxcar/boxcar\" }\n")
            .unwrap();
        let said = unlocked(dir.path());
        assert!(
            said.contains("[dev-dependencies]\nboxcar = { path = \"../boxcar/boxcar\", features = [\"engine\"] }\n"),
            "{said}"
        );
        std::fs::write(
            dir.path().join("Cargo.toml"),
            "[dependencies]\nship = { package = \"boxcar\", path = \"b\" }\n",
        )
        .unwrap();
        assert!(
            unlocked(dir.path()).contains("ship = { package = \"boxcar\", path = \"b\", features = [\"engine\"] }")
        );
    }

    #[test]
    fn boxcar_is_found_under_another_name() {
        let dir = tempfile::tempdir().unwrap();
        let write = |text: &str| std::fs::write(dir.path().join("Cargo.toml"), text).unwrap();
        write("[package]\nname = \"xtask\"\n[dependencies]\nboxcar = { path = \"../boxcar/boxcar\" }\n");
        assert_eq!(dependency_name(dir.path()), "boxcar");
        write("[dependencies]\nship = { package = \"boxcar\", path = \"../boxcar/boxcar\" }\nclap = \"4\"\n");
        assert_eq!(dependency_name(dir.path()), "ship");
    }

    #[test]
    fn the_xtasks_own_engine_feature_is_built_when_it_has_one() {
        let dir = tempfile::tempdir().unwrap();
        let write = |text: &str| std::fs::write(dir.path().join("Cargo.toml"), text).unwrap();
        write("[dependencies]\nship = { package = \"boxcar\", path = \"b\" }\n");
        assert_eq!(engine_feature(dir.path()), "ship/engine");
        write(
            "[features]\nengine = [\"ship/engine\"]\n[dependencies]\nship = { package = \"boxcar\", path = \"b\" }\n",
        );
        assert_eq!(engine_feature(dir.path()), "engine");
        write("[features]\nfast = []\n[dependencies]\nboxcar = { path = \"b\" }\n");
        assert_eq!(engine_feature(dir.path()), "boxcar/engine");
    }
}
