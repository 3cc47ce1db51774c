//! `cargo xtask deploy`, `status`, `logs`, `undeploy` and `manifests` against a
//! real engine: first a standalone deployment, then a single-node Swarm the
//! test creates (`swarm init` on 127.0.0.1) and leaves again when it made it.
//!
//! The image is built once from a scratch checkout with two environments:
//! `dpoll` (a polling bot: one instance, stop-first) and `dhook` (a webhook
//! bot: two replicas, start-first). `v2` is the same image with another label
//! (another ID); `broken` is one whose healthcheck can never pass. The bots'
//! API is unreachable on purpose: the app serves /healthz while it backs off.
//!
//! The durations the deploys report are printed as figures (`figure: …`), not
//! asserted: this machine is shared.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::models::{ContainerCreateBody, SecretSpec, SwarmInitRequest};
use bollard::query_parameters::{
    CommitContainerOptionsBuilder, CreateContainerOptionsBuilder, LeaveSwarmOptions, ListContainersOptionsBuilder,
    ListVolumesOptionsBuilder, RemoveContainerOptionsBuilder,
};

use crate::support::{self, Sweep, free_port, healthz, key_text, status_with_bearer, test_name, wait_healthz};
use crate::{Checkout, Repo, Run};

const POLL_TOKEN: &str = "3002:deploy-test-token-AAAAAAAAAAAAAAAAAAAAAAAA";
const HOOK_TOKEN: &str = "3003:deploy-hook-token-BBBBBBBBBBBBBBBBBBBBBBBB";
const HOOK_SECRET: &str = "deploy-hook-secret-token";

struct Engine {
    docker: Docker,
    rt: tokio::runtime::Runtime,
}

impl Engine {
    fn new() -> Engine {
        let (rt, docker) =
            support::engine().expect("these tests need a Docker engine (cargo xtask test and .ci/run start one)");
        Engine { docker, rt }
    }

    fn inspect_json(&self, container: &str) -> Option<String> {
        let info = self
            .rt
            .block_on(
                self.docker.inspect_container(container, None::<bollard::query_parameters::InspectContainerOptions>),
            )
            .ok()?;
        Some(serde_json::to_string(&info).unwrap())
    }

    fn swarm_state(&self) -> String {
        let info = self.rt.block_on(self.docker.info()).unwrap();
        info.swarm.and_then(|s| s.local_node_state).map(|s| s.to_string()).unwrap_or_default()
    }

    /// Volumes no container uses whose names are engine-made (64 hex digits).
    fn anonymous_volumes(&self) -> std::collections::BTreeSet<String> {
        let filters: HashMap<String, Vec<String>> = [("dangling".to_owned(), vec!["true".to_owned()])].into();
        let options = ListVolumesOptionsBuilder::default().filters(&filters).build();
        let list = self.rt.block_on(self.docker.list_volumes(Some(options))).unwrap();
        list.volumes
            .unwrap_or_default()
            .into_iter()
            .map(|v| v.name)
            .filter(|n| n.len() == 64 && n.bytes().all(|b| b.is_ascii_hexdigit()))
            .collect()
    }

    fn network_exists(&self, name: &str) -> bool {
        self.rt
            .block_on(self.docker.inspect_network(name, None::<bollard::query_parameters::InspectNetworkOptions>))
            .is_ok()
    }

    /// A new image from `from` with the file `path` holding `text` (0444):
    /// what an image built from another contract would hold.
    fn derive_with_file(&self, from: &str, tag: &str, path: &str, text: &str) {
        let (repo, tag) = tag.split_once(':').unwrap();
        let (folder, file) = path.rsplit_once('/').unwrap();
        let mut archive = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_ustar();
        header.set_size(text.len() as u64);
        header.set_mode(0o444);
        header.set_cksum();
        archive.append_data(&mut header, file, text.as_bytes()).unwrap();
        let archive = archive.into_inner().unwrap();
        self.rt.block_on(async {
            let name = format!("{repo}-derive-{tag}");
            let body = ContainerCreateBody { image: Some(from.to_owned()), ..Default::default() };
            self.docker
                .create_container(Some(CreateContainerOptionsBuilder::default().name(&name).build()), body)
                .await
                .unwrap();
            let options = bollard::query_parameters::UploadToContainerOptionsBuilder::default().path(folder).build();
            self.docker.upload_to_container(&name, Some(options), bollard::body_full(archive.into())).await.unwrap();
            let options = CommitContainerOptionsBuilder::default().container(&name).repo(repo).tag(tag).build();
            self.docker.commit_container(options, bollard::models::ContainerConfig::default()).await.unwrap();
            self.docker
                .remove_container(&name, Some(RemoveContainerOptionsBuilder::default().force(true).v(true).build()))
                .await
                .unwrap();
        });
    }

    /// A new image from `from`: a container created (never started) and
    /// committed with Dockerfile-style `changes`.
    fn derive(&self, from: &str, tag: &str, changes: &str) {
        let (repo, tag) = tag.split_once(':').unwrap();
        self.rt.block_on(async {
            let name = format!("{repo}-derive-{tag}");
            let body = ContainerCreateBody { image: Some(from.to_owned()), ..Default::default() };
            self.docker
                .create_container(Some(CreateContainerOptionsBuilder::default().name(&name).build()), body)
                .await
                .unwrap();
            let options =
                CommitContainerOptionsBuilder::default().container(&name).repo(repo).tag(tag).changes(changes).build();
            self.docker.commit_container(options, bollard::models::ContainerConfig::default()).await.unwrap();
            self.docker
                .remove_container(&name, Some(RemoveContainerOptionsBuilder::default().force(true).v(true).build()))
                .await
                .unwrap();
        });
    }
}

/// Removes everything this test created, whatever happens to it: what
/// [`Sweep`] removes for its deployments and image repositories, and the
/// swarm when the test made it (after the sweep: services first).
struct Cleanup {
    engine: Engine,
    sweep: Sweep,
    left_swarm: bool,
    made_swarm: bool,
    had_gwbridge: bool,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        self.sweep.run();
        if self.made_swarm && !self.left_swarm {
            self.engine.rt.block_on(async {
                let docker = &self.engine.docker;
                let _ = docker.leave_swarm(Some(LeaveSwarmOptions { force: true })).await;
                if !self.had_gwbridge {
                    let _ = docker.remove_network("docker_gwbridge").await;
                }
            });
        }
    }
}

