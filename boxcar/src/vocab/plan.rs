//! The deploy vocabulary, defined once: names, labels, where the key is
//! mounted, and the validated deployment that `deploy`, `manifests` and a
//! project's own commands (the demo) build from arguments and the contract
//! before anything touches an engine.

use std::collections::HashMap;
use std::time::Duration;

use boxcar_secrets::{KeyId, SecretKey};

use crate::vocab::contract::Service;
use crate::vocab::labels;
use crate::vocab::project::{BadEnvName, check_env_name};
use crate::vocab::show::escape;

/// What is wrong with a deployment's request.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error(transparent)]
    EnvName(#[from] BadEnvName),
    #[error(
        "deployment name `{}` must be 1 to 40 characters of a-z, 0-9 and `-`, not starting or ending with `-`",
        escape(.name)
    )]
    Name { name: String },
    /// A deploy names its stopped old container and its probe with these endings.
    #[error("deployment name `{name}` must not end in `{PREVIOUS}` or `{NEXT}`: deploys use those for a while")]
    NameReserved { name: String },
    #[error("--publish `{}`: expected [ADDRESS:]PORT, like 127.0.0.1:9000 or 9000", escape(.text))]
    Publish { text: String },
    #[error("--publish `{}`: `{}` is not an IP address", escape(.text), escape(.address))]
    PublishAddress { text: String, address: String },
    #[error("--replicas must be at least 1; `cargo xtask undeploy` stops a deployment")]
    NoReplicas,
    /// More than one replica of a service that runs one instance at a time.
    #[error(
        "--replicas {replicas}: service `{service}` runs one instance at a time in environment `{env}` ({}); use one replica",
        if *.asked { "its own `instances` answer says so" } else { "boxcar.toml says instances = \"one\"" }
    )]
    OneInstance { replicas: u64, service: String, env: String, asked: bool },
    #[error("--memory-mib {mib}: give at least 16")]
    Memory { mib: u64 },
    /// `[boxcar] production` is not a boolean.
    #[error("{}: [boxcar] production must be true or false", escape(&.path.display().to_string()))]
    Production { path: std::path::PathBuf },
}

/// How every container boxcar runs is confined, on every target (a
/// standalone engine, a Swarm, Compose, Kubernetes) and for every role (the
/// service, its probe, its own commands): a read-only root file system, no
/// capabilities, no new privileges.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Hardening {
    pub read_only_root: bool,
    pub cap_drop: &'static [&'static str],
    pub no_new_privileges: bool,
}

/// The one hardening set.
pub const HARDENING: Hardening = Hardening { read_only_root: true, cap_drop: &["ALL"], no_new_privileges: true };

impl Hardening {
    /// The capabilities to drop, as the engine takes them.
    pub fn cap_drop(&self) -> Vec<String> {
        self.cap_drop.iter().map(|c| (*c).to_owned()).collect()
    }

    /// The engine's security options that say it (`no-new-privileges`).
    pub fn security_opt(&self) -> Vec<String> {
        if self.no_new_privileges { vec!["no-new-privileges".to_owned()] } else { Vec::new() }
    }
}

/// What a standalone deploy adds to a deployment's name for its stopped old
/// container while the new one is tried, and for the probe of a new image: a
/// deployment may not be named so.
pub const PREVIOUS: &str = "-previous";
pub const NEXT: &str = "-next";

/// `name`, else `<service>-<env>`, checked.
pub fn deployment_name(service: &Service, env: &str, name: Option<&str>) -> Result<String, Error> {
    check_env_name(env)?;
    let name = name.map_or_else(|| service.deployment_name(env), ToOwned::to_owned);
    check_name(&name)?;
    Ok(name)
}

