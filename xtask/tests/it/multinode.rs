//! Beyond one machine: `hello-api` pushed to a real registry (Debian's
//! distribution registry, TLS from a test CA, basic auth) and deployed on a
//! real three-node Swarm (three Docker engines, each in a network namespace
//! this test makes), behind a real load balancer (haproxy, health-checked).
//!
//! One test, in order, because each step needs the cluster the steps before
//! it left: push (cold, then warm), the refusals that need no cluster state
//! (wrong password, unreachable registry, a tag, a tag that moved), the first
//! deploy (3 replicas, one per node, pulled by digest), a rolling update under
//! bounded load through haproxy, a failed update rolled back by the engine on
//! every node, a node that cannot pull, the key material looked for on every
//! node, and a lost node. Figures are printed as `figure:` lines.
//!
//! Everything it makes (namespaces, engines, registry, haproxy, local image
//! tags with its unique repository name) is removed at the end.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bollard::query_parameters::ListTasksOptionsBuilder;

use crate::cluster::{Cluster, Haproxy, Load, Registry};
use crate::support::{Sweep, key_text, test_name};
use crate::{Checkout, Repo, Run};

const API_KEY: &str = "multinode-test-api-key-0123456789abcdef";
const PORT: u16 = 9000;

/// The `pushed … in 1.2 s` figure.
fn push_seconds(run: &Run) -> f64 {
    let line = run.field("pushed");
    line.rsplit(" in ").next().unwrap().trim_end_matches(" s").parse().unwrap()
}

/// The service's tasks as the manager sees them: (node ID, image, state, desired state).
fn tasks(cluster: &Cluster, service: &str) -> Vec<bollard::models::Task> {
    let filters: std::collections::HashMap<String, Vec<String>> =
        [("service".to_owned(), vec![service.to_owned()])].into();
    let options = ListTasksOptionsBuilder::default().filters(&filters).build();
    let docker = cluster.node(manager_index(cluster));
    match cluster.block_on(docker.list_tasks(Some(options))) {
        Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => Vec::new(),
        other => other.unwrap(),
    }
}

/// The first node whose engine runs (every node is a manager).
fn manager_index(cluster: &Cluster) -> usize {
    (0..cluster.len()).find(|&i| cluster.is_running(i)).expect("a node runs")
}

fn running(task: &bollard::models::Task) -> bool {
    use bollard::models::TaskState;
    task.desired_state == Some(TaskState::RUNNING)
        && task.status.as_ref().and_then(|s| s.state) == Some(TaskState::RUNNING)
}

/// Node ID → the images its running tasks of `service` run.
fn running_by_node(cluster: &Cluster, service: &str) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for t in tasks(cluster, service).iter().filter(|t| running(t)) {
        let image = t.spec.as_ref().and_then(|s| s.container_spec.as_ref()).and_then(|c| c.image.clone());
        out.entry(t.node_id.clone().unwrap_or_default()).or_default().push(image.unwrap_or_default());
    }
    out
}

/// Every file under `root` (not following symlinks) that holds one of `needles`.
fn files_holding(root: &Path, needles: &[Vec<u8>]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(meta) = std::fs::symlink_metadata(&path) else { continue };
            if meta.is_dir() {
                stack.push(path);
            } else if meta.is_file()
                && let Ok(data) = std::fs::read(&path)
                && needles.iter().any(|n| data.windows(n.len()).any(|w| w == &n[..]))
            {
                found.push(path);
            }
        }
    }
    found
}

/// Rewrites the `hello-api` service of the checkout's boxcar.toml with `f`
/// and commits: a new image without a new compile.
fn edit_hello(checkout: &Checkout, f: impl Fn(&str) -> String) {
    let path = checkout.dir.path().join("boxcar.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let at = text.find("name = \"hello-api\"").expect("boxcar.toml has hello-api");
    let (before, section) = text.split_at(at);
    std::fs::write(&path, format!("{before}{}", f(section))).unwrap();
    // What the service is given at run time is approved with its environment.
    checkout.approve_service("hello-api", "hello");
    checkout.commit();
}

