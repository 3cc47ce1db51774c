//! The deploy vocabulary, defined once: names, labels, where the key is
//! mounted, and the validated deployment that `deploy`, `manifests` and a
//! project's own commands (the demo) build from arguments and the contract
//! before anything touches an engine.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{Context as _, bail};
use boxcar_secrets::{KeyId, SecretKey};

use crate::vocab::contract::Service;
use crate::vocab::project::EnvArg;

/// Label on everything boxcar creates: the deployment's name.
pub const LABEL_DEPLOYMENT: &str = "dev.boxcar.deployment";
/// Label: the environment deployed.
pub const LABEL_ENV: &str = "dev.boxcar.env";
/// Label: the key id of the secret key the deployment holds.
pub const LABEL_KEY_ID: &str = "dev.boxcar.key-id";
/// Label: what a resource is for (`app`, `key`, `data`, `probe`, `loader`, `check`).
pub const LABEL_ROLE: &str = "dev.boxcar.role";
/// Label: hash of the settings a deploy applied, so a second identical deploy
/// changes nothing.
pub const LABEL_SPEC: &str = "dev.boxcar.spec";
/// Label: the image a Swarm service runs (tags move; IDs and digests do not).
pub const LABEL_IMAGE_ID: &str = "dev.boxcar.image-id";

/// Where the Swarm secret (or Kubernetes Secret) with the key is mounted as a file.
pub const SWARM_KEY_FILE: &str = "/run/secrets/boxcar-key";
/// On a standalone engine the key lives in its own volume, mounted read-only here.
pub const VOLUME_KEY_DIR: &str = "/run/secrets/boxcar";

/// Which deployment a command is about.
#[derive(Debug, Clone, clap::Args)]
pub struct Target {
    #[command(flatten)]
    pub at: EnvArg,
    /// Docker engine to talk to (default: DOCKER_HOST, else the local socket).
    #[arg(long, value_name = "DOCKER_HOST")]
    pub host: Option<String>,
    /// Name of the container or service (default: <service>-<ENV>). Volumes and
    /// secrets are named after it.
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
}

impl Target {
    /// The deployment's name: `--name`, else `<service>-<env>` with `_` as `-`
    /// (service and Kubernetes names allow neither `_` nor capitals).
    pub fn name(&self, service: &Service) -> anyhow::Result<String> {
        deployment_name(service, &self.at.env, self.name.as_deref())
    }

    /// The deployment's name, its service taken from the project's contract.
    pub fn resolve(&self, ctx: &mut crate::vocab::project::Context) -> anyhow::Result<String> {
        let service = ctx.service(&self.at.service)?;
        self.name(&service)
    }
}

/// `name`, else `<service>-<env>`, checked.
pub fn deployment_name(service: &Service, env: &str, name: Option<&str>) -> anyhow::Result<String> {
    boxcar_secrets::check_env_name(env)
        .map_err(|p| anyhow::anyhow!("environment name `{}` {p}", crate::vocab::show::escape(env)))?;
    let name = name.map_or_else(|| service.deployment_name(env), ToOwned::to_owned);
    check_name(&name)?;
    Ok(name)
}

