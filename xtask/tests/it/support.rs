//! Test support for every file of `xtask/tests/it`, defined once: the names
//! tests give what they make on the engine, one HTTP client, one port picker,
//! one key helper, one percentile, the guard that removes a test's engine
//! resources however the test ends, and the check the suite ends with: that
//! nothing with a test's name is left on the engine.

use std::collections::HashMap;
use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::query_parameters::{
    ListContainersOptionsBuilder, ListNetworksOptionsBuilder, ListVolumesOptionsBuilder, RemoveContainerOptionsBuilder,
    RemoveImageOptionsBuilder,
};

// ---------------------------------------------------------------------------
// Names

/// The stems of every name a test gives what it makes on the engine (and of
/// the image repositories it tags): a name is `<stem>-<pid>`, then anything,
/// where `<pid>` is the test binary's process. [`leftovers`] finds them by it.
pub(crate) const STEMS: &[&str] = &[
    // deploy.rs: the app's deployments and images, hello-api's.
    "dtest",
    "boxcar-dtest",
    "hello",
    "boxcar-htest",
    // image.rs
    "boxcar-test",
    // builds.rs: the team's service (image repository and deployment).
    "builds",
    // dev.rs
    "devtest",
    "boxcar-devtest",
    // demo.rs: the prefix and the image repository.
    "boxcar-demotest",
    // ship.rs
    "ship",
    // multinode.rs: the local tags of what it pushes.
    "boxcar-mtest",
];

/// `<stem>-<pid>`: a name unique to this run of the tests, which
/// [`leftovers`] knows as a test's.
pub(crate) fn test_name(stem: &str) -> String {
    assert!(STEMS.contains(&stem), "`{stem}` is not in support::STEMS: add it, so leftovers are found");
    format!("{stem}-{}", std::process::id())
}

/// The process whose test made `name`, if `name` is a test's name.
fn test_pid(name: &str) -> Option<u32> {
    let name = name.trim_start_matches('/');
    STEMS.iter().find_map(|stem| {
        let rest = name.strip_prefix(stem)?.strip_prefix('-')?;
        let end = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        let after = &rest[end..];
        let boundary = after.is_empty() || after.starts_with(['-', ':', '_', '.']);
        if end == 0 || !boundary { None } else { rest[..end].parse().ok() }
    })
}

/// Whether `pid` is a running test binary (`it-<hash>`): its resources belong
/// to a run still going (another checkout's, on a shared engine), not to
/// one that left them.
fn is_running_test(pid: u32) -> bool {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let program = cmdline.split(|b| *b == 0).next().unwrap_or_default();
    let program = String::from_utf8_lossy(program);
    Path::new(program.as_ref()).file_name().is_some_and(|f| f.to_string_lossy().starts_with("it-"))
}

// ---------------------------------------------------------------------------
// Small helpers

/// A port free on `ip` now (whoever needs it binds it right after; Compose
/// and the multi-node servers need a fixed one).
pub(crate) fn free_port(ip: Ipv4Addr) -> u16 {
    TcpListener::bind((ip, 0)).unwrap().local_addr().unwrap().port()
}

/// A key file's text as it would show in output or a spec: the file, trimmed.
pub(crate) fn key_text(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap().trim().to_owned()
}

/// The `p`th percentile (0 to 100) of `sorted` (ascending), nearest rank
/// below; zero when there is nothing.
pub(crate) fn percentile(sorted: &[Duration], p: usize) -> Duration {
    sorted.get((sorted.len().max(1) - 1) * p / 100).copied().unwrap_or_default()
}

// ---------------------------------------------------------------------------
// HTTP