#[test]
fn a_three_node_swarm_through_a_registry() {
    let pid = std::process::id();
    let repo = test_name("boxcar-mtest");
    // The local tags of `repo` on the host engine.
    let _local = Sweep::new(&[], std::slice::from_ref(&repo));
    let cluster = Cluster::start(3);
    let registry = Registry::start(cluster.bridge_ip());
    let login = tempfile::tempdir().unwrap();
    registry.write_docker_config(login.path());
    let reg = registry.address();
    let remote = format!("{reg}/hello-{pid}");

    // A checkout with hello-api's environment `hello`.
    let checkout = Checkout::plain("hello");
    checkout.hello(API_KEY);
    let key = checkout.key_file_of("hello");
    let with_login = |args: &[&str]| -> Run {
        let mut cmd = checkout.cmd(args);
        cmd.env("DOCKER_CONFIG", login.path());
        let run = Repo::run_with(&mut cmd, b"");
        assert!(!run.all().contains(registry.password()), "the registry password shows in the output");
        assert!(!run.all().contains(&key_text(&key)), "the secret key shows in the output");
        run
    };
    let image = |tag: &str| -> Run {
        with_login(&["image", "--service", "hello-api", "--repo", &repo, "--push", &format!("{remote}:{tag}")])
    };

    // ---- the registry ----
    // Refused before anything is built: a wrong password, an unreachable registry.
    let wrong = tempfile::tempdir().unwrap();
    let auth = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        format!("{}:not-the-password", registry.user()),
    );
    std::fs::write(wrong.path().join("config.json"), format!(r#"{{"auths":{{"{reg}":{{"auth":"{auth}"}}}}}}"#))
        .unwrap();
    let mut cmd = checkout.cmd(&["image", "--service", "hello-api", "--repo", &repo, "--push", &remote]);
    cmd.env("DOCKER_CONFIG", wrong.path());
    let refused = Repo::run_with(&mut cmd, b"").fails();
    assert!(refused.stderr.contains("refused the login"), "{}", refused.stderr);
    assert!(refused.stderr.contains("docker login"), "{}", refused.stderr);
    assert!(!refused.stderr.contains("binary:"), "nothing is built after a refused login:\n{}", refused.stderr);
    let closed = std::net::TcpListener::bind((cluster.bridge_ip(), 0)).unwrap();
    let nowhere = format!("{}/hello", closed.local_addr().unwrap());
    drop(closed);
    let unreachable = with_login(&["image", "--service", "hello-api", "--repo", &repo, "--push", &nowhere]).fails();
    assert!(unreachable.stderr.contains("cannot reach the registry"), "{}", unreachable.stderr);

    // Cold, then with every blob present.
    let v1 = image("v1").ok();
    let pinned_v1 = v1.field("pinned").to_owned();
    let digest_v1 = v1.field("digest").split_whitespace().next().unwrap().to_owned();
    assert_eq!(pinned_v1, format!("{remote}@{digest_v1}"), "the local digest is the registry's");
    assert!(v1.stdout.contains("(2 blob(s) sent"), "{}", v1.stdout);
    let again = image("v1-again").ok();
    assert!(again.stdout.contains("(0 blob(s) sent, 0.0 KiB; 2 already there)"), "{}", again.stdout);
    assert_eq!(again.field("pinned"), pinned_v1);
    eprintln!(
        "figure: push of hello-api ({}) cold {:.2} s, with the layers present {:.2} s",
        v1.stdout.lines().find(|l| l.contains(" layer(s)")).unwrap_or("").trim_start_matches("image").trim(),
        push_seconds(&v1),
        push_seconds(&again)
    );

    // v2: a variable added (approved for the environment), no compile. Then a tag that moves: v1's tag now
    // names v2, and v1 stays pullable by its digest.
    edit_hello(&checkout, |s| format!("{s}env.RELEASE = \"2\"\n"));
    let v2 = image("v2").ok();
    let pinned_v2 = v2.field("pinned").to_owned();
    assert_ne!(pinned_v2, pinned_v1);
    // The one layer holds the run-time contract and the environment file
    // that approves it, so it is new too.
    assert!(v2.stdout.contains("(2 blob(s) sent"), "{}", v2.stdout);
    let moved = image("v1").ok();
    assert_eq!(moved.field("pinned"), pinned_v2);

    // ---- the cluster ----
    let manager = cluster.manager_host();
    let name = format!("mtest-{pid}");
    let deploy = |image: &str, extra: &[&str]| -> Run {
        let mut args = vec![
            "deploy",
            "--service",
            "hello-api",
            "--env",
            "hello",
            "--host",
            &manager,
            "--name",
            &name,
            "--swarm",
            "--key-file",
            key.to_str().unwrap(),
            "--image",
            image,
        ];
        args.extend_from_slice(extra);
        with_login(&args)
    };
    let three = ["--replicas", "3", "--publish", "9000", "--publish-mode", "host"];
    let docker = cluster.node(0);

    // A tag is refused on several nodes, and so are more tasks on one host
    // port than nodes; nothing is created.
    let tag = deploy(&format!("{remote}:v1"), &three).fails();
    assert!(tag.stderr.contains("has 3 nodes") && tag.stderr.contains("@sha256:"), "{}", tag.stderr);
    let four = deploy(&pinned_v1, &["--replicas", "4", "--publish", "9000", "--publish-mode", "host"]).fails();
    assert!(four.stderr.contains("3 node(s) are ready for --replicas 4"), "{}", four.stderr);
    assert!(tasks(&cluster, &name).is_empty());

    // First deploy: v1 by the digest its tag no longer names, one task per node.
    let first = deploy(&pinned_v1, &three).ok();
    eprintln!(
        "figure: deploy of 3 replicas onto 3 nodes, pulled by digest, to healthy: {:.1} s",
        first.healthy_after()
    );
    let spread = running_by_node(&cluster, &name);
    assert_eq!(spread.len(), 3, "one task per node: {spread:?}");
    assert!(spread.values().flatten().all(|i| i == &pinned_v1), "{spread:?}");
    let status =
        with_login(&["status", "--service", "hello-api", "--env", "hello", "--host", &manager, "--name", &name]);
    for i in 0..3 {
        assert!(status.stdout.contains(&format!(" on {}", cluster.hostname(i))), "{}", status.stdout);
    }
    for i in 0..3 {
        let node = cluster.node(i);
        let inspect = cluster.block_on(node.inspect_image(&pinned_v1)).unwrap();
        assert_eq!(inspect.id.as_deref(), Some(v1.field("image").split_whitespace().next().unwrap()));
    }

    // ---- a rolling update under load, through haproxy ----
    let backends: Vec<(String, u16)> = (0..3).map(|i| (cluster.ip(i).to_string(), PORT)).collect();
    let lb = Haproxy::start(&backends, "/healthz");
    let target: SocketAddr = lb.address();
    let load = Load::start(target, "/healthz", 40, 20_000, Duration::from_secs(400));
    std::thread::sleep(Duration::from_secs(3));
    let started = Instant::now();
    let update = deploy(&pinned_v2, &three).ok();
    let took = started.elapsed();
    std::thread::sleep(Duration::from_secs(3));
    let report = load.finish();
    eprintln!(
        "figure: rolling update of 3 tasks on 3 nodes (stop-first per node) converged in {:.1} s ({:.1} s by deploy)",
        took.as_secs_f64(),
        update.healthy_after()
    );
    eprintln!("figure: requests through haproxy during the update: {report}");
    eprintln!("figure: haproxy: {}", lb.summary());
    assert!(report.sent >= 1000, "{report}");
    assert_eq!(report.failed, 0, "requests failed during the rolling update: {report}");
    let spread = running_by_node(&cluster, &name);
    assert_eq!(spread.len(), 3, "{spread:?}");
    assert!(spread.values().flatten().all(|i| i == &pinned_v2), "{spread:?}");

    // ---- a failed update, rolled back on every node ----
    edit_hello(&checkout, |s| s.replacen("health.http = \"/healthz\"", "health.http = \"/no-such-health\"", 1));
    let broken = image("broken").ok();
    let pinned_broken = broken.field("pinned").to_owned();
    let started = Instant::now();
    let failed = deploy(&pinned_broken, &three).fails();
    eprintln!("figure: failed update rolled back, deploy returned after {:.1} s", started.elapsed().as_secs_f64());
    eprintln!("what deploy said of the failed update:\n{}", failed.stderr);
    assert!(failed.stderr.contains("rolled it back"), "{}", failed.stderr);
    assert!(failed.stderr.contains("(update rolled back due to failure"), "the engine's reason:\n{}", failed.stderr);
    assert!(failed.stderr.contains("on node "), "{}", failed.stderr);
    assert!(failed.stderr.contains("last log lines of the failed task"), "{}", failed.stderr);
    let spread = running_by_node(&cluster, &name);
    assert_eq!(spread.len(), 3, "{spread:?}");
    assert!(spread.values().flatten().all(|i| i == &pinned_v2), "every node runs v2 again: {spread:?}");
    edit_hello(&checkout, |s| s.replacen("health.http = \"/no-such-health\"", "health.http = \"/healthz\"", 1));

    // ---- a node that cannot pull ----
    // Node 3's firewall rejects the registry; a new image on a port of its own
    // needs one task there, so the service fails, and is removed.
    edit_hello(&checkout, |s| format!("{s}env.OTHER = \"4\"\n"));
    let v4 = image("v4").ok();
    let pinned_v4 = v4.field("pinned").to_owned();
    cluster.block(2, registry.address());
    let other = format!("{name}-np");
    let mut args = vec!["deploy", "--service", "hello-api", "--env", "hello", "--host", &manager, "--name", &other];
    args.extend_from_slice(&["--swarm", "--key-file", key.to_str().unwrap(), "--image", &pinned_v4]);
    args.extend_from_slice(&["--replicas", "3", "--publish", "9001", "--publish-mode", "host", "--timeout", "90s"]);
    let no_pull = with_login(&args).fails();
    cluster.unblock(2, registry.address());
    eprintln!("what deploy said when a node could not pull:\n{}", no_pull.stderr);
    assert!(no_pull.stderr.contains("did not start"), "{}", no_pull.stderr);
    assert!(no_pull.stderr.contains("could not pull the image from"), "{}", no_pull.stderr);
    assert!(no_pull.stderr.contains(&format!("/etc/docker/certs.d/{reg}/ca.crt")), "{}", no_pull.stderr);
    assert!(no_pull.stderr.contains(cluster.hostname(2)), "the failing node is named:\n{}", no_pull.stderr);
    assert!(tasks(&cluster, &other).is_empty(), "the service is removed");
    let secrets = cluster.block_on(docker.list_secrets(None::<bollard::query_parameters::ListSecretsOptions>)).unwrap();
    let names: BTreeSet<String> = secrets.iter().filter_map(|s| s.spec.as_ref()?.name.clone()).collect();
    assert!(names.iter().all(|n| !n.starts_with(&format!("{other}-"))), "its secret is removed: {names:?}");

    // ---- no key material in a spec, an environment, or on a disk ----
    let key_b64 = key_text(&key);
    let raw = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, &key_b64).unwrap();
    let service =
        cluster.block_on(docker.inspect_service(&name, None::<bollard::query_parameters::InspectServiceOptions>));
    let service_json = serde_json::to_string(&service.unwrap()).unwrap();
    assert!(!service_json.contains(&key_b64) && !service_json.contains(API_KEY), "the service spec holds a secret");
    assert!(!service_json.contains(registry.password()), "the service shows the registry password");
    for task in tasks(&cluster, &name) {
        let json = serde_json::to_string(&task).unwrap();
        assert!(!json.contains(&key_b64) && !json.contains(API_KEY), "a task spec holds a secret");
        assert!(!json.contains(registry.password()), "a task shows the registry password");
    }
    for i in 0..3 {
        let node = cluster.node(i);
        let containers =
            cluster.block_on(node.list_containers(None::<bollard::query_parameters::ListContainersOptions>));
        for c in containers.unwrap() {
            let inspect = cluster
                .block_on(node.inspect_container(
                    c.id.as_deref().unwrap(),
                    None::<bollard::query_parameters::InspectContainerOptions>,
                ))
                .unwrap();
            let json = serde_json::to_string(&inspect).unwrap();
            assert!(!json.contains(&key_b64) && !json.contains(API_KEY), "a container's config holds a secret");
            assert!(!json.contains(registry.password()), "a container's config holds the registry password");
        }
    }

    // Away from the fixed host port: the update stops each old task first
    // (started first, the new one would wait for the port forever).
    let moved = deploy(&pinned_v2, &["--replicas", "3", "--publish", "0", "--publish-mode", "host"]).ok();
    eprintln!("figure: moving 3 tasks from host port 9000 to free ports: {:.1} s", moved.healthy_after());
    assert_eq!(running_by_node(&cluster, &name).values().flatten().count(), 3);

    // ---- a lost node ----
    // A service of its own with a free port per task: the two nodes left can
    // run all three. (Docker 20.10 goes on placing the service above as if
    // port 9000 were still held, so it would stay at two.)
    let spread = format!("{name}-sp");
    let mut args = vec!["deploy", "--service", "hello-api", "--env", "hello", "--host", &manager, "--name", &spread];
    args.extend_from_slice(&["--swarm", "--key-file", key.to_str().unwrap(), "--image", &pinned_v2]);
    args.extend_from_slice(&["--replicas", "3", "--publish", "0", "--publish-mode", "host"]);
    with_login(&args).ok();
    assert_eq!(running_by_node(&cluster, &spread).len(), 3, "spread over the 3 nodes");
    let lost = cluster.node_id(2);
    let stopped = Instant::now();
    cluster.stop_node(2);
    let recovered = loop {
        let now = running_by_node(&cluster, &spread);
        let serving: usize = now.iter().filter(|(node, _)| *node != lost).map(|(_, t)| t.len()).sum();
        if serving == 3 {
            break stopped.elapsed();
        }
        assert!(stopped.elapsed() < Duration::from_secs(180), "not back to 3 tasks after 180 s: {now:?}");
        std::thread::sleep(Duration::from_millis(250));
    };
    eprintln!(
        "figure: a node's engine stopped: 3 healthy tasks on the 2 nodes left after {:.1} s",
        recovered.as_secs_f64()
    );

    // Key material and the registry's password on the nodes' disks, the
    // engines stopped (the secrets' in-memory mounts gone): none, the raft
    // store included.
    for i in 0..3 {
        cluster.stop_node(i);
    }
    let needles =
        vec![key_b64.as_bytes().to_vec(), raw, API_KEY.as_bytes().to_vec(), registry.password().as_bytes().to_vec()];
    for i in 0..3 {
        let found = files_holding(&cluster.state_dir(i), &needles);
        assert!(found.is_empty(), "key material on node {}'s disk: {found:?}", i + 1);
    }
}