/// How many data volumes a deployment has.
fn data_volumes(engine: &Engine, name: &str) -> usize {
    let filters: HashMap<String, Vec<String>> =
        [("label".to_owned(), vec![format!("dev.boxcar.deployment={name}"), "dev.boxcar.role=data".to_owned()])].into();
    let options = ListVolumesOptionsBuilder::default().filters(&filters).build();
    let list = engine.rt.block_on(engine.docker.list_volumes(Some(options))).unwrap();
    list.volumes.unwrap_or_default().len()
}

/// What must never show up in output or in an engine spec.
fn assert_no_secret(what: &str, text: &str, keys: &[&str]) {
    for k in keys {
        assert!(!text.contains(k), "the secret key shows in {what}");
    }
    for v in [POLL_TOKEN, HOOK_TOKEN, HOOK_SECRET] {
        assert!(!text.contains(v), "a secret value shows in {what}");
    }
}

/// The published port on 127.0.0.1, from a `published` line.
fn port(run: &Run) -> u16 {
    let line = run.field("published");
    let before_arrow = line.split(" -> ").next().unwrap();
    before_arrow.rsplit(':').next().unwrap().parse().unwrap()
}

/// Polls /healthz on `port` from a thread until stopped; counts failures.
struct Watch {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    handle: std::thread::JoinHandle<(u32, u32)>,
}

impl Watch {
    fn start(port: u16) -> Watch {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let (mut ok, mut failed) = (0, 0);
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                if healthz(port) {
                    ok += 1
                } else {
                    failed += 1
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            (ok, failed)
        });
        Watch { stop, handle }
    }

    fn finish(self) -> (u32, u32) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.handle.join().unwrap()
    }
}

/// `deploy_standalone_then_swarm`'s costly setup, shared by its steps: the
/// app's image (and its `v2` and `broken` variants) with two environments,
/// hello-api's images, the keys, and the guard.
struct Scenario {
    /// Dropped first (fields drop in order): the engine is swept before the
    /// checkout's folders go.
    cleanup: Cleanup,
    checkout: Checkout,
    hello: Hello,
    repo: String,
    v1: String,
    v2: String,
    broken: String,
    /// The deployments: standalone, on the swarm, and the stack from `manifests`.
    standalone: String,
    swarm: String,
    stack: String,
    poll_key: PathBuf,
    hook_key: PathBuf,
    poll_key_text: String,
    hook_key_text: String,
    /// Set by the rotation step.
    new_key: Option<PathBuf>,
    swarm_before: String,
    volumes_before: std::collections::BTreeSet<String>,
}

impl Scenario {
    /// One image, two environments; hello-api's images; nothing deployed.
    fn setup() -> Scenario {
        let engine = Engine::new();
        let pid = std::process::id();
        let repo = test_name("boxcar-dtest");
        let dtest = test_name("dtest");
        let (standalone, swarm, stack) = (format!("{dtest}-s"), format!("{dtest}-w"), format!("{dtest}-k"));
        let hello = test_name("hello");
        let htest = test_name("boxcar-htest");
        let swarm_before = engine.swarm_state();
        let had_gwbridge = engine.network_exists("docker_gwbridge");
        let deployments =
            [standalone.clone(), swarm.clone(), stack.clone(), format!("{hello}-s"), format!("{hello}-w")];
        // `<htest>` covers hello-api's `<htest>-fast` images too.
        let mut cleanup = Cleanup {
            engine,
            sweep: Sweep::new(&deployments, &[repo.clone(), htest]),
            left_swarm: false,
            made_swarm: false,
            had_gwbridge,
        };

        let poll_settings = "\n[app]\napi_base = \"http://127.0.0.1:9\"\n\n[[bots]]\nname = \"dpoll\"\ntoken_secret = \"dpoll_token\"\n";
        let checkout = Checkout::new("dpoll", &[("dpoll_token", POLL_TOKEN)], poll_settings);
        Hello::environment(&checkout);
        checkout.run(&["keygen", "--env", "dhook"]).ok();
        for (name, value) in [("dhook_token", HOOK_TOKEN), ("dhook_webhook", HOOK_SECRET)] {
            Repo::run_with(&mut checkout.cmd(&["encrypt-secret", "--env", "dhook", name]), value.as_bytes()).ok();
        }
        let hook_file = checkout.dir.path().join("deploy-config/dhook.toml");
        let text = std::fs::read_to_string(&hook_file).unwrap();
        let hook_settings = "\n[app]\napi_base = \"http://127.0.0.1:9\"\n\n[[bots]]\nname = \"dhook\"\ntoken_secret = \"dhook_token\"\nmode = \"webhook\"\nwebhook_secret = \"dhook_webhook\"\n";
        std::fs::write(&hook_file, format!("{text}{hook_settings}")).unwrap();
        checkout.approve("dhook");
        checkout.commit();
        checkout.run(&["image", "--repo", &repo]).ok();
        let v1 = format!("{repo}:latest");
        let v2 = format!("{repo}:v2");
        let broken = format!("{repo}:broken");
        cleanup.engine.derive(&v1, &v2, "LABEL dev.boxcar.test=v2");
        cleanup.engine.derive(
            &v1,
            &broken,
            r#"HEALTHCHECK --interval=10s CMD ["/usr/local/bin/app", "healthcheck", "--addr", "127.0.0.1:1"]"#,
        );
        let hello = Hello::build(&checkout, &mut cleanup, pid);
        let poll_key = checkout.key_file_of("dpoll");
        let hook_key = checkout.key_file_of("dhook");
        let poll_key_text = key_text(&poll_key);
        let hook_key_text = key_text(&hook_key);
        let volumes_before = cleanup.engine.anonymous_volumes();
        Scenario {
            cleanup,
            checkout,
            hello,
            repo,
            v1,
            v2,
            broken,
            standalone,
            swarm,
            stack,
            poll_key,
            hook_key,
            poll_key_text,
            hook_key_text,
            new_key: None,
            swarm_before,
            volumes_before,
        }
    }

    fn engine(&self) -> &Engine {
        &self.cleanup.engine
    }

    /// The keys made at setup, as text.
    fn keys(&self) -> [&str; 2] {
        [self.poll_key_text.as_str(), self.hook_key_text.as_str()]
    }

    /// `deploy --env <env> --name <name> --key-file <key> <extra>`; no secret in its output.
    fn deploy(&self, env: &str, name: &str, key: &Path, extra: &[&str]) -> Run {
        let mut args = vec!["deploy", "--env", env, "--name", name, "--key-file", key.to_str().unwrap()];
        args.extend_from_slice(extra);
        let run = self.checkout.run(&args);
        assert_no_secret("deploy's output", &run.all(), &self.keys());
        run
    }

