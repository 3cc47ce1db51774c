//! A service as a team writes one when it needs the builder's help: a
//! `build.rs` that runs `protoc` (prost-build) and the `openssl` crate, in a
//! scratch workspace with its own xtask, as README's "Ship your own service"
//! sets one up. One setup, several cases in order:
//! 1. no `build.packages` and `openssl` with its default features: the build
//!    fails, and after the compiler's output boxcar says, a line each, what
//!    `build.packages` can add for protoc and what to do for OpenSSL (the
//!    `vendored` feature); nothing is tagged;
//! 2. a package Debian does not have: apt's line, before anything compiles,
//!    and nothing is tagged;
//! 3. `build.packages = ["make", "perl", "protobuf-compiler"]` and the
//!    `vendored` feature: the image builds, deploys hardened, and answers with
//!    a digest OpenSSL computed of a message prost encoded.
//!
//! The scratch workspace's crates come from crates.io through cargo, as any
//! build's do; its xtask links this checkout's boxcar by path.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use bollard::Docker;
use sha2::Digest as _;

use crate::support::{Sweep, http_get, local, test_name};
use crate::{Repo, Run, git, project_root};

const BUILD_RS: &str = r#"fn main() {
    prost_build::compile_protos(&["proto/greeting.proto"], &["proto/"]).unwrap();
}
"#;

const PROTO: &str = r#"syntax = "proto3";
package greeting;
message Greeting { string text = 1; uint32 times = 2; }
"#;

/// Plain std HTTP on 8080: `/healthz`, and `/digest`: the SHA-256 (by
/// OpenSSL) of a message encoded by prost.
const MAIN: &str = r#"use std::io::{Read as _, Write as _};

use prost::Message as _;

pub mod greeting {
    include!(concat!(env!("OUT_DIR"), "/greeting.rs"));
}

fn main() {
    let listener = std::net::TcpListener::bind("0.0.0.0:8080").expect("listening on 0.0.0.0:8080");
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        let mut buf = [0u8; 4096];
        let n = stream.read(&mut buf).unwrap_or(0);
        let request = String::from_utf8_lossy(&buf[..n]);
        let body = if request.starts_with("GET /digest ") {
            let message = greeting::Greeting { text: "hello".into(), times: 3 }.encode_to_vec();
            openssl::sha::sha256(&message).iter().map(|b| format!("{b:02x}")).collect::<String>()
        } else {
            "ok".to_owned()
        };
        let _ = write!(stream, "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{body}", body.len());
    }
}
"#;

fn manifest(name: &str, openssl: &str) -> String {
    format!(
        "[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2024\"\npublish = false\n\n\
         [dependencies]\nprost = \"0.13\"\nopenssl = {openssl}\n\n[build-dependencies]\nprost-build = \"0.13\"\n"
    )
}

fn contract(name: &str, packages: &str) -> String {
    format!("[[service]]\nname = \"{name}\"\nhealth.http = \"/healthz\"\n{packages}")
}

fn run(cmd: &mut Command) -> Run {
    Repo::run_with(cmd, b"")
}

