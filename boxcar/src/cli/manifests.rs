//! `cargo xtask manifests`: a Compose file for `docker stack deploy`, or
//! Kubernetes objects, that run a service's image, for clusters deployed
//! without `cargo xtask deploy`. They name the key's engine secret; no key is
//! read.

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::Context as _;
use xshell::Shell;

use crate::cli::args::EnvArg;
use crate::ops::deploy::{Ask, Deploy};
use crate::ops::manifests::{Format, render, spec};
use crate::vocab::contract::{Instances, Service};
use crate::vocab::project::Context;

/// Print deployment manifests of a service's image: a Compose file or Kubernetes objects.
///
/// For clusters run with `docker stack deploy` or `kubectl apply` instead of
/// `cargo xtask deploy`. Nothing secret is read or written: the manifests mount
/// the environment's key from the engine secret `<name>-key-<key id>`, and
/// their first lines give the command that creates it from the key file.
/// One instance unless the service's contract allows more.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    at: EnvArg,
    /// What to print.
    #[arg(long, value_enum)]
    format: Format,
    /// Name of the deployment (default: <service>-<ENV>). The secret, the data
    /// volume and the Kubernetes objects are named after it.
    #[arg(long, value_name = "NAME")]
    name: Option<String>,
    /// The image to run, as the cluster's nodes find it: best the
    /// REGISTRY/REPO@sha256:… that `image --push` prints, so every node runs
    /// the same bytes (default: <service>:latest).
    #[arg(long, value_name = "IMAGE")]
    image: Option<String>,
    /// Number of instances. More than one needs a service whose contract
    /// allows several.
    #[arg(long, default_value_t = 1, value_name = "N")]
    replicas: u64,
    /// Memory limit in MiB (default: the contract's memory_mib).
    #[arg(long, value_name = "MIB")]
    memory_mib: Option<u64>,
    /// The port published on every Swarm node, or the Kubernetes Service's port
    /// (default: the service's port).
    #[arg(long, value_name = "PORT")]
    publish: Option<u16>,
    /// Write the manifests to PATH (replaced atomically) instead of stdout.
    #[arg(long, value_name = "PATH")]
    out: Option<PathBuf>,
}

pub(crate) fn run(sh: &Shell, ctx: &mut Context, args: Args) -> anyhow::Result<()> {
    let service = ctx.service(args.at.service.name())?;
    // The deployment's flags checked as `deploy` checks them, before the
    // service is built to answer its instance rule.
    let deploy = checked(&service, &args)?;
    let file = ctx.load_env(&args.at.env)?;
    let many = match &service.instances {
        Instances::One => false,
        Instances::Many => true,
        Instances::Ask(ask) => {
            eprintln!(
                "asking the service: `{}` (built on this machine)",
                crate::ops::service_cmd::describe(&service, ask)
            );
            let binary = crate::ops::service_cmd::build_native(sh, &ctx.root, &service)?;
            let answer = crate::ops::service_cmd::native(&binary, ask, file.path())?;
            crate::ops::service_cmd::many_from(&service, ask, &answer)?
        }
    };
    let deployment = deploy.deployment(many, file.public_key().key_id())?;
    let spec = spec(&service, &file, args.format, args.image.as_deref(), deployment)?;
    let text = render(args.format, &spec)?;
    match &args.out {
        Some(path) => {
            let path = ctx.user_path(path);
            boxcar_secrets::write_atomic(&path, text.as_bytes(), Some(0o644))
                .with_context(|| format!("writing {}", path.display()))?;
            eprintln!(
                "wrote {}; its first lines say how to create the secret `{}` it uses",
                path.display(),
                spec.secret
            );
        }
        None => {
            let mut stdout = std::io::stdout().lock();
            stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush()).context("writing to stdout")?;
        }
    }
    Ok(())
}

