//! Test hosts for multi-node tests: a `Cluster` of Docker engines, each in
//! network, UTS and mount namespaces of its own on a bridge the test makes,
//! joined in one Swarm; a `Registry` with TLS and basic auth that they pull
//! from; an `Haproxy` in front of their published ports; and a bounded HTTP
//! `Load`. Each removes, when dropped (after a panic too), exactly what it made.
//!
//! Everything here talks to 127.0.0.1 or to the bridge and namespaces it
//! made, nothing else. It needs root, iproute2, iptables, util-linux
//! (`nsenter`, `unshare`), Debian's docker.io, docker-registry and haproxy:
//! `cargo xtask test` installs them.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::auth::DockerCredentials;
use bollard::models::{NodeState, Reachability, SwarmInitRequest, SwarmJoinRequest};

use crate::support::{free_port, http_get, percentile};

/// How long an engine has to answer `/_ping`, the swarm to show every node
/// Ready, and a registry or haproxy to listen: generous, as the suite runs
/// other builds on the same two cores.
const START_BOUND: Duration = Duration::from_secs(90);
/// How long a stopped dockerd (then containerd) has to exit before SIGKILL.
const STOP_BOUND: Duration = Duration::from_secs(30);
/// Seconds a stopping engine gives its containers (dockerd's default is 15);
/// a task's own stop grace period still applies when Swarm stops it.
const CONTAINER_STOP_SECONDS: &str = "5";
/// containerd's shims put their sockets here whatever its state folder is.
const SHIM_SOCKETS: &str = "/run/containerd/s";
/// The containerd namespace dockerd uses.
const CONTAINERD_NAMESPACE: &str = "moby";

// ---------------------------------------------------------------------------
// Cluster

/// Docker engines on one host, each on its own test host: a network namespace
/// with an address on the cluster's bridge, its own host name (UTS namespace)
/// and mount table (mount namespace), its own containerd, data and exec
/// roots, socket and cgroup parent. All are Swarm managers.
pub(crate) struct Cluster {
    rt: tokio::runtime::Runtime,
    /// The bridge's name, also the prefix of every other name.
    name: String,
    /// Everything on disk: one folder per node.
    dir: PathBuf,
    bridge_ip: Ipv4Addr,
    bridge_made: bool,
    /// The chain holding our forwarding rule, once inserted.
    rule_chain: Option<String>,
    nodes: Vec<Node>,
}

/// One test host of a [`Cluster`].
struct Node {
    hostname: String,
    ip: Ipv4Addr,
    netns: Option<String>,
    veth: Option<String>,
    dir: PathBuf,
    /// The cgroup parent of its containers (cgroupfs driver), from the root.
    cgroup: String,
    docker: Option<Docker>,
    /// Its ID in the swarm.
    swarm_id: String,
    /// Behind a lock so that `Cluster::stop_node` takes `&self`, while a
    /// test holds a node's client.
    procs: Mutex<Procs>,
}

/// A node's processes.
#[derive(Default)]
struct Procs {
    containerd: Option<Child>,
    dockerd: Option<Child>,
    /// The node's mount namespace (`mnt:[…]`): every process of the node but
    /// its containers' is in it. Held open (`mnt_ns_held`) while it tells
    /// processes apart: the kernel gives a freed namespace's number to the
    /// next one made, maybe a host engine's container.
    mnt_ns: Option<String>,
    mnt_ns_held: Option<std::fs::File>,
}

static SERIAL: AtomicU32 = AtomicU32::new(0);
/// Held while a cluster picks and takes its subnet, so two clusters of one
/// test process never pick the same.
static SUBNETS: Mutex<()> = Mutex::new(());

impl Cluster {
    /// Starts `nodes` engines (1 to 9) and joins them in one Swarm; returns
    /// when every node is Ready. Panics, with the failing engine's log, when
    /// one does not come up.
    pub(crate) fn start(nodes: usize) -> Cluster {
        assert!((1..=9).contains(&nodes), "a cluster has 1 to 9 nodes, not {nodes}");
        check_root();
        for program in ["ip", "iptables", "nsenter", "unshare", "dockerd", "containerd", "kill", "umount"] {
            tool(program);
        }
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        // The pid in hex, an `x`, a serial: unique on this host while we run,
        // and short enough for interface names (15 bytes).
        let name = format!("bxc{:x}x{:x}", std::process::id(), SERIAL.fetch_add(1, Ordering::Relaxed));
        assert!(name.len() + 2 <= 15, "interface name {name}v9 is too long");
        let dir = tempfile::Builder::new().prefix(&format!("{name}-")).tempdir().unwrap().keep();
        let mut cluster = Cluster {
            rt,
            name,
            dir,
            bridge_ip: Ipv4Addr::UNSPECIFIED,
            bridge_made: false,
            rule_chain: None,
            nodes: Vec::new(),
        };
        // From here on, a panic drops `cluster`, which removes what exists.
        cluster.make_bridge();
        cluster.accept_bridged_traffic();
        for i in 0..nodes {
            cluster.add_host(i);
        }
        // Each step on every node before the next, so the engines start in parallel.
        for node in &mut cluster.nodes {
            node.spawn_containerd();
        }
        for node in &mut cluster.nodes {
            node.wait_containerd();
        }
        for node in &mut cluster.nodes {
            node.spawn_dockerd();
        }
        let rt = &cluster.rt;
        for node in &mut cluster.nodes {
            node.wait_dockerd(rt);
        }
        cluster.form_swarm();
        cluster
    }

    /// How many nodes it has.
    pub(crate) fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Node `i`'s engine (`i` from 0; its host name is `node{i + 1}`). The
    /// client holds no connection between calls: any runtime can drive it.
    pub(crate) fn node(&self, i: usize) -> &Docker {
        self.nodes[i].docker.as_ref().expect("the node's engine never answered")
    }

    /// Node `i`'s address on the bridge.
    pub(crate) fn ip(&self, i: usize) -> Ipv4Addr {
        self.nodes[i].ip
    }

    /// Node `i`'s host name, as its engine and the swarm report it.
    pub(crate) fn hostname(&self, i: usize) -> &str {
        &self.nodes[i].hostname
    }

    /// Node `i`'s ID in the swarm (known after it is stopped too).
    pub(crate) fn node_id(&self, i: usize) -> &str {
        &self.nodes[i].swarm_id
    }

    /// Node `i`'s engine data root (images, containers, volumes, swarm state).
    pub(crate) fn data_root(&self, i: usize) -> PathBuf {
        self.nodes[i].dir.join("data")
    }

    /// Everything node `i` keeps on disk: its data and exec roots,
    /// containerd's root and state, configuration and logs.
    pub(crate) fn state_dir(&self, i: usize) -> PathBuf {
        self.nodes[i].dir.clone()
    }

    /// Node `i`'s engine as `unix:///…/docker.sock`, for `--host`.
    pub(crate) fn host(&self, i: usize) -> String {
        self.nodes[i].host()
    }

    /// Whether node `i`'s dockerd runs (not stopped by [`Cluster::stop_node`]).
    pub(crate) fn is_running(&self, i: usize) -> bool {
        self.nodes[i].procs().dockerd.is_some()
    }

    /// The last `lines` lines of node `i`'s dockerd and containerd logs.
    pub(crate) fn log_tail(&self, i: usize, lines: usize) -> String {
        self.nodes[i].log_tail(lines)
    }

    /// Makes node `i` refuse its own connections to `address` (`IP:PORT`),
    /// as a firewall between it and that service would: each is reset at
    /// once. [`Cluster::unblock`] removes the rule; the node's namespace goes
    /// with it at the end anyway.
    pub(crate) fn block(&self, i: usize, address: impl AsRef<str>) {
        self.firewall(i, "-I", address.as_ref());
    }

    pub(crate) fn unblock(&self, i: usize, address: impl AsRef<str>) {
        self.firewall(i, "-D", address.as_ref());
    }

    fn firewall(&self, i: usize, op: &str, address: &str) {
        let to: SocketAddr = address.parse().unwrap_or_else(|e| panic!("`{address}` is not IP:PORT: {e}"));
        let netns = format!("--net=/var/run/netns/{}", self.nodes[i].netns.as_deref().unwrap());
        let (ip, port) = (to.ip().to_string(), to.port().to_string());
        let iptables = tool("iptables");
        let iptables = iptables.to_str().unwrap();
        let rule = ["OUTPUT", "-p", "tcp", "-d", &ip, "--dport", &port, "-j", "REJECT", "--reject-with", "tcp-reset"];
        let mut args = vec![netns.as_str(), "--", iptables, "-w", op];
        args.extend(rule);
        must("nsenter", &args);
    }

    /// The host side of the bridge: where the nodes reach the host (a
    /// registry listens there).
    pub(crate) fn bridge_ip(&self) -> Ipv4Addr {
        self.bridge_ip
    }

    /// `unix:///…/docker.sock` of the first node still running, for
    /// `cargo xtask deploy --host` (bollard's `connect_with_host` form).
    pub(crate) fn manager_host(&self) -> String {
        let running =
            (0..self.nodes.len()).find(|&i| self.is_running(i)).expect("every node of the cluster is stopped");
        self.host(running)
    }