    /// The key id of the webhook environment's first key.
    fn hook_id(&self) -> String {
        self.hook_key.file_stem().unwrap().to_str().unwrap().rsplit('-').next().unwrap().to_owned()
    }

    fn new_key(&self) -> &Path {
        self.new_key.as_deref().expect("the rotation step runs first")
    }

    // ---- standalone ----

    /// Refused before anything changes: the other environment's key, a
    /// missing image, a foreign container.
    fn refused_before_anything_changes(&self) {
        let (standalone, v1, repo) = (&self.standalone, &self.v1, &self.repo);
        let wrong = self.deploy("dpoll", standalone, &self.hook_key, &["--image", v1]).fails();
        assert!(wrong.stderr.contains("does not belong to environment `dpoll`"), "{}", wrong.stderr);
        assert!(wrong.stderr.contains("nothing was changed"), "{}", wrong.stderr);
        let missing =
            self.deploy("dpoll", standalone, &self.poll_key, &["--image", &format!("{repo}:no-such-tag")]).fails();
        assert!(missing.stderr.contains("no image"), "{}", missing.stderr);
        assert!(missing.stderr.contains("cargo xtask image"), "{}", missing.stderr);
        assert!(self.engine().inspect_json(standalone).is_none(), "a refused deploy created a container");
        self.engine().rt.block_on(async {
            let body = ContainerCreateBody { image: Some(v1.clone()), ..Default::default() };
            let options = CreateContainerOptionsBuilder::default().name(standalone).build();
            self.engine().docker.create_container(Some(options), body).await.unwrap();
        });
        let collision = self.deploy("dpoll", standalone, &self.poll_key, &["--image", v1]).fails();
        assert!(collision.stderr.contains("boxcar did not create it"), "{}", collision.stderr);
        let foreign = self.engine().inspect_json(standalone).unwrap();
        assert!(!foreign.contains("dev.boxcar.deployment"), "the foreign container was changed");
        self.engine().rt.block_on(async {
            let options = RemoveContainerOptionsBuilder::default().force(true).v(true).build();
            self.engine().docker.remove_container(standalone, Some(options)).await.unwrap();
        });
    }

    /// The first deploy: healthy, the key as a file, hardened.
    fn first_deploy_runs_hardened(&self) {
        let standalone = &self.standalone;
        let first =
            self.deploy("dpoll", standalone, &self.poll_key, &["--image", &self.v1, "--publish", "127.0.0.1:0"]).ok();
        eprintln!("figure: standalone deploy to healthy: {:.1} s", first.healthy_after());
        assert!(first.field("key").contains("as a file: SECRET_KEY_FILE=/run/secrets/boxcar/key"), "{}", first.stdout);
        let port_s = port(&first);
        assert!(wait_healthz(port_s, Duration::from_secs(10)), "no /healthz on 127.0.0.1:{port_s}");
        let spec = self.engine().inspect_json(standalone).unwrap();
        assert_no_secret("the container's spec", &spec, &self.keys());
        let info: serde_json::Value = serde_json::from_str(&spec).unwrap();
        assert_eq!(info["Config"]["User"], "65532:65532");
        assert_eq!(info["HostConfig"]["ReadonlyRootfs"], true);
        assert_eq!(info["HostConfig"]["CapDrop"], serde_json::json!(["ALL"]));
        assert_eq!(info["HostConfig"]["SecurityOpt"], serde_json::json!(["no-new-privileges"]));
        assert_eq!(info["HostConfig"]["RestartPolicy"]["Name"], "unless-stopped");
        assert!(info["HostConfig"]["Memory"].as_i64().unwrap() > 0);
        assert!(info["HostConfig"]["PidsLimit"].as_i64().unwrap() > 0);
    }

    /// The same deploy again changes nothing; status and logs say what runs.
    fn the_same_deploy_again_changes_nothing(&self) {
        let standalone = &self.standalone;
        let again =
            self.deploy("dpoll", standalone, &self.poll_key, &["--image", &self.v1, "--publish", "127.0.0.1:0"]).ok();
        assert!(again.stdout.contains("nothing to do"), "{}", again.stdout);
        let status = self.checkout.run(&["status", "--env", "dpoll", "--name", standalone]).ok();
        assert!(status.stdout.contains("health healthy"), "{}", status.stdout);
        assert!(status.stdout.contains("file (SECRET_KEY_FILE)"), "{}", status.stdout);
        let logs = self.checkout.run(&["logs", "--env", "dpoll", "--name", standalone]).ok();
        assert!(logs.all().contains("listening"), "{}", logs.all());
        assert_no_secret("logs", &logs.all(), &self.keys());
    }

    /// An update to `v2`: the container it runs (inspected) and its port.
    fn update_to_a_new_image(&self) -> (String, u16) {
        let standalone = &self.standalone;
        let update =
            self.deploy("dpoll", standalone, &self.poll_key, &["--image", &self.v2, "--publish", "127.0.0.1:0"]).ok();
        eprintln!("figure: standalone update to healthy: {:.1} s", update.healthy_after());
        assert!(update.stderr.contains("probe: healthy"), "{}", update.stderr);
        let port_s = port(&update);
        assert!(wait_healthz(port_s, Duration::from_secs(10)));
        let running_v2 = self.engine().inspect_json(standalone).unwrap();
        assert!(running_v2.contains("dev.boxcar.test"), "the container does not run v2");
        assert!(self.engine().inspect_json(&format!("{standalone}-previous")).is_none());
        (running_v2, port_s)
    }

    /// An image that never becomes healthy: the running container is untouched.
    fn an_image_that_never_becomes_healthy_changes_nothing(&self, running_v2: &str, port_s: u16) {
        let standalone = &self.standalone;
        let started = Instant::now();
        let failed = self
            .deploy("dpoll", standalone, &self.poll_key, &["--image", &self.broken, "--publish", "127.0.0.1:0"])
            .fails();
        eprintln!("figure: standalone failed update refused after {:.1} s", started.elapsed().as_secs_f64());
        assert!(failed.stderr.contains("did not become healthy"), "{}", failed.stderr);
        assert!(failed.stderr.contains("keeps running the previous image"), "{}", failed.stderr);
        assert!(failed.stderr.contains("last log lines"), "{}", failed.stderr);
        let now = self.engine().inspect_json(standalone).unwrap();
        assert_eq!(identity(&now), identity(running_v2), "the running container was replaced or restarted");
        assert!(self.engine().inspect_json(&format!("{standalone}-next")).is_none(), "the probe was left behind");
        assert!(healthz(port_s));
    }

