//! `cargo xtask dev` on `hello-api` in a scratch checkout: the first round
//! deploys, an edited line is running a round later, an edit saved while a
//! build runs is running after the next round, and a broken compile or a
//! deleted source file leaves the previous version serving. The
//! edit-to-healthy time it reports is printed as a figure. Without an engine,
//! `dev` says so before it builds anything. Names are unique to this run;
//! what it made is removed at the end.

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::query_parameters::RemoveImageOptionsBuilder;

use crate::{Checkout, Repo};

const API_KEY: &str = "dev-test-api-key-0123456789";

struct Cleanup<'a> {
    checkout: &'a Checkout,
    name: String,
    repo: String,
    child: Option<Child>,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
        let args = ["undeploy", "--service", "hello-api", "--env", "hello", "--name", &self.name, "--purge"];
        let _ = self.checkout.run(&args);
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let Ok(docker) = Docker::connect_with_defaults() else { return };
            let Ok(docker) = docker.negotiate_version().await else { return };
            let images =
                docker.list_images(None::<bollard::query_parameters::ListImagesOptions>).await.unwrap_or_default();
            for tag in images.iter().flat_map(|i| &i.repo_tags).filter(|t| t.starts_with(&format!("{}:", self.repo))) {
                let options = RemoveImageOptionsBuilder::default().force(true).build();
                let _ = docker.remove_image(tag, Some(options), None).await;
            }
        });
    }
}

/// Everything the child printed so far.
fn collect(stream: impl std::io::Read + Send + 'static, into: Arc<Mutex<String>>) {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            let mut text = into.lock().unwrap();
            text.push_str(&line);
            text.push('\n');
        }
    });
}

fn wait_for(output: &Arc<Mutex<String>>, needle: &str, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let text = output.lock().unwrap().clone();
        if text.contains(needle) {
            return text;
        }
        assert!(Instant::now() < deadline, "no `{needle}` within {timeout:?}:\n{text}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The last published port in `cargo xtask dev`'s output.
fn last_port(stdout: &str) -> u16 {
    let line = stdout.lines().rev().find_map(|l| l.strip_prefix("published  127.0.0.1:")).expect("a published port");
    line.split(' ').next().unwrap().parse().unwrap()
}

fn hello(port: u16) -> Option<String> {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.write_all(format!("GET /hello HTTP/1.0\r\nAuthorization: Bearer {API_KEY}\r\n\r\n").as_bytes()).ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    Some(text.split_once("\r\n\r\n")?.1.to_owned())
}

#[test]
fn dev_replaces_the_running_version_on_each_change() {
    let pid = std::process::id();
    let checkout = Checkout::plain("hello");
    checkout.hello(API_KEY);
    let name = format!("devtest-{pid}");
    let repo = format!("boxcar-devtest-{pid}");
    let mut cleanup = Cleanup { checkout: &checkout, name: name.clone(), repo: repo.clone(), child: None };

    let mut cmd = checkout.cmd(&["dev", "--service", "hello-api", "--env", "hello", "--name", &name]);
    cmd.args(["--repo", &repo, "--publish", "127.0.0.1:0", "--rounds", "5"]);
    let mut child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let (stdout, stderr) = (Arc::new(Mutex::new(String::new())), Arc::new(Mutex::new(String::new())));
    collect(child.stdout.take().unwrap(), stdout.clone());
    collect(child.stderr.take().unwrap(), stderr.clone());
    cleanup.child = Some(child);

    // Round 1: built and deployed.
    wait_for(&stderr, &format!("round 1: `{name}` runs the change"), Duration::from_secs(900));
    let port = last_port(&stdout.lock().unwrap());
    assert_eq!(hello(port).as_deref(), Some("hello from `hello`\n"));

    // An edited line runs after round 2.
    let main = checkout.dir.path().join("examples/hello-api/src/main.rs");
    let text = std::fs::read_to_string(&main).unwrap();
    let greeting = |word: &str| text.replace("\"hello from `{}`\\n\"", &format!("\"{word} from `{{}}`\\n\""));
    std::fs::write(&main, greeting("hi")).unwrap();
    // A second edit while round 2 builds: the round after it must see it.
    wait_for(&stderr, "round 2: building", Duration::from_secs(60));
    std::fs::write(&main, greeting("hey")).unwrap();
    let log = wait_for(&stderr, &format!("round 2: `{name}` runs the change"), Duration::from_secs(600));
    let figure = log
        .lines()
        .find(|l| l.starts_with("dev: round 2:") && l.contains("runs the change"))
        .unwrap_or_default()
        .to_owned();
    eprintln!("figure: {figure}");
    wait_for(&stderr, &format!("round 3: `{name}` runs the change"), Duration::from_secs(600));
    let port = last_port(&stdout.lock().unwrap());
    assert_eq!(hello(port).as_deref(), Some("hey from `hello`\n"), "the edit made during a build was lost");

    // A broken compile: the running version stays, and says so.
    std::fs::write(&main, format!("{}\nfn broken( {{\n", greeting("hey"))).unwrap();
    wait_for(&stderr, "round 4: the build failed", Duration::from_secs(600));
    assert!(stderr.lock().unwrap().contains("the running version stays"));
    assert_eq!(hello(port).as_deref(), Some("hey from `hello`\n"), "a failed build changed the running version");

    // A deleted source file: the same.
    std::fs::remove_file(&main).unwrap();
    wait_for(&stderr, "round 5: the build failed", Duration::from_secs(600));
    // The message spans lines (the compiler's own): wait for its end.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let log = stderr.lock().unwrap().clone();
        let said = log.split_once("dev: round 5: the build failed").map(|(_, rest)| rest).unwrap_or_default();
        if said.contains("the running version stays") {
            break;
        }
        assert!(Instant::now() < deadline, "round 5 did not say the running version stays:\n{log}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut child = cleanup.child.take().unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}:\n{}", stderr.lock().unwrap());
    assert_eq!(hello(port).as_deref(), Some("hey from `hello`\n"), "the running version changed");
}

#[test]
fn dev_without_an_engine_says_so_before_building() {
    let checkout = Checkout::plain("hello");
    checkout.run(&["keygen", "--service", "hello-api", "--env", "hello"]).ok();
    let mut seal = checkout.cmd(&["encrypt-secret", "--service", "hello-api", "--env", "hello", "api_key"]);
    Repo::run_with(&mut seal, API_KEY.as_bytes()).ok();
    checkout.approve_service("hello-api", "hello");
    let mut cmd = checkout.cmd(&["dev", "--service", "hello-api", "--env", "hello", "--rounds", "1"]);
    cmd.env("DOCKER_HOST", format!("unix://{}/no-such.sock", checkout.keys.path().display()));
    let run = Repo::run_with(&mut cmd, b"").fails();
    assert!(run.stderr.contains("no Docker engine at unix://"), "{}", run.stderr);
    assert!(run.stderr.contains("start the Docker engine"), "{}", run.stderr);
    assert!(!run.stderr.contains("building"), "{}", run.stderr);
}
