//! README's "Ship your own service", followed literally in a scratch
//! workspace this test makes: a new service crate (not one of this
//! repository's), the README's shell steps run by bash as written, and the
//! README's Rust lines put first in the service's `main`. Then the deployed
//! container must answer, healthy through the generic probe, hardened.
//!
//! What the test changes in the steps, and why:
//! - `git clone https://github.com/boxcar-rs/boxcar ../boxcar` becomes a
//!   symlink to this checkout: no network here, and this checkout is what is
//!   under test;
//! - `my-service` becomes a name unique to this run (`ship-<pid>`), and the
//!   published port 8090 becomes 0 (any free port): tests use unique names and
//!   take no fixed port;
//! - the workspace starts with this repository's Cargo.lock, so cargo picks
//!   the crate versions this checkout builds with (no registry look-ups);
//! - its remote is a bare repository beside it, whose `main` is `origin/HEAD`,
//!   as in a clone.
//!
//! Everything it creates on the engine carries the unique name and is removed
//! at the end.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use bollard::Docker;

use crate::support::{Sweep, status_with_bearer, test_name};
use crate::{Repo, Run, git, project_root};

/// The README's text between the `ship:begin` and `ship:end` markers:
/// `(shell steps, rust lines)`.
fn readme_steps() -> (String, String) {
    let readme = std::fs::read_to_string(project_root().join("README.md")).unwrap();
    let start = readme.find("<!-- ship:begin -->").expect("README has no ship:begin marker");
    let end = readme.find("<!-- ship:end -->").expect("README has no ship:end marker");
    let (mut sh, mut rust) = (String::new(), String::new());
    // Which block a line is in: none, a shell block, a Rust block.
    let mut block = 0;
    for line in readme[start..end].lines() {
        match (line.trim(), block) {
            ("```sh", 0) => block = 1,
            ("```rust", 0) => block = 2,
            ("```", _) => block = 0,
            (_, 1) => sh.push_str(&format!("{line}\n")),
            (_, 2) => rust.push_str(&format!("{line}\n")),
            _ => {}
        }
    }
    (sh, rust)
}

/// The "existing" service: plain std HTTP on 0.0.0.0:8080, `/healthz` for
/// anyone, `/hello` for the bearer of `api_key`. `OPEN_SECRETS` marks where
/// the README's lines go.
const SERVICE: &str = r#"use std::io::{Read as _, Write as _};

fn main() {
    OPEN_SECRETS
    let token = format!("Authorization: Bearer {}", api_key.expose_str().expect("api_key is text"));
    let listener = std::net::TcpListener::bind("0.0.0.0:8080").expect("listening on 0.0.0.0:8080");
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        // Read the whole head: a request may come in several pieces.
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16384 {
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        let request = String::from_utf8_lossy(&head);
        let (status, body) = if request.starts_with("GET /healthz ") {
            ("200 OK", "ok\n")
        } else if request.starts_with("GET /hello ") && request.lines().any(|l| l.trim_end() == token) {
            ("200 OK", "hello\n")
        } else {
            ("401 Unauthorized", "")
        };
        let _ = write!(stream, "HTTP/1.0 {status}\r\nContent-Length: {}\r\n\r\n{body}", body.len());
    }
}
"#;

fn run(cmd: &mut Command) -> Run {
    Repo::run_with(cmd, b"")
}