/// How long a request the test makes of a deployed service may take, where
/// the test does not say.
pub(crate) const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// 127.0.0.1:`port`.
pub(crate) fn local(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

/// One GET with `headers`, written by hand over a new connection with
/// `Connection: close`; the status and the body, or why there is none
/// (`connect: …`, `send: …`, `receive: …`, no answer in time).
///
/// Why not a crate: the tests need each request on a connection of its own
/// (a load test counts every request on its own and a broken connection
/// fails only the request it broke), failures said as what happened on the
/// wire, and a small body. The only client in Cargo.lock is reqwest, whose
/// blocking client runs a runtime of its own, pools connections, and (built
/// with `rustls-no-provider`, as the workspace has it) panics unless a
/// crypto provider is installed first, even for plain HTTP; its `blocking`
/// feature would also be unified into the app's build.
pub(crate) fn http_get(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    timeout: Duration,
) -> Result<(u16, String), String> {
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    let deadline = Instant::now() + timeout;
    let mut stream = TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("connect: {e}"))?;
    stream.set_write_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    stream.write_all(request.as_bytes()).map_err(|e| format!("send: {e}"))?;
    let mut response = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!("no complete answer within {} s", timeout.as_secs()));
        }
        stream.set_read_timeout(Some(left)).map_err(|e| e.to_string())?;
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => response.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                return Err(format!("no complete answer within {} s", timeout.as_secs()));
            }
            Err(e) => return Err(format!("receive: {e}")),
        }
    }
    let text = String::from_utf8_lossy(&response);
    let status =
        text.strip_prefix("HTTP/1.").and_then(|rest| rest.get(2..5)).and_then(|code| code.parse().ok()).ok_or_else(
            || if text.is_empty() { "empty response".to_owned() } else { "no HTTP status line".to_owned() },
        )?;
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let chunked = head.lines().any(|l| l.to_ascii_lowercase().replace(' ', "") == "transfer-encoding:chunked");
    Ok((status, if chunked { dechunk(body) } else { body.to_owned() }))
}

/// The data of a chunked body (haproxy's statistics page sends one even to
/// HTTP/1.0 requests): hex size, CRLF, data, CRLF, until size 0.
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16).unwrap_or(0);
        let (Some(data), Some(after)) = (rest.get(..size), rest.get(size..)) else { break };
        if size == 0 {
            break;
        }
        out.push_str(data);
        body = after.trim_start_matches("\r\n");
    }
    out
}

/// The status of GET `path` on 127.0.0.1:`port` with `Authorization: Bearer
/// <key>` when there is a key; None when nothing answered within 3 s.
pub(crate) fn status_with_bearer(port: u16, path: &str, key: Option<&str>) -> Option<u16> {
    let bearer = key.map(|k| format!("Bearer {k}"));
    let headers: Vec<(&str, &str)> = bearer.iter().map(|b| ("Authorization", b.as_str())).collect();
    http_get(local(port), path, &headers, Duration::from_secs(3)).ok().map(|(status, _)| status)
}

/// Whether GET /healthz on 127.0.0.1:`port` answers 200 within 3 s.
pub(crate) fn healthz(port: u16) -> bool {
    status_with_bearer(port, "/healthz", None) == Some(200)
}

/// Polls /healthz on 127.0.0.1:`port` until it answers 200 or `timeout` passed.
pub(crate) fn wait_healthz(port: u16, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if healthz(port) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    false
}

// ---------------------------------------------------------------------------
// The engine

/// A client of the engine the tests use (DOCKER_HOST or the default socket),
/// with a runtime to drive it; None when there is no engine.
pub(crate) fn engine() -> Option<(tokio::runtime::Runtime, Docker)> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let docker = rt.block_on(async { Docker::connect_with_defaults().ok()?.negotiate_version().await.ok() })?;
    Some((rt, docker))
}

/// Removes, when dropped (after a panic too), what a test made on the engine
/// under its unique names, and nothing else. Give it the names before the
/// test makes anything: a guard, not a last line.
#[derive(Debug)]
pub(crate) struct Sweep {
    /// Deployment names: services `<name>` and `<name>_app` (a stack's),
    /// every container, Swarm secret and volume labelled
    /// `dev.boxcar.deployment=<name>` or named `<name>` or `<name>-…`, and
    /// networks so named or `<name>_default` (a stack's).
    pub(crate) deployments: Vec<String>,
    /// Image repositories: every tag `<repo>:…` or `<repo>-…:…`, and
    /// containers and volumes named `<repo>-…`.
    pub(crate) image_repos: Vec<String>,
    done: bool,
}

impl Sweep {
    pub(crate) fn new(deployments: &[String], image_repos: &[String]) -> Sweep {
        Sweep { deployments: deployments.to_vec(), image_repos: image_repos.to_vec(), done: false }
    }

    /// Removes everything now (what is gone already is skipped); the guard
    /// does not run it again.
    pub(crate) fn run(&mut self) {
        self.done = true;
        let Some((rt, docker)) = engine() else { return };
        rt.block_on(self.remove(&docker));
    }

    fn owns(&self, name: &str) -> bool {
        let name = name.trim_start_matches('/');
        // A stack's task containers: `<stack>_app.1.<task id>`.
        let stack_task = |n: &String| name.starts_with(&format!("{n}_"));
        self.deployments.iter().chain(&self.image_repos).any(|n| name == n || name.starts_with(&format!("{n}-")))
            || self.deployments.iter().any(stack_task)
    }

