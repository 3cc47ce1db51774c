//! `manifests --format kubernetes` checked by something that knows
//! Kubernetes, since no cluster runs here: the objects of both services
//! validated by `kubernetes-validate` (PyPI; the API schemas of each version,
//! offline, strict) against the oldest and newest versions it carries, and
//! every pod template held to the Pod Security "restricted" profile. A new
//! sealed value changes the pod template, so `kubectl apply` rolls it.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize as _;
use serde_norway::Value as Yaml;

use crate::{Checkout, Repo};

/// The Kubernetes versions validated against: the oldest and the newest the
/// pinned kubernetes-validate (see `xtask/src/test.rs`) carries.
const VERSIONS: [&str; 2] = ["1.22.0", "1.31.0"];

/// `kubernetes-validate` of the venv `cargo xtask test` makes (BOXCAR_PYTHON).
fn validator() -> PathBuf {
    let python = std::env::var_os("BOXCAR_PYTHON")
        .expect("BOXCAR_PYTHON names the venv's python with kubernetes-validate (cargo xtask test sets it)");
    Path::new(&python).with_file_name("kubernetes-validate")
}

fn validate(file: &Path, version: &str) -> (bool, String) {
    let out = Command::new(validator()).args(["--strict", "-k", version]).arg(file).output().unwrap();
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

fn docs(text: &str) -> Vec<Yaml> {
    serde_norway::Deserializer::from_str(text).map(|d| Yaml::deserialize(d).unwrap()).collect()
}

/// The Pod Security Standards' "restricted" profile, as written in the
/// Kubernetes documentation, for one pod spec: every rule it names.
fn restricted(pod: &Yaml) -> Vec<String> {
    let mut broken = Vec::new();
    let mut rule = |ok: bool, what: &str| {
        if !ok {
            broken.push(what.to_owned());
        }
    };
    let pod_sc = &pod["securityContext"];
    for host in ["hostNetwork", "hostPID", "hostIPC"] {
        rule(pod[host].as_bool() != Some(true), host);
    }
    let allowed_volumes =
        ["configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret"];
    for volume in pod["volumes"].as_sequence().into_iter().flatten() {
        let kinds: Vec<&str> =
            volume.as_mapping().unwrap().keys().filter_map(|k| k.as_str()).filter(|k| *k != "name").collect();
        rule(kinds.iter().all(|k| allowed_volumes.contains(k)), &format!("volume types {kinds:?}"));
    }
    rule(pod_sc["runAsUser"].as_u64() != Some(0), "pod runAsUser 0");
    for container in pod["containers"].as_sequence().unwrap() {
        let sc = &container["securityContext"];
        rule(sc["privileged"].as_bool() != Some(true), "privileged");
        rule(sc["allowPrivilegeEscalation"].as_bool() == Some(false), "allowPrivilegeEscalation must be false");
        let non_root = sc["runAsNonRoot"].as_bool().or(pod_sc["runAsNonRoot"].as_bool());
        rule(non_root == Some(true), "runAsNonRoot must be true");
        rule(sc["runAsUser"].as_u64() != Some(0), "container runAsUser 0");
        let seccomp = sc["seccompProfile"]["type"].as_str().or(pod_sc["seccompProfile"]["type"].as_str());
        rule(matches!(seccomp, Some("RuntimeDefault" | "Localhost")), "seccompProfile RuntimeDefault or Localhost");
        let drop: Vec<&str> =
            sc["capabilities"]["drop"].as_sequence().into_iter().flatten().filter_map(|c| c.as_str()).collect();
        rule(drop.contains(&"ALL"), "capabilities must drop ALL");
        let add: Vec<&str> =
            sc["capabilities"]["add"].as_sequence().into_iter().flatten().filter_map(|c| c.as_str()).collect();
        rule(add.iter().all(|c| *c == "NET_BIND_SERVICE"), "capabilities may add NET_BIND_SERVICE only");
        rule(
            container
                .get("ports")
                .into_iter()
                .flat_map(|p| p.as_sequence())
                .flatten()
                .all(|p| p.get("hostPort").is_none()),
            "hostPort",
        );
    }
    broken
}

fn template_checksum(text: &str) -> String {
    let docs = docs(text);
    let deployment = docs.iter().find(|d| d["kind"].as_str() == Some("Deployment")).unwrap();
    deployment["spec"]["template"]["metadata"]["annotations"]["dev.boxcar/env-checksum"].as_str().unwrap().to_owned()
}

/// The profile check finds what it is for.
#[test]
fn the_restricted_check_finds_each_rule() {
    let bad: Yaml = serde_norway::from_str(
        "hostNetwork: true\nvolumes: [{name: h, hostPath: {path: /}}]\n\
         containers: [{securityContext: {privileged: true, capabilities: {add: [SYS_ADMIN]}}, ports: [{hostPort: 80}]}]\n",
    )
    .unwrap();
    let broken = restricted(&bad);
    for rule in [
        "hostNetwork",
        "volume types [\"hostPath\"]",
        "privileged",
        "allowPrivilegeEscalation must be false",
        "runAsNonRoot must be true",
        "seccompProfile RuntimeDefault or Localhost",
        "capabilities must drop ALL",
        "capabilities may add NET_BIND_SERVICE only",
        "hostPort",
    ] {
        assert!(broken.contains(&rule.to_owned()), "{rule} not found in {broken:?}");
    }
}

#[test]
fn kubernetes_manifests_are_valid_and_restricted() {
    let settings = "\n[[bots]]\nname = \"kube\"\ntoken_secret = \"kube_token\"\n";
    let checkout =
        Checkout::new("kube", &[("kube_token", "3001:kube-test-token-AAAAAAAAAAAAAAAAAAAAAAAAAA")], settings);
    checkout.run(&["keygen", "--service", "hello-api", "--env", "kube"]).ok();
    let mut seal = checkout.cmd(&["encrypt-secret", "--service", "hello-api", "--env", "kube", "api_key"]);
    Repo::run_with(&mut seal, b"kube-test-api-key").ok();
    checkout.commit();
    let image = "registry.example/boxcar@sha256:0000000000000000000000000000000000000000000000000000000000000000";
    let out = checkout.dir.path().join("target");
    std::fs::create_dir_all(&out).unwrap();

    for service in ["app", "hello-api"] {
        let file = out.join(format!("{service}.yaml"));
        let args = ["manifests", "--service", service, "--env", "kube", "--format", "kubernetes", "--image", image];
        checkout.run(&[&args[..], &["--out", file.to_str().unwrap()]].concat()).ok();
        for version in VERSIONS {
            let (ok, said) = validate(&file, version);
            assert!(ok, "{service}'s objects against Kubernetes {version}:\n{said}");
            assert!(said.contains("passed for resource deployment/"), "{said}");
        }
        let text = std::fs::read_to_string(&file).unwrap();
        for doc in docs(&text).iter().filter(|d| d["kind"].as_str() == Some("Deployment")) {
            let broken = restricted(&doc["spec"]["template"]["spec"]);
            assert!(broken.is_empty(), "{service}'s pods break the restricted profile: {broken:?}");
        }
        // The validator is not a rubber stamp: a misspelt field fails it.
        let typo = out.join(format!("{service}-typo.yaml"));
        std::fs::write(&typo, text.replace("containerPort:", "containerPorts:")).unwrap();
        assert!(!validate(&typo, VERSIONS[1]).0, "kubernetes-validate passed a misspelt field");
    }

    // A new sealed value changes the pod template; the same file does not.
    let print = || {
        let args = ["manifests", "--service", "hello-api", "--env", "kube", "--format", "kubernetes", "--image", image];
        template_checksum(&checkout.run(&args).ok().stdout)
    };
    let before = print();
    assert_eq!(print(), before);
    let mut seal = checkout.cmd(&["encrypt-secret", "--service", "hello-api", "--env", "kube", "other_key"]);
    Repo::run_with(&mut seal, b"another-value").ok();
    assert_ne!(print(), before, "a new sealed value left the pod template as it was");
}
