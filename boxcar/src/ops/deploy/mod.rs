//! A deployment: asked (`Ask`, what `deploy`'s flags or a project's own
//! command say), checked against the contract before any key is read or any
//! engine asked (`Deploy::new`), given its key (`Deploy::with_key`), then
//! applied (`Keyed::apply`) as one container (`standalone`) or a Swarm
//! service (`swarm`). `deploy`, `dev` and a project's own commands (the demo)
//! all go this one way; `manifests` shares the first step.
//!
//! Beside it: the checks of the image before anything changes (`image`), a
//! deployment's `status`, `logs` and `undeploy` (`manage`), and the one
//! `Error` all of them end in (`error`).

mod error;
mod image;
mod manage;
pub mod standalone;
pub(crate) mod swarm;

use std::sync::Arc;
use std::time::Duration;

use bollard::Docker;
use boxcar_secrets::{EnvFile, SecretKey};

pub use error::Error;
pub use manage::{logs, status, undeploy};

use crate::vocab::contract::Service;
use crate::vocab::plan::{self, Deployment, KeyDelivery, Plan, Publish, PublishMode, Request};

/// The log driver of every deployed container, standalone or a Swarm task.
const LOG_DRIVER: &str = "json-file";

/// Its options: a service's logs kept to three files of 10 MB, so a chatty
/// service cannot fill the engine's disk.
fn log_options() -> std::collections::HashMap<String, String> {
    std::collections::HashMap::from([
        ("max-size".to_owned(), "10m".to_owned()),
        ("max-file".to_owned(), "3".to_owned()),
    ])
}

/// A deployment as asked, before anything is checked.
#[derive(Debug, Clone)]
pub struct Ask {
    /// The environment deployed.
    pub env: String,
    /// The deployment's name (default: `<service>-<env>`).
    pub name: Option<String>,
    /// The image (default: `<service>:latest`).
    pub image: Option<String>,
    /// Deploy as a Swarm service.
    pub swarm: bool,
    pub replicas: u64,
    /// `[ADDRESS:]PORT` as given (default: 127.0.0.1:<its port>, or its port on a Swarm).
    pub publish: Option<String>,
    pub publish_mode: PublishMode,
    pub memory_mib: Option<u64>,
    pub key_delivery: KeyDelivery,
    /// A Docker network to attach a standalone container to.
    pub network: Option<String>,
    /// Deploy a non-release build to a production environment all the same.
    pub allow_non_release: bool,
    /// How long to wait for health.
    pub timeout: Duration,
    /// `--service NAME ` for the commands messages suggest (empty for the default service).
    pub service_arg: String,
}

impl Ask {
    /// One container of environment `env` on a standalone engine, as `deploy`
    /// does with no options.
    pub fn standalone(env: &str) -> Ask {
        Ask {
            env: env.to_owned(),
            name: None,
            image: None,
            swarm: false,
            replicas: 1,
            publish: None,
            publish_mode: PublishMode::Ingress,
            memory_mib: None,
            key_delivery: KeyDelivery::File,
            network: None,
            allow_non_release: false,
            timeout: Duration::from_secs(120),
            service_arg: String::new(),
        }
    }
}

/// A deployment checked against the contract: every rule that needs no key
/// and no engine holds.
#[derive(Debug, Clone)]
pub struct Deploy {
    service: Service,
    ask: Ask,
    image: String,
    /// The deployment's name, checked with the environment's.
    name: String,
    request: Request,
}

impl Deploy {
    /// Checks `ask` against `service`: the name, the replicas, where the
    /// port is published, the memory, and the options that go together.
    pub fn new(service: &Service, ask: Ask) -> Result<Deploy, Error> {
        let name = plan::deployment_name(service, &ask.env, ask.name.as_deref())?;
        if ask.replicas == 0 {
            return Err(plan::Error::NoReplicas.into());
        }
        if ask.network.is_some() && ask.swarm {
            return Err(Error::NetworkOnSwarm);
        }
        if ask.replicas > 1 && !ask.swarm {
            return Err(Error::ReplicasNeedSwarm);
        }
        let publish = match (&ask.publish, ask.swarm) {
            (Some(text), _) => Publish::parse(text)?,
            (None, false) => Publish { address: Some("127.0.0.1".to_owned()), port: service.port },
            (None, true) => Publish { address: None, port: service.port },
        };
        if ask.swarm && publish.address.is_some() {
            return Err(Error::SwarmPublishAddress { publish: ask.publish.unwrap_or_default() });
        }
        let request = Request {
            env: ask.env.clone(),
            name: Some(name.clone()),
            replicas: ask.replicas,
            many: true,
            memory_mib: ask.memory_mib,
            publish,
            publish_mode: ask.publish_mode,
        };
        // Everything but the instance rule, which the image answers.
        Request { replicas: 1, ..request.clone() }.limits(service)?;
        let image = ask.image.clone().unwrap_or_else(|| format!("{}:latest", service.name));
        Ok(Deploy { service: service.clone(), ask, image, name, request })
    }

    /// The deployment's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The deployment this asks for, with `many` instances allowed or not
    /// (the contract's rule, or the service's answer) and the key `key_id`.
    pub fn deployment(&self, many: bool, key_id: boxcar_secrets::KeyId) -> Result<Deployment, Error> {
        let request = Request { many, ..self.request.clone() };
        Ok(Deployment::named(&self.service, request, self.name.clone(), key_id)?)
    }

