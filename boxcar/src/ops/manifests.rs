//! Compose and Kubernetes manifests of a deployment: a [`Spec`] of every
//! value the templates use, checked, rendered from `templates/` with a
//! `tojson` that also escapes what YAML 1.1 reads as a line break. They name
//! the key's engine secret; no key is read.

use boxcar_secrets::EnvFile;
use minijinja::value::{Kwargs, Value};
use minijinja::{Environment, UndefinedBehavior};
use serde::Serialize;

use crate::vocab::contract::Service;
use crate::vocab::labels::{
    DEPLOYMENT as LABEL_DEPLOYMENT, ENV as LABEL_ENV, ENV_CHECKSUM_ANNOTATION, KEY_ID as LABEL_KEY_ID,
};
use crate::vocab::layout::{KEY_FILE_NAME, SECRETS_DIR, SWARM_KEY_FILE};
use crate::vocab::plan::{Deployment, HARDENING};

const COMPOSE: &str = include_str!("../../templates/compose.yaml.j2");
const KUBERNETES: &str = include_str!("../../templates/kubernetes.yaml.j2");

/// What manifests can end in.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum Error {
    /// Kubernetes label values end with a letter or digit; the env is one.
    #[error("environment `{env}` ends with `{last}`, which a Kubernetes label value cannot")]
    KubernetesLabel { env: String, last: char },
    #[error("writing the environment file's settings back as TOML")]
    Checksum { source: toml::ser::Error },
    /// A template could not be parsed or rendered; `doing` says which.
    #[error("{doing}")]
    Template { doing: String, source: minijinja::Error },
}

/// Which manifests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    /// A Compose file (schema 3.8) for `docker stack deploy`.
    Compose,
    /// A Deployment, its PersistentVolumeClaim, a Service and a NetworkPolicy, for `kubectl apply`.
    Kubernetes,
}

/// What the templates are rendered from, every value checked.
#[derive(Debug, Serialize)]
pub(crate) struct Spec {
    pub service: String,
    pub env: String,
    pub name: String,
    pub image: String,
    pub replicas: u64,
    pub memory_mib: u64,
    pub publish: u16,
    pub port: u16,
    pub extra_ports: Vec<u16>,
    pub user: u32,
    pub user_group: String,
    pub data: Option<String>,
    pub storage: &'static str,
    pub health_http: Option<String>,
    pub health_command: Vec<String>,
    pub health_test: Vec<String>,
    pub ready: Option<String>,
    pub egress_ports: Vec<u16>,
    /// `<name>-key-<key id>`, the name `cargo xtask deploy --swarm` gives the secret too.
    pub secret: String,
    /// `<env>-<key id>.key`, the key file's name in the key folder.
    pub key_file_name: String,
    pub data_volume: String,
    pub many: bool,
    /// Where the key is mounted as a file ([`SWARM_KEY_FILE`]): its folder and name.
    pub key_file: &'static str,
    pub key_dir: &'static str,
    pub key_name: &'static str,
    pub key_id: String,
    /// SHA-256 of the environment file's bytes, for the pod template.
    pub env_checksum: String,
}

/// The values of `deployment`'s manifests in `format`, running `image`
/// (default: `<service>:latest`).
pub(crate) fn spec(
    service: &Service,
    file: &EnvFile,
    format: Format,
    image: Option<&str>,
    deployment: Deployment,
) -> Result<Spec, Error> {
    let env = file.env().to_owned();
    if format == Format::Kubernetes && !env.ends_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err(Error::KubernetesLabel { last: env.chars().last().unwrap_or('-'), env });
    }
    let (key_dir, key_name) = (SECRETS_DIR, KEY_FILE_NAME);
    let key_id = deployment.key_id.to_string();
    // Of the parsed file, which is already at hand: what it says, not its
    // comments or layout.
    let env_checksum = {
        use sha2::Digest as _;
        let text = toml::to_string(file.table()).map_err(|source| Error::Checksum { source })?;
        hex::encode(sha2::Sha256::digest(text.as_bytes()))
    };
    let mut health_command = vec![service.binary_path()];
    health_command.extend(service.health.command.iter().flatten().cloned());
    Ok(Spec {
        service: service.name.clone(),
        secret: deployment.key_resource(),
        key_file_name: format!("{env}-{key_id}.key"),
        data_volume: deployment.data_volume(),
        many: deployment.many,
        image: image.map_or_else(|| format!("{}:latest", service.name), str::to_owned),
        replicas: deployment.replicas,
        memory_mib: u64::try_from(deployment.memory_bytes / (1024 * 1024)).unwrap_or(0),
        publish: deployment.publish.port,
        port: service.port,
        extra_ports: service.extra_ports.clone(),
        user: service.user,
        user_group: format!("{0}:{0}", service.user),
        data: service.data.clone(),
        storage: crate::vocab::defaults::STORAGE,
        health_http: service.health.http.clone(),
        health_command,
        health_test: crate::ops::build::assemble::health_test(service),
        ready: service.health.ready.clone().or_else(|| service.health.http.clone()),
        egress_ports: service.egress_ports.clone(),
        key_file: SWARM_KEY_FILE,
        key_dir,
        key_name,
        key_id,
        env_checksum,
        env,
        name: deployment.name,
    })
}

/// `spec` rendered as `format`.
pub(crate) fn render(format: Format, spec: &Spec) -> Result<String, Error> {
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
    env.add_template(template, source)
        .map_err(|source| Error::Template { doing: format!("parsing templates/{template}"), source })?;
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
    let order = if spec.many { "start-first" } else { "stop-first" };
    // Compose writes the engine's option with its value.
    let security_opt: Vec<String> = HARDENING.security_opt().iter().map(|o| format!("{o}:true")).collect();
    let hardening = minijinja::context! {
        read_only_root => HARDENING.read_only_root,
        cap_drop => HARDENING.cap_drop,
        no_new_privileges => HARDENING.no_new_privileges,
    };
    let ctx = minijinja::context! {
        labels => labels, order => order, memory => memory, hardening => hardening, security_opt => security_opt,
        checksum_annotation => ENV_CHECKSUM_ANNOTATION, tmp => crate::vocab::layout::TMP,
        key_folder => crate::vocab::keys::default_key_dir_shown(), ..Value::from_serialize(spec)
    };
    let rendering = |source| Error::Template { doing: format!("rendering templates/{template}"), source };
    env.get_template(template).map_err(rendering)?.render(ctx).map_err(rendering)
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