    /// The probe passes but the new container cannot start (its port is
    /// taken): the old container runs again, on its own data.
    fn a_swap_that_cannot_start_rolls_back(&self, running_v2: &str) {
        let standalone = &self.standalone;
        let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let held = format!("127.0.0.1:{}", holder.local_addr().unwrap().port());
        let swap_failed =
            self.deploy("dpoll", standalone, &self.poll_key, &["--image", &self.v1, "--publish", &held]).fails();
        drop(holder);
        assert!(swap_failed.stderr.contains("probe: healthy"), "{}", swap_failed.stderr);
        assert!(swap_failed.stderr.contains("rolled back"), "{}", swap_failed.stderr);
        let restored = self.engine().inspect_json(standalone).unwrap();
        assert_eq!(identity(&restored).0, identity(running_v2).0, "not the previous container");
        assert!(restored.contains("\"Running\":true"), "the previous container is not running");
        let status = self.checkout.run(&["status", "--env", "dpoll", "--name", standalone]).ok();
        let port_s = port(&status);
        assert!(wait_healthz(port_s, Duration::from_secs(30)), "the restored container does not answer");
        assert_eq!(data_volumes(self.engine(), standalone), 1, "the failed swap left a data volume behind");
    }

    /// An interrupted deploy (the old container stopped and renamed, nothing
    /// new yet): the next deploy puts it back first.
    fn an_interrupted_deploy_is_put_back_first(&self) {
        let standalone = &self.standalone;
        self.engine().rt.block_on(async {
            let docker = &self.engine().docker;
            docker.stop_container(standalone, None::<bollard::query_parameters::StopContainerOptions>).await.unwrap();
            let to = bollard::query_parameters::RenameContainerOptions { name: format!("{standalone}-previous") };
            docker.rename_container(standalone, to).await.unwrap();
        });
        let resumed =
            self.deploy("dpoll", standalone, &self.poll_key, &["--image", &self.v2, "--publish", "127.0.0.1:0"]).ok();
        assert!(resumed.stderr.contains("was interrupted: restoring the previous container"), "{}", resumed.stderr);
        assert!(self.engine().inspect_json(&format!("{standalone}-previous")).is_none());
        assert_eq!(data_volumes(self.engine(), standalone), 1, "an update left the old data volume behind");
    }

    /// Key rotation: new key, re-sealed file, rebuilt image (no recompile),
    /// deployed; the old key alone is refused.
    fn a_rotated_key_is_deployed(&mut self) {
        let standalone = &self.standalone;
        let poll_key = self.poll_key.to_str().unwrap();
        self.checkout.run(&["rotate-key", "--env", "dpoll", "--key-file", poll_key]).ok();
        self.checkout.commit();
        let rebuilt = self.checkout.run(&["image", "--repo", &self.repo]).ok();
        assert!(rebuilt.stderr.contains("binary: cached"), "rotating a key recompiled the app:\n{}", rebuilt.stderr);
        let new_key = self.checkout.key_file_of("dpoll");
        assert_ne!(new_key, self.poll_key);
        let new_key_text = key_text(&new_key);
        let all_keys = [self.poll_key_text.as_str(), self.hook_key_text.as_str(), new_key_text.as_str()];
        let old_only = self.deploy("dpoll", standalone, &self.poll_key, &["--image", &self.v1]).fails();
        assert!(old_only.stderr.contains("does not belong"), "{}", old_only.stderr);
        let rotated =
            self.deploy("dpoll", standalone, &new_key, &["--image", &self.v1, "--publish", "127.0.0.1:0"]).ok();
        assert_no_secret("deploy's output", &rotated.all(), &all_keys);
        assert!(rotated.stderr.contains("removed the key volume"), "{}", rotated.stderr);
        assert_no_secret("the container's spec", &self.engine().inspect_json(standalone).unwrap(), &all_keys);
        self.new_key = Some(new_key);
    }

    /// The operator's choice of SECRET_KEY is honoured, and said.
    fn the_key_by_environment_variable_is_said(&self) {
        let extra = ["--image", &self.v1, "--publish", "127.0.0.1:0", "--key-delivery", "env"];
        let by_env = self.deploy("dpoll", &self.standalone, self.new_key(), &extra).ok();
        assert!(by_env.field("key").contains("`docker inspect` shows it"), "{}", by_env.stdout);
    }

    /// Undeploy keeps the data volume; --purge removes it; nothing else is
    /// left: the checks run in throwaway containers of the image, which
    /// declares /data a volume.
    fn undeploy_keeps_the_data_and_purge_removes_it(&self) {
        let standalone = &self.standalone;
        let down = self.checkout.run(&["undeploy", "--env", "dpoll", "--name", standalone]).ok();
        assert!(down.stdout.contains(&format!("kept       volume {standalone}-data")), "{}", down.stdout);
        assert!(self.engine().inspect_json(standalone).is_none());
        let purge = self.checkout.run(&["undeploy", "--env", "dpoll", "--name", standalone, "--purge"]).ok();
        assert!(purge.stdout.contains(&format!("removed    volume {standalone}-data")), "{}", purge.stdout);
        self.checkout.run(&["status", "--env", "dpoll", "--name", standalone]).fails();
        let leaked: Vec<String> = self.engine().anonymous_volumes().difference(&self.volumes_before).cloned().collect();
        assert!(leaked.is_empty(), "the standalone deploys left anonymous volumes: {leaked:?}");
    }

    // ---- swarm ----

    /// Refused on an engine that is not a manager; then a single-node swarm
    /// made here, to be left again at the end, only if nobody made one
    /// meanwhile. False when the engine is in a swarm already (the Swarm
    /// steps are skipped).
    fn make_a_swarm(&mut self) -> bool {
        if self.swarm_before != "inactive" {
            eprintln!("note: the engine is already in a swarm ({}); skipping the Swarm half", self.swarm_before);
            return false;
        }
        let not_swarm = self.deploy("dhook", &self.swarm, &self.hook_key, &["--image", &self.v1, "--swarm"]).fails();
        assert!(not_swarm.stderr.contains("not a Swarm manager"), "{}", not_swarm.stderr);
        let state = self.engine().swarm_state();
        if state != "inactive" {
            eprintln!("note: the engine joined a swarm ({state}) during the test; skipping the Swarm half");
            return false;
        }
        self.engine().rt.block_on(async {
            let request = SwarmInitRequest {
                listen_addr: Some("127.0.0.1:2377".to_owned()),
                advertise_addr: Some("127.0.0.1".to_owned()),
                ..Default::default()
            };
            self.engine().docker.init_swarm(request).await.unwrap();
        });
        self.cleanup.made_swarm = true;
        true
    }