    /// With the environment's `file` and its secret `key`: the key must be
    /// the file's, and every value must open from content its holder approved.
    pub fn with_key(self, file: EnvFile, key: SecretKey) -> Result<Keyed, Error> {
        if file.env() != self.ask.env {
            return Err(Error::OtherEnvironment { asked: self.ask.env, file: file.env().to_owned() });
        }
        if key.public_key() != file.public_key() {
            return Err(Error::WrongKey {
                key_id: key.key_id(),
                env: file.env().to_owned(),
                env_key_id: file.public_key().key_id(),
            });
        }
        let secrets = file.open_approved(&key).map_err(|source| Error::NotOpened { source: Box::new(source) })?;
        eprintln!("environment `{}`: key id {}, {} secret(s) open", file.env(), key.key_id(), secrets.len());
        drop(secrets);
        let production = plan::is_production(&file)?;
        Ok(Keyed { deploy: self, file, key: Arc::new(key), production })
    }
}

/// A checked deployment with its key: ready to apply.
#[derive(Debug)]
pub struct Keyed {
    deploy: Deploy,
    file: EnvFile,
    key: Arc<SecretKey>,
    production: bool,
}

impl Keyed {
    /// The deployment's name.
    pub fn name(&self) -> &str {
        self.deploy.name()
    }

    /// Applies the deployment with `image` (default: the one asked for) on
    /// `docker`: a Swarm checked first, the image pulled when it names a
    /// registry, its profile, its copy of the environment and its run-time
    /// contract checked, the service's own check and instance rule asked of
    /// it; then one container or a Swarm service, health-gated.
    pub async fn apply(&self, docker: &Docker, image: Option<&str>) -> Result<(), Error> {
        let (ask, service, file) = (&self.deploy.ask, &self.deploy.service, &self.file);
        let image = image.unwrap_or(&self.deploy.image);
        let name = self.deploy.name();
        if ask.swarm {
            let nodes = swarm::NodesAsk {
                image,
                publish_mode: ask.publish_mode,
                port: self.deploy.request.publish.port,
                replicas: ask.replicas,
            };
            swarm::check_cluster(docker, &nodes).await?;
        }
        let inspected = image::inspect_or_pull(docker, image).await?;
        let image_id = inspected.id.clone().ok_or(Error::NoImageId)?;
        self.check_profile(&inspected, image)?;
        image::image_environment(docker, image, &image_id, name, (service, &ask.service_arg), file, &self.key).await?;
        let many = image::service_answers(docker, &image_id, name, service, file.env()).await?;
        let plan = self.plan(image, many)?;
        if ask.swarm {
            swarm::deploy(docker, &plan, &image_id, image::login(image)?).await
        } else {
            if swarm::service_here(docker, &plan.name).await? {
                return Err(Error::SwarmServiceHere { name: plan.name.clone() });
            }
            standalone::deploy(docker, &plan, &image_id).await
        }
    }

    /// A production environment takes release builds only, unless asked.
    fn check_profile(&self, inspected: &bollard::models::ImageInspect, image: &str) -> Result<(), Error> {
        let profile = inspected
            .config
            .as_ref()
            .and_then(|c| c.labels.as_ref())
            .and_then(|l| l.get(crate::vocab::labels::PROFILE));
        match profile {
            Some(profile) if self.production && !self.deploy.ask.allow_non_release => Err(Error::NotRelease {
                image: image.to_owned(),
                profile: profile.clone(),
                env: self.file.env().to_owned(),
            }),
            _ => Ok(()),
        }
    }

    /// What the deploy settled, with `image` and whether `many` instances may run.
    fn plan(&self, image: &str, many: bool) -> Result<Plan, Error> {
        let ask = &self.deploy.ask;
        Ok(Plan {
            deployment: self.deploy.deployment(many, self.key.key_id())?,
            key: Arc::clone(&self.key),
            image: image.to_owned(),
            key_delivery: ask.key_delivery,
            timeout: ask.timeout,
            network: ask.network.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use boxcar_secrets::SecretKey;

    use super::*;
    use crate::vocab::contract::tests::service;

    fn file(env: &str, key: &SecretKey) -> EnvFile {
        let text = format!("public_key = \"{}\"\n", key.public_key().to_base64());
        EnvFile::parse(Path::new(&format!("deploy-config/{env}.toml")), &text).unwrap()
    }

    #[test]
    fn the_key_and_the_file_must_be_the_environments_asked_for() {
        let key = SecretKey::generate();
        let deploy = || Deploy::new(&service(), Ask::standalone("staging")).unwrap();
        let err = deploy().with_key(file("production", &key), SecretKey::generate()).unwrap_err();
        assert!(matches!(&err, Error::OtherEnvironment { asked, file } if asked == "staging" && file == "production"));
        assert!(err.to_string().contains("asks for environment `staging`"), "{err}");
        let err = deploy().with_key(file("staging", &key), SecretKey::generate()).unwrap_err();
        assert!(matches!(err, Error::WrongKey { .. }), "{err:?}");
        // The right key on an unapproved file: nothing opens.
        let err = deploy().with_key(file("staging", &key), key).unwrap_err();
        assert!(matches!(err, Error::NotOpened { .. }), "{err:?}");
    }
}
