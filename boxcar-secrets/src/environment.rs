//! What a service does at startup, after taking its key: find its
//! environment file and open every sealed value in it, all or nothing.
//!
//! The environment is `DEPLOY_ENV` when set, else the one file in the folder
//! whose public key is the key's; the folder is the one the image puts the
//! environment files in ([`IMAGE_CONFIG_DIR`]) unless the service says
//! otherwise.

use std::path::{Path, PathBuf};

use crate::file::{EnvFile, Secrets, env_file_path, env_files};
use crate::key::SecretKey;
use crate::names::check_env_name;
use crate::runtime::{IMAGE_SERVICE_FILE, ServiceFile};

/// Variable naming the environment to open; deployments set it.
pub const DEPLOY_ENV: &str = "DEPLOY_ENV";

/// Where a boxcar image holds the public environment files.
pub const IMAGE_CONFIG_DIR: &str = "/etc/boxcar/deploy-config";

/// The folder of environment files in a checkout, relative to the workspace
/// root, when nothing names another.
pub const DEFAULT_CONFIG_DIR: &str = "deploy-config";

/// Why a service cannot start on its environment.
///
/// `Config`: no usable environment file (unreadable, none for the key,
/// several for it). `Secrets`: the file names another key, or a value does
/// not open. `Unapproved`: the file's content is not what the key's holder
/// approved. Each line is one problem, naming the file; no line holds secret
/// bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartupError {
    /// The environment file cannot be found or read.
    Config(Vec<String>),
    /// The key is not the environment's, or a sealed value does not open.
    Secrets(Vec<String>),
    /// The file's content is not approved by the environment's key.
    Unapproved(Vec<String>),
}

impl StartupError {
    /// One line per problem.
    pub fn lines(&self) -> &[String] {
        match self {
            StartupError::Config(lines) | StartupError::Secrets(lines) | StartupError::Unapproved(lines) => lines,
        }
    }
}

impl std::fmt::Display for StartupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.lines().join("\n"))
    }
}

impl std::error::Error for StartupError {}

/// The folder of environment files: [`IMAGE_CONFIG_DIR`] when it exists (in a
/// boxcar image), else [`DEFAULT_CONFIG_DIR`] in the working directory (a checkout).
pub fn default_config_dir() -> PathBuf {
    let image = Path::new(IMAGE_CONFIG_DIR);
    if image.is_dir() { image.to_owned() } else { PathBuf::from(DEFAULT_CONFIG_DIR) }
}

/// Finds the environment in `dir` (`env`, else the one file whose public key
/// is `key`'s), checks that its key's holder approved it, and in a boxcar
/// image that it approves the run-time contract the image was built with
/// ([`IMAGE_SERVICE_FILE`]), then opens every value in it with `key`.
pub fn open_environment(key: &SecretKey, dir: &Path, env: Option<&str>) -> Result<(EnvFile, Secrets), StartupError> {
    open_in(key, dir, env, Path::new(IMAGE_SERVICE_FILE))
}