    /// Runs `future` (a bollard call on a node's client) on the cluster's runtime.
    pub(crate) fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        self.rt.block_on(future)
    }

    /// Stops node `i` as if it were lost: SIGTERM to its dockerd (SIGKILL
    /// after `STOP_BOUND`), then its containerd, then whatever of it is left
    /// (shims, containers). Its address stays on the bridge, with nothing
    /// listening: connections are refused. Stopping a stopped node does
    /// nothing.
    pub(crate) fn stop_node(&self, i: usize) {
        let node = &self.nodes[i];
        node.signal_dockerd("TERM");
        node.reap_dockerd(Instant::now() + STOP_BOUND);
        node.signal_containerd("TERM");
        node.reap_containerd(Instant::now() + STOP_BOUND);
        for problem in node.kill_leftovers() {
            eprintln!("cluster {}: stopping {}: {problem}", self.name, node.hostname);
        }
        node.release_mount_namespace();
    }

    /// What the cluster made on the host, for checking that none of it is left.
    pub(crate) fn footprint(&self) -> Footprint {
        let mut f = Footprint::default();
        f.links.push(self.name.clone());
        if let Some(chain) = &self.rule_chain {
            f.rules.push((chain.clone(), self.name.clone()));
        }
        f.markers.push(self.dir.to_string_lossy().into_owned());
        f.paths.push(self.dir.clone());
        for node in &self.nodes {
            f.netns.extend(node.netns.clone());
            f.links.extend(node.veth.clone());
            f.paths.extend(cgroup_roots().into_iter().map(|root| root.join(&node.cgroup)));
            f.paths.extend(node.shim_sockets());
        }
        f
    }

    /// A free /24 of 198.18.0.0/15 (RFC 2544's benchmarking range) for the
    /// bridge, which gets `.1`.
    fn make_bridge(&mut self) {
        let _held = SUBNETS.lock().unwrap_or_else(|e| e.into_inner());
        for _ in 0..8 {
            let net = free_subnet();
            let ip = Ipv4Addr::from(net + 1);
            must("ip", &["link", "add", &self.name, "type", "bridge"]);
            self.bridge_made = true;
            must("ip", &["addr", "add", &format!("{ip}/24"), "dev", &self.name]);
            // Another process may have taken the same /24 since we looked.
            let taken_elsewhere = ipv4_in_use(Some(&self.name)).iter().any(|&(a, p)| overlaps(a, p, net, 24));
            if taken_elsewhere {
                must("ip", &["link", "del", &self.name]);
                self.bridge_made = false;
                continue;
            }
            must("ip", &["link", "set", &self.name, "up"]);
            self.bridge_ip = ip;
            return;
        }
        panic!("no free /24 in 198.18.0.0/15 after 8 tries");
    }

    /// The host engine sets FORWARD's policy to DROP, and with br_netfilter
    /// that drops bridged traffic too, between the nodes: one rule accepts
    /// what stays on our bridge. It goes into DOCKER-USER, the chain the host
    /// engine keeps for rules like it; without a host engine (no chain), into
    /// FORWARD.
    fn accept_bridged_traffic(&mut self) {
        let chain = if sh("iptables", &["-w", "-n", "-L", "DOCKER-USER"]).is_ok() { "DOCKER-USER" } else { "FORWARD" };
        must("iptables", &["-w", "-I", chain, "-i", &self.name, "-o", &self.name, "-j", "ACCEPT"]);
        self.rule_chain = Some(chain.to_owned());
    }

    /// Node `i`'s network namespace, wired to the bridge.
    fn add_host(&mut self, i: usize) {
        let netns = format!("{}n{}", self.name, i + 1);
        let veth = format!("{}v{}", self.name, i + 1);
        let ip = Ipv4Addr::from(u32::from(self.bridge_ip) + 1 + i as u32);
        let dir = self.dir.join(format!("node{}", i + 1));
        std::fs::create_dir(&dir).unwrap();
        self.nodes.push(Node {
            hostname: format!("node{}", i + 1),
            ip,
            netns: None,
            veth: None,
            dir,
            cgroup: format!("{}n{}", self.name, i + 1),
            docker: None,
            swarm_id: String::new(),
            procs: Mutex::default(),
        });
        let node = self.nodes.last_mut().unwrap();
        must("ip", &["netns", "add", &netns]);
        node.netns = Some(netns.clone());
        must("ip", &["link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &netns]);
        node.veth = Some(veth.clone());
        must("ip", &["link", "set", &veth, "master", &self.name, "up"]);
        // No default route: a node reaches the bridge and nothing else, so a
        // pull that would leave (a tag looked up at Docker Hub) fails at once
        // instead of after DNS timeouts.
        must("ip", &["-n", &netns, "addr", "add", &format!("{ip}/24"), "dev", "eth0"]);
        must("ip", &["-n", &netns, "link", "set", "eth0", "up"]);
        must("ip", &["-n", &netns, "link", "set", "lo", "up"]);
    }

    /// All nodes managers: Raft keeps a quorum when any one of three is lost,
    /// so a test can stop any node, the one it deploys through included, and
    /// deploy again through another (`manager_host`). With one manager,
    /// losing it would leave a swarm nobody can change. Joins go one at a
    /// time: Raft takes one membership change at a time.
    fn form_swarm(&mut self) {
        let first = &self.nodes[0];
        let init = SwarmInitRequest {
            listen_addr: Some(format!("{}:2377", first.ip)),
            advertise_addr: Some(first.ip.to_string()),
            ..Default::default()
        };
        self.rt.block_on(first.docker().init_swarm(init)).unwrap_or_else(|e| first.fail(&format!("swarm init: {e}")));
        let swarm = self.rt.block_on(first.docker().inspect_swarm()).unwrap();
        let token = swarm.join_tokens.and_then(|t| t.manager).expect("no manager join token");
        for node in &self.nodes[1..] {
            let join = SwarmJoinRequest {
                listen_addr: Some(format!("{}:2377", node.ip)),
                advertise_addr: Some(node.ip.to_string()),
                remote_addrs: Some(vec![format!("{}:2377", first.ip)]),
                join_token: Some(token.clone()),
                ..Default::default()
            };
            self.rt.block_on(node.docker().join_swarm(join)).unwrap_or_else(|e| node.fail(&format!("swarm join: {e}")));
        }
        let deadline = Instant::now() + START_BOUND;
        let mut seen = String::new();
        loop {
            if let Ok(list) = self.rt.block_on(first.docker().list_nodes(None)) {
                let ready = list.iter().filter(|n| {
                    let state = n.status.as_ref().and_then(|s| s.state);
                    let reach = n.manager_status.as_ref().and_then(|m| m.reachability);
                    state == Some(NodeState::READY) && reach == Some(Reachability::REACHABLE)
                });
                if ready.count() == self.nodes.len() {
                    break;
                }
                seen = format!("{list:?}");
            }
            if Instant::now() > deadline {
                first.fail(&format!("the swarm's nodes are not all Ready and reachable; list_nodes said {seen}"));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        for node in &mut self.nodes {
            let info = self.rt.block_on(node.docker.as_ref().unwrap().info()).unwrap();
            node.swarm_id = info.swarm.and_then(|s| s.node_id).expect("a node of the swarm without a node ID");
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let started = Instant::now();
        if std::thread::panicking() {
            for node in &self.nodes {
                eprintln!("--- {} ---\n{}", node.hostname, node.log_tail(25));
            }
        }
        let mut problems = Vec::new();
        // Every engine at once, so they stop in parallel.
        for node in &self.nodes {
            node.signal_dockerd("TERM");
        }
        let deadline = Instant::now() + STOP_BOUND;
        for node in &self.nodes {
            node.reap_dockerd(deadline);
        }
        for node in &self.nodes {
            node.signal_containerd("TERM");
        }
        let deadline = Instant::now() + STOP_BOUND;
        for node in &self.nodes {
            node.reap_containerd(deadline);
        }
        for node in &self.nodes {
            problems.extend(node.kill_leftovers());
            node.release_mount_namespace();
            problems.extend(node.remove_shim_sockets());
            problems.extend(node.remove_cgroups());
        }
        // The engines mount in their own mount namespaces, gone with their
        // processes; this catches anything that reached the host's table.
        problems.extend(unmount_under(&self.dir));
        for node in &self.nodes {
            // The veth first: deleting it takes its peer at once, while a
            // namespace's devices go only when the kernel frees it, later.
            if let Some(veth) = &node.veth {
                problems.extend(sh("ip", &["link", "del", veth]).err());
            }
            if let Some(netns) = &node.netns {
                problems.extend(sh("ip", &["netns", "del", netns]).err());
            }
        }
        if self.bridge_made {
            problems.extend(sh("ip", &["link", "del", &self.name]).err());
        }
        if let Some(chain) = &self.rule_chain {
            problems
                .extend(sh("iptables", &["-w", "-D", chain, "-i", &self.name, "-o", &self.name, "-j", "ACCEPT"]).err());
        }
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            problems.push(format!("removing {}: {e}", self.dir.display()));
        }
        eprintln!("cluster {}: torn down in {:.1} s", self.name, started.elapsed().as_secs_f64());
        for problem in problems {
            eprintln!("cluster {}: teardown: {problem}", self.name);
        }
    }
}

impl Node {
    fn docker(&self) -> &Docker {
        self.docker.as_ref().expect("the node's engine never answered")
    }

    fn procs(&self) -> std::sync::MutexGuard<'_, Procs> {
        self.procs.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn data_root(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn host(&self) -> String {
        format!("unix://{}", self.socket().display())
    }

    fn log_tail(&self, lines: usize) -> String {
        let dockerd = tail(&self.dir.join("dockerd.log"), lines);
        let containerd = tail(&self.dir.join("containerd.log"), lines);
        format!("dockerd.log:\n{dockerd}\ncontainerd.log:\n{containerd}")
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("docker.sock")
    }

    fn containerd_socket(&self) -> PathBuf {
        self.dir.join("containerd.sock")
    }

    fn fail(&self, what: &str) -> ! {
        panic!("{}: {what}\n{}", self.hostname, self.log_tail(40))
    }

    /// containerd of its own, not dockerd's managed one: dockerd 20.10 starts
    /// one only when /run/containerd/containerd.sock is absent, and uses that
    /// system containerd, in the host's namespaces and shared with the host
    /// engine, when it is there (Debian's docker.io on systemd). Started
    /// first, in new UTS and mount namespaces: dockerd joins them.
    ///
    /// The mount namespace is a slave of the host's: the host's unmounts
    /// reach it (the host engine's removals are never held up by a copy
    /// here), and what the engine mounts stays in it and goes with its last
    /// process. `nsenter --net`, not `ip netns exec`, which remounts /sys and
    /// hides the cgroup mounts from dockerd.
    fn spawn_containerd(&mut self) {
        let root = self.dir.join("containerd");
        let config = format!(
            "version = 2\n\
             root = \"{root}/root\"\n\
             state = \"{root}/state\"\n\
             disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
             [grpc]\n  address = \"{socket}\"\n\
             [plugins.\"io.containerd.internal.v1.opt\"]\n  path = \"{root}/opt\"\n",
            root = root.display(),
            socket = self.containerd_socket().display(),
        );
        let config_path = self.dir.join("containerd.toml");
        std::fs::write(&config_path, config).unwrap();
        let netns = format!("--net=/var/run/netns/{}", self.netns.as_deref().unwrap());
        let log = std::fs::File::create(self.dir.join("containerd.log")).unwrap();
        // The host name comes in as `$0`, the command as `$@`: no value is
        // ever part of the shell text.
        let child = Command::new(tool("unshare"))
            .args(["--uts", "--mount", "--propagation", "slave", "--", "sh", "-c", "hostname \"$0\" && exec \"$@\""])
            .arg(&self.hostname)
            .arg(tool("nsenter"))
            .args([&netns, "--"])
            .arg(tool("containerd"))
            .arg("--config")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.procs.get_mut().unwrap().containerd = Some(child);
    }

    fn wait_containerd(&mut self) {
        let deadline = Instant::now() + START_BOUND;
        loop {
            let procs = self.procs.get_mut().unwrap();
            if let Ok(Some(status)) = procs.containerd.as_mut().unwrap().try_wait() {
                procs.containerd = None;
                self.fail(&format!("containerd exited ({status})"));
            }
            if self.containerd_socket().exists() {
                break;
            }
            if Instant::now() > deadline {
                self.fail("containerd did not make its socket");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // unshare, sh and nsenter exec each other: this pid is containerd's now.
        let procs = self.procs.get_mut().unwrap();
        let pid = procs.containerd.as_ref().unwrap().id();
        procs.mnt_ns_held = Some(std::fs::File::open(format!("/proc/{pid}/ns/mnt")).unwrap());
        procs.mnt_ns = Some(namespace(pid, "mnt").expect("containerd's mount namespace"));
    }

    /// dockerd in containerd's namespaces, with its own configuration file
    /// (not the host's /etc/docker/daemon.json), engine key (the host's
    /// /etc/docker/key.json would give every engine the host's ID), roots,
    /// socket and cgroup parent; its default bridge kept (`--bridge none`
    /// broke host-mode publishing).
    fn spawn_dockerd(&mut self) {
        let config = serde_json::json!({ "deprecated-key-path": self.dir.join("key.json") });
        let config_path = self.dir.join("daemon.json");
        std::fs::write(&config_path, config.to_string()).unwrap();
        let target = self.procs.get_mut().unwrap().containerd.as_ref().unwrap().id().to_string();
        let log = std::fs::File::create(self.dir.join("dockerd.log")).unwrap();
        let child = Command::new(tool("nsenter"))
            .args(["--target", &target, "--uts", "--mount", "--net", "--"])
            .arg(tool("dockerd"))
            .arg("--config-file")
            .arg(&config_path)
            .arg("--containerd")
            .arg(self.containerd_socket())
            .arg("--data-root")
            .arg(self.data_root())
            .arg("--exec-root")
            .arg(self.dir.join("exec"))
            .arg("--pidfile")
            .arg(self.dir.join("dockerd.pid"))
            .arg("--host")
            .arg(self.host())
            .args(["--cgroup-parent", &format!("/{}", self.cgroup)])
            .args(["--shutdown-timeout", CONTAINER_STOP_SECONDS])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.procs.get_mut().unwrap().dockerd = Some(child);
    }

    fn wait_dockerd(&mut self, rt: &tokio::runtime::Runtime) {
        let deadline = Instant::now() + START_BOUND;
        let socket = self.socket();
        let mut last = String::from("no socket yet");
        while Instant::now() < deadline {
            let procs = self.procs.get_mut().unwrap();
            if let Ok(Some(status)) = procs.dockerd.as_mut().unwrap().try_wait() {
                procs.dockerd = None;
                self.fail(&format!("dockerd exited ({status})"));
            }
            if socket.exists() {
                let answer = rt.block_on(async {
                    let docker =
                        Docker::connect_with_unix(socket.to_str().unwrap(), 120, bollard::API_DEFAULT_VERSION)?;
                    let docker = docker.negotiate_version().await?;
                    docker.ping().await?;
                    Ok::<_, bollard::errors::Error>(docker)
                });
                match answer {
                    Ok(docker) => {
                        self.docker = Some(docker);
                        return;
                    }
                    Err(e) => last = e.to_string(),
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        self.fail(&format!("dockerd did not answer /_ping within {} s ({last})", START_BOUND.as_secs()));
    }

    fn signal_dockerd(&self, signal: &str) {
        if let Some(child) = &self.procs().dockerd {
            kill(child.id(), signal);
        }
    }

    fn reap_dockerd(&self, deadline: Instant) {
        let child = self.procs().dockerd.take();
        if let Some(mut child) = child {
            reap(&mut child, deadline);
        }
    }

    fn signal_containerd(&self, signal: &str) {
        if let Some(child) = &self.procs().containerd {
            kill(child.id(), signal);
        }
    }

    fn reap_containerd(&self, deadline: Instant) {
        let child = self.procs().containerd.take();
        if let Some(mut child) = child {
            reap(&mut child, deadline);
        }
    }

    /// Processes of this node still running: those in its mount namespace
    /// (dockerd, containerd, shims, docker-proxy), in its cgroup parent
    /// (containers), or naming its folder; and all their descendants.
    fn leftover_pids(&self) -> Vec<u32> {
        let table = ProcessTable::read();
        let folder = self.dir.to_string_lossy();
        let in_cgroup = format!("/{}/", self.cgroup);
        let mnt_ns = self.procs().mnt_ns.clone();
        let roots = table.pids().filter(|&pid| {
            mnt_ns.is_some() && namespace(pid, "mnt") == mnt_ns
                || read_proc(pid, "cgroup").contains(&in_cgroup)
                || read_proc(pid, "cmdline").replace('\0', " ").contains(folder.as_ref())
        });
        table.with_descendants(roots.collect())
    }

    /// SIGKILL to whatever of the node runs, until nothing does.
    fn kill_leftovers(&self) -> Vec<String> {
        for _ in 0..5 {
            let pids = self.leftover_pids();
            if pids.is_empty() {
                return Vec::new();
            }
            for &pid in &pids {
                kill(pid, "KILL");
            }
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline && pids.iter().any(|&p| alive(p)) {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let pids = self.leftover_pids();
        if pids.is_empty() {
            Vec::new()
        } else {
            vec![format!("{}: processes {pids:?} survive SIGKILL", self.hostname)]
        }
    }

    /// Lets its mount namespace go (and with it what is mounted there) once
    /// nothing of the node runs in it.
    fn release_mount_namespace(&self) {
        let mut procs = self.procs();
        procs.mnt_ns = None;
        procs.mnt_ns_held = None;
    }

    /// Where the shims of its containers listen: under /run/containerd/s,
    /// named by sha256 of `<containerd address>/<namespace>/<container ID>`
    /// (containerd 1.6's `shim.SocketAddress`). A shim removes its socket
    /// when it exits, not when it is killed.
    fn shim_sockets(&self) -> Vec<PathBuf> {
        use sha2::Digest as _;
        let Ok(entries) = std::fs::read_dir(self.data_root().join("containers")) else { return Vec::new() };
        let address = self.containerd_socket();
        entries
            .filter_map(Result::ok)
            .map(|entry| {
                let key =
                    format!("{}/{CONTAINERD_NAMESPACE}/{}", address.display(), entry.file_name().to_string_lossy());
                let hash = sha2::Sha256::digest(key.as_bytes());
                let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
                Path::new(SHIM_SOCKETS).join(hex)
            })
            .collect()
    }

    fn remove_shim_sockets(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for socket in self.shim_sockets().into_iter().filter(|s| s.exists()) {
            if let Err(e) = std::fs::remove_file(&socket) {
                problems.push(format!("removing {}: {e}", socket.display()));
            }
        }
        problems
    }

    /// Its cgroup parent in every hierarchy; a killed container's runc never
    /// removed its own.
    fn remove_cgroups(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for root in cgroup_roots() {
            let dir = root.join(&self.cgroup);
            if dir.exists() {
                // An exited process leaves its cgroup only once reaped.
                let deadline = Instant::now() + Duration::from_secs(5);
                let mut result = remove_cgroup_tree(&dir);
                while result.is_err() && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(100));
                    result = remove_cgroup_tree(&dir);
                }
                problems.extend(result.err().map(|e| format!("removing cgroup {}: {e}", dir.display())));
            }
        }
        problems
    }
}

// ---------------------------------------------------------------------------
// Registry

/// Debian's distribution registry (2.8) on the cluster's bridge, with TLS
/// from a test CA (trusted by every engine of the host through
/// /etc/docker/certs.d) and basic auth with a password made for this run.
pub(crate) struct Registry {
    dir: PathBuf,
    addr: SocketAddr,
    user: String,
    password: String,
    /// /etc/docker/certs.d/IP:PORT, once made.
    certs_d: Option<PathBuf>,
    child: Option<Child>,
}

impl Registry {
    /// Starts a registry on `bridge_ip` (a cluster's `bridge_ip()`) and a free port.
    pub(crate) fn start(bridge_ip: Ipv4Addr) -> Registry {
        check_root();
        let program = tool("docker-registry");
        let dir = tempfile::Builder::new().prefix("bxcreg-").tempdir().unwrap().keep();
        let port = free_port(bridge_ip);
        // fastrand (seeded from the OS) is enough for a password that lives one
        // run on a bridge of this host.
        let password: String = std::iter::repeat_with(fastrand::alphanumeric).take(32).collect();
        let mut registry = Registry {
            dir,
            addr: SocketAddr::from((bridge_ip, port)),
            user: "boxcar".to_owned(),
            password,
            certs_d: None,
            child: None,
        };
        let dir = registry.dir.clone();

        let (ca_pem, cert_pem, key_pem) = test_certificates(bridge_ip);
        std::fs::write(dir.join("ca.crt"), &ca_pem).unwrap();
        std::fs::write(dir.join("server.crt"), cert_pem).unwrap();
        write_private(&dir.join("server.key"), key_pem.as_bytes());
        // Cost 5, not the default 12: the registry checks the hash on every
        // request (a pull makes several), and this password is random and
        // lives for one run.
        let hash = bcrypt::hash(&registry.password, 5).unwrap();
        write_private(&dir.join("htpasswd"), format!("{}:{hash}\n", registry.user).as_bytes());
        let secret: String = std::iter::repeat_with(fastrand::alphanumeric).take(32).collect();
        let config = format!(
            "version: 0.1\n\
             log:\n  level: info\n\
             storage:\n  filesystem:\n    rootdirectory: {dir}/storage\n  delete:\n    enabled: true\n\
             http:\n  addr: {addr}\n  secret: {secret}\n  tls:\n    certificate: {dir}/server.crt\n    key: {dir}/server.key\n\
             auth:\n  htpasswd:\n    realm: boxcar-test\n    path: {dir}/htpasswd\n",
            dir = dir.display(),
            addr = registry.addr,
        );
        write_private(&dir.join("config.yml"), config.as_bytes());

        let certs_d = Path::new("/etc/docker/certs.d").join(registry.addr.to_string());
        assert!(!certs_d.exists(), "{} exists already: another registry's; not replacing it", certs_d.display());
        std::fs::create_dir_all(&certs_d).unwrap();
        registry.certs_d = Some(certs_d.clone());
        std::fs::write(certs_d.join("ca.crt"), &ca_pem).unwrap();

        let log = std::fs::File::create(dir.join("registry.log")).unwrap();
        let child = Command::new(program)
            .arg("serve")
            .arg(dir.join("config.yml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        registry.child = Some(child);
        registry.wait_listening();
        registry
    }

    /// `IP:PORT`, as image references and certs.d name it.
    pub(crate) fn address(&self) -> String {
        self.addr.to_string()
    }

    pub(crate) fn user(&self) -> &str {
        &self.user
    }

    pub(crate) fn password(&self) -> &str {
        &self.password
    }

    /// The test CA's certificate (PEM).
    pub(crate) fn ca_path(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    /// The credentials, for bollard's push and pull.
    pub(crate) fn credentials(&self) -> DockerCredentials {
        DockerCredentials {
            username: Some(self.user.clone()),
            password: Some(self.password.clone()),
            serveraddress: Some(self.address()),
            ..Default::default()
        }
    }

    /// Writes `dir/config.json` with these credentials, for a CLI run with
    /// `DOCKER_CONFIG=dir`; returns its path.
    pub(crate) fn write_docker_config(&self, dir: &Path) -> PathBuf {
        use base64::Engine as _;
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", self.user, self.password));
        let config = serde_json::json!({ "auths": { self.address(): { "auth": auth } } });
        let path = dir.join("config.json");
        write_private(&path, config.to_string().as_bytes());
        path
    }

    pub(crate) fn log_tail(&self, lines: usize) -> String {
        tail(&self.dir.join("registry.log"), lines)
    }

    pub(crate) fn footprint(&self) -> Footprint {
        let mut f = Footprint::default();
        f.paths.push(self.dir.clone());
        f.paths.extend(self.certs_d.clone());
        f.markers.push(self.dir.to_string_lossy().into_owned());
        f
    }

    fn wait_listening(&mut self) {
        let deadline = Instant::now() + START_BOUND;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.as_mut().unwrap().try_wait() {
                panic!("the registry exited ({status}):\n{}", self.log_tail(30));
            }
            if TcpStream::connect_timeout(&self.addr, Duration::from_secs(1)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "the registry does not listen on {} after {} s:\n{}",
            self.addr,
            START_BOUND.as_secs(),
            self.log_tail(30)
        );
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if std::thread::panicking() {
                eprintln!("--- registry ---\n{}", self.log_tail(25));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(dir) = &self.certs_d
            && let Err(e) = std::fs::remove_dir_all(dir)
        {
            eprintln!("registry teardown: removing {}: {e}", dir.display());
        }
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            eprintln!("registry teardown: removing {}: {e}", self.dir.display());
        }
    }
}

/// A CA, and a server certificate it signed for `ip` and 127.0.0.1, with the
/// server's key: PEM texts.
fn test_certificates(ip: Ipv4Addr) -> (String, String, String) {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
        KeyUsagePurpose,
    };
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, "boxcar test CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
    let mut server = CertificateParams::new(vec![ip.to_string(), "127.0.0.1".to_owned()]).unwrap();
    server.distinguished_name.push(DnType::CommonName, ip.to_string());
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let key = KeyPair::generate().unwrap();
    let cert = server.signed_by(&key, &ca).unwrap();
    (ca.pem(), cert.pem(), key.serialize_pem())
}

// ---------------------------------------------------------------------------
// Haproxy

/// Debian's haproxy (2.6) on 127.0.0.1, balancing HTTP round robin over
/// backends with active health checks, retries and redispatch: what a
/// production load balancer in front of Swarm nodes' host-mode ports does.
pub(crate) struct Haproxy {
    dir: PathBuf,
    addr: SocketAddr,
    stats_addr: SocketAddr,
    backends: Vec<(String, u16)>,
    child: Option<Child>,
}

/// One server's line of haproxy's statistics.
#[derive(Debug, Clone)]
pub(crate) struct BackendStats {
    /// `s1`, `s2`, … in the order of the backends given.
    pub(crate) server: String,
    pub(crate) address: String,
    /// `UP`, `DOWN`, `UP 1/2` (going down), `DOWN 1/2` (coming up), `MAINT`, …
    pub(crate) status: String,
    /// Sessions it was given (`stot`): one a request, as each client request
    /// comes on a connection of its own.
    pub(crate) sessions: u64,
    /// Retries to it after a failed connection or response (`wretr`).
    pub(crate) retries: u64,
    /// Requests taken away from it to another server (`wredis`).
    pub(crate) redispatches: u64,
    /// Failed connections to it (`econ`).
    pub(crate) connection_errors: u64,
    /// Failed or aborted responses from it (`eresp`).
    pub(crate) response_errors: u64,
    /// Failed health checks (`chkfail`).
    pub(crate) check_failures: u64,
    /// Total time it was marked down (`downtime`).
    pub(crate) downtime: Duration,
}

impl BackendStats {
    pub(crate) fn is_up(&self) -> bool {
        self.status == "UP"
    }
}

impl fmt::Display for BackendStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {}: {} sessions, {} retries, {} redispatches, {} connection errors, {} response errors, \
             {} failed checks, down {} s",
            self.server,
            self.address,
            self.status,
            self.sessions,
            self.retries,
            self.redispatches,
            self.connection_errors,
            self.response_errors,
            self.check_failures,
            self.downtime.as_secs()
        )
    }
}

impl Haproxy {
    /// Starts haproxy in front of `backends` (address, port), checking each
    /// with `GET health_path` (200 expected).
    pub(crate) fn start(backends: &[(String, u16)], health_path: &str) -> Haproxy {
        assert!(!backends.is_empty(), "haproxy needs at least one backend");
        assert!(health_path.starts_with('/') && !health_path.contains(char::is_whitespace), "{health_path:?}");
        let program = tool("haproxy");
        let dir = tempfile::Builder::new().prefix("bxclb-").tempdir().unwrap().keep();
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port(Ipv4Addr::LOCALHOST)));
        let stats_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port(Ipv4Addr::LOCALHOST)));
        let mut haproxy = Haproxy { dir, addr, stats_addr, backends: backends.to_vec(), child: None };
        let servers: String = backends
            .iter()
            .enumerate()
            .map(|(i, (ip, port))| format!("    server s{} {ip}:{port} check\n", i + 1))
            .collect();
        // Timeouts: a node that is gone fails a connection within a second
        // (`timeout connect`), a hung one a response within 2 s, so that the
        // retry elsewhere still fits in a client's 5 s (`Load`). A failed
        // connection, an empty or junk response, a timeout or a 500/502/503/504
        // is retried (`retry-on all-retryable-errors`, safe for the tests'
        // GETs), up to 3 times, each on another server (`option redispatch 1`).
        // Checks every 500 ms; 2 failures mark a server down, 2 successes up.
        let config = format!(
            "global\n\
             \x20   maxconn 2000\n\
             \x20   log stdout format raw local0 info\n\
             defaults\n\
             \x20   mode http\n\
             \x20   log global\n\
             \x20   option httplog\n\
             \x20   option dontlognull\n\
             \x20   timeout connect 1s\n\
             \x20   timeout client 10s\n\
             \x20   timeout server 2s\n\
             \x20   timeout http-request 5s\n\
             \x20   timeout check 1s\n\
             \x20   retries 3\n\
             \x20   option redispatch 1\n\
             \x20   retry-on all-retryable-errors\n\
             \x20   default-server inter 500ms fall 2 rise 2\n\
             frontend bxc_front\n\
             \x20   bind {addr}\n\
             \x20   default_backend bxc_nodes\n\
             backend bxc_nodes\n\
             \x20   balance roundrobin\n\
             \x20   option httpchk GET {health_path}\n\
             \x20   http-check expect status 200\n\
             {servers}\
             listen bxc_stats\n\
             \x20   bind {stats_addr}\n\
             \x20   stats enable\n\
             \x20   stats uri /stats\n",
        );
        let config_path = haproxy.dir.join("haproxy.cfg");
        std::fs::write(&config_path, config).unwrap();
        let log = std::fs::File::create(haproxy.dir.join("haproxy.log")).unwrap();
        let child = Command::new(program)
            .arg("-db")
            .arg("-f")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        haproxy.child = Some(child);
        let deadline = Instant::now() + START_BOUND;
        loop {
            if let Ok(Some(status)) = haproxy.child.as_mut().unwrap().try_wait() {
                panic!("haproxy exited ({status}):\n{}", haproxy.log_tail(30));
            }
            if haproxy.stats_csv().is_ok() {
                break;
            }
            assert!(Instant::now() < deadline, "haproxy's statistics do not answer:\n{}", haproxy.log_tail(30));
            std::thread::sleep(Duration::from_millis(100));
        }
        haproxy
    }

    /// Where clients connect: 127.0.0.1 and its port.
    pub(crate) fn address(&self) -> SocketAddr {
        self.addr
    }

    /// Its statistics page (`/stats`, CSV with `;csv`).
    pub(crate) fn stats_addr(&self) -> SocketAddr {
        self.stats_addr
    }

    /// Every server's counters, in the order of the backends.
    pub(crate) fn stats(&self) -> Vec<BackendStats> {
        let csv = self.stats_csv().unwrap_or_else(|e| panic!("haproxy's statistics: {e}\n{}", self.log_tail(20)));
        let rows = parse_stats(&csv);
        rows.iter()
            .filter(|r| r.get("pxname").map(String::as_str) == Some("bxc_nodes"))
            .filter(|r| !matches!(r.get("svname").map(String::as_str), Some("BACKEND" | "FRONTEND")))
            .map(|r| {
                let number = |k: &str| r.get(k).and_then(|v| v.parse().ok()).unwrap_or(0);
                let server = r.get("svname").cloned().unwrap_or_default();
                let index: usize = server.trim_start_matches('s').parse().unwrap_or(0);
                let address = index
                    .checked_sub(1)
                    .and_then(|i| self.backends.get(i))
                    .map(|(ip, port)| format!("{ip}:{port}"))
                    .unwrap_or_default();
                BackendStats {
                    server,
                    address,
                    status: r.get("status").cloned().unwrap_or_default(),
                    sessions: number("stot"),
                    retries: number("wretr"),
                    redispatches: number("wredis"),
                    connection_errors: number("econ"),
                    response_errors: number("eresp"),
                    check_failures: number("chkfail"),
                    downtime: Duration::from_secs(number("downtime")),
                }
            })
            .collect()
    }

    /// Waits until `up` servers are UP; false after `timeout`.
    pub(crate) fn wait_up(&self, up: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.stats().iter().filter(|s| s.is_up()).count() == up {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    /// One line for a test's closing note: every server, then the 5xx
    /// answers clients got.
    pub(crate) fn summary(&self) -> String {
        let servers: Vec<String> = self.stats().iter().map(ToString::to_string).collect();
        let csv = self.stats_csv().unwrap_or_default();
        let fivexx = parse_stats(&csv)
            .iter()
            .find(|r| r.get("pxname").map(String::as_str) == Some("bxc_front"))
            .and_then(|r| r.get("hrsp_5xx").cloned())
            .unwrap_or_default();
        format!("haproxy: {}; 5xx to clients: {fivexx}", servers.join("; "))
    }

    pub(crate) fn log_tail(&self, lines: usize) -> String {
        tail(&self.dir.join("haproxy.log"), lines)
    }

    pub(crate) fn footprint(&self) -> Footprint {
        let mut f = Footprint::default();
        f.paths.push(self.dir.clone());
        f.markers.push(self.dir.to_string_lossy().into_owned());
        f
    }

    fn stats_csv(&self) -> Result<String, String> {
        let (status, body) = http_get(self.stats_addr, "/stats;csv", &[], Duration::from_secs(5))?;
        if status != 200 {
            return Err(format!("status {status}"));
        }
        Ok(body)
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if std::thread::panicking() {
                eprintln!("--- haproxy ---\n{}", self.log_tail(25));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            eprintln!("haproxy teardown: removing {}: {e}", self.dir.display());
        }
    }
}

/// haproxy's CSV: a `# name,name,…` header, then one row a proxy or server.
fn parse_stats(csv: &str) -> Vec<HashMap<String, String>> {
    let mut lines = csv.lines();
    let Some(header) = lines.next().and_then(|h| h.strip_prefix("# ")) else { return Vec::new() };
    let names: Vec<&str> = header.split(',').collect();
    lines
        .filter(|l| !l.is_empty())
        .map(|l| names.iter().zip(l.split(',')).map(|(k, v)| ((*k).to_owned(), v.to_owned())).collect())
        .collect()
}

// ---------------------------------------------------------------------------
// Load

/// A bounded HTTP load: GETs at a steady rate from a few threads, until
/// `max_requests` were sent, `max_time` passed, or [`Load::finish`].
pub(crate) struct Load {
    stop: Arc<AtomicBool>,
    workers: Vec<std::thread::JoinHandle<Vec<Sample>>>,
    started: Instant,
}

struct Sample {
    at: Duration,
    took: Duration,
    error: Option<String>,
}

/// What a [`Load`] saw.
#[derive(Debug, Clone)]
pub(crate) struct LoadReport {
    pub(crate) sent: u64,
    pub(crate) ok: u64,
    pub(crate) failed: u64,
    /// The first 10 failures: when (from the start) and why.
    pub(crate) first_failures: Vec<String>,
    /// Latencies of the successful requests.
    pub(crate) p50: Duration,
    pub(crate) p99: Duration,
    pub(crate) elapsed: Duration,
}

/// Threads sending, so at most this many requests in flight: one blocked on
/// the 5 s timeout holds back only its own thread's next request.
const LOAD_WORKERS: u64 = 16;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

impl Load {
    /// Starts sending `GET path` to `addr` at `rate_per_sec`, at most
    /// `max_requests` requests within `max_time`. Each request is on a new
    /// connection with `Connection: close`: every request is then balanced
    /// and counted on its own, a broken connection fails the one request it
    /// broke, and the response needs no framing (read to the end). A request
    /// is ok only on status 200 within 5 s.
    pub(crate) fn start(
        addr: SocketAddr,
        path: &str,
        rate_per_sec: u32,
        max_requests: u64,
        max_time: Duration,
    ) -> Load {
        assert!(rate_per_sec > 0, "a rate of 0 sends nothing");
        let stop = Arc::new(AtomicBool::new(false));
        let next = Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        let workers = (0..LOAD_WORKERS.min(max_requests.max(1)))
            .map(|_| {
                let (stop, next, path) = (stop.clone(), next.clone(), path.to_owned());
                std::thread::spawn(move || {
                    let mut samples = Vec::new();
                    loop {
                        let n = next.fetch_add(1, Ordering::Relaxed);
                        let due = Duration::from_secs_f64(n as f64 / f64::from(rate_per_sec));
                        if n >= max_requests || due >= max_time {
                            break;
                        }
                        // Sleep in short slices so `finish` is not kept waiting.
                        while started.elapsed() < due && !stop.load(Ordering::Relaxed) {
                            // Saturating: the time may pass `due` between the check and here.
                            std::thread::sleep(due.saturating_sub(started.elapsed()).min(Duration::from_millis(50)));
                        }
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let at = started.elapsed();
                        let result = http_get(addr, &path, &[], REQUEST_TIMEOUT);
                        let error = match result {
                            Ok((200, _)) => None,
                            Ok((status, _)) => Some(format!("status {status}")),
                            Err(e) => Some(e),
                        };
                        samples.push(Sample { at, took: started.elapsed() - at, error });
                    }
                    samples
                })
            })
            .collect();
        Load { stop, workers, started }
    }

    /// Stops sending (requests in flight finish) and reports.
    pub(crate) fn finish(self) -> LoadReport {
        self.stop.store(true, Ordering::Relaxed);
        self.report()
    }

    /// Lets the load run to its bounds, then reports.
    pub(crate) fn wait(self) -> LoadReport {
        self.report()
    }

    fn report(self) -> LoadReport {
        let mut samples: Vec<Sample> = self.workers.into_iter().flat_map(|w| w.join().unwrap()).collect();
        let elapsed = self.started.elapsed();
        samples.sort_by_key(|s| s.at);
        let mut latencies: Vec<Duration> = samples.iter().filter(|s| s.error.is_none()).map(|s| s.took).collect();
        latencies.sort();
        let first_failures = samples
            .iter()
            .filter_map(|s| s.error.as_ref().map(|e| format!("+{:.3} s: {e}", s.at.as_secs_f64())))
            .take(10)
            .collect();
        let ok = latencies.len() as u64;
        LoadReport {
            sent: samples.len() as u64,
            ok,
            failed: samples.len() as u64 - ok,
            first_failures,
            p50: percentile(&latencies, 50),
            p99: percentile(&latencies, 99),
            elapsed,
        }
    }
}

impl fmt::Display for LoadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "load: {} sent in {:.1} s, {} ok, {} failed; p50 {:.1} ms, p99 {:.1} ms",
            self.sent,
            self.elapsed.as_secs_f64(),
            self.ok,
            self.failed,
            self.p50.as_secs_f64() * 1e3,
            self.p99.as_secs_f64() * 1e3
        )?;
        if !self.first_failures.is_empty() {
            write!(f, "; first failures: {}", self.first_failures.join(", "))?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// What is left behind

/// What a harness made on the host; [`Footprint::leftovers`] lists what of it
/// still exists.
#[derive(Debug, Default)]
pub(crate) struct Footprint {
    netns: Vec<String>,
    links: Vec<String>,
    /// (chain, bridge) of an accept rule.
    rules: Vec<(String, String)>,
    paths: Vec<PathBuf>,
    /// Text no process's command line and no mount point may contain.
    markers: Vec<String>,
}

impl Footprint {
    pub(crate) fn and(mut self, other: Footprint) -> Footprint {
        self.netns.extend(other.netns);
        self.links.extend(other.links);
        self.rules.extend(other.rules);
        self.paths.extend(other.paths);
        self.markers.extend(other.markers);
        self
    }

    pub(crate) fn leftovers(&self) -> Vec<String> {
        let mut left = Vec::new();
        let namespaces = must("ip", &["netns", "list"]);
        let namespaces: HashSet<&str> = namespaces.lines().filter_map(|l| l.split_whitespace().next()).collect();
        left.extend(self.netns.iter().filter(|n| namespaces.contains(n.as_str())).map(|n| format!("netns {n}")));
        for link in &self.links {
            if sh("ip", &["link", "show", "dev", link]).is_ok() {
                left.push(format!("link {link}"));
            }
        }
        for (chain, bridge) in &self.rules {
            if sh("iptables", &["-w", "-C", chain, "-i", bridge, "-o", bridge, "-j", "ACCEPT"]).is_ok() {
                left.push(format!("iptables rule in {chain} for {bridge}"));
            }
        }
        left.extend(self.paths.iter().filter(|p| p.exists()).map(|p| format!("path {}", p.display())));
        let table = ProcessTable::read();
        for pid in table.pids() {
            let cmdline = read_proc(pid, "cmdline").replace('\0', " ");
            if self.markers.iter().any(|m| cmdline.contains(m.as_str())) {
                left.push(format!("process {pid}: {cmdline}"));
            }
        }
        for mount in mount_points() {
            if self.markers.iter().any(|m| mount.starts_with(m.as_str())) {
                left.push(format!("mount {}", mount.display()));
            }
        }
        left
    }
}

// ---------------------------------------------------------------------------
// Host helpers

/// Runs a host tool and returns its standard output, or what went wrong.
fn sh(program: &str, args: &[&str]) -> Result<String, String> {
    let out =
        Command::new(tool(program)).args(args).stdin(Stdio::null()).output().map_err(|e| format!("{program}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!("{program} {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

fn must(program: &str, args: &[&str]) -> String {
    sh(program, args).unwrap_or_else(|e| panic!("{e}"))
}

/// Where `program` is: in PATH or in the system folders (dockerd, ip and
/// haproxy live in /usr/sbin, which a PATH may lack).
fn tool(program: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/bin", "/sbin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("`{program}` is not installed; `cargo xtask test` installs what the multi-node tests need")
        })
}

fn check_root() {
    use std::os::unix::fs::MetadataExt as _;
    let uid = std::fs::metadata("/proc/self").unwrap().uid();
    assert_eq!(uid, 0, "the multi-node tests make network namespaces and run engines: run them as root");
}

fn write_private(path: &Path, bytes: &[u8]) {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).unwrap();
    file.write_all(bytes).unwrap();
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| format!("({}: {e})", path.display()));
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// IPv4 networks in use on the host: every address and route, as
/// (address, prefix length). Tokens that are not networks (`src`, `via`)
/// count too: that only rules out more.
fn ipv4_in_use(except_dev: Option<&str>) -> Vec<(u32, u32)> {
    let addresses = must("ip", &["-4", "-o", "addr", "show"]);
    let routes = must("ip", &["-4", "route", "show", "table", "all"]);
    let mut used = Vec::new();
    for line in addresses.lines().chain(routes.lines()) {
        let words: Vec<&str> = line.split_whitespace().collect();
        if except_dev.is_some_and(|dev| words.windows(2).any(|w| w == ["dev", dev]) || words.get(1) == Some(&dev)) {
            continue;
        }
        for word in words {
            let (ip, prefix) = word.split_once('/').unwrap_or((word, "32"));
            if let (Ok(ip), Ok(prefix)) = (ip.parse::<Ipv4Addr>(), prefix.parse::<u32>()) {
                used.push((u32::from(ip), prefix.min(32)));
            }
        }
    }
    used
}

fn overlaps(a: u32, a_prefix: u32, b: u32, b_prefix: u32) -> bool {
    let prefix = a_prefix.min(b_prefix);
    let mask = if prefix == 0 { 0 } else { u32::MAX << (32 - prefix) };
    a & mask == b & mask
}

/// A /24 of 198.18.0.0/15 no address or route of the host touches.
fn free_subnet() -> u32 {
    let used = ipv4_in_use(None);
    let base = u32::from(Ipv4Addr::new(198, 18, 0, 0));
    for _ in 0..64 {
        let net = base + (fastrand::u32(0..512) << 8);
        if !used.iter().any(|&(a, p)| overlaps(a, p, net, 24)) {
            return net;
        }
    }
    panic!("no free /24 in 198.18.0.0/15: the host uses {used:?}");
}

/// `/sys/fs/cgroup` (the unified hierarchy) and each v1 hierarchy under it.
fn cgroup_roots() -> Vec<PathBuf> {
    let base = PathBuf::from("/sys/fs/cgroup");
    let mut roots = vec![base.clone()];
    if let Ok(entries) = std::fs::read_dir(&base) {
        roots.extend(entries.filter_map(Result::ok).map(|e| e.path()).filter(|p| p.join("cgroup.procs").exists()));
    }
    roots
}

/// Removes a cgroup folder and the ones under it, deepest first (only empty
/// cgroups can go; their files are not files).
fn remove_cgroup_tree(dir: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() && !path.is_symlink() {
            remove_cgroup_tree(&path)?;
        }
    }
    std::fs::remove_dir(dir)
}

/// Mount points of this process's mount table.
fn mount_points() -> Vec<PathBuf> {
    let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    table.lines().filter_map(|l| l.split(' ').nth(4)).map(|m| PathBuf::from(unescape_mount(m))).collect()
}

/// mountinfo writes space, tab, newline and backslash as `\ooo`.
fn unescape_mount(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|o| u8::from_str_radix(std::str::from_utf8(o).ok()?, 8).ok());
        match (bytes[i], octal) {
            (b'\\', Some(byte)) => {
                out.push(byte);
                i += 4;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Unmounts everything mounted under `dir` in this mount table, deepest first.
fn unmount_under(dir: &Path) -> Vec<String> {
    let mut mounts: Vec<PathBuf> = mount_points().into_iter().filter(|m| m.starts_with(dir)).collect();
    mounts.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
    mounts.dedup();
    mounts.iter().filter_map(|m| sh("umount", &["--lazy", &m.to_string_lossy()]).err()).collect()
}

// Processes, through /proc and kill(1): the workspace forbids `unsafe`.

fn kill(pid: u32, signal: &str) {
    let _ = Command::new(tool("kill")).args(["-s", signal, &pid.to_string()]).stderr(Stdio::null()).status();
}

/// Waits for `child` until `deadline`, then SIGKILLs it.
fn reap(child: &mut Child, deadline: Instant) {
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn read_proc(pid: u32, file: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/{file}")).unwrap_or_default()
}

fn namespace(pid: u32, kind: &str) -> Option<String> {
    std::fs::read_link(format!("/proc/{pid}/ns/{kind}")).ok().map(|p| p.to_string_lossy().into_owned())
}

/// The state letter and parent of a process, from `/proc/PID/stat` (after
/// the command name, which may hold spaces and parentheses).
fn stat(pid: u32) -> Option<(char, u32)> {
    let text = read_proc(pid, "stat");
    let rest = text.get(text.rfind(')')? + 2..)?;
    let mut fields = rest.split(' ');
    let state = fields.next()?.chars().next()?;
    let parent = fields.next()?.parse().ok()?;
    Some((state, parent))
}

/// Running or asleep, not gone nor a zombie waiting to be reaped.
fn alive(pid: u32) -> bool {
    stat(pid).is_some_and(|(state, _)| !matches!(state, 'Z' | 'X'))
}

/// Every live process and its parent.
struct ProcessTable {
    parents: HashMap<u32, u32>,
}

impl ProcessTable {
    fn read() -> ProcessTable {
        let me = std::process::id();
        let parents = std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .filter(|&pid| pid != me)
            .filter_map(|pid| stat(pid).filter(|(state, _)| !matches!(state, 'Z' | 'X')).map(|(_, p)| (pid, p)))
            .collect();
        ProcessTable { parents }
    }

    fn pids(&self) -> impl Iterator<Item = u32> + '_ {
        self.parents.keys().copied()
    }

    fn with_descendants(&self, roots: Vec<u32>) -> Vec<u32> {
        let mut all: HashSet<u32> = roots.iter().copied().collect();
        let mut queue = roots;
        while let Some(pid) = queue.pop() {
            for (&child, &parent) in &self.parents {
                if parent == pid && all.insert(child) {
                    queue.push(child);
                }
            }
        }
        let mut all: Vec<u32> = all.into_iter().collect();
        all.sort_unstable();
        all
    }
}

// ---------------------------------------------------------------------------
// The harness's own test

/// The host engine's swarm: (state, node ID, cluster ID).
fn host_swarm(host: &Docker, rt: &tokio::runtime::Runtime) -> (String, String, String) {
    let info = rt.block_on(host.info()).expect("the host engine's `docker info`");
    let swarm = info.swarm.unwrap_or_default();
    (
        swarm.local_node_state.map(|s| s.to_string()).unwrap_or_default(),
        swarm.node_id.unwrap_or_default(),
        swarm.cluster.and_then(|c| c.id).unwrap_or_default(),
    )
}

/// Where the probe image's server listens, in its container.
const PROBE_PORT: u16 = 5000;

/// An image made on `node` (`docker import`) as `repo:tag`, with nothing
/// built: Debian's registry binary, the libraries `ldd` names for it, and a
/// configuration that serves `GET /v2/` (200) on `PROBE_PORT`, without auth,
/// storing in memory. A small HTTP server for tasks to run.
fn import_probe_image(cluster: &Cluster, node: usize, repo: &str, tag: &str) {
    use futures::StreamExt as _;
    let binary = tool("docker-registry");
    let libraries = must("ldd", &[binary.to_str().unwrap()]);
    let mut files: Vec<PathBuf> = vec![binary.clone()];
    files.extend(libraries.split_whitespace().filter(|w| w.starts_with('/')).map(PathBuf::from));
    let mut tar = tar::Builder::new(Vec::new());
    for file in &files {
        // Symbolic links (the loader's) are followed: the file goes in under the name asked for.
        tar.append_path_with_name(file, file.strip_prefix("/").unwrap()).unwrap();
    }
    let config =
        format!("version: 0.1\nlog:\n  level: warn\nstorage:\n  inmemory: {{}}\nhttp:\n  addr: :{PROBE_PORT}\n");
    let mut header = tar::Header::new_gnu();
    header.set_size(config.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    tar.append_data(&mut header, "etc/probe.yml", config.as_bytes()).unwrap();
    let archive = tar.into_inner().unwrap();
    let entrypoint = format!("ENTRYPOINT [\"{}\", \"serve\", \"/etc/probe.yml\"]", binary.display());
    let options = bollard::query_parameters::CreateImageOptionsBuilder::default()
        .from_src("-")
        .repo(repo)
        .tag(tag)
        .changes(vec![entrypoint])
        .build();
    let docker = cluster.node(node);
    cluster.block_on(async {
        let mut stream = docker.create_image(Some(options), Some(bollard::body_full(archive.into())), None);
        while let Some(item) = stream.next().await {
            item.unwrap();
        }
    });
}

/// A global service of `image`, its probe port published on every node's
/// address (host mode) as `port`, pulled with `credentials`.
fn probe_service(cluster: &Cluster, name: &str, image: &str, port: u16, credentials: DockerCredentials) {
    use bollard::models::{
        EndpointPortConfig, EndpointPortConfigProtocolEnum, EndpointPortConfigPublishModeEnum, EndpointSpec,
        ServiceSpec, ServiceSpecMode, TaskSpec, TaskSpecContainerSpec,
    };
    let spec = ServiceSpec {
        name: Some(name.to_owned()),
        task_template: Some(TaskSpec {
            container_spec: Some(TaskSpecContainerSpec { image: Some(image.to_owned()), ..Default::default() }),
            ..Default::default()
        }),
        mode: Some(ServiceSpecMode { global: Some(HashMap::new()), ..Default::default() }),
        endpoint_spec: Some(EndpointSpec {
            ports: Some(vec![EndpointPortConfig {
                target_port: Some(i64::from(PROBE_PORT)),
                published_port: Some(i64::from(port)),
                protocol: Some(EndpointPortConfigProtocolEnum::TCP),
                publish_mode: Some(EndpointPortConfigPublishModeEnum::HOST),
                name: None,
            }]),
            ..Default::default()
        }),
        ..Default::default()
    };
    cluster.block_on(cluster.node(0).create_service(spec, Some(credentials))).unwrap();
}

/// Pushes `repo:tag` from `node` with `credentials`; the digest, or the error.
fn push(
    cluster: &Cluster,
    node: usize,
    repo: &str,
    tag: &str,
    credentials: DockerCredentials,
) -> Result<String, String> {
    use futures::StreamExt as _;
    let options = bollard::query_parameters::PushImageOptionsBuilder::default().tag(tag).build();
    let docker = cluster.node(node);
    cluster.block_on(async {
        let mut stream = docker.push_image(repo, Some(options), Some(credentials));
        let mut digest = None;
        while let Some(item) = stream.next().await {
            let item = item.map_err(|e| e.to_string())?;
            if let Some(error) = item.error_detail.and_then(|d| d.message) {
                return Err(error);
            }
            if let Some(status) = item.status
                && let Some((_, rest)) = status.split_once("digest: ")
            {
                digest = rest.split_whitespace().next().map(str::to_owned);
            }
        }
        digest.ok_or_else(|| "the push reported no digest".to_owned())
    })
}

/// Pulls `reference` on `node`.
fn pull(cluster: &Cluster, node: usize, reference: &str, credentials: Option<DockerCredentials>) -> Result<(), String> {
    use futures::StreamExt as _;
    let options = bollard::query_parameters::CreateImageOptionsBuilder::default().from_image(reference).build();
    let docker = cluster.node(node);
    cluster.block_on(async {
        let mut stream = docker.create_image(Some(options), None, credentials);
        while let Some(item) = stream.next().await {
            let item = item.map_err(|e| e.to_string())?;
            if let Some(error) = item.error_detail.and_then(|d| d.message) {
                return Err(error);
            }
        }
        Ok(())
    })
}

/// Three nodes in one Swarm with their own host names; an image pushed to
/// the registry over TLS with the right password only, run on every node
/// from there; haproxy over the nodes, under load, while one node is lost;
/// then nothing left behind, and the host engine as it was.
#[test]
fn cluster_selftest() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let host = rt.block_on(async { Docker::connect_with_defaults().unwrap().negotiate_version().await });
    let host = host.expect("this test needs the host's Docker engine (cargo xtask test and .ci/run start one)");
    let host_before = host_swarm(&host, &rt);

    let started = Instant::now();
    let cluster = Cluster::start(3);
    eprintln!("figure: 3-node cluster up, swarm Ready: {:.1} s", started.elapsed().as_secs_f64());

    // Three managers, each with its own host name, address and engine ID.
    let nodes = cluster.block_on(cluster.node(0).list_nodes(None)).unwrap();
    let mut names: Vec<String> = nodes.iter().filter_map(|n| n.description.as_ref()?.hostname.clone()).collect();
    names.sort();
    assert_eq!(names, ["node1", "node2", "node3"]);
    let mut ids = HashSet::new();
    let mut cluster_ids = HashSet::new();
    for i in 0..cluster.len() {
        let info = cluster.block_on(cluster.node(i).info()).unwrap();
        assert_eq!(info.name.as_deref(), Some(cluster.hostname(i)));
        let swarm = info.swarm.unwrap();
        assert_eq!(swarm.node_addr.as_deref(), Some(cluster.ip(i).to_string().as_str()));
        assert_eq!(swarm.node_id.as_deref(), Some(cluster.node_id(i)));
        assert_eq!(swarm.control_available, Some(true), "{} is not a manager", cluster.hostname(i));
        assert!(ids.insert(info.id.unwrap()), "two engines with one ID");
        cluster_ids.insert(swarm.cluster.and_then(|c| c.id).unwrap());
        assert!(cluster.data_root(i).join("swarm").is_dir());
        assert!(cluster.data_root(i).starts_with(cluster.state_dir(i)));
    }
    assert_eq!(cluster_ids.len(), 1, "the nodes are in different swarms");
    let ours = cluster_ids.into_iter().next().unwrap();
    assert_eq!(cluster.manager_host(), cluster.host(0));
    assert!(cluster.manager_host().starts_with("unix:///"), "{}", cluster.manager_host());

    // The registry, from the nodes' engines: TLS with the test CA, basic auth.
    let started = Instant::now();
    let registry = Registry::start(cluster.bridge_ip());
    eprintln!("figure: registry up: {:.1} s", started.elapsed().as_secs_f64());
    let repo = format!("{}/bxc-selftest", registry.address());
    import_probe_image(&cluster, 0, &repo, "1");
    let mut wrong = registry.credentials();
    wrong.password = Some("not-the-password".to_owned());
    let refused = push(&cluster, 0, &repo, "1", wrong.clone()).expect_err("a push with a wrong password went through");
    assert!(refused.contains("unauthorized") || refused.contains("authentication required"), "{refused}");
    let digest = push(&cluster, 0, &repo, "1", registry.credentials()).unwrap();
    assert!(digest.starts_with("sha256:"), "{digest}");
    let image = format!("{repo}@{digest}");
    let refused = pull(&cluster, 1, &image, Some(wrong)).expect_err("a pull with a wrong password went through");
    assert!(refused.contains("unauthorized") || refused.contains("no basic auth"), "{refused}");
    pull(&cluster, 1, &image, None).expect_err("a pull without credentials went through");
    let config_dir = tempfile::tempdir().unwrap();
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(registry.write_docker_config(config_dir.path())).unwrap()).unwrap();
    let auth = config["auths"][registry.address()]["auth"].as_str().unwrap();
    let auth = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, auth).unwrap();
    assert_eq!(auth, format!("{}:{}", registry.user(), registry.password()).into_bytes());
    assert!(std::fs::read_to_string(registry.ca_path()).unwrap().starts_with("-----BEGIN CERTIFICATE-----"));

    // A task on every node, pulled from the registry by digest, its port
    // published on the node's address.
    let started = Instant::now();
    let port = 15000;
    probe_service(&cluster, "bxc-selftest", &image, port, registry.credentials());
    let deadline = Instant::now() + START_BOUND;
    for i in 0..cluster.len() {
        let at = SocketAddr::from((cluster.ip(i), port));
        while !matches!(http_get(at, "/v2/", &[], Duration::from_secs(2)), Ok((200, _))) {
            assert!(Instant::now() < deadline, "no task answers on {at}\n{}", cluster.log_tail(i, 20));
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    eprintln!(
        "figure: a global service pulled from the registry, answering on 3 nodes: {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // A node whose firewall rejects the registry cannot pull; unblocked, it can.
    cluster.block(1, registry.address());
    let refused = pull(&cluster, 1, &image, Some(registry.credentials())).expect_err("a blocked node pulled");
    assert!(refused.contains("connection refused"), "{refused}");
    cluster.unblock(1, registry.address());
    pull(&cluster, 1, &image, Some(registry.credentials())).unwrap();

    // haproxy over the nodes; a node lost under load: every request answered.
    let backends: Vec<(String, u16)> = (0..cluster.len()).map(|i| (cluster.ip(i).to_string(), port)).collect();
    let haproxy = Haproxy::start(&backends, "/v2/");
    assert!(haproxy.wait_up(3, Duration::from_secs(15)), "{}", haproxy.summary());
    let (status, csv) = http_get(haproxy.stats_addr(), "/stats;csv", &[], Duration::from_secs(5)).unwrap();
    assert!(status == 200 && csv.starts_with("# pxname,svname,"), "{status} {csv}");
    let load = Load::start(haproxy.address(), "/v2/", 100, 10_000, Duration::from_secs(60));
    std::thread::sleep(Duration::from_millis(500));
    let started = Instant::now();
    cluster.stop_node(2);
    eprintln!("figure: node3 stopped: {:.1} s", started.elapsed().as_secs_f64());
    std::thread::sleep(Duration::from_millis(1500));
    let load = load.finish();
    eprintln!("{load}");
    eprintln!("{}", haproxy.summary());
    assert!(load.sent >= 150 && load.failed == 0, "{load}");
    assert!(load.elapsed < Duration::from_secs(30), "finish did not stop the load: {load}");
    let stats = haproxy.stats();
    assert_eq!(stats.len(), 3);
    assert!(stats[0].is_up() && stats[1].is_up() && stats[0].sessions > 0, "{}", haproxy.summary());
    assert!(stats[2].status.starts_with("DOWN"), "{}", stats[2]);
    // Nothing listens: every request fails, each counted once, with its reason.
    let nothing = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port(Ipv4Addr::LOCALHOST)));
    let load = Load::start(nothing, "/", 50, 5, Duration::from_secs(5)).wait();
    assert_eq!((load.sent, load.ok, load.failed), (5, 0, 5), "{load}");
    assert!(load.first_failures[0].contains("connect"), "{load}");

    // The lost node: the other two managers keep the quorum.
    assert!(!cluster.is_running(2));
    assert!(cluster.block_on(cluster.node(2).ping()).is_err(), "node3 still answers");
    assert_eq!(cluster.manager_host(), cluster.host(0));
    let nodes = cluster.block_on(cluster.node(1).list_nodes(None)).expect("no quorum after losing one node");
    assert_eq!(nodes.len(), 3);

    // The host engine is not in our swarm.
    assert_ne!(host_swarm(&host, &rt).2, ours, "the host engine is in the test's swarm");

    let footprint = cluster.footprint().and(registry.footprint()).and(haproxy.footprint());
    drop(haproxy);
    drop(registry);
    let started = Instant::now();
    drop(cluster);
    eprintln!("figure: cluster teardown (two nodes running a task): {:.1} s", started.elapsed().as_secs_f64());
    let left = footprint.leftovers();
    assert!(left.is_empty(), "left behind:\n{}", left.join("\n"));

    // The host engine answers, in the swarm state it had (another test of this
    // binary may make and leave a swarm of its own meanwhile: said, not failed).
    let host_after = host_swarm(&host, &rt);
    assert_ne!(host_after.2, ours, "the host engine is in the test's swarm");
    if host_after != host_before {
        eprintln!("note: the host engine's swarm changed during the test: {host_before:?} -> {host_after:?}");
    }
}
