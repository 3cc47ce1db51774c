//! The project a command works on: its root, where the user ran the command,
//! the key taken out of the environment at start, the service contract, and
//! the folder of environment files the command works in.

use std::path::{Path, PathBuf};

use boxcar_secrets::{EnvFile, Intake, IntakeError, KeyId, SecretKey};

use crate::vocab::contract::{self, Contract, Service};
use crate::vocab::defaults;

/// What `main` took out of the environment before anything else ran.
pub type EnvKey = Result<Option<Intake>, IntakeError>;

/// What goes wrong finding the project's contract, an environment file or
/// its key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error(
        "this project has no {}: declare the service to ship, for example\n  [[service]]\n  name = \"my-service\"\n  \
         health.http = \"/healthz\"\n(README, \"Ship your own service\"; docs/CONTRACT.md has every field)",
        contract::FILE
    )]
    NoContract,
    #[error("--service needs a {} that declares it; this project has none", contract::FILE)]
    ServiceWithoutContract,
    #[error(transparent)]
    Contract(#[from] contract::Error),
    #[error(transparent)]
    EnvName(#[from] BadEnvName),
    /// The environment's file does not exist (`shown`: its path as messages show it).
    #[error("{shown} does not exist; create the environment with `cargo xtask keygen --env {env}`")]
    NoEnvFile { env: String, shown: String },
    #[error(transparent)]
    Secrets(#[from] boxcar_secrets::Error),
    #[error(transparent)]
    Intake(#[from] IntakeError),
    /// `--key-file` and `SECRET_KEY_FILE` or `SECRET_KEY` were both given.
    #[error("both --key-file and {var} are set; give the key one way only")]
    KeyTwice { var: &'static str },
    #[error(
        "no secret key for environment `{env}` (key id {key_id}): pass --key-file, set SECRET_KEY_FILE, or put the \
         key at {}",
        .path.display()
    )]
    NoKey { env: String, key_id: KeyId, path: PathBuf },
    #[error(transparent)]
    Keys(#[from] crate::vocab::keys::Error),
}

/// An environment name that breaks the rules of docs/FORMAT.md.
#[derive(Debug, thiserror::Error)]
#[error("environment name `{}` {problem}", crate::vocab::show::escape(.env))]
pub struct BadEnvName {
    pub env: String,
    pub problem: String,
}

/// Checks an environment name.
pub fn check_env_name(env: &str) -> Result<(), BadEnvName> {
    boxcar_secrets::check_env_name(env).map_err(|problem| BadEnvName { env: env.to_owned(), problem })
}

/// What every command gets.
#[derive(Debug)]
pub struct Context {
    /// The project root, which is also the process's working directory, so
    /// paths in messages read `deploy-config/production.toml`.
    pub root: PathBuf,
    /// Where the user ran the command: relative paths they give resolve here.
    pub invoked_from: PathBuf,
    pub(crate) env_key: EnvKey,
    /// The folder of environment files this command works in.
    config_dir: PathBuf,
    /// The service the command is about, when it is not the contract's
    /// default: hints name it (`cargo xtask approve --service NAME …`).
    named_service: Option<String>,
}

impl Context {
    /// A context for `root`, where the process now runs.
    pub fn new(root: PathBuf, invoked_from: PathBuf, env_key: EnvKey) -> Context {
        Context { root, invoked_from, env_key, config_dir: PathBuf::from(defaults::CONFIG_DIR), named_service: None }
    }

    /// The service contract, checked; `None` when the project has no boxcar.toml.
    pub fn contract(&self) -> Result<Option<Contract>, Error> {
        Ok(Contract::load(&self.root)?)
    }

    /// The contract with every package and binary checked against the
    /// workspace: what building and deploying need.
    pub fn resolved_contract(&self) -> Result<Contract, Error> {
        let Some(mut contract) = self.contract()? else {
            return Err(Error::NoContract);
        };
        contract.resolve(&self.root)?;
        Ok(contract)
    }

    /// The service a command is about, resolved, and its folder of
    /// environment files as the command's.
    pub fn service(&mut self, name: Option<&str>) -> Result<Service, Error> {
        let contract = self.resolved_contract()?;
        let service = contract.pick(name)?.clone();
        self.config_dir.clone_from(&service.config_dir);
        self.named_service = Context::unless_default(&contract, &service.name);
        Ok(service)
    }

    /// For the secrets commands: the chosen service's folder of environment
    /// files, or `deploy-config` in a project without boxcar.toml.
    pub fn use_config_of(&mut self, name: Option<&str>) -> Result<(), Error> {
        match self.contract()? {
            Some(contract) => {
                let service = contract.pick(name)?;
                self.config_dir.clone_from(&service.config_dir);
                self.named_service = Context::unless_default(&contract, &service.name);
            }
            None if name.is_some() => return Err(Error::ServiceWithoutContract),
            None => {}
        }
        Ok(())
    }

    /// What boxcar.toml gives each service whose folder of environment files
    /// is `dir` at run time, `(service, run-time contract)`: what the approval
    /// of every environment in `dir` covers. None in a project without boxcar.toml.
    pub fn runtimes_in(&self, dir: &Path) -> Result<Vec<(String, toml::Table)>, Error> {
        let Some(mut contract) = self.contract()? else { return Ok(Vec::new()) };
        contract.resolve(&self.root)?;
        contract
            .services()
            .iter()
            .filter(|s| s.config_dir == dir)
            .map(|s| Ok((s.name.clone(), s.runtime(&self.root)?)))
            .collect()
    }

    /// `name`, unless it is what the contract picks without `--service`.
    fn unless_default(contract: &Contract, name: &str) -> Option<String> {
        let default = contract.pick(None).ok().map(|s| s.name.as_str());
        (default != Some(name)).then(|| name.to_owned())
    }

    /// The service the command is about, when it is not the contract's default.
    pub fn named_service(&self) -> Option<&str> {
        self.named_service.as_deref()
    }

    /// `--service NAME ` when the command is about a service other than the
    /// default, for the commands a message suggests; else nothing.
    pub fn service_arg(&self) -> String {
        self.named_service.as_ref().map(|s| format!("--service {s} ")).unwrap_or_default()
    }

    /// The folder of environment files, relative to the root.
    pub fn config_dir(&self) -> PathBuf {
        self.config_dir.clone()
    }

    /// A path the user gave, made absolute against where they ran the command.
    pub fn user_path(&self, path: &Path) -> PathBuf {
        self.invoked_from.join(path)
    }

    /// `<config dir>/<env>.toml`.
    pub fn env_path(&self, env: &str) -> PathBuf {
        boxcar_secrets::env_file_path(&self.config_dir(), env)
    }

    /// A path shown relative to the project root when it is inside it.
    pub fn show(&self, path: &Path) -> String {
        crate::vocab::show::escape(&path.strip_prefix(&self.root).unwrap_or(path).display().to_string()).into_owned()
    }

    /// Loads `<config dir>/<env>.toml`, with a hint when it does not exist.
    pub fn load_env(&self, env: &str) -> Result<EnvFile, Error> {
        check_env_name(env)?;
        let path = self.env_path(env);
        if !path.exists() {
            return Err(Error::NoEnvFile { env: env.to_owned(), shown: self.show(&path) });
        }
        Ok(EnvFile::load(&path)?.for_service(self.named_service.as_deref()))
    }

    /// Finds the secret key for `file`'s environment, in this order: `--key-file`,
    /// `SECRET_KEY_FILE` or `SECRET_KEY`, then the default key file for the
    /// environment's key id. Says on stderr which one it used.
    pub fn secret_key(&mut self, file: &EnvFile, key_file: Option<&Path>) -> Result<SecretKey, Error> {
        let from_env = std::mem::replace(&mut self.env_key, Ok(None))?;
        let intake = match (key_file, from_env) {
            (Some(_), Some(env)) => return Err(Error::KeyTwice { var: env_var_name(&env) }),
            (Some(path), None) => boxcar_secrets::read_key_file(&self.user_path(path), "--key-file")?,
            (None, Some(env)) => env,
            (None, None) => {
                let path = crate::vocab::keys::default_key_path(file.env(), file.public_key().key_id())?;
                if !path.exists() {
                    let (env, key_id) = (file.env().to_owned(), file.public_key().key_id());
                    return Err(Error::NoKey { env, key_id, path });
                }
                boxcar_secrets::read_key_file(&path, "the default key location")?
            }
        };
        for warning in &intake.warnings {
            eprintln!("warning: {warning}");
        }
        eprintln!("using the secret key from {}", intake.source);
        Ok(intake.key)
    }
}

fn env_var_name(intake: &Intake) -> &'static str {
    match intake.source {
        boxcar_secrets::KeySource::EnvVar => "SECRET_KEY",
        boxcar_secrets::KeySource::File(_) => "SECRET_KEY_FILE",
    }
}