    /// `deploy --swarm` of the webhook environment, 2 replicas, host-mode port, with `key`.
    fn deploy_hook(&self, image: &str, key: &Path) -> Run {
        let extra = ["--image", image, "--swarm", "--replicas", "2", "--publish", "0", "--publish-mode", "host"];
        self.deploy("dhook", &self.swarm, key, &extra)
    }

    /// The first Swarm deploy: two tasks, no secret in the service or its
    /// task containers, hardened, start-first with rollback.
    fn swarm_first_deploy(&self) {
        let (swarm, keys) = (&self.swarm, self.keys());
        let first = self.deploy_hook(&self.v1, &self.hook_key).ok();
        eprintln!("figure: swarm deploy (2 tasks) to healthy: {:.1} s", first.healthy_after());
        let port_w = port(&first);
        assert!(wait_healthz(port_w, Duration::from_secs(20)), "no /healthz on the task's port {port_w}");
        let service = self.engine().rt.block_on(
            self.engine().docker.inspect_service(swarm, None::<bollard::query_parameters::InspectServiceOptions>),
        );
        let service = serde_json::to_value(service.unwrap()).unwrap();
        assert_no_secret("the service spec", &service.to_string(), &keys);
        // Nor in the task containers the engine made from it.
        let task_containers = self.engine().rt.block_on(async {
            let filters: HashMap<String, Vec<String>> =
                [("label".to_owned(), vec![format!("com.docker.swarm.service.name={swarm}")])].into();
            let options = ListContainersOptionsBuilder::default().filters(&filters).build();
            self.engine().docker.list_containers(Some(options)).await.unwrap()
        });
        assert_eq!(task_containers.len(), 2, "two running task containers");
        for c in task_containers {
            let spec = self.engine().inspect_json(c.id.as_deref().unwrap()).unwrap();
            assert_no_secret("a task container's spec", &spec, &keys);
            assert!(spec.contains("SECRET_KEY_FILE=/run/secrets/boxcar-key"), "{spec}");
        }
        let container = &service["Spec"]["TaskTemplate"]["ContainerSpec"];
        assert_eq!(container["User"], "65532:65532");
        assert_eq!(container["ReadOnly"], true);
        assert_eq!(container["Secrets"][0]["File"]["Name"], "boxcar-key");
        assert_eq!(service["Spec"]["UpdateConfig"]["Order"], "start-first");
        assert_eq!(service["Spec"]["UpdateConfig"]["FailureAction"], "rollback");
        assert_eq!(container["Secrets"][0]["SecretName"], format!("{swarm}-key-{}", self.hook_id()));
    }

    /// An update to `v2`, start-first: the new task's port.
    fn swarm_update(&self) -> u16 {
        let update = self.deploy_hook(&self.v2, &self.hook_key).ok();
        eprintln!("figure: swarm update (2 tasks, start-first) to converged: {:.1} s", update.healthy_after());
        let port_w = port(&update);
        assert!(wait_healthz(port_w, Duration::from_secs(20)), "no /healthz on the new task's port {port_w}");
        port_w
    }

    /// A failing update is rolled back by the engine while the old tasks serve.
    fn swarm_failed_update_is_rolled_back_while_serving(&self, port_w: u16) {
        let watch = Watch::start(port_w);
        let started = Instant::now();
        let failed = self.deploy_hook(&self.broken, &self.hook_key).fails();
        let (ok, down) = watch.finish();
        eprintln!("figure: swarm failed update rolled back after {:.1} s", started.elapsed().as_secs_f64());
        assert!(failed.stderr.contains("rolled it back"), "{}", failed.stderr);
        assert!(ok > 0 && down == 0, "the old tasks stopped serving during the failed update: {ok} ok, {down} failed");
        let status = self.checkout.run(&["status", "--env", "dhook", "--name", &self.swarm]).ok();
        assert!(status.stdout.contains("2/2 running"), "{}", status.stdout);
    }

    /// Polling environment as a second service: stop-first, and --replicas 2 is refused.
    fn swarm_refuses_two_pollers(&self) {
        let extra = ["--image", &self.v1, "--swarm", "--replicas", "2"];
        let two_pollers = self.deploy("dpoll", &format!("{}p", self.swarm), self.new_key(), &extra).fails();
        assert!(two_pollers.stderr.contains("runs one instance at a time"), "{}", two_pollers.stderr);
        assert!(two_pollers.stderr.contains("its own `instances` answer says so"), "{}", two_pollers.stderr);
    }

    /// Key rotation on the swarm: a new secret, the old one removed after
    /// the update. The new key's text.
    fn swarm_key_rotation(&self) -> String {
        let hook_key = self.hook_key.to_str().unwrap();
        self.checkout.run(&["rotate-key", "--env", "dhook", "--key-file", hook_key]).ok();
        self.checkout.commit();
        self.checkout.run(&["image", "--repo", &self.repo]).ok();
        let new_hook = self.checkout.key_file_of("dhook");
        let new_hook_text = key_text(&new_hook);
        let rotated = self.deploy_hook(&self.v1, &new_hook);
        let rotated = rotated.ok();
        assert_no_secret("deploy's output", &rotated.all(), &[new_hook_text.as_str()]);
        let removed = format!("removed the Swarm secret {}-key-{}", self.swarm, self.hook_id());
        assert!(rotated.stderr.contains(&removed), "{}", rotated.stderr);
        new_hook_text
    }

