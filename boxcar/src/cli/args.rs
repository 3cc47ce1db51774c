//! Arguments several commands share, each defined once and flattened where
//! used (`--service`, `--env`, `--key-file`, `--host`/`--name`, `--base`, the
//! image check's options).

use std::path::PathBuf;

use boxcar_secrets::{EnvFile, SecretKey};

#[cfg(feature = "engine")]
use crate::vocab::contract::Service;
#[cfg(feature = "engine")]
use crate::vocab::plan;
use crate::vocab::project::Context;

/// `--service`, for every command about one service.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServiceArg {
    /// Which service of boxcar.toml (default: its `default`, or its only service).
    #[arg(long, value_name = "NAME")]
    pub service: Option<String>,
}

impl ServiceArg {
    /// The name given, if any.
    pub fn name(&self) -> Option<&str> {
        self.service.as_deref()
    }
}

/// `--env` and `--service`: one environment of one service.
#[derive(Debug, Clone, clap::Args)]
pub struct EnvArg {
    /// Deployment environment (<config dir>/<ENV>.toml; a-z, 0-9, `_`, `-`, starting with a letter).
    #[arg(long, value_name = "ENV")]
    pub env: String,
    #[command(flatten)]
    pub service: ServiceArg,
}

/// The environment to open and where its secret key is, for commands that
/// open values.
#[derive(Debug, clap::Args)]
pub(super) struct OpenArgs {
    #[command(flatten)]
    pub at: EnvArg,
    /// File holding the environment's current secret key (default: SECRET_KEY_FILE,
    /// SECRET_KEY, then the key folder's file for the environment's key id).
    #[arg(long, value_name = "PATH")]
    pub key_file: Option<PathBuf>,
}

impl OpenArgs {
    /// Loads the environment file and its secret key, as the arguments say.
    pub(super) fn open(&self, ctx: &mut Context) -> anyhow::Result<(EnvFile, SecretKey)> {
        ctx.use_config_of(self.at.service.name())?;
        let file = ctx.load_env(&self.at.env)?;
        let key = ctx.secret_key(&file, self.key_file.as_deref())?;
        Ok((file, key))
    }
}

/// Which deployment a command is about.
#[cfg(feature = "engine")]
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

#[cfg(feature = "engine")]
impl Target {
    /// The deployment's name: `--name`, else `<service>-<env>` with `_` as `-`
    /// (service and Kubernetes names allow neither `_` nor capitals).
    pub fn name(&self, service: &Service) -> Result<String, plan::Error> {
        plan::deployment_name(service, &self.at.env, self.name.as_deref())
    }

    /// The deployment's name, its service taken from the project's contract.
    pub fn resolve(&self, ctx: &mut Context) -> anyhow::Result<String> {
        let service = ctx.service(self.at.service.name())?;
        Ok(self.name(&service)?)
    }

    /// Runs `work` on the engine `--host` names.
    pub fn on_engine<T>(&self, work: impl AsyncFnOnce(&bollard::Docker) -> anyhow::Result<T>) -> anyhow::Result<T> {
        let rt = crate::adapters::engine::runtime()?;
        rt.block_on(async {
            let docker = crate::adapters::engine::connect(self.host.as_deref()).await?;
            work(&docker).await
        })
    }
}

/// `--base REF`, shared by the commands that follow an environment's history.
#[derive(Debug, Clone, Default, clap::Args)]
pub(super) struct BaseArg {
    /// The commit to trust, whose environment files are the root of every key
    /// chain and serial `check` follows: in a pull request's CI, the branch it
    /// merges into (`--base origin/main`). It must be HEAD or one of its
    /// ancestors. Default: the merge base of HEAD and origin/HEAD. After a
    /// reviewed restart with a new key (`keygen --force`), the commit that made it.
    #[arg(long, value_name = "REF")]
    pub base: Option<String>,
}

/// Options of the image check, shared by `image` and `image-check`.
#[cfg(feature = "engine")]
#[derive(Debug, Default, clap::Args)]
pub struct CheckArgs {
    /// Secret key file(s): open every value of the matching environment and make
    /// sure no plaintext is in the image (SECRET_KEY_FILE or SECRET_KEY also count).
    #[arg(long = "key-file", value_name = "PATH")]
    pub key_files: Vec<PathBuf>,
    /// Fail when the image is larger than this many KiB, all layers
    /// uncompressed (default: the contract's size_budget_kib).
    #[arg(long, value_name = "KIB")]
    pub size_budget_kib: Option<usize>,
}

/// clap's names for the choices the vocabulary and the operations define,
/// written here so that only the command layer knows clap (a tidy test holds
/// it). Each list is every variant, so a new one fails to compile here.
#[cfg(feature = "engine")]
mod choices {
    use clap::ValueEnum;
    use clap::builder::PossibleValue;

    use crate::ops::build::compile::Profile;
    use crate::ops::manifests::Format;
    use crate::vocab::plan::{KeyDelivery, PublishMode};

    impl ValueEnum for Profile {
        fn value_variants<'a>() -> &'a [Self] {
            &[Profile::Release, Profile::Fast]
        }

        fn to_possible_value(&self) -> Option<PossibleValue> {
            Some(match self {
                Profile::Release => {
                    PossibleValue::new("release").help("The workspace's `release` profile: what production runs")
                }
                Profile::Fast => PossibleValue::new("fast").help(
                    "`release` without LTO, with 16 codegen units, incremental, unoptimised, linked by mold: a \
                     changed line is a new binary in seconds. Never for production",
                ),
            })
        }
    }

    impl ValueEnum for PublishMode {
        fn value_variants<'a>() -> &'a [Self] {
            &[PublishMode::Ingress, PublishMode::Host]
        }

        fn to_possible_value(&self) -> Option<PossibleValue> {
            Some(PossibleValue::new(match self {
                PublishMode::Ingress => "ingress",
                PublishMode::Host => "host",
            }))
        }
    }

    impl ValueEnum for KeyDelivery {
        fn value_variants<'a>() -> &'a [Self] {
            &[KeyDelivery::Auto, KeyDelivery::File, KeyDelivery::Env]
        }

        fn to_possible_value(&self) -> Option<PossibleValue> {
            Some(PossibleValue::new(match self {
                KeyDelivery::Auto => "auto",
                KeyDelivery::File => "file",
                KeyDelivery::Env => "env",
            }))
        }
    }

    impl ValueEnum for Format {
        fn value_variants<'a>() -> &'a [Self] {
            &[Format::Compose, Format::Kubernetes]
        }

        fn to_possible_value(&self) -> Option<PossibleValue> {
            Some(match self {
                Format::Compose => {
                    PossibleValue::new("compose").help("A Compose file (schema 3.8) for `docker stack deploy`")
                }
                Format::Kubernetes => PossibleValue::new("kubernetes").help(
                    "A Deployment, its PersistentVolumeClaim, a Service and a NetworkPolicy, for `kubectl apply`",
                ),
            })
        }
    }
}