#[test]
fn the_readme_ships_a_new_service() {
    let started = Instant::now();
    let name = test_name("ship");
    // The deployment's containers and volumes, and the service's images.
    let _cleanup = Sweep::new(&[format!("{name}-production")], std::slice::from_ref(&name));
    let (steps, rust) = readme_steps();
    assert!(steps.contains("cargo xtask image") && rust.contains("open_environment"), "README steps:\n{steps}\n{rust}");
    assert!(steps.contains("--publish 127.0.0.1:8090"), "README steps:\n{steps}");

    // An existing workspace with one service, committed.
    let tmp = tempfile::tempdir().unwrap();
    let ws = tmp.path().join("ws");
    std::fs::create_dir(&ws).unwrap();
    std::fs::write(ws.join("Cargo.toml"), format!("[workspace]\nresolver = \"3\"\nmembers = [\"{name}\"]\n")).unwrap();
    std::fs::copy(project_root().join("Cargo.lock"), ws.join("Cargo.lock")).unwrap();
    std::fs::copy(project_root().join("rust-toolchain.toml"), ws.join("rust-toolchain.toml")).unwrap();
    git(&ws, &["init", "-q"]);
    run(Command::new("cargo").args(["new", "--quiet", "--bin", &name]).current_dir(&ws)).ok();
    let main = SERVICE.replace("    OPEN_SECRETS\n", &rust);
    std::fs::write(ws.join(&name).join("src/main.rs"), main).unwrap();
    git(&ws, &["add", "-A"]);
    git(&ws, &["commit", "-qm", "an existing workspace"]);
    // A clone of its remote, as a team's workspace is: `check` trusts origin/HEAD.
    crate::publish(&ws, &tmp.path().join("origin.git"));

    // The README's steps, as written but for the changes the module docs list.
    let steps = steps
        .replace(
            "git clone https://github.com/boxcar-rs/boxcar ../boxcar",
            &format!("ln -s {} ../boxcar", project_root().display()),
        )
        .replace("my-service", &name)
        .replace("--publish 127.0.0.1:8090", "--publish 127.0.0.1:0");
    let keys = tempfile::tempdir().unwrap();
    let mut bash = Command::new("bash");
    bash.args(["-euo", "pipefail", "-c", &steps])
        .current_dir(&ws)
        .env("BOXCAR_KEY_DIR", keys.path())
        .env("API_KEY", "ship-test-api-key-0123456789")
        // The README's `git commit` needs an author; a CI machine may have none.
        .env("GIT_AUTHOR_NAME", "test")
        .env("GIT_AUTHOR_EMAIL", "test@example.invalid")
        .env("GIT_COMMITTER_NAME", "test")
        .env("GIT_COMMITTER_EMAIL", "test@example.invalid")
        // Shared with the scratch checkouts and across runs: dependencies compile once.
        .env("CARGO_TARGET_DIR", project_root().join("target/scratch"))
        .env("BOXCAR_TARGET_VOLUME", crate::shared_target_volume())
        .env_remove("BOXCAR_PROJECT_ROOT")
        .env_remove("SECRET_KEY")
        .env_remove("SECRET_KEY_FILE")
        .env_remove("CARGO_MANIFEST_DIR");
    let shipped = run(&mut bash);
    let took = started.elapsed();
    let shipped = shipped.ok();
    eprintln!("figure: README's steps, scratch workspace to a healthy container: {:.0} s", took.as_secs_f64());
    assert!(!shipped.all().contains("ship-test-api-key"), "the sealed value was printed");
    let besides = shipped
        .stdout
        .lines()
        .find(|l| l.contains("besides the binary"))
        .unwrap_or_default()
        .trim_start_matches("image")
        .trim()
        .to_owned();
    eprintln!("figure: {name}'s image: {besides}");

    // The container answers, healthy through boxcar-probe, hardened.
    let published = shipped
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("published  127.0.0.1:"))
        .unwrap_or_else(|| panic!("no published port:\n{}", shipped.stdout));
    let port: u16 = published.split(' ').next().unwrap().parse().unwrap();
    let get = |path: &str, key: Option<&str>| status_with_bearer(port, path, key);
    assert_eq!(get("/healthz", None), Some(200), "no /healthz on {port}");
    assert_eq!(get("/hello", Some("ship-test-api-key-0123456789")), Some(200), "the sealed key was not opened");
    assert_eq!(get("/hello", None), Some(401));
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let info = rt.block_on(async {
        let docker = Docker::connect_with_defaults().unwrap().negotiate_version().await.unwrap();
        let container = format!("{name}-production");
        docker.inspect_container(&container, None::<bollard::query_parameters::InspectContainerOptions>).await.unwrap()
    });
    let config = info.config.unwrap();
    assert_eq!(config.user.as_deref(), Some("65532:65532"));
    assert_eq!(
        config.healthcheck.unwrap().test.unwrap(),
        ["CMD", "/usr/local/bin/boxcar-probe", "http", "8080", "/healthz"]
    );
    let host = info.host_config.unwrap();
    assert_eq!(host.readonly_rootfs, Some(true));
    assert_eq!(host.cap_drop.unwrap(), ["ALL"]);
    let health = info.state.unwrap().health.unwrap().status.unwrap().to_string();
    assert_eq!(health, "healthy");
    assert!(Path::new(&ws.join("boxcar.toml")).exists());
    // The README's steps keep build output out of git, in a workspace that had no .gitignore.
    assert_eq!(std::fs::read_to_string(ws.join(".gitignore")).unwrap(), "/target\n");
}