    /// A Compose file from `manifests` runs as a stack on the same swarm.
    fn a_compose_file_runs_as_a_stack(&self, new_hook_text: &str) {
        let stack = &self.stack;
        let compose = self.checkout.dir.path().join("compose.yaml");
        self.checkout
            .run(&[
                "manifests",
                "--env",
                "dhook",
                "--name",
                stack,
                "--format",
                "compose",
                "--image",
                &self.v1,
                "--publish",
                &free_port(Ipv4Addr::LOCALHOST).to_string(),
                "--out",
                compose.to_str().unwrap(),
            ])
            .ok();
        let text = std::fs::read_to_string(&compose).unwrap();
        let secret_name = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("name: ").filter(|n| n.contains("-key-")))
            .map(|n| n.trim_matches('"').to_owned())
            .expect("no secret name in the compose file");
        self.engine().rt.block_on(async {
            let data = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, format!("{new_hook_text}\n"));
            let labels = HashMap::from([("dev.boxcar.deployment".to_owned(), stack.clone())]);
            let spec = SecretSpec {
                name: Some(secret_name.clone()),
                data: Some(data),
                labels: Some(labels),
                ..Default::default()
            };
            self.engine().docker.create_secret(spec).await.unwrap();
        });
        let out = std::process::Command::new("docker")
            .args(["stack", "deploy", "-c", compose.to_str().unwrap(), stack])
            .output()
            .unwrap();
        assert!(out.status.success(), "docker stack deploy: {}", String::from_utf8_lossy(&out.stderr));
        let deadline = Instant::now() + Duration::from_secs(90);
        let mut healthy = false;
        while Instant::now() < deadline && !healthy {
            let out = std::process::Command::new("docker")
                .args(["service", "ls", "--filter", &format!("name={stack}_app"), "--format", "{{.Replicas}}"])
                .output()
                .unwrap();
            healthy = String::from_utf8_lossy(&out.stdout).trim() == "1/1";
            std::thread::sleep(Duration::from_millis(500));
        }
        assert!(healthy, "the stack from the compose file never ran a healthy task");
        let out = std::process::Command::new("docker").args(["stack", "rm", stack]).output().unwrap();
        assert!(out.status.success(), "docker stack rm: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// Undeploy removes the service and its secret; the data volume stays.
    fn swarm_undeploy_keeps_the_data(&self) {
        let swarm = &self.swarm;
        let down = self.checkout.run(&["undeploy", "--env", "dhook", "--name", swarm]).ok();
        assert!(down.stdout.contains(&format!("removed    service {swarm}")), "{}", down.stdout);
        assert!(down.stdout.contains("removed    Swarm secret"), "{}", down.stdout);
        assert!(down.stdout.contains(&format!("kept       volume {swarm}-data")), "{}", down.stdout);
    }

    /// Leave the engine as it was.
    fn leave_the_swarm(&mut self) {
        self.engine().rt.block_on(async {
            self.engine().docker.leave_swarm(Some(LeaveSwarmOptions { force: true })).await.unwrap();
        });
        self.cleanup.left_swarm = true;
        if !self.cleanup.had_gwbridge {
            let _ = self.engine().rt.block_on(self.engine().docker.remove_network("docker_gwbridge"));
        }
        assert_eq!(self.engine().swarm_state(), "inactive");
    }
}

/// What says a container was replaced or restarted: its ID, start time and image.
fn identity(json: &str) -> (serde_json::Value, serde_json::Value, serde_json::Value) {
    let v: serde_json::Value = serde_json::from_str(json).unwrap();
    (v["Id"].clone(), v["State"]["StartedAt"].clone(), v["Image"].clone())
}

/// One scenario in named steps, in order (each needs what the steps before it
/// left), sharing one costly setup: the images.
#[test]
fn deploy_standalone_then_swarm() {
    let mut s = Scenario::setup();

    // Standalone.
    s.refused_before_anything_changes();
    s.first_deploy_runs_hardened();
    s.the_same_deploy_again_changes_nothing();
    let (running_v2, port) = s.update_to_a_new_image();
    s.an_image_that_never_becomes_healthy_changes_nothing(&running_v2, port);
    s.a_swap_that_cannot_start_rolls_back(&running_v2);
    s.an_interrupted_deploy_is_put_back_first();
    s.a_rotated_key_is_deployed();
    s.the_key_by_environment_variable_is_said();
    // The second service ships the same way (no data, the generic probe).
    s.hello.standalone(&s.checkout, &mut s.cleanup);
    s.undeploy_keeps_the_data_and_purge_removes_it();

    // Swarm.
    if !s.make_a_swarm() {
        return;
    }
    s.swarm_first_deploy();
    let port = s.swarm_update();
    s.swarm_failed_update_is_rolled_back_while_serving(port);
    s.swarm_refuses_two_pollers();
    let new_hook_text = s.swarm_key_rotation();
    s.a_compose_file_runs_as_a_stack(&new_hook_text);
    s.swarm_undeploy_keeps_the_data();
    s.hello.swarm(&s.checkout, &mut s.cleanup);
    s.leave_the_swarm();
}

#[test]
fn deploy_without_an_engine_is_a_clear_error() {
    let repo = Checkout::new("production", &[("token", "value")], "");
    let key = repo.key_file();
    let host = format!("unix://{}/no-such.sock", repo.keys.path().display());
    let run =
        repo.run(&["deploy", "--env", "production", "--key-file", key.to_str().unwrap(), "--host", &host]).fails();
    assert!(run.stderr.contains(&format!("no Docker engine at {host}")), "{}", run.stderr);
    assert!(run.stderr.contains("start the Docker engine"), "{}", run.stderr);
}

#[test]
fn deploy_refuses_a_key_of_another_environment_without_an_engine() {
    let repo = Checkout::new("production", &[("token", "value")], "");
    repo.run(&["keygen", "--env", "staging"]).ok();
    let key = repo.key_file_of("staging");
    let mut cmd = repo.cmd(&["deploy", "--env", "production", "--key-file", key.to_str().unwrap()]);
    // Refused before any engine is asked: there is none.
    cmd.env("DOCKER_HOST", format!("unix://{}/no-such.sock", repo.keys.path().display()));
    let run = Repo::run_with(&mut cmd, b"").fails();
    assert!(run.stderr.contains("does not belong to environment `production`"), "{}", run.stderr);
    assert!(!run.stderr.contains("Docker engine"), "{}", run.stderr);

    // Swarm cannot keep a port to one address: refused, not widened quietly.
    let key = repo.key_file_of("production");
    let mut cmd = repo.cmd(&["deploy", "--env", "production", "--key-file", key.to_str().unwrap(), "--swarm"]);
    cmd.args(["--publish", "127.0.0.1:8080"]);
    cmd.env("DOCKER_HOST", format!("unix://{}/no-such.sock", repo.keys.path().display()));
    let run = Repo::run_with(&mut cmd, b"").fails();
    assert!(run.stderr.contains("give only the port"), "{}", run.stderr);
}

/// The second service, `hello-api`: no data, no health command of its own
/// (the image's generic probe), several instances allowed, one sealed key.
struct Hello {
    repo: String,
    key: PathBuf,
    key_text: String,
    pid: u32,
}

const HELLO_KEY: &str = "hello-deploy-test-api-key-0123456789";

impl Hello {
    /// Its environment `hello`, before the checkout is committed.
    fn environment(checkout: &Checkout) {
        checkout.run(&["keygen", "--service", "hello-api", "--env", "hello"]).ok();
        checkout.run(&["keygen", "--service", "hello-api", "--env", "production"]).ok();
        let mut seal = checkout.cmd(&["encrypt-secret", "--service", "hello-api", "--env", "hello", "api_key"]);
        Repo::run_with(&mut seal, HELLO_KEY.as_bytes()).ok();
        checkout.approve_service("hello-api", "hello");
    }