/// [`open_environment`] with the image's service file at `service_file`.
fn open_in(
    key: &SecretKey,
    dir: &Path,
    env: Option<&str>,
    service_file: &Path,
) -> Result<(EnvFile, Secrets), StartupError> {
    // Read first: an image whose contract cannot be checked opens nothing.
    let runtime = ServiceFile::read(service_file).map_err(|e| StartupError::Unapproved(vec![e.to_string()]))?;
    let config = |msg: String| StartupError::Config(vec![msg]);
    let file = match env.filter(|e| !e.is_empty()) {
        Some(env) => {
            check_env_name(env).map_err(|p| config(format!("{DEPLOY_ENV} `{env}` {p}")))?;
            let path = env_file_path(dir, env);
            let file = EnvFile::load(&path).map_err(|e| config(e.to_string()))?;
            if file.public_key() != key.public_key() {
                return Err(StartupError::Secrets(vec![format!(
                    "{}: the secret key has key id {}, but environment `{env}` uses key id {}; give this environment's key",
                    path.display(),
                    key.key_id(),
                    file.public_key().key_id()
                )]));
            }
            file
        }
        None => {
            let paths = env_files(dir)
                .map_err(|e| config(format!("{e}; point the service at the folder with the environment files")))?;
            let mut matching = Vec::new();
            let mut unreadable = Vec::new();
            for path in paths {
                match EnvFile::load(&path) {
                    Ok(file) if file.public_key() == key.public_key() => matching.push(file),
                    Ok(_) => {}
                    Err(e) => unreadable.push(e.to_string()),
                }
            }
            match matching.len() {
                1 => matching.remove(0),
                0 => {
                    let mut lines = unreadable;
                    lines.push(format!(
                        "no environment in {} uses key id {}; set {DEPLOY_ENV}, or give the key of one of its environments",
                        dir.display(),
                        key.key_id()
                    ));
                    return Err(StartupError::Config(lines));
                }
                _ => {
                    let envs: Vec<&str> = matching.iter().map(EnvFile::env).collect();
                    return Err(config(format!(
                        "environments {} all use key id {}; set {DEPLOY_ENV} to choose one",
                        envs.join(", "),
                        key.key_id()
                    )));
                }
            }
        }
    };
    let file = file.for_service(runtime.as_ref().map(|r| r.service.as_str()));
    // Approval before opening: a setting that was never approved could say
    // where the opened values go, and so could the run-time contract.
    file.approval_with(key).map_err(|e| StartupError::Unapproved(vec![e.to_string()]))?;
    if let Some(runtime) = &runtime {
        runtime.check(file.table()).map_err(|problem| {
            let err = crate::Error::Unapproved {
                path: file.path().to_owned(),
                env: file.env().to_owned(),
                service: Some(runtime.service.clone()),
                problem: Box::new(problem),
            };
            StartupError::Unapproved(vec![err.to_string()])
        })?;
    }
    let secrets = file.open_all(key).map_err(|err| match err {
        crate::Error::Secrets { path, failures } => {
            StartupError::Secrets(failures.iter().map(|f| format!("{}: {f}", path.display())).collect())
        }
        other => StartupError::Secrets(vec![other.to_string()]),
    })?;
    Ok((file, secrets))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, env: &str, key: &SecretKey, secrets: &[(&str, &[u8])]) {
        let mut text = format!("public_key = \"{}\"\n[secrets]\n", key.public_key().to_base64());
        for (name, value) in secrets {
            text.push_str(&format!("{name} = \"{}\"\n", crate::seal(key.public_key(), env, name, value).unwrap()));
        }
        std::fs::write(env_file_path(dir, env), text).unwrap();
        approve(dir, env, key);
    }

    fn approve(dir: &Path, env: &str, key: &SecretKey) {
        let mut doc = crate::EnvDocument::load_or_new(&env_file_path(dir, env)).unwrap();
        doc.approve(key).unwrap();
        doc.write().unwrap();
    }

    #[test]
    fn finds_the_environment_by_name_or_by_key() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (SecretKey::generate(), SecretKey::generate());
        write(dir.path(), "alpha", &a, &[("token", b"one")]);
        write(dir.path(), "beta", &b, &[("token", b"two")]);
        let (file, secrets) = open_environment(&b, dir.path(), None).unwrap();
        assert_eq!(file.env(), "beta");
        assert_eq!(secrets.get("token").unwrap().expose_bytes(), b"two");
        let (file, _) = open_environment(&a, dir.path(), Some("alpha")).unwrap();
        assert_eq!(file.env(), "alpha");
        // An empty DEPLOY_ENV means "not set".
        assert_eq!(open_environment(&a, dir.path(), Some("")).unwrap().0.env(), "alpha");
    }

    #[test]
    fn says_why_it_cannot_start() {
        let dir = tempfile::tempdir().unwrap();
        let (a, other) = (SecretKey::generate(), SecretKey::generate());
        write(dir.path(), "alpha", &a, &[]);
        let err = open_environment(&other, dir.path(), None).unwrap_err();
        assert!(matches!(&err, StartupError::Config(l) if l[0].contains("no environment in")), "{err}");
        let err = open_environment(&other, dir.path(), Some("alpha")).unwrap_err();
        assert!(matches!(&err, StartupError::Secrets(l) if l[0].contains("environment `alpha` uses key id")), "{err}");
        let err = open_environment(&a, dir.path(), Some("Alpha")).unwrap_err();
        assert!(matches!(&err, StartupError::Config(l) if l[0].starts_with("DEPLOY_ENV `Alpha`")), "{err}");
        let err = open_environment(&a, dir.path(), Some("gamma")).unwrap_err();
        assert!(matches!(&err, StartupError::Config(l) if l[0].contains("cannot read")), "{err}");
        write(dir.path(), "twin", &a, &[]);
        let err = open_environment(&a, dir.path(), None).unwrap_err();
        assert!(matches!(&err, StartupError::Config(l) if l[0].contains("alpha, twin all use key id")), "{err}");
        let err = open_environment(&a, &dir.path().join("missing"), None).unwrap_err();
        assert!(matches!(&err, StartupError::Config(_)), "{err}");
    }

    #[test]
    fn a_value_that_does_not_open_is_a_secrets_error() {
        let dir = tempfile::tempdir().unwrap();
        let a = SecretKey::generate();
        let sealed = crate::seal(a.public_key(), "beta", "token", b"moved").unwrap();
        let text = format!("public_key = \"{}\"\n[secrets]\ntoken = \"{sealed}\"\n", a.public_key().to_base64());
        std::fs::write(dir.path().join("alpha.toml"), text).unwrap();
        approve(dir.path(), "alpha", &a);
        let err = open_environment(&a, dir.path(), None).unwrap_err();
        assert!(matches!(&err, StartupError::Secrets(l) if l.len() == 1 && l[0].contains("secrets.token")), "{err}");
        assert!(!err.to_string().contains("moved"));
    }

    #[test]
    fn unapproved_content_is_refused_before_any_value_is_opened() {
        let dir = tempfile::tempdir().unwrap();
        let a = SecretKey::generate();
        write(dir.path(), "alpha", &a, &[("token", b"one")]);
        let path = env_file_path(dir.path(), "alpha");
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, text.replace("[secrets]", "[app]\napi_base = \"https://elsewhere\"\n[secrets]")).unwrap();
        let err = open_environment(&a, dir.path(), None).unwrap_err();
        let StartupError::Unapproved(lines) = &err else { panic!("{err}") };
        assert_eq!(lines.len(), 1);
        assert_eq!(
            lines[0],
            format!(
                "{}: is not approved as it is: its content, or its environment, differs from what was approved; \
                 a holder of the secret key must review the change and approve it: \
                 `cargo xtask approve --env alpha` (`cargo xtask check` names what changed) [ApprovalError::Signature]",
                path.display()
            )
        );
        assert_eq!(err.lines(), &lines[..]);
        // Approved again, it opens.
        approve(dir.path(), "alpha", &a);
        assert!(open_environment(&a, dir.path(), Some("alpha")).is_ok());
        // Never approved at all.
        std::fs::write(&path, format!("public_key = \"{}\"\n", a.public_key().to_base64())).unwrap();
        let err = open_environment(&a, dir.path(), Some("alpha")).unwrap_err();
        assert!(matches!(&err, StartupError::Unapproved(l) if l[0].contains("no `approval_key`")), "{err}");
    }

    #[test]
    fn in_an_image_the_run_time_contract_must_be_approved() {
        let dir = tempfile::tempdir().unwrap();
        let configs = dir.path().join("deploy-config");
        std::fs::create_dir(&configs).unwrap();
        let a = SecretKey::generate();
        let runtime: toml::Table = "bin = \"app\"\nenv = { API = \"https://api.example\" }\n".parse().unwrap();
        // The file approves app's run-time contract.
        let path = env_file_path(&configs, "alpha");
        let text = format!(
            "public_key = \"{}\"\n[secrets]\ntoken = \"{}\"\n",
            a.public_key().to_base64(),
            crate::seal(a.public_key(), "alpha", "token", b"one").unwrap()
        );
        let mut doc = crate::EnvDocument::parse(&path, &text).unwrap();
        doc.set_runtime(&[("app".to_owned(), runtime.clone())]);
        doc.approve(&a).unwrap();
        doc.write().unwrap();
        let service_file = dir.path().join("service.toml");
        let open = |env: Option<&str>| open_in(&a, &configs, env, &service_file);

        // No service file (outside an image): not checked.
        assert!(open(None).is_ok());
        // The image holds what was approved.
        std::fs::write(&service_file, crate::ServiceFile::render("app", &runtime)).unwrap();
        let (file, secrets) = open(Some("alpha")).unwrap();
        assert_eq!(secrets.get("token").unwrap().expose_bytes(), b"one");
        assert_eq!(file.env(), "alpha");
        // The image was built from a contract that sends the token elsewhere.
        let mut evil = runtime.clone();
        evil["env"].as_table_mut().unwrap().insert("API".into(), "https://evil.example".into());
        std::fs::write(&service_file, crate::ServiceFile::render("app", &evil)).unwrap();
        let err = open(None).unwrap_err();
        assert_eq!(
            err,
            StartupError::Unapproved(vec![format!(
                "{}: the run-time contract of service `app` in this image is not the one this file approves: \
                 it differs in env.API; a holder of the secret key reviews boxcar.toml's change for this environment \
                 and approves it (`cargo xtask approve --service app --env alpha`), then the image is built again \
                 [ApprovalError::Runtime]",
                path.display()
            )])
        );
        // Another service's image: the file approves nothing for it.
        std::fs::write(&service_file, crate::ServiceFile::render("worker", &runtime)).unwrap();
        let err = open(None).unwrap_err().to_string();
        assert!(
            err.contains("service `worker` in this image") && err.contains("approves no run-time contract"),
            "{err}"
        );
        // A service file that cannot be read opens nothing.
        std::fs::write(&service_file, "service = 3\n").unwrap();
        let err = open(None).unwrap_err();
        assert!(matches!(&err, StartupError::Unapproved(l) if l[0].contains("`service` must be")), "{err}");
        // Unapproved content is reported as such first, naming the image's service.
        std::fs::write(&service_file, crate::ServiceFile::render("app", &runtime)).unwrap();
        std::fs::write(&path, format!("{}\n[app]\nx = 1\n", std::fs::read_to_string(&path).unwrap())).unwrap();
        let err = open(None).unwrap_err().to_string();
        assert!(
            err.contains("approve --service app --env alpha") && err.ends_with("[ApprovalError::Signature]"),
            "{err}"
        );
    }

    #[test]
    fn lines_and_display_carry_every_problem() {
        let err = StartupError::Config(vec!["first".to_owned(), "second".to_owned()]);
        assert_eq!(err.lines(), ["first", "second"]);
        assert_eq!(err.to_string(), "first\nsecond");
        let err = StartupError::Secrets(vec!["only".to_owned()]);
        assert_eq!(err.lines(), ["only"]);
        assert_eq!(err.to_string(), "only");
        let err = StartupError::Unapproved(vec!["this".to_owned()]);
        assert_eq!(err.lines(), ["this"]);
    }

    #[test]
    fn the_default_folder_is_the_images_or_the_checkouts() {
        let expected = if Path::new(IMAGE_CONFIG_DIR).is_dir() { IMAGE_CONFIG_DIR } else { "deploy-config" };
        assert_eq!(default_config_dir(), PathBuf::from(expected));
    }
}