/// The deployment `args` ask for, checked as `deploy` checks its own.
fn checked(service: &Service, args: &Args) -> anyhow::Result<Deploy> {
    let publish = args.publish.unwrap_or(service.port);
    if publish == 0 {
        anyhow::bail!("--publish 0: give the port to publish, like {}", service.port);
    }
    let ask = Ask {
        name: args.name.clone(),
        swarm: true,
        replicas: args.replicas,
        publish: Some(publish.to_string()),
        memory_mib: args.memory_mib,
        ..Ask::standalone(&args.at.env)
    };
    Ok(Deploy::new(service, ask)?)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::Path;

    use boxcar_secrets::{EnvFile, SecretKey};
    use serde::Deserialize as _;
    use serde_norway::Value as Yaml;

    use super::*;
    use crate::ops::manifests::Spec;
    use crate::vocab::labels::{DEPLOYMENT as LABEL_DEPLOYMENT, ENV as LABEL_ENV, KEY_ID as LABEL_KEY_ID};

    /// `checked`, the deployment with `many`, and `spec`: what `run` does.
    fn spec_of(s: &Service, file: &EnvFile, args: &Args, many: bool) -> anyhow::Result<Spec> {
        let deployment = checked(s, args)?.deployment(many, file.public_key().key_id())?;
        Ok(spec(s, file, args.format, args.image.as_deref(), deployment)?)
    }
    use crate::vocab::contract::tests::service;

    fn env_file(key: &SecretKey, env: &str) -> EnvFile {
        let text = format!("public_key = \"{}\"\n", key.public_key().to_base64());
        EnvFile::parse(Path::new(&format!("deploy-config/{env}.toml")), &text).unwrap()
    }

    fn args(format: Format) -> Args {
        Args {
            at: EnvArg { env: "staging".to_owned(), service: crate::cli::args::ServiceArg::default() },
            format,
            name: None,
            image: None,
            replicas: 1,
            memory_mib: None,
            publish: None,
            out: None,
        }
    }

    /// The text, and each of its YAML documents.
    fn manifests(file: &EnvFile, args: &Args, many: bool) -> (String, Vec<Yaml>) {
        manifests_of(&service(), file, args, many)
    }

    fn manifests_of(s: &Service, file: &EnvFile, args: &Args, many: bool) -> (String, Vec<Yaml>) {
        let text = render(args.format, &spec_of(s, file, args, many).unwrap()).unwrap();
        let docs = serde_norway::Deserializer::from_str(&text).map(|doc| Yaml::deserialize(doc).unwrap()).collect();
        (text, docs)
    }

    /// The value at a path of keys and indexes separated by `.`.
    fn get<'a>(value: &'a Yaml, path: &str) -> &'a Yaml {
        path.split('.').fold(value, |v, part| match part.parse::<usize>() {
            Ok(i) => &v[i],
            Err(_) => &v[part],
        })
    }

    fn str_at<'a>(value: &'a Yaml, path: &str) -> &'a str {
        get(value, path).as_str().unwrap_or_else(|| panic!("{path} is not a string: {:?}", get(value, path)))
    }

    fn kind<'a>(docs: &'a [Yaml], kind: &str) -> &'a Yaml {
        docs.iter().find(|d| d["kind"].as_str() == Some(kind)).unwrap_or_else(|| panic!("no {kind}"))
    }

    #[test]
    fn compose_for_one_instance() {
        let key = SecretKey::generate();
        let file = env_file(&key, "staging");
        let (text, docs) = manifests(&file, &args(Format::Compose), false);
        assert_eq!(docs.len(), 1);
        let doc = &docs[0];
        let secret = format!("svc-staging-key-{}", key.key_id());
        assert_eq!(str_at(doc, "version"), "3.8");
        let svc = &doc["services"]["svc"];
        assert_eq!(str_at(svc, "image"), "svc:latest");
        assert_eq!(str_at(svc, "user"), "1000:1000");
        assert_eq!(svc["read_only"], Yaml::Bool(true));
        assert_eq!(str_at(svc, "cap_drop.0"), "ALL");
        assert_eq!(str_at(svc, "security_opt.0"), "no-new-privileges:true");
        assert_eq!(str_at(svc, "environment.DEPLOY_ENV"), "staging");
        assert_eq!(str_at(svc, "environment.SECRET_KEY_FILE"), "/run/secrets/boxcar-key");
        assert_eq!(str_at(svc, "secrets.0.source"), "boxcar-key");
        assert_eq!(str_at(svc, "secrets.0.target"), "boxcar-key");
        assert_eq!(str_at(svc, "secrets.0.uid"), "1000");
        assert_eq!(get(svc, "secrets.0.mode").as_u64(), Some(0o400));
        assert_eq!(str_at(svc, "volumes.0.source"), "data");
        assert_eq!(str_at(svc, "volumes.0.target"), "/var/lib/svc");
        assert_eq!(str_at(svc, "volumes.1.type"), "tmpfs");
        assert_eq!(str_at(svc, "volumes.1.target"), "/tmp");
        assert_eq!(get(svc, "ports.0.target").as_u64(), Some(9000));
        assert_eq!(get(svc, "ports.0.published").as_u64(), Some(9000));
        let test: Vec<&str> =
            svc["healthcheck"]["test"].as_sequence().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
        assert_eq!(test, ["CMD", "/usr/local/bin/boxcar-probe", "http", "9000", "/health"]);
        assert_eq!(get(svc, "deploy.replicas").as_u64(), Some(1));
        assert_eq!(str_at(svc, "deploy.resources.limits.memory"), format!("{}M", crate::vocab::defaults::MEMORY_MIB));
        assert_eq!(str_at(svc, "deploy.update_config.order"), "stop-first");
        assert_eq!(str_at(svc, "deploy.update_config.failure_action"), "rollback");
        assert_eq!(str_at(svc, "deploy.rollback_config.order"), "stop-first");
        let labels = &svc["deploy"]["labels"];
        assert_eq!(labels[LABEL_DEPLOYMENT].as_str(), Some("svc-staging"));
        assert_eq!(labels[LABEL_ENV].as_str(), Some("staging"));
        assert_eq!(labels[LABEL_KEY_ID].as_str(), Some(key.key_id().to_string().as_str()));
        assert_eq!(doc["secrets"]["boxcar-key"]["external"], Yaml::Bool(true));
        assert_eq!(str_at(doc, "secrets.boxcar-key.name"), secret);
        assert_eq!(str_at(doc, "volumes.data.name"), "svc-staging-data");
        // The header says how to make the secret from the key file.
        assert!(text.contains(&format!("docker secret create \"{secret}\" \"$KEY_FILE\"")), "{text}");
        assert!(text.contains(&format!("~/.config/boxcar/keys/\"staging-{}.key\"", key.key_id())), "{text}");
    }

    #[test]
    fn compose_for_many_starts_the_new_instance_first_and_a_service_without_data_has_no_volume() {
        let file = env_file(&SecretKey::generate(), "staging");
        let (_, docs) = manifests(&file, &Args { replicas: 3, memory_mib: Some(64), ..args(Format::Compose) }, true);
        let deploy = &docs[0]["services"]["svc"]["deploy"];
        assert_eq!(deploy["replicas"].as_u64(), Some(3));
        assert_eq!(str_at(deploy, "update_config.order"), "start-first");
        assert_eq!(str_at(deploy, "rollback_config.order"), "start-first");
        assert_eq!(str_at(deploy, "resources.limits.memory"), "64M");
        let mut no_data = service();
        no_data.data = None;
        no_data.env.retain(|(k, _)| k != "SVC_DATA");
        let (_, docs) = manifests_of(&no_data, &file, &args(Format::Compose), false);
        assert!(docs[0].get("volumes").is_none());
        assert_eq!(str_at(&docs[0]["services"]["svc"], "volumes.0.type"), "tmpfs");
        let (_, docs) = manifests_of(&no_data, &file, &args(Format::Kubernetes), false);
        let kinds: Vec<_> = docs.iter().map(|d| str_at(d, "kind")).collect();
        assert_eq!(kinds, ["Deployment", "Service", "NetworkPolicy"]);
    }

    #[test]
    fn kubernetes_for_one_instance() {
        let key = SecretKey::generate();
        let file = env_file(&key, "staging");
        let (text, docs) = manifests(&file, &Args { publish: Some(80), ..args(Format::Kubernetes) }, false);
        let kinds: Vec<_> = docs.iter().map(|d| str_at(d, "kind")).collect();
        assert_eq!(kinds, ["Deployment", "PersistentVolumeClaim", "Service", "NetworkPolicy"]);
        let secret = format!("svc-staging-key-{}", key.key_id());

        let deployment = kind(&docs, "Deployment");
        assert_eq!(str_at(deployment, "metadata.name"), "svc-staging");
        let labels = &deployment["spec"]["template"]["metadata"]["labels"];
        assert_eq!(labels["app.kubernetes.io/name"].as_str(), Some("svc-staging"));
        assert_eq!(labels[LABEL_DEPLOYMENT].as_str(), Some("svc-staging"));
        assert_eq!(labels[LABEL_KEY_ID].as_str(), Some(key.key_id().to_string().as_str()));
        let selector = get(deployment, "spec.selector.matchLabels");
        assert_eq!(selector["app.kubernetes.io/name"].as_str(), Some("svc-staging"));
        assert_eq!(get(deployment, "spec.replicas").as_u64(), Some(1));
        assert_eq!(str_at(deployment, "spec.strategy.type"), "Recreate");
        let pod = &deployment["spec"]["template"]["spec"];
        assert_eq!(pod["automountServiceAccountToken"], Yaml::Bool(false));
        assert_eq!(pod["securityContext"]["runAsNonRoot"], Yaml::Bool(true));
        for id in ["runAsUser", "runAsGroup", "fsGroup"] {
            assert_eq!(pod["securityContext"][id].as_u64(), Some(1000), "{id}");
        }
        assert_eq!(str_at(pod, "securityContext.seccompProfile.type"), "RuntimeDefault");
        assert!(pod.get("affinity").is_none());
        let container = &pod["containers"][0];
        assert_eq!(str_at(container, "name"), "svc");
        assert_eq!(str_at(container, "image"), "svc:latest");
        assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], Yaml::Bool(true));
        assert_eq!(container["securityContext"]["allowPrivilegeEscalation"], Yaml::Bool(false));
        assert_eq!(str_at(container, "securityContext.capabilities.drop.0"), "ALL");
        assert_eq!(str_at(container, "env.0.name"), "DEPLOY_ENV");
        assert_eq!(str_at(container, "env.0.value"), "staging");
        assert_eq!(str_at(container, "env.1.name"), "SECRET_KEY_FILE");
        assert_eq!(str_at(container, "env.1.value"), "/run/secrets/boxcar-key");
        assert_eq!(str_at(container, "livenessProbe.httpGet.path"), "/health");
        assert_eq!(get(container, "livenessProbe.httpGet.port").as_u64(), Some(9000));
        assert_eq!(str_at(container, "readinessProbe.httpGet.path"), "/health");
        let mounts = container["volumeMounts"].as_sequence().unwrap();
        let mount = |name: &str| mounts.iter().find(|m| m["name"].as_str() == Some(name)).unwrap();
        assert_eq!(str_at(mount("key"), "mountPath"), "/run/secrets");
        assert_eq!(mount("key")["readOnly"], Yaml::Bool(true));
        assert_eq!(str_at(mount("data"), "mountPath"), "/var/lib/svc");
        assert_eq!(str_at(mount("tmp"), "mountPath"), "/tmp");
        let volumes = pod["volumes"].as_sequence().unwrap();
        let volume = |name: &str| volumes.iter().find(|v| v["name"].as_str() == Some(name)).unwrap();
        assert_eq!(str_at(volume("key"), "secret.secretName"), secret);
        assert_eq!(get(volume("key"), "secret.defaultMode").as_u64(), Some(0o400));
        assert_eq!(str_at(volume("data"), "persistentVolumeClaim.claimName"), "svc-staging-data");

        let claim = kind(&docs, "PersistentVolumeClaim");
        assert_eq!(str_at(claim, "spec.resources.requests.storage"), crate::vocab::defaults::STORAGE);
        let service = kind(&docs, "Service");
        assert_eq!(get(service, "spec.ports.0.port").as_u64(), Some(80));
        assert_eq!(get(service, "spec.ports.0.targetPort").as_u64(), Some(9000));

        let policy = kind(&docs, "NetworkPolicy");
        assert_eq!(get(policy, "spec.podSelector.matchLabels"), selector);
        let ports = |rules: &Yaml| -> BTreeSet<(u64, String)> {
            let rules = rules.as_sequence().unwrap();
            assert!(rules.iter().all(|r| r.as_mapping().unwrap().len() == 1), "{rules:?}");
            rules
                .iter()
                .flat_map(|r| r["ports"].as_sequence().unwrap())
                .map(|p| (p["port"].as_u64().unwrap(), str_at(p, "protocol").to_owned()))
                .collect()
        };
        let expected: BTreeSet<_> = [(443, "TCP"), (53, "UDP"), (53, "TCP")].map(|(p, t)| (p, t.to_owned())).into();
        assert_eq!(ports(&policy["spec"]["egress"]), expected);
        assert_eq!(ports(&policy["spec"]["ingress"]), [(9000, "TCP".to_owned())].into());
        assert!(
            text.contains(&format!(
                "kubectl create secret generic \"{secret}\" --from-file=\"boxcar-key\"=\"$KEY_FILE\""
            )),
            "{text}"
        );
    }

    #[test]
    fn kubernetes_for_many_rolls_and_a_command_health_check_is_exec() {
        let file = env_file(&SecretKey::generate(), "staging");
        let (_, docs) = manifests(&file, &Args { replicas: 2, ..args(Format::Kubernetes) }, true);
        let deployment = kind(&docs, "Deployment");
        assert_eq!(get(deployment, "spec.replicas").as_u64(), Some(2));
        assert_eq!(str_at(deployment, "spec.strategy.type"), "RollingUpdate");
        assert_eq!(get(deployment, "spec.strategy.rollingUpdate.maxUnavailable").as_u64(), Some(0));
        let term =
            get(deployment, "spec.template.spec.affinity.podAffinity.requiredDuringSchedulingIgnoredDuringExecution.0");
        assert_eq!(str_at(term, "topologyKey"), "kubernetes.io/hostname");
        let mut own = service();
        own.health =
            crate::vocab::contract::Health { http: None, command: Some(vec!["health".to_owned()]), ready: None };
        let (_, docs) = manifests_of(&own, &file, &args(Format::Kubernetes), false);
        let container = get(kind(&docs, "Deployment"), "spec.template.spec.containers.0");
        assert_eq!(str_at(container, "livenessProbe.exec.command.1"), "health");
        assert_eq!(str_at(container, "readinessProbe.exec.command.0"), "/usr/local/bin/svc");
    }

    #[test]
    fn a_hostile_image_name_stays_one_string() {
        let file = env_file(&SecretKey::generate(), "staging");
        for image in [
            "x\" : injected\n- y",
            "a\u{85}b\u{2028}c\u{7f}d\u{feff}e\tf'<>&\\é😀",
            "# not a comment",
            "*alias",
            "yes",
            "0400",
        ] {
            let (text, docs) =
                manifests(&file, &Args { image: Some(image.to_owned()), ..args(Format::Compose) }, false);
            assert_eq!(str_at(&docs[0], "services.svc.image"), image, "{text}");
            assert!(text.contains("\n    user: \"1000:1000\"\n"), "{text}");
            assert!(text.lines().all(|l| !l.starts_with("- y")), "{text}");
            let (_, docs) =
                manifests(&file, &Args { image: Some(image.to_owned()), ..args(Format::Kubernetes) }, false);
            assert_eq!(docs.len(), 4);
            assert_eq!(str_at(kind(&docs, "Deployment"), "spec.template.spec.containers.0.image"), image);
        }
    }

    #[test]
    fn refuses_what_cannot_run() {
        let file = env_file(&SecretKey::generate(), "staging");
        let s = service();
        for format in [Format::Compose, Format::Kubernetes] {
            let err = spec_of(&s, &file, &Args { replicas: 2, ..args(format) }, false).unwrap_err().to_string();
            assert!(err.contains("runs one instance at a time"), "{err}");
            assert!(spec_of(&s, &file, &Args { replicas: 0, ..args(format) }, true).is_err());
            assert!(spec_of(&s, &file, &Args { memory_mib: Some(8), ..args(format) }, false).is_err());
            assert!(spec_of(&s, &file, &Args { publish: Some(0), ..args(format) }, false).is_err());
            assert!(spec_of(&s, &file, &Args { name: Some("Svc_1".to_owned()), ..args(format) }, false).is_err());
        }
    }

    #[test]
    fn names_follow_the_environment_and_name() {
        let key = SecretKey::generate();
        let file = env_file(&key, "eu_west");
        let s = service();
        let spec_k = spec_of(
            &s,
            &file,
            &Args {
                at: EnvArg { env: "eu_west".to_owned(), ..args(Format::Kubernetes).at },
                ..args(Format::Kubernetes)
            },
            false,
        )
        .unwrap();
        assert_eq!(spec_k.name, "svc-eu-west");
        assert_eq!(spec_k.secret, format!("svc-eu-west-key-{}", key.key_id()));
        assert_eq!(spec_k.data_volume, "svc-eu-west-data");
        let named =
            spec_of(&s, &file, &Args { name: Some("edge".to_owned()), ..args(Format::Compose) }, false).unwrap();
        assert_eq!(named.secret, format!("edge-key-{}", key.key_id()));
        // A Kubernetes label value ends with a letter or digit.
        let file = env_file(&key, "prod_");
        let with_name = Args { name: Some("prod".to_owned()), ..args(Format::Kubernetes) };
        assert!(spec_of(&s, &file, &with_name, false).is_err());
        assert!(spec_of(&s, &file, &Args { format: Format::Compose, ..with_name }, false).is_ok());
    }

    #[test]
    fn no_output_holds_the_secret_key() {
        let key = SecretKey::generate();
        let b64 = key.to_base64();
        let file = env_file(&key, "staging");
        for format in [Format::Compose, Format::Kubernetes] {
            for replicas in [1, 2] {
                let (text, _) = manifests(&file, &Args { replicas, ..args(format) }, true);
                assert!(!text.contains(b64.as_str()));
                assert!(!text.contains(b64.trim_end_matches('=')));
            }
        }
    }
}
