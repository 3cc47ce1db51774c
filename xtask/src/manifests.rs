//! `cargo xtask manifests`: a Compose file for `docker stack deploy`, or
//! Kubernetes objects, that run the runner image, for clusters deployed without
//! `cargo xtask deploy`. They name the key's engine secret; no key is read.

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::{Context as _, bail};
use boxcar_secrets::EnvFile;
use minijinja::value::{Kwargs, Value};
use minijinja::{Environment, UndefinedBehavior};
use serde::Serialize;

use crate::deploy::{
    APP_PORT, DEFAULT_MEMORY_MIB, LABEL_DEPLOYMENT, LABEL_ENV, LABEL_KEY_ID, SWARM_KEY_FILE, all_webhook, check_name,
    data_volume,
};
use crate::keys::Context;

const COMPOSE: &str = include_str!("../../docker/compose.yaml.j2");
const KUBERNETES: &str = include_str!("../../docker/kubernetes.yaml.j2");

/// Print deployment manifests of the runner image: a Compose file or Kubernetes objects.
///
/// For clusters run with `docker stack deploy` or `kubectl apply` instead of
/// `cargo xtask deploy`. Nothing secret is read or written: the manifests mount
/// the environment's key from the engine secret `<name>-key-<key id>`, and
/// their first lines give the command that creates it from the key file.
/// One instance unless every bot takes updates by webhook.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Deployment environment (deploy-config/<ENV>.toml).
    #[arg(long, value_name = "ENV")]
    env: String,
    /// What to print.
    #[arg(long, value_enum)]
    format: Format,
    /// Name of the deployment (default: app-<ENV>). The secret, the data volume
    /// and the Kubernetes objects are named after it.
    #[arg(long, value_name = "NAME")]
    name: Option<String>,
    /// The image to run, as the cluster's nodes find it.
    #[arg(long, default_value = "app:latest", value_name = "IMAGE")]
    image: String,
    /// Number of instances. More than one needs every bot in webhook mode: two
    /// pollers of one bot get 409 Conflict.
    #[arg(long, default_value_t = 1, value_name = "N")]
    replicas: u64,
    /// Memory limit in MiB.
    #[arg(long, default_value_t = DEFAULT_MEMORY_MIB, value_name = "MIB")]
    memory_mib: u64,
    /// Port of the dashboard and webhooks: published on every Swarm node, or the
    /// Service's port.
    #[arg(long, default_value_t = APP_PORT, value_name = "PORT")]
    publish: u16,
    /// Write the manifests to PATH (replaced atomically) instead of stdout.
    #[arg(long, value_name = "PATH")]
    out: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Format {
    /// A Compose file (schema 3.8) for `docker stack deploy`.
    Compose,
    /// A Deployment, its PersistentVolumeClaim, a Service and a NetworkPolicy, for `kubectl apply`.
    Kubernetes,
}

/// What the templates are rendered from, every value checked.
#[derive(Debug, Serialize)]
struct Spec {
    env: String,
    name: String,
    image: String,
    replicas: u64,
    memory_mib: u64,
    publish: u16,
    /// `<name>-key-<key id>`, the name `cargo xtask deploy --swarm` gives the secret too.
    secret: String,
    /// `<env>-<key id>.key`, the key file's name in the key folder.
    key_file_name: String,
    data_volume: String,
    all_webhook: bool,
    app_port: u16,
    /// Where the key is mounted as a file ([`SWARM_KEY_FILE`]): its folder and name.
    key_file: &'static str,
    key_dir: &'static str,
    key_name: &'static str,
    key_id: String,
}