    /// `<repo>:…` and `<repo>-…:…` (hello-api's `-fast` images) of one of
    /// its image repositories.
    fn owns_image(&self, tag: &str) -> bool {
        let repo = tag.rsplit_once(':').map_or(tag, |(repo, _)| repo);
        self.image_repos.iter().any(|r| repo == r || repo.starts_with(&format!("{r}-")))
    }

    async fn remove(&self, docker: &Docker) {
        let mut deleted_service = false;
        for name in &self.deployments {
            for service in [name.clone(), format!("{name}_app")] {
                deleted_service |= docker.delete_service(&service).await.is_ok();
            }
        }
        if deleted_service {
            // The engine stops a deleted service's tasks on its own time.
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        let labelled = |name: &str| -> HashMap<String, Vec<String>> {
            [("label".to_owned(), vec![format!("dev.boxcar.deployment={name}")])].into()
        };
        let mut containers = Vec::new();
        let all = ListContainersOptionsBuilder::default().all(true).build();
        for c in docker.list_containers(Some(all)).await.unwrap_or_default() {
            if c.names.iter().flatten().any(|n| self.owns(n)) {
                containers.push(c.id.unwrap_or_default());
            }
        }
        for name in &self.deployments {
            let options = ListContainersOptionsBuilder::default().all(true).filters(&labelled(name)).build();
            containers
                .extend(docker.list_containers(Some(options)).await.unwrap_or_default().into_iter().flat_map(|c| c.id));
        }
        for id in containers {
            let options = RemoveContainerOptionsBuilder::default().force(true).v(true).build();
            let _ = docker.remove_container(&id, Some(options)).await;
        }
        for name in &self.deployments {
            let options =
                bollard::query_parameters::ListSecretsOptionsBuilder::default().filters(&labelled(name)).build();
            for s in docker.list_secrets(Some(options)).await.unwrap_or_default() {
                let _ = docker.delete_secret(s.id.as_deref().unwrap_or("")).await;
            }
        }
        let volumes = docker.list_volumes(None::<bollard::query_parameters::ListVolumesOptions>).await;
        let mut volume_names: Vec<String> = volumes
            .ok()
            .and_then(|v| v.volumes)
            .unwrap_or_default()
            .into_iter()
            .map(|v| v.name)
            .filter(|n| self.owns(n))
            .collect();
        for name in &self.deployments {
            let options = ListVolumesOptionsBuilder::default().filters(&labelled(name)).build();
            let list = docker.list_volumes(Some(options)).await.ok().and_then(|v| v.volumes).unwrap_or_default();
            volume_names.extend(list.into_iter().map(|v| v.name));
        }
        for v in &volume_names {
            // A container the engine is still removing holds its volume a
            // while longer: a stack's task after `docker stack rm`, which
            // returns before the task's container is gone.
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            loop {
                match docker.remove_volume(v, None::<bollard::query_parameters::RemoveVolumeOptions>).await {
                    Err(bollard::errors::Error::DockerResponseServerError { status_code: 409, .. })
                        if std::time::Instant::now() < deadline =>
                    {
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                    _ => break,
                }
            }
        }
        let networks = docker.list_networks(Some(ListNetworksOptionsBuilder::default().build())).await;
        for n in networks.unwrap_or_default().into_iter().filter_map(|n| n.name) {
            let stack = self.deployments.iter().any(|d| n == format!("{d}_default"));
            if stack || self.owns(&n) {
                let _ = docker.remove_network(&n).await;
            }
        }
        let images = docker.list_images(None::<bollard::query_parameters::ListImagesOptions>).await;
        for tag in images.unwrap_or_default().into_iter().flat_map(|i| i.repo_tags) {
            if self.owns_image(&tag) {
                let options = RemoveImageOptionsBuilder::default().force(true).build();
                let _ = docker.remove_image(&tag, Some(options), None).await;
            }
        }
    }
}

impl Drop for Sweep {
    fn drop(&mut self) {
        if !self.done {
            self.run();
        }
    }
}

/// Everything on the engine with a test's name (see [`STEMS`]) whose test
/// binary no longer runs: containers, volumes, networks, Swarm services and
/// secrets, and image tags, each as `kind name`. Resources of a test binary
/// still running (another checkout's run on a shared engine) are not listed.
pub(crate) fn leftovers(docker: &Docker, rt: &tokio::runtime::Runtime) -> Vec<String> {
    let left = |name: &str| test_pid(name).is_some_and(|pid| !is_running_test(pid));
    rt.block_on(async {
        let mut out = Vec::new();
        let all = ListContainersOptionsBuilder::default().all(true).build();
        for c in docker.list_containers(Some(all)).await.unwrap() {
            for n in c.names.iter().flatten().filter(|n| left(n)) {
                out.push(format!("container {}", n.trim_start_matches('/')));
            }
        }
        let volumes = docker.list_volumes(None::<bollard::query_parameters::ListVolumesOptions>).await.unwrap();
        out.extend(
            volumes
                .volumes
                .unwrap_or_default()
                .into_iter()
                .filter(|v| left(&v.name))
                .map(|v| format!("volume {}", v.name)),
        );
        let networks = docker.list_networks(Some(ListNetworksOptionsBuilder::default().build())).await.unwrap();
        out.extend(networks.into_iter().filter_map(|n| n.name).filter(|n| left(n)).map(|n| format!("network {n}")));
        // Services and secrets exist only on a Swarm manager; elsewhere the engine refuses the list.
        let services = docker.list_services(None::<bollard::query_parameters::ListServicesOptions>).await;
        for s in services.unwrap_or_default() {
            let name = s.spec.and_then(|s| s.name).unwrap_or_default();
            if left(&name) {
                out.push(format!("service {name}"));
            }
        }
        let secrets = docker.list_secrets(None::<bollard::query_parameters::ListSecretsOptions>).await;
        for s in secrets.unwrap_or_default() {
            let name = s.spec.and_then(|s| s.name).unwrap_or_default();
            if left(&name) {
                out.push(format!("secret {name}"));
            }
        }
        let images = docker.list_images(None::<bollard::query_parameters::ListImagesOptions>).await.unwrap();
        out.extend(images.into_iter().flat_map(|i| i.repo_tags).filter(|t| left(t)).map(|t| format!("image {t}")));
        out.sort();
        out
    })
}

/// The suite's last check, which `cargo xtask test` runs once `cargo test`
/// is over: nothing with a test's name is left on the engine. Ignored in the
/// suite itself on purpose, not to hide a failure: while the suite runs, its
/// tests' resources are there by design, so the check means something only
/// after the test binary has exited.
#[test]
#[ignore = "run by `cargo xtask test` after the suite: it checks what the finished suite left"]
fn nothing_with_a_test_name_is_left_on_the_engine() {
    let (rt, docker) = engine().expect("this check needs the Docker engine the suite ran on");
    let left = leftovers(&docker, &rt);
    assert!(
        left.is_empty(),
        "the tests left these on the engine (remove them, then fix the test's guard):\n{}",
        left.join("\n")
    );
}

#[test]
fn test_names_are_recognised_and_others_are_not() {
    assert_eq!(test_pid("dtest-123-s"), Some(123));
    assert_eq!(test_pid("/devtest-77"), Some(77));
    assert_eq!(test_pid("boxcar-devtest-77:latest"), Some(77));
    assert_eq!(test_pid("dtest-123-k_default"), Some(123));
    assert_eq!(test_pid("hello-9-s-key-0123456789abcdef"), Some(9));
    assert_eq!(test_pid("boxcar-htest-5-fast:latest"), Some(5));
    for other in
        ["hello-api", "hello-api:latest", "boxcar-demo-app", "ship", "dtest-", "dtest-12x", "boxcar-cargo-registry"]
    {
        assert_eq!(test_pid(other), None, "{other}");
    }
    let name = test_name("devtest");
    assert_eq!(test_pid(&name), Some(std::process::id()));
    let mut sweep = Sweep::new(&[], &["boxcar-htest-5".to_owned()]);
    let mut stack = Sweep::new(&["dtest-5-k".to_owned()], &[]);
    assert!(stack.owns("/dtest-5-k_app.1.x2h7") && stack.owns("dtest-5-k-data") && !stack.owns("dtest-5-kx_app.1"));
    stack.done = true;
    for ours in ["boxcar-htest-5:latest", "boxcar-htest-5-fast:latest", "boxcar-htest-5:v2"] {
        assert!(sweep.owns_image(ours), "{ours}");
    }
    for other in ["boxcar-htest-50:latest", "boxcar-htest-5x:latest", "hello-api:latest"] {
        assert!(!sweep.owns_image(other), "{other}");
    }
    // Made for the names alone: nothing to remove.
    sweep.done = true;
    assert!(is_running_test(std::process::id()), "this test binary is named it-<hash>");
}
