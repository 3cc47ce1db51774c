//! Seal and open boxcar's per-environment secrets.
//!
//! A deployment environment (`production`, `staging`, …) has one X25519 key
//! pair. Its public key and its sealed values live in `deploy-config/<env>.toml`,
//! safe to publish; its secret key lives outside the repository and reaches the
//! running program as `SECRET_KEY` or `SECRET_KEY_FILE`.
//!
//! Values are libsodium anonymous sealed boxes (`crypto_box_seal`) of a framed
//! plaintext that names the format version, the environment and the secret, so
//! a value copied to another environment or name is refused. `docs/FORMAT.md`
//! specifies the format.
//!
//! The `seal` feature adds sealing, key generation and file editing; the app
//! does not enable it, so the shipped binary can open values but not make them.
//!
//! A service's startup, first thing in `main` (before any thread starts):
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let intake = boxcar_secrets::take_from_env()?.ok_or("set SECRET_KEY_FILE")?;
//! let env = std::env::var(boxcar_secrets::DEPLOY_ENV).ok();
//! let dir = boxcar_secrets::default_config_dir();
//! let (file, secrets) = boxcar_secrets::open_environment(&intake.key, &dir, env.as_deref())?;
//! let api_key = secrets.get("api_key").ok_or("no api_key")?;
//! # let _ = (file, api_key); Ok(()) }
//! ```

pub mod approval;
mod document;
mod environment;
mod error;
mod file;
mod intake;
mod key;
mod names;
pub mod runtime;
mod sealed;
mod show;
mod value;

#[cfg(feature = "seal")]
mod edit;

pub use approval::{ApprovalError, ApprovalKey, Approved, KeyPair};
pub use document::read_toml;
pub use environment::{
    DEFAULT_CONFIG_DIR, DEPLOY_ENV, IMAGE_CONFIG_DIR, StartupError, default_config_dir, open_environment,
};
pub use error::{Error, IntakeError, KeyError, OpenError, ParseError, SecretFailure, SecretProblem};
pub use file::{EnvFile, Secrets, env_file_path, env_files, env_of};
pub use intake::{Intake, KeySource, SECRET_KEY, SECRET_KEY_FILE, proc_environ_contains, read_key_file, take_from_env};
pub use key::{KEY_FILE_LEN, KEY_LEN, KeyId, PublicKey, SecretKey};
pub use names::{MAX_ENV_LEN, MAX_NAME_LEN, check_env_name, check_secret_name};
pub use runtime::{IMAGE_SERVICE_FILE, ServiceFile};
pub use sealed::{MAX_VALUE_LEN, PREFIX, SealedValue, VERSION};
pub use show::escape;
pub use value::SecretValue;

#[cfg(feature = "seal")]
pub use edit::{EnvDocument, approved_text, write_atomic, write_key_file, write_new_atomic};
#[cfg(feature = "seal")]
pub use error::SealError;
#[cfg(feature = "seal")]
pub use sealed::seal;