pub(crate) fn run(ctx: &Context, args: Args) -> anyhow::Result<()> {
    let file = ctx.load_env(&args.env)?;
    let spec = spec(&file, &args)?;
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

fn spec(file: &EnvFile, args: &Args) -> anyhow::Result<Spec> {
    let env = file.env().to_owned();
    let name = args.name.clone().unwrap_or_else(|| format!("app-{}", env.replace('_', "-")));
    check_name(&name)?;
    let all_webhook = all_webhook(file);
    if args.replicas == 0 {
        bail!("--replicas must be at least 1");
    }
    if args.replicas > 1 && !all_webhook {
        bail!(
            "--replicas {}: environment `{env}` has a bot in polling mode, and two pollers of one bot get \
             409 Conflict from Telegram; use one replica, or set mode = \"webhook\" on every bot",
            args.replicas
        );
    }
    if args.memory_mib < 16 {
        bail!("--memory-mib {}: give at least 16", args.memory_mib);
    }
    if args.publish == 0 {
        bail!("--publish 0: give the port to publish, like 8080");
    }
    if args.format == Format::Kubernetes && !env.ends_with(|c: char| c.is_ascii_alphanumeric()) {
        // Kubernetes label values end with a letter or digit; the env is one.
        bail!(
            "environment `{env}` ends with `{}`, which a Kubernetes label value cannot",
            env.chars().last().unwrap_or('-')
        );
    }
    let (key_dir, key_name) = SWARM_KEY_FILE.rsplit_once('/').context("the key file path has a folder")?;
    let key_id = file.public_key().key_id().to_string();
    Ok(Spec {
        secret: format!("{name}-key-{key_id}"),
        key_file_name: format!("{env}-{key_id}.key"),
        data_volume: data_volume(&name),
        all_webhook,
        image: args.image.clone(),
        replicas: args.replicas,
        memory_mib: args.memory_mib,
        publish: args.publish,
        app_port: APP_PORT,
        key_file: SWARM_KEY_FILE,
        key_dir,
        key_name,
        key_id,
        env,
        name,
    })
}

fn render(format: Format, spec: &Spec) -> anyhow::Result<String> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.set_keep_trailing_newline(true);
    env.add_filter("tojson", tojson);
    // The names end in `.yaml.j2`, so minijinja also escapes any value printed
    // without `tojson` as JSON.
    let (template, source) = match format {
        Format::Compose => ("compose.yaml.j2", COMPOSE),
        Format::Kubernetes => ("kubernetes.yaml.j2", KUBERNETES),
    };
    env.add_template(template, source).with_context(|| format!("parsing docker/{template}"))?;
    let mut labels = Vec::new();
    if format == Format::Kubernetes {
        labels.push(("app.kubernetes.io/name", spec.name.clone()));
    }
    labels.extend([
        (LABEL_DEPLOYMENT, spec.name.clone()),
        (LABEL_ENV, spec.env.clone()),
        (LABEL_KEY_ID, spec.key_id.clone()),
    ]);
    let memory = match format {
        Format::Compose => format!("{}M", spec.memory_mib),
        Format::Kubernetes => format!("{}Mi", spec.memory_mib),
    };
    // Swarm's update and rollback order.
    let order = if spec.all_webhook { "start-first" } else { "stop-first" };
    let ctx = minijinja::context! { labels => labels, order => order, memory => memory, ..Value::from_serialize(spec) };
    env.get_template(template)?.render(ctx).with_context(|| format!("rendering docker/{template}"))
}

