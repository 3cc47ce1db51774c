//! The service boxcar ships. So far: the fail-closed startup that opens every
//! sealed credential before anything else runs (the bot runner builds on it).

use std::path::PathBuf;
use std::process::ExitCode;

use deploy_config::{EnvFile, Secrets};

/// Exit codes, one per kind of startup failure, so an orchestrator's logs say
/// which without parsing text.
mod exit {
    /// No secret key given, or it cannot be read.
    pub(crate) const KEY: u8 = 2;
    /// The environment files cannot be read, or no environment matches the key.
    pub(crate) const CONFIG: u8 = 3;
    /// Some secret cannot be opened.
    pub(crate) const SECRETS: u8 = 4;
}

fn main() -> ExitCode {
    // First thing, while there is one thread: take the key out of the environment.
    let intake = match deploy_config::take_from_env() {
        Ok(Some(intake)) => intake,
        Ok(None) => return fail(exit::KEY, "no secret key: set SECRET_KEY_FILE (preferred) or SECRET_KEY"),
        Err(err) => return fail(exit::KEY, &err.to_string()),
    };
    for warning in &intake.warnings {
        eprintln!("warning: {warning}");
    }
    match open(&intake.key) {
        Ok(secrets) => {
            eprintln!("environment `{}`: opened {} secret(s)", secrets.env(), secrets.len());
            ExitCode::SUCCESS
        }
        Err((code, lines)) => {
            for line in lines {
                eprintln!("error: {line}");
            }
            ExitCode::from(code)
        }
    }
}

/// Picks the environment (`DEPLOY_ENV`, else the one whose public key matches
/// the key) and opens all its secrets.
fn open(key: &deploy_config::SecretKey) -> Result<Secrets, (u8, Vec<String>)> {
    let dir = std::env::var_os("BOXCAR_CONFIG_DIR").map_or_else(|| PathBuf::from("deploy-config"), PathBuf::from);
    let config = |msg: String| (exit::CONFIG, vec![msg]);
    let file = match std::env::var("DEPLOY_ENV") {
        Ok(env) => EnvFile::load(&deploy_config::env_file_path(&dir, &env)).map_err(|e| config(e.to_string()))?,
        Err(_) => {
            let paths = deploy_config::env_files(&dir).map_err(|e| config(e.to_string()))?;
            let mut matching = Vec::new();
            for path in paths {
                let file = EnvFile::load(&path).map_err(|e| config(e.to_string()))?;
                if file.public_key() == key.public_key() {
                    matching.push(file);
                }
            }
            match matching.len() {
                1 => matching.remove(0),
                0 => {
                    return Err(config(format!(
                        "no environment in {} uses key id {}; set DEPLOY_ENV or give this environment's key",
                        dir.display(),
                        key.key_id()
                    )));
                }
                _ => {
                    let envs: Vec<&str> = matching.iter().map(EnvFile::env).collect();
                    return Err(config(format!(
                        "environments {} all use key id {}; set DEPLOY_ENV to choose one",
                        envs.join(", "),
                        key.key_id()
                    )));
                }
            }
        }
    };
    file.open_all(key).map_err(|err| match err {
        deploy_config::Error::Secrets { path, failures } => {
            (exit::SECRETS, failures.iter().map(|f| format!("{}: {f}", path.display())).collect())
        }
        other => (exit::SECRETS, vec![other.to_string()]),
    })
}

fn fail(code: u8, message: &str) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(code)
}