/// A name every engine and Kubernetes accepts, with room for `-key-<16 hex>`.
pub fn check_name(name: &str) -> anyhow::Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 40
        && name.bytes().all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'-'))
        && !name.starts_with('-')
        && !name.ends_with('-');
    if !ok {
        bail!(
            "deployment name `{}` must be 1 to 40 characters of a-z, 0-9 and `-`, not starting or ending with `-`",
            crate::vocab::show::escape(name)
        );
    }
    // A deploy names its stopped old container and its probe this way.
    if name.ends_with("-previous") || name.ends_with("-next") {
        bail!("deployment name `{name}` must not end in `-previous` or `-next`: deploys use those for a while");
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PublishMode {
    Ingress,
    Host,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum KeyDelivery {
    Auto,
    File,
    Env,
}

/// `[ADDRESS:]PORT`.
#[derive(Debug, Clone)]
pub struct Publish {
    pub address: Option<String>,
    /// 0: any free port.
    pub port: u16,
}

impl Publish {
    pub fn parse(text: &str) -> anyhow::Result<Publish> {
        let (address, port) = match text.rsplit_once(':') {
            Some((a, p)) => (Some(a.trim_start_matches('[').trim_end_matches(']').to_owned()), p),
            None => (None, text),
        };
        let port = port
            .parse::<u16>()
            .map_err(|_| anyhow::anyhow!("--publish `{text}`: expected [ADDRESS:]PORT, like 127.0.0.1:9000 or 9000"))?;
        if let Some(a) = &address
            && a.parse::<std::net::IpAddr>().is_err()
        {
            bail!("--publish `{text}`: `{a}` is not an IP address");
        }
        Ok(Publish { address, port })
    }
}

/// Names, labels, limits and instance rule of one deployment: what `deploy`,
/// `manifests` and the demo share, every value checked.
#[derive(Debug, Clone)]
pub struct Deployment {
    pub service: Service,
    pub env: String,
    pub name: String,
    pub key_id: KeyId,
    pub replicas: u64,
    /// Whether instances may run side by side (the contract, or the service's answer).
    pub many: bool,
    pub memory_bytes: i64,
    pub publish: Publish,
    pub publish_mode: PublishMode,
}

/// What a deployment asks for, before it is checked.
#[derive(Debug, Clone)]
pub struct Request {
    pub env: String,
    pub name: Option<String>,
    pub replicas: u64,
    pub many: bool,
    pub memory_mib: Option<u64>,
    pub publish: Publish,
    pub publish_mode: PublishMode,
}

impl Request {
    /// Checks every rule of `request` against `service`: the name, the
    /// replicas against the instance rule, the memory limit. Returns the
    /// name and the limit in bytes.
    pub fn check(&self, service: &Service) -> anyhow::Result<(String, i64)> {
        let name = deployment_name(service, &self.env, self.name.as_deref())?;
        if self.replicas == 0 {
            bail!("--replicas must be at least 1; `cargo xtask undeploy` stops a deployment");
        }
        if self.replicas > 1 && !self.many {
            bail!(
                "--replicas {}: service `{}` runs one instance at a time in environment `{}` ({}); use one replica",
                self.replicas,
                service.name,
                self.env,
                match service.instances {
                    crate::vocab::contract::Instances::Ask(_) => "its own `instances` answer says so",
                    _ => "boxcar.toml says instances = \"one\"",
                }
            );
        }
        let memory_mib = self.memory_mib.unwrap_or(service.memory_mib);
        let memory_bytes = i64::try_from(memory_mib)
            .ok()
            .and_then(|m| m.checked_mul(1024 * 1024))
            .filter(|m| *m >= 16 * 1024 * 1024)
            .with_context(|| format!("--memory-mib {memory_mib}: give at least 16"))?;
        Ok((name, memory_bytes))
    }
}

impl Deployment {
    /// Checks `request` against `service` ([`Request::check`]), for the key `key_id`.
    pub fn new(service: &Service, request: Request, key_id: KeyId) -> anyhow::Result<Deployment> {
        let (name, memory_bytes) = request.check(service)?;
        Ok(Deployment {
            service: service.clone(),
            env: request.env,
            name,
            key_id,
            replicas: request.replicas,
            many: request.many,
            memory_bytes,
            publish: request.publish,
            publish_mode: request.publish_mode,
        })
    }

    /// Labels common to everything this deployment creates.
    pub fn labels(&self, role: &str) -> HashMap<String, String> {
        [
            (LABEL_DEPLOYMENT, self.name.as_str()),
            (LABEL_ENV, self.env.as_str()),
            (LABEL_ROLE, role),
            (LABEL_KEY_ID, &self.key_id.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    /// `<name>-key-<key id>`: the volume or Swarm secret holding the key.
    pub fn key_resource(&self) -> String {
        format!("{}-key-{}", self.name, self.key_id)
    }

    /// `<name>-data`: the volume holding the service's data on Swarm and in
    /// the manifests (a standalone deploy adds a generation suffix).
    pub fn data_volume(&self) -> String {
        data_volume(&self.name)
    }

    /// Process and thread limit.
    pub fn pids(&self) -> i64 {
        crate::vocab::defaults::PIDS
    }
}

/// Whether an environment is production, where only release builds may run:
/// `[boxcar] production = true` in its file, or, when the file does not say,
/// an environment named `production` or `prod`.
pub fn is_production(file: &boxcar_secrets::EnvFile) -> anyhow::Result<bool> {
    let said = file.table().get("boxcar").and_then(|b| b.get("production"));
    match said {
        None => Ok(matches!(file.env(), "production" | "prod")),
        Some(toml::Value::Boolean(b)) => Ok(*b),
        Some(_) => bail!(
            "{}: [boxcar] production must be true or false",
            crate::vocab::show::escape(&file.path().display().to_string())
        ),
    }
}

/// `<name>-data`.
pub fn data_volume(name: &str) -> String {
    format!("{name}-data")
}

/// What a deploy settled before it touches the engine.
pub struct Plan {
    pub deployment: Deployment,
    /// Shared, not copied: `dev` deploys round after round with one key.
    pub key: std::sync::Arc<SecretKey>,
    pub image: String,
    pub key_delivery: KeyDelivery,
    pub timeout: Duration,
    pub network: Option<String>,
}

impl std::fmt::Debug for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plan")
            .field("deployment", &self.deployment)
            .field("key_id", &self.key.key_id())
            .field("image", &self.image)
            .finish_non_exhaustive()
    }
}

impl std::ops::Deref for Plan {
    type Target = Deployment;
    fn deref(&self) -> &Deployment {
        &self.deployment
    }
}

impl Plan {
    /// The key file's bytes, as `cargo xtask keygen` writes them.
    pub fn key_file_bytes(&self) -> zeroize::Zeroizing<Vec<u8>> {
        let text = self.key.to_base64();
        let mut bytes = zeroize::Zeroizing::new(Vec::with_capacity(text.len() + 1));
        bytes.extend_from_slice(text.as_bytes());
        bytes.push(b'\n');
        bytes
    }
}

/// The error for a resource that has the deployment's name but not boxcar's label.
pub fn not_ours(kind: &str, name: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "a {kind} named `{name}` exists and boxcar did not create it; nothing was changed\n\
         hint: remove or rename it, or deploy under another name with --name"
    )
}

/// Filters for the resources of one deployment.
pub fn filters(name: &str) -> HashMap<String, Vec<String>> {
    [("label".to_owned(), vec![format!("{LABEL_DEPLOYMENT}={name}")])].into()
}

/// A short hash of a JSON value, for the spec label.
pub fn spec_hash(value: &serde_json::Value) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(value.to_string().as_bytes());
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_service_and_environment() {
        let s = crate::vocab::contract::tests::service();
        let t = |env: &str, name: Option<&str>| deployment_name(&s, env, name);
        assert_eq!(t("production", None).unwrap(), "svc-production");
        assert_eq!(t("eu_west", None).unwrap(), "svc-eu-west");
        assert_eq!(t("p", Some("edge-p")).unwrap(), "edge-p");
        assert!(t("p", Some("Edge")).is_err());
        assert!(t("p", Some("-x")).is_err());
        assert!(t("p", Some(&"x".repeat(41))).is_err());
        assert!(t("p", Some("x-next")).is_err());
        assert!(t("p", Some("x-previous")).is_err());
        assert!(t("../p", None).is_err());
    }

    #[test]
    fn publish_parses_address_and_port() {
        let p = Publish::parse("127.0.0.1:9000").unwrap();
        assert_eq!((p.address.as_deref(), p.port), (Some("127.0.0.1"), 9000));
        let p = Publish::parse("9000").unwrap();
        assert_eq!((p.address, p.port), (None, 9000));
        let p = Publish::parse("[::1]:0").unwrap();
        assert_eq!((p.address.as_deref(), p.port), (Some("::1"), 0));
        assert!(Publish::parse("localhost:80").is_err());
        assert!(Publish::parse("127.0.0.1:99999").is_err());
    }

    #[test]
    fn production_is_said_or_named() {
        let file = |env: &str, extra: &str| {
            let key = SecretKey::generate();
            let text = format!("public_key = \"{}\"\n{extra}", key.public_key().to_base64());
            boxcar_secrets::EnvFile::parse(std::path::Path::new(&format!("d/{env}.toml")), &text).unwrap()
        };
        assert!(is_production(&file("production", "")).unwrap());
        assert!(is_production(&file("prod", "")).unwrap());
        assert!(!is_production(&file("staging", "")).unwrap());
        assert!(is_production(&file("eu", "[boxcar]\nproduction = true\n")).unwrap());
        assert!(!is_production(&file("production", "[boxcar]\nproduction = false\n")).unwrap());
        assert!(is_production(&file("eu", "[boxcar]\nproduction = \"yes\"\n")).is_err());
    }

    #[test]
    fn one_instance_unless_the_service_allows_more() {
        let s = crate::vocab::contract::tests::service();
        let request = |replicas, many| Request {
            env: "prod".to_owned(),
            name: None,
            replicas,
            many,
            memory_mib: None,
            publish: Publish { address: None, port: 1 },
            publish_mode: PublishMode::Ingress,
        };
        assert!(Deployment::new(&s, request(2, true), SecretKey::generate().key_id()).is_ok());
        let err = Deployment::new(&s, request(2, false), SecretKey::generate().key_id()).unwrap_err().to_string();
        assert!(err.contains("runs one instance at a time"), "{err}");
        assert!(Deployment::new(&s, request(0, true), SecretKey::generate().key_id()).is_err());
        assert!(
            Deployment::new(&s, Request { memory_mib: Some(8), ..request(1, false) }, SecretKey::generate().key_id())
                .is_err()
        );
        let d = Deployment::new(&s, request(1, false), SecretKey::generate().key_id()).unwrap();
        assert_eq!(d.key_resource(), format!("svc-prod-key-{}", d.key_id));
        assert_eq!(d.data_volume(), "svc-prod-data");
        assert_eq!(d.labels("app")[LABEL_DEPLOYMENT], "svc-prod");
    }
}