/// minijinja's `tojson`, then `\uXXXX` for what JSON leaves raw but YAML
/// cannot hold raw: DEL and the C1 controls (of which U+0085 is a line break
/// to YAML 1.1, Docker's parser), U+2028 and U+2029 (line breaks to YAML 1.1),
/// the byte-order mark and the non-characters U+FFFE and U+FFFF. All are in the
/// Basic Multilingual Plane, so one `\u` escape is the same character to both
/// languages; anything else (YAML has no `\u` surrogate pairs) stays as it is.
fn tojson(value: &Value) -> Result<Value, minijinja::Error> {
    let json = minijinja::filters::tojson(value, None, Kwargs::from_iter(std::iter::empty::<(&str, Value)>()))?;
    let json = json.as_str().unwrap_or_default();
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}' | '\u{feff}' | '\u{fffe}' | '\u{ffff}') {
            out.push_str(&format!("\\u{:04x}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    Ok(Value::from_safe_string(out))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::Path;

    use boxcar_secrets::SecretKey;
    use serde::Deserialize as _;
    use serde_norway::Value as Yaml;

    use super::*;

    fn env_file(key: &SecretKey, modes: &[&str]) -> EnvFile {
        let mut text = format!("public_key = \"{}\"\n", key.public_key().to_base64());
        for (i, mode) in modes.iter().enumerate() {
            text.push_str(&format!(
                "\n[[bots]]\nname = \"bot{i}\"\ntoken_secret = \"bot{i}_token\"\nmode = \"{mode}\"\n"
            ));
        }
        EnvFile::parse(Path::new("deploy-config/staging.toml"), &text).unwrap()
    }

    fn args(format: Format) -> Args {
        Args {
            env: "staging".to_owned(),
            format,
            name: None,
            image: "app:latest".to_owned(),
            replicas: 1,
            memory_mib: DEFAULT_MEMORY_MIB,
            publish: APP_PORT,
            out: None,
        }
    }

    /// The text, and each of its YAML documents.
    fn manifests(file: &EnvFile, args: &Args) -> (String, Vec<Yaml>) {
        let text = render(args.format, &spec(file, args).unwrap()).unwrap();
        let docs = serde_norway::Deserializer::from_str(&text).map(|doc| Yaml::deserialize(doc).unwrap()).collect();
        (text, docs)
    }

    /// The value at a path of keys and indexes separated by `.`; a key with dots
    /// (a label) is indexed directly instead.
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
    fn compose_for_a_polling_bot() {
        let key = SecretKey::generate();
        let file = env_file(&key, &["polling"]);
        let (text, docs) = manifests(&file, &args(Format::Compose));
        assert_eq!(docs.len(), 1);
        let doc = &docs[0];
        let secret = format!("app-staging-key-{}", key.key_id());
        assert_eq!(str_at(doc, "version"), "3.8");
        let app = &doc["services"]["app"];
        assert_eq!(str_at(app, "image"), "app:latest");
        assert_eq!(str_at(app, "user"), "65532:65532");
        assert_eq!(app["read_only"], Yaml::Bool(true));
        assert_eq!(str_at(app, "cap_drop.0"), "ALL");
        assert_eq!(str_at(app, "security_opt.0"), "no-new-privileges:true");
        assert_eq!(str_at(app, "environment.DEPLOY_ENV"), "staging");
        assert_eq!(str_at(app, "environment.SECRET_KEY_FILE"), "/run/secrets/boxcar-key");
        assert_eq!(str_at(app, "secrets.0.source"), "boxcar-key");
        assert_eq!(str_at(app, "secrets.0.target"), "boxcar-key");
        assert_eq!(str_at(app, "secrets.0.uid"), "65532");
        assert_eq!(get(app, "secrets.0.mode").as_u64(), Some(0o400));
        assert_eq!(str_at(app, "volumes.0"), "data:/data");
        assert_eq!(str_at(app, "volumes.1.type"), "tmpfs");
        assert_eq!(str_at(app, "volumes.1.target"), "/tmp");
        assert_eq!(get(app, "ports.0.target").as_u64(), Some(8080));
        assert_eq!(get(app, "ports.0.published").as_u64(), Some(8080));
        assert_eq!(str_at(app, "healthcheck.test.2"), "healthcheck");
        assert_eq!(get(app, "deploy.replicas").as_u64(), Some(1));
        assert_eq!(str_at(app, "deploy.resources.limits.memory"), "256M");
        assert_eq!(str_at(app, "deploy.update_config.order"), "stop-first");
        assert_eq!(str_at(app, "deploy.update_config.failure_action"), "rollback");
        assert_eq!(str_at(app, "deploy.rollback_config.order"), "stop-first");
        let labels = &app["deploy"]["labels"];
        assert_eq!(labels[LABEL_DEPLOYMENT].as_str(), Some("app-staging"));
        assert_eq!(labels[LABEL_ENV].as_str(), Some("staging"));
        assert_eq!(labels[LABEL_KEY_ID].as_str(), Some(key.key_id().to_string().as_str()));
        assert_eq!(doc["secrets"]["boxcar-key"]["external"], Yaml::Bool(true));
        assert_eq!(str_at(doc, "secrets.boxcar-key.name"), secret);
        assert_eq!(str_at(doc, "volumes.data.name"), "app-staging-data");
        // The header says how to make the secret from the key file.
        assert!(text.contains(&format!("docker secret create \"{secret}\" \"$KEY_FILE\"")), "{text}");
        assert!(text.contains(&format!("~/.config/boxcar/keys/\"staging-{}.key\"", key.key_id())), "{text}");
    }

    #[test]
    fn compose_for_webhooks_starts_the_new_instance_first() {
        let file = env_file(&SecretKey::generate(), &["webhook", "webhook"]);
        let (_, docs) = manifests(&file, &Args { replicas: 3, memory_mib: 64, ..args(Format::Compose) });
        let deploy = &docs[0]["services"]["app"]["deploy"];
        assert_eq!(deploy["replicas"].as_u64(), Some(3));
        assert_eq!(str_at(deploy, "update_config.order"), "start-first");
        assert_eq!(str_at(deploy, "rollback_config.order"), "start-first");
        assert_eq!(str_at(deploy, "resources.limits.memory"), "64M");
    }

    #[test]
    fn kubernetes_for_a_polling_bot() {
        let key = SecretKey::generate();
        let file = env_file(&key, &["polling"]);
        let (text, docs) = manifests(&file, &Args { publish: 80, ..args(Format::Kubernetes) });
        let kinds: Vec<_> = docs.iter().map(|d| str_at(d, "kind")).collect();
        assert_eq!(kinds, ["Deployment", "PersistentVolumeClaim", "Service", "NetworkPolicy"]);
        assert!(!kinds.contains(&"Secret"));
        let secret = format!("app-staging-key-{}", key.key_id());

        let deployment = kind(&docs, "Deployment");
        assert_eq!(str_at(deployment, "metadata.name"), "app-staging");
        assert_eq!(get(deployment, "metadata.labels")["app.kubernetes.io/name"].as_str(), Some("app-staging"));
        let labels = &deployment["spec"]["template"]["metadata"]["labels"];
        assert_eq!(labels["app.kubernetes.io/name"].as_str(), Some("app-staging"));
        assert_eq!(labels[LABEL_DEPLOYMENT].as_str(), Some("app-staging"));
        assert_eq!(labels[LABEL_ENV].as_str(), Some("staging"));
        assert_eq!(labels[LABEL_KEY_ID].as_str(), Some(key.key_id().to_string().as_str()));
        let selector = get(deployment, "spec.selector.matchLabels");
        assert_eq!(selector["app.kubernetes.io/name"].as_str(), Some("app-staging"));
        assert_eq!(get(deployment, "spec.replicas").as_u64(), Some(1));
        assert_eq!(str_at(deployment, "spec.strategy.type"), "Recreate");
        let pod = &deployment["spec"]["template"]["spec"];
        assert_eq!(pod["automountServiceAccountToken"], Yaml::Bool(false));
        assert_eq!(pod["securityContext"]["runAsNonRoot"], Yaml::Bool(true));
        for id in ["runAsUser", "runAsGroup", "fsGroup"] {
            assert_eq!(pod["securityContext"][id].as_u64(), Some(65532), "{id}");
        }
        assert_eq!(str_at(pod, "securityContext.seccompProfile.type"), "RuntimeDefault");
        assert!(pod.get("affinity").is_none());
        let container = &pod["containers"][0];
        assert_eq!(str_at(container, "image"), "app:latest");
        assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], Yaml::Bool(true));
        assert_eq!(container["securityContext"]["allowPrivilegeEscalation"], Yaml::Bool(false));
        assert_eq!(str_at(container, "securityContext.capabilities.drop.0"), "ALL");
        assert_eq!(str_at(container, "env.0.name"), "DEPLOY_ENV");
        assert_eq!(str_at(container, "env.0.value"), "staging");
        assert_eq!(str_at(container, "env.1.name"), "SECRET_KEY_FILE");
        assert_eq!(str_at(container, "env.1.value"), "/run/secrets/boxcar-key");
        assert_eq!(str_at(container, "resources.limits.memory"), "256Mi");
        assert_eq!(str_at(container, "livenessProbe.httpGet.path"), "/healthz");
        assert_eq!(get(container, "livenessProbe.httpGet.port").as_u64(), Some(8080));
        assert_eq!(str_at(container, "readinessProbe.httpGet.path"), "/readyz");
        // The secret's item lands where SECRET_KEY_FILE points.
        let mounts = container["volumeMounts"].as_sequence().unwrap();
        let mount = |name: &str| mounts.iter().find(|m| m["name"].as_str() == Some(name)).unwrap();
        assert_eq!(str_at(mount("key"), "mountPath"), "/run/secrets");
        assert_eq!(mount("key")["readOnly"], Yaml::Bool(true));
        assert_eq!(str_at(mount("data"), "mountPath"), "/data");
        assert_eq!(str_at(mount("tmp"), "mountPath"), "/tmp");
        let volumes = pod["volumes"].as_sequence().unwrap();
        let volume = |name: &str| volumes.iter().find(|v| v["name"].as_str() == Some(name)).unwrap();
        assert_eq!(str_at(volume("key"), "secret.secretName"), secret);
        assert_eq!(str_at(volume("key"), "secret.items.0.key"), "boxcar-key");
        assert_eq!(str_at(volume("key"), "secret.items.0.path"), "boxcar-key");
        assert_eq!(get(volume("key"), "secret.defaultMode").as_u64(), Some(0o400));
        assert_eq!(str_at(volume("data"), "persistentVolumeClaim.claimName"), "app-staging-data");
        assert_eq!(str_at(volume("tmp"), "emptyDir.medium"), "Memory");

        let claim = kind(&docs, "PersistentVolumeClaim");
        assert_eq!(str_at(claim, "metadata.name"), "app-staging-data");
        assert_eq!(str_at(claim, "spec.accessModes.0"), "ReadWriteOnce");
        assert_eq!(str_at(claim, "spec.resources.requests.storage"), "1Gi");

        let service = kind(&docs, "Service");
        assert_eq!(str_at(service, "spec.type"), "ClusterIP");
        assert_eq!(get(service, "spec.ports.0.port").as_u64(), Some(80));
        assert_eq!(get(service, "spec.ports.0.targetPort").as_u64(), Some(8080));

        let policy = kind(&docs, "NetworkPolicy");
        assert_eq!(get(policy, "spec.podSelector.matchLabels"), selector);
        let types: Vec<_> = policy["spec"]["policyTypes"].as_sequence().unwrap().iter().map(|t| t.as_str()).collect();
        assert_eq!(types, [Some("Egress"), Some("Ingress")]);
        let ports = |rules: &Yaml| -> BTreeSet<(u64, String)> {
            let rules = rules.as_sequence().unwrap();
            // No rule narrows who may be reached or reach in: ports only.
            assert!(rules.iter().all(|r| r.as_mapping().unwrap().len() == 1), "{rules:?}");
            rules
                .iter()
                .flat_map(|r| r["ports"].as_sequence().unwrap())
                .map(|p| (p["port"].as_u64().unwrap(), str_at(p, "protocol").to_owned()))
                .collect()
        };
        let egress = ports(&policy["spec"]["egress"]);
        let expected: BTreeSet<_> = [(443, "TCP"), (53, "UDP"), (53, "TCP")].map(|(p, t)| (p, t.to_owned())).into();
        assert_eq!(egress, expected);
        assert_eq!(ports(&policy["spec"]["ingress"]), [(8080, "TCP".to_owned())].into());

        assert!(
            text.contains(&format!(
                "kubectl create secret generic \"{secret}\" --from-file=\"boxcar-key\"=\"$KEY_FILE\""
            )),
            "{text}"
        );
    }

    #[test]
    fn kubernetes_for_webhooks_rolls() {
        let file = env_file(&SecretKey::generate(), &["webhook"]);
        let (_, docs) = manifests(&file, &Args { replicas: 2, ..args(Format::Kubernetes) });
        let deployment = kind(&docs, "Deployment");
        assert_eq!(get(deployment, "spec.replicas").as_u64(), Some(2));
        assert_eq!(str_at(deployment, "spec.strategy.type"), "RollingUpdate");
        assert_eq!(get(deployment, "spec.strategy.rollingUpdate.maxSurge").as_u64(), Some(1));
        assert_eq!(get(deployment, "spec.strategy.rollingUpdate.maxUnavailable").as_u64(), Some(0));
        let affinity = get(deployment, "spec.template.spec.affinity.podAffinity");
        let term = get(affinity, "requiredDuringSchedulingIgnoredDuringExecution.0");
        assert_eq!(str_at(term, "topologyKey"), "kubernetes.io/hostname");
    }

    #[test]
    fn a_hostile_image_name_stays_one_string() {
        let file = env_file(&SecretKey::generate(), &["polling"]);
        for image in [
            "x\" : injected\n- y",
            "a\u{85}b\u{2028}c\u{7f}d\u{feff}e\tf'<>&\\é😀",
            "# not a comment",
            "*alias",
            "yes",
            "0400",
        ] {
            let (text, docs) = manifests(&file, &Args { image: image.to_owned(), ..args(Format::Compose) });
            assert_eq!(str_at(&docs[0], "services.app.image"), image, "{text}");
            // The line after the image, and the header's last line, are where they were.
            assert!(text.contains("\n    user: \"65532:65532\"\n"), "{text}");
            assert!(text.lines().all(|l| !l.starts_with("- y")), "{text}");
            let (_, docs) = manifests(&file, &Args { image: image.to_owned(), ..args(Format::Kubernetes) });
            assert_eq!(docs.len(), 4);
            assert_eq!(str_at(kind(&docs, "Deployment"), "spec.template.spec.containers.0.image"), image);
        }
    }

    #[test]
    fn refuses_what_cannot_run() {
        let polling = env_file(&SecretKey::generate(), &["webhook", "polling"]);
        for format in [Format::Compose, Format::Kubernetes] {
            let err = spec(&polling, &Args { replicas: 2, ..args(format) }).unwrap_err().to_string();
            assert!(err.contains("polling") && err.contains("409"), "{err}");
            assert!(spec(&polling, &Args { replicas: 0, ..args(format) }).is_err());
            assert!(spec(&polling, &Args { memory_mib: 8, ..args(format) }).is_err());
            assert!(spec(&polling, &Args { publish: 0, ..args(format) }).is_err());
            assert!(spec(&polling, &Args { name: Some("App_1".to_owned()), ..args(format) }).is_err());
        }
        // No bots at all: the app polls nothing, but nothing says several instances are safe.
        let none = env_file(&SecretKey::generate(), &[]);
        assert!(spec(&none, &Args { replicas: 2, ..args(Format::Compose) }).is_err());
    }

    #[test]
    fn names_follow_the_environment_and_name() {
        let key = SecretKey::generate();
        let text = format!("public_key = \"{}\"\n", key.public_key().to_base64());
        let file = EnvFile::parse(Path::new("deploy-config/eu_west.toml"), &text).unwrap();
        let spec = spec(&file, &Args { env: "eu_west".to_owned(), ..args(Format::Kubernetes) }).unwrap();
        assert_eq!(spec.name, "app-eu-west");
        assert_eq!(spec.secret, format!("app-eu-west-key-{}", key.key_id()));
        assert_eq!(spec.data_volume, "app-eu-west-data");
        let named = super::spec(&file, &Args { name: Some("bots".to_owned()), ..args(Format::Compose) }).unwrap();
        assert_eq!(named.secret, format!("bots-key-{}", key.key_id()));
        // A Kubernetes label value ends with a letter or digit.
        let file = EnvFile::parse(Path::new("deploy-config/prod_.toml"), &text).unwrap();
        let with_name = Args { name: Some("prod".to_owned()), ..args(Format::Kubernetes) };
        assert!(super::spec(&file, &with_name).is_err());
        assert!(super::spec(&file, &Args { format: Format::Compose, ..with_name }).is_ok());
    }

    #[test]
    fn no_output_holds_the_secret_key() {
        let key = SecretKey::generate();
        let b64 = key.to_base64();
        let file = env_file(&key, &["webhook"]);
        for format in [Format::Compose, Format::Kubernetes] {
            for replicas in [1, 2] {
                let (text, _) = manifests(&file, &Args { replicas, ..args(format) });
                assert!(!text.contains(b64.as_str()));
                assert!(!text.contains(b64.trim_end_matches('=')));
            }
        }
    }
}