#[test]
fn a_service_that_needs_protoc_and_openssl_builds_with_build_packages() {
    let name = test_name("builds");
    let _cleanup = Sweep::new(&[format!("{name}-production")], std::slice::from_ref(&name));
    let tmp = tempfile::tempdir().unwrap();
    let ws = tmp.path().join("ws");
    let svc = ws.join(&name);
    std::fs::create_dir_all(svc.join("src")).unwrap();
    std::fs::create_dir_all(svc.join("proto")).unwrap();
    std::fs::create_dir_all(ws.join("xtask/src")).unwrap();
    std::fs::create_dir_all(ws.join(".cargo")).unwrap();
    let write = |path: &Path, text: &str| std::fs::write(ws.join(path), text).unwrap();
    write(Path::new("Cargo.toml"), &format!("[workspace]\nresolver = \"3\"\nmembers = [\"xtask\", \"{name}\"]\n"));
    write(
        Path::new("xtask/Cargo.toml"),
        &format!(
            "[package]\nname = \"team-xtask\"\nversion = \"0.1.0\"\nedition = \"2024\"\npublish = false\n\n\
             [dependencies]\nboxcar = {{ path = \"{0}\" }}\n\n\
             [dev-dependencies]\nboxcar = {{ path = \"{0}\", features = [\"engine\"] }}\n",
            project_root().join("boxcar").display()
        ),
    );
    write(
        Path::new("xtask/src/main.rs"),
        "fn main() -> std::process::ExitCode {\n    boxcar::main(env!(\"CARGO_MANIFEST_DIR\"))\n}\n",
    );
    // Named apart from the ship test's `xtask`: the two share a target folder,
    // where cargo puts each workspace's binary under its package's name.
    write(Path::new(".cargo/config.toml"), "[alias]\nxtask = \"run --quiet --package team-xtask --\"\n");
    write(Path::new(".gitignore"), "/target\n");
    write(&Path::new(&name).join("build.rs"), BUILD_RS);
    write(&Path::new(&name).join("proto/greeting.proto"), PROTO);
    write(&Path::new(&name).join("src/main.rs"), MAIN);
    write(&Path::new(&name).join("Cargo.toml"), &manifest(&name, "\"0.10\""));
    write(Path::new("boxcar.toml"), &contract(&name, ""));
    // This checkout's versions for what they share (cargo adds the rest).
    std::fs::copy(project_root().join("Cargo.lock"), ws.join("Cargo.lock")).unwrap();
    std::fs::copy(project_root().join("rust-toolchain.toml"), ws.join("rust-toolchain.toml")).unwrap();
    git(&ws, &["init", "-q"]);

    let keys = tempfile::tempdir().unwrap();
    let xtask = |args: &[&str]| {
        let mut cmd = Command::new("cargo");
        cmd.arg("xtask")
            .args(args)
            .current_dir(&ws)
            .env("BOXCAR_KEY_DIR", keys.path())
            // Shared with the other scratch workspaces: boxcar compiles once.
            .env("CARGO_TARGET_DIR", project_root().join("target/scratch"))
            .env("BOXCAR_TARGET_VOLUME", crate::shared_target_volume())
            .env_remove("BOXCAR_PROJECT_ROOT")
            .env_remove("SECRET_KEY")
            .env_remove("SECRET_KEY_FILE")
            .env_remove("CARGO_MANIFEST_DIR");
        run(&mut cmd)
    };
    let commit = |message: &str| {
        git(&ws, &["add", "-A"]);
        git(&ws, &["-c", "user.name=test", "-c", "user.email=test@example.invalid", "commit", "-qm", message]);
    };
    xtask(&["keygen", "--env", "production"]).ok();
    xtask(&["approve", "--env", "production", "--yes"]).ok();
    commit("a team's service");
    let tagged = || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let docker = Docker::connect_with_defaults().unwrap().negotiate_version().await.unwrap();
            docker.inspect_image(&format!("{name}:latest")).await.is_ok()
        })
    };

    // 1. Nothing in the builder for protoc or OpenSSL: a line for each.
    let failed = xtask(&["image"]);
    assert_ne!(failed.code, 0, "{}", failed.stderr);
    let hints: Vec<&str> = failed.stderr.lines().filter(|l| l.starts_with("boxcar: ")).collect();
    assert!(
        hints.contains(&"boxcar: the build runs protoc: add \"protobuf-compiler\" to build.packages in boxcar.toml"),
        "{}",
        failed.stderr
    );
    assert!(
        hints.iter().any(|h| h.contains("enable the `vendored` feature of the `openssl` crate")),
        "{}",
        failed.stderr
    );
    // The hints come after the compiler's output, last.
    let last = failed.stderr.lines().rfind(|l| !l.trim().is_empty()).unwrap();
    assert!(last.starts_with("boxcar: "), "{}", failed.stderr);
    assert!(!tagged(), "an image was tagged after a failed build");

    // 2. A package Debian does not have: apt's line, nothing compiled or tagged.
    let unknown = format!("{name}-no-such-package");
    write(Path::new("boxcar.toml"), &contract(&name, &format!("build.packages = [\"make\", \"{unknown}\"]\n")));
    xtask(&["approve", "--env", "production", "--yes"]).ok();
    commit("an unknown package");
    let refused = xtask(&["image"]);
    assert_ne!(refused.code, 0);
    assert!(
        // The list as the builder got it: sorted, so the same set is one builder.
        refused.stderr.contains(&format!(
            "boxcar.toml: build.packages: the builder could not install {unknown} make: E: Unable to locate package {unknown};"
        )),
        "{}",
        refused.stderr
    );
    // Nothing compiled in the builder (its output is shown as `  | …`; the
    // xtask's own build, on the host, may show cargo's lines).
    let compiled = refused.stderr.lines().any(|l| l.starts_with("  |") && l.contains("Compiling "));
    assert!(!compiled, "{}", refused.stderr);
    assert!(!tagged());

    // 3. The packages and the vendored feature: it builds, and runs.
    write(Path::new("boxcar.toml"), &contract(&name, "build.packages = [\"protobuf-compiler\", \"perl\", \"make\"]\n"));
    write(&Path::new(&name).join("Cargo.toml"), &manifest(&name, "{ version = \"0.10\", features = [\"vendored\"] }"));
    xtask(&["approve", "--env", "production", "--yes"]).ok();
    commit("protoc, perl and make in the builder; OpenSSL vendored");
    let started = Instant::now();
    let built = xtask(&["image"]).ok();
    eprintln!(
        "figure: {name} (prost-build and vendored OpenSSL) image built in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    let how = built.stderr.lines().filter(|l| l.starts_with("binary: "));
    for line in built.stdout.lines().filter(|l| l.starts_with("binary") || l.contains("besides the binary")).chain(how)
    {
        eprintln!("figure: {line}");
    }
    let deployed = xtask(&["deploy", "--env", "production", "--publish", "127.0.0.1:0"]).ok();
    let port: u16 = deployed
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("published  127.0.0.1:"))
        .and_then(|p| p.split(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no published port:\n{}", deployed.stdout));
    let expected = hex(&sha2::Sha256::digest(b"\x0a\x05hello\x10\x03"));
    let answer = http_get(local(port), "/digest", &[], Duration::from_secs(3));
    assert_eq!(answer, Ok((200, expected)));
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