    /// Its image, checked, and a v2 and a broken variant.
    fn build(checkout: &Checkout, cleanup: &mut Cleanup, pid: u32) -> Hello {
        let repo = test_name("boxcar-htest");
        let key = checkout.key_file_of("hello");
        let built = checkout
            .run(&["image", "--service", "hello-api", "--repo", &repo, "--key-file", key.to_str().unwrap()])
            .ok();
        assert!(built.stdout.contains("user       65532:65532"), "{}", built.stdout);
        assert!(
            built.stderr.contains("image check: searching for 1 value(s) and the key of `hello`"),
            "{}",
            built.stderr
        );
        let inspect =
            cleanup.engine.rt.block_on(cleanup.engine.docker.inspect_image(&format!("{repo}:latest"))).unwrap();
        let config = inspect.config.unwrap();
        assert_eq!(
            config.healthcheck.unwrap().test.unwrap(),
            ["CMD", "/usr/local/bin/boxcar-probe", "http", "9000", "/healthz"]
        );
        assert!(config.volumes.is_none_or(|v| v.is_empty()), "hello-api keeps no data");
        let besides = built.stdout.lines().find(|l| l.contains("besides the binary")).unwrap_or_default().to_owned();
        eprintln!("figure: hello-api image: {besides}");
        checkout
            .run(&[
                "image-check",
                "--service",
                "hello-api",
                "--image",
                &format!("{repo}:latest"),
                "--key-file",
                key.to_str().unwrap(),
            ])
            .ok();
        cleanup.engine.derive(&format!("{repo}:latest"), &format!("{repo}:v2"), "LABEL dev.boxcar.test=v2");
        // An image that says it was built from another run-time contract.
        let read = cleanup.engine.rt.block_on(boxcar::ops::service_cmd::files_in_image(
            &cleanup.engine.docker,
            &format!("{repo}:latest"),
            &repo,
            &[boxcar_secrets::IMAGE_SERVICE_FILE],
        ));
        let mut runtime =
            boxcar_secrets::ServiceFile::parse(&String::from_utf8(read.unwrap()[0].clone().unwrap()).unwrap()).unwrap();
        runtime.runtime["env"].as_table_mut().unwrap().insert("API_BASE".into(), "https://evil.example".into());
        cleanup.engine.derive_with_file(
            &format!("{repo}:latest"),
            &format!("{repo}:other-contract"),
            boxcar_secrets::IMAGE_SERVICE_FILE,
            &boxcar_secrets::ServiceFile::render("hello-api", &runtime.runtime),
        );
        cleanup.engine.derive(
            &format!("{repo}:latest"),
            &format!("{repo}:broken"),
            r#"HEALTHCHECK --interval=10s CMD ["/usr/local/bin/boxcar-probe", "http", "1", "/healthz"]"#,
        );
        // The inner loop's build: the same service, labelled with its profile.
        let fast = checkout
            .run(&["image", "--service", "hello-api", "--profile", "fast", "--repo", &format!("{repo}-fast")])
            .ok();
        assert!(fast.stdout.contains("label      dev.boxcar.profile=boxcar-fast"), "{}", fast.stdout);
        // Linked by mold, the fast profile's linker (its name in `.comment`),
        // and the release build by gcc's default.
        let binaries = |tag: &str| {
            let read = cleanup.engine.rt.block_on(boxcar::ops::service_cmd::files_in_image(
                &cleanup.engine.docker,
                tag,
                &repo,
                &["/usr/local/bin/hello-api"],
            ));
            read.unwrap().remove(0).expect("/usr/local/bin/hello-api in the image")
        };
        let linked_by_mold = |binary: &[u8]| binary.windows(5).any(|w| w == b"mold ");
        assert!(linked_by_mold(&binaries(&format!("{repo}-fast:latest"))), "the fast build was not linked by mold");
        assert!(!linked_by_mold(&binaries(&format!("{repo}:latest"))), "the release build was linked by mold");
        eprintln!(
            "figure: hello-api fast build: {}",
            fast.stderr.lines().find(|l| l.starts_with("binary: ")).unwrap_or("")
        );
        let key_text = key_text(&key);
        Hello { repo, key, key_text, pid }
    }

    /// Deploys `<repo>:<tag>` (or, with an empty tag, the `--image` in `extra`).
    fn deploy(&self, checkout: &Checkout, name: &str, tag: &str, extra: &[&str]) -> Run {
        let image = format!("{}:{tag}", self.repo);
        let mut args = vec!["deploy", "--service", "hello-api", "--env", "hello", "--name", name];
        args.extend(["--key-file", self.key.to_str().unwrap()]);
        if !tag.is_empty() {
            args.extend(["--image", &image]);
        }
        args.extend_from_slice(extra);
        let run = checkout.run(&args);
        assert!(!run.all().contains(&self.key_text) && !run.all().contains(HELLO_KEY), "a secret in deploy's output");
        run
    }