/// A name every engine and Kubernetes accepts, with room for `-key-<16 hex>`.
pub fn check_name(name: &str) -> Result<(), Error> {
    let ok = !name.is_empty()
        && name.len() <= 40
        && name.bytes().all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'-'))
        && !name.starts_with('-')
        && !name.ends_with('-');
    if !ok {
        return Err(Error::Name { name: name.to_owned() });
    }
    // A deploy names its stopped old container and its probe this way.
    if name.ends_with(PREVIOUS) || name.ends_with(NEXT) {
        return Err(Error::NameReserved { name: name.to_owned() });
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishMode {
    Ingress,
    Host,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
    pub fn parse(text: &str) -> Result<Publish, Error> {
        let (address, port) = match text.rsplit_once(':') {
            Some((a, p)) => (Some(a.trim_start_matches('[').trim_end_matches(']').to_owned()), p),
            None => (None, text),
        };
        let port = port.parse::<u16>().map_err(|_| Error::Publish { text: text.to_owned() })?;
        if let Some(a) = &address
            && a.parse::<std::net::IpAddr>().is_err()
        {
            return Err(Error::PublishAddress { text: text.to_owned(), address: a.clone() });
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
    pub fn check(&self, service: &Service) -> Result<(String, i64), Error> {
        let name = deployment_name(service, &self.env, self.name.as_deref())?;
        Ok((name, self.limits(service)?))
    }

    /// The rules besides the name: the replicas against the instance rule
    /// and the memory limit, which it returns in bytes.
    pub fn limits(&self, service: &Service) -> Result<i64, Error> {
        if self.replicas == 0 {
            return Err(Error::NoReplicas);
        }
        if self.replicas > 1 && !self.many {
            return Err(Error::OneInstance {
                replicas: self.replicas,
                service: service.name.clone(),
                env: self.env.clone(),
                asked: matches!(service.instances, crate::vocab::contract::Instances::Ask(_)),
            });
        }
        let memory_mib = self.memory_mib.unwrap_or(service.memory_mib);
        i64::try_from(memory_mib)
            .ok()
            .and_then(|m| m.checked_mul(1024 * 1024))
            .filter(|m| *m >= 16 * 1024 * 1024)
            .ok_or(Error::Memory { mib: memory_mib })
    }
}

impl Deployment {
    /// Checks `request` against `service` ([`Request::check`]), for the key `key_id`.
    pub fn new(service: &Service, request: Request, key_id: KeyId) -> Result<Deployment, Error> {
        let (name, _) = request.check(service)?;
        Deployment::named(service, request, name, key_id)
    }

    /// [`Deployment::new`] for a request whose environment and `name` were
    /// checked already ([`deployment_name`]): the other rules only.
    pub fn named(service: &Service, request: Request, name: String, key_id: KeyId) -> Result<Deployment, Error> {
        let memory_bytes = request.limits(service)?;
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
            (labels::DEPLOYMENT, self.name.as_str()),
            (labels::ENV, self.env.as_str()),
            (labels::ROLE, role),
            (labels::KEY_ID, &self.key_id.to_string()),
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
pub fn is_production(file: &boxcar_secrets::EnvFile) -> Result<bool, Error> {
    let said = file.table().get("boxcar").and_then(|b| b.get("production"));
    match said {
        None => Ok(matches!(file.env(), "production" | "prod")),
        Some(toml::Value::Boolean(b)) => Ok(*b),
        Some(_) => Err(Error::Production { path: file.path().to_owned() }),
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
        zeroize::Zeroizing::new(self.key.to_key_file_text().to_vec())
    }
}

/// Filters for the resources of one deployment.
pub fn filters(name: &str) -> HashMap<String, Vec<String>> {
    [("label".to_owned(), vec![format!("{}={name}", labels::DEPLOYMENT)])].into()
}

/// A short hash of a JSON value, for the spec label.
pub fn spec_hash(value: &serde_json::Value) -> String {
    use sha2::Digest as _;
    hex::encode(&sha2::Sha256::digest(value.to_string().as_bytes())[..8])
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
        assert_eq!(d.labels("app")[labels::DEPLOYMENT], "svc-prod");
    }
}
