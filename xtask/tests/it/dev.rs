//! `cargo xtask dev` on `hello-api` in a scratch checkout: the first round
//! deploys, an edited line is running a round later, an edit saved while a
//! build runs is running after the next round, and a broken compile or a
//! deleted source file leaves the previous version serving. The
//! edit-to-healthy time it reports is printed as a figure. Without an engine,
//! `dev` says so before it builds anything. Names are unique to this run;
//! what it made is removed by a guard however the test ends.

use std::io::{BufRead as _, BufReader};
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::{HTTP_TIMEOUT, Sweep, http_get, local, test_name};
use crate::{Checkout, Repo, Run};

const API_KEY: &str = "dev-test-api-key-0123456789";

/// Removes what the test made, however it ends: stops `dev`, puts back the
/// sources the test edited or deleted (`undeploy --service` reads the
/// service's contract, which a deleted `main.rs` breaks: undeploy then
/// refused, and the deployment and its key volume stayed), undeploys with
/// `--purge`, then sweeps the engine for anything still named after the run.
struct Cleanup<'a> {
    checkout: &'a Checkout,
    name: String,
    child: Option<Child>,
    /// A source file the test changes, and its text before.
    source: (PathBuf, String),
    undeployed: bool,
    /// Dropped after [`Cleanup::drop`]: the deployment's and the images' names.
    _sweep: Sweep,
}

impl Cleanup<'_> {
    /// Stops `dev` if it still runs, restores the source and undeploys.
    fn undeploy(&mut self) -> Run {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
        // Not unwrapped: this runs in `drop` too, where a second panic aborts;
        // if the write fails, undeploy says why and the sweep still runs.
        let (path, text) = &self.source;
        let _ = std::fs::write(path, text);
        self.undeployed = true;
        let args = ["undeploy", "--service", "hello-api", "--env", "hello", "--name", &self.name, "--purge"];
        self.checkout.run(&args)
    }
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        if !self.undeployed {
            let run = self.undeploy();
            if run.code != 0 {
                eprintln!("cleanup: undeploy failed (the sweep follows):\n{}", run.stderr);
            }
        }
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

/// The body of GET /hello as the bearer of the sealed key.
fn hello(port: u16) -> Option<String> {
    let bearer = format!("Bearer {API_KEY}");
    http_get(local(port), "/hello", &[("Authorization", &bearer)], HTTP_TIMEOUT).ok().map(|(_, body)| body)
}

#[test]
fn dev_replaces_the_running_version_on_each_change() {
    let checkout = Checkout::plain("hello");
    checkout.hello(API_KEY);
    let name = test_name("devtest");
    let repo = test_name("boxcar-devtest");
    let main = checkout.dir.path().join("examples/hello-api/src/main.rs");
    let text = std::fs::read_to_string(&main).unwrap();
    let mut cleanup = Cleanup {
        checkout: &checkout,
        name: name.clone(),
        child: None,
        source: (main.clone(), text.clone()),
        undeployed: false,
        _sweep: Sweep::new(std::slice::from_ref(&name), std::slice::from_ref(&repo)),
    };

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

    // The deployment goes, key volume and all, with the sources put back.
    let down = cleanup.undeploy().ok();
    assert!(down.stdout.contains(&format!("removed    container {name}")), "{}", down.stdout);
    assert!(down.stdout.contains(&format!("removed    volume {name}-key-")), "{}", down.stdout);
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