    /// Deployed, updated and rolled back on one engine, hardened, answering
    /// only the bearer of its sealed key.
    fn standalone(&self, checkout: &Checkout, cleanup: &mut Cleanup) {
        let name = format!("hello-{}-s", self.pid);
        let first = self.deploy(checkout, &name, "latest", &["--publish", "127.0.0.1:0"]).ok();
        eprintln!("figure: hello-api standalone deploy to healthy: {:.1} s", first.healthy_after());
        assert!(first.stdout.contains("data       none"), "{}", first.stdout);
        let at = port(&first);
        assert!(wait_healthz(at, Duration::from_secs(10)), "hello-api: no /healthz");
        assert_eq!(bearer(at, Some(HELLO_KEY)), Some(200));
        assert_eq!(bearer(at, Some("not-the-key")), Some(401));
        assert_eq!(bearer(at, None), Some(401));
        let spec = cleanup.engine.inspect_json(&name).unwrap();
        assert!(!spec.contains(&self.key_text) && !spec.contains(HELLO_KEY), "a secret in the container's spec");
        let info: serde_json::Value = serde_json::from_str(&spec).unwrap();
        assert_eq!(info["Config"]["User"], "65532:65532");
        assert_eq!(info["HostConfig"]["ReadonlyRootfs"], true);
        assert_eq!(info["HostConfig"]["CapDrop"], serde_json::json!(["ALL"]));
        assert_eq!(info["State"]["Health"]["Status"], "healthy", "the generic probe did not pass");
        assert_eq!(data_volumes(&cleanup.engine, &name), 0);

        // A fast build runs where the environment is not production, and is
        // refused, before anything changes, where it is.
        let fast = format!("{}-fast:latest", self.repo);
        let prod_key = checkout.key_file_of("production");
        // Without --image, the service's own name: refused when the engine has
        // no such image (a machine where someone ran `image --service
        // hello-api` has one, which this test did not make and leaves alone).
        let default = cleanup.engine.rt.block_on(cleanup.engine.docker.inspect_image("hello-api:latest"));
        if default.is_err() {
            let refused = checkout
                .run(&["deploy", "--service", "hello-api", "--env", "production", "--name", &format!("{name}p")])
                .fails();
            assert!(refused.stderr.contains("no image hello-api:latest"), "{}", refused.stderr);
        } else {
            eprintln!("note: the engine has hello-api:latest already; the default image's refusal is not checked");
        }
        let mut args = vec!["deploy", "--service", "hello-api", "--env", "production", "--image", &fast];
        args.extend(["--name", &name, "--key-file", prod_key.to_str().unwrap()]);
        let refused = checkout.run(&args).fails();
        assert!(refused.stderr.contains("was built with the `boxcar-fast` profile"), "{}", refused.stderr);
        assert!(refused.stderr.contains("--allow-non-release"), "{}", refused.stderr);
        let with_fast = self.deploy(checkout, &name, "", &["--image", &fast, "--publish", "127.0.0.1:0"]).ok();
        assert!(with_fast.stderr.contains("probe: healthy"), "{}", with_fast.stderr);
        assert_eq!(bearer(port(&with_fast), Some(HELLO_KEY)), Some(200));

        // An image from a contract the environment did not approve: refused
        // before anything changes, saying what to do.
        let other = self.deploy(checkout, &name, "other-contract", &["--publish", "127.0.0.1:0"]).fails();
        assert!(
            other
                .stderr
                .contains("was built from a boxcar.toml whose run-time contract environment `hello` did not approve"),
            "{}",
            other.stderr
        );
        assert!(other.stderr.contains("env.API_BASE (new)"), "{}", other.stderr);
        assert!(
            other.stderr.contains("build the image again with `cargo xtask image --service hello-api`"),
            "{}",
            other.stderr
        );
        // The work tree approved a change the image does not carry: said, and deployed as the image is.
        let env_file = checkout.dir.path().join("examples/hello-api/deploy-config/hello.toml");
        let committed = std::fs::read_to_string(&env_file).unwrap();
        std::fs::write(&env_file, format!("{committed}\n[extra]\nnote = \"x\"\n")).unwrap();
        checkout.approve_service("hello-api", "hello");
        let behind = self.deploy(checkout, &name, "latest", &["--publish", "127.0.0.1:0"]).ok();
        assert!(
            behind.stderr.contains("carries serial 2 of environment `hello`; the work tree's file is serial 3"),
            "{}",
            behind.stderr
        );
        std::fs::write(&env_file, committed).unwrap();

        let update = self.deploy(checkout, &name, "v2", &["--publish", "127.0.0.1:0"]).ok();
        assert!(update.stderr.contains("probe: healthy"), "{}", update.stderr);
        let at = port(&update);
        assert!(wait_healthz(at, Duration::from_secs(10)));
        let running = cleanup.engine.inspect_json(&name).unwrap();
        assert!(running.contains("dev.boxcar.test"), "hello-api does not run v2");
        let failed = self.deploy(checkout, &name, "broken", &["--publish", "127.0.0.1:0"]).fails();
        assert!(failed.stderr.contains("keeps running the previous image"), "{}", failed.stderr);
        let identity = |json: &str| {
            let v: serde_json::Value = serde_json::from_str(json).unwrap();
            (v["Id"].clone(), v["State"]["StartedAt"].clone(), v["Image"].clone())
        };
        let now = cleanup.engine.inspect_json(&name).unwrap();
        assert_eq!(identity(&now), identity(&running), "the running hello-api was replaced or restarted");
        assert_eq!(bearer(at, Some(HELLO_KEY)), Some(200));
        checkout.run(&["undeploy", "--service", "hello-api", "--env", "hello", "--name", &name]).ok();
    }

    /// Two tasks on the swarm, updated start-first, a broken update rolled
    /// back by the engine.
    fn swarm(&self, checkout: &Checkout, cleanup: &mut Cleanup) {
        let name = format!("hello-{}-w", self.pid);
        let swarm = ["--swarm", "--replicas", "2", "--publish", "0", "--publish-mode", "host"];
        let first = self.deploy(checkout, &name, "latest", &swarm).ok();
        eprintln!("figure: hello-api swarm deploy (2 tasks) to healthy: {:.1} s", first.healthy_after());
        let at = port(&first);
        assert!(wait_healthz(at, Duration::from_secs(20)));
        assert_eq!(bearer(at, Some(HELLO_KEY)), Some(200));
        let service = cleanup.engine.rt.block_on(
            cleanup.engine.docker.inspect_service(&name, None::<bollard::query_parameters::InspectServiceOptions>),
        );
        let service = serde_json::to_value(service.unwrap()).unwrap();
        assert_eq!(service["Spec"]["UpdateConfig"]["Order"], "start-first");
        assert!(!service.to_string().contains(&self.key_text));
        self.deploy(checkout, &name, "v2", &swarm).ok();
        let failed = self.deploy(checkout, &name, "broken", &swarm).fails();
        assert!(failed.stderr.contains("rolled it back"), "{}", failed.stderr);
        let status = checkout.run(&["status", "--service", "hello-api", "--env", "hello", "--name", &name]).ok();
        assert!(status.stdout.contains("2/2 running"), "{}", status.stdout);
        // Its manifests: no volume, no claim, the probe as the health check.
        let compose =
            checkout.run(&["manifests", "--service", "hello-api", "--env", "hello", "--format", "compose"]).ok();
        assert!(compose.stdout.contains("\"/usr/local/bin/boxcar-probe\""), "{}", compose.stdout);
        assert!(!compose.stdout.contains("volumes:\n  data:"), "{}", compose.stdout);
        let kube =
            checkout.run(&["manifests", "--service", "hello-api", "--env", "hello", "--format", "kubernetes"]).ok();
        assert!(!kube.stdout.contains("PersistentVolumeClaim"), "{}", kube.stdout);
        assert!(kube.stdout.contains("path: \"/healthz\""), "{}", kube.stdout);
        checkout.run(&["undeploy", "--service", "hello-api", "--env", "hello", "--name", &name]).ok();
        let _ = &self.repo;
    }
}

/// The status of GET /hello with `Authorization: Bearer <key>`.
fn bearer(port: u16, key: Option<&str>) -> Option<u16> {
    status_with_bearer(port, "/hello", key)
}
