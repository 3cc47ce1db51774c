//! The login a push and a pull use, found as Docker's own tools find it:
//! `config.json` (`$DOCKER_CONFIG`, else `~/.docker`), its `auths`, and the
//! credential helpers and store it names (through `docker_credential`).

use std::path::{Path, PathBuf};

use oci_client::secrets::RegistryAuth;
use zeroize::Zeroizing;

use super::Error;
use crate::vocab::show::escape;

/// A registry login, from Docker's config or a credential helper.
pub(crate) struct Credentials {
    pub(super) user: String,
    pub(super) secret: Zeroizing<String>,
    /// An identity token rather than a password.
    pub(super) token: bool,
    /// Where it came from, for messages.
    pub source: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").field("user", &self.user).field("source", &self.source).finish_non_exhaustive()
    }
}

impl Credentials {
    pub(super) fn auth(&self) -> RegistryAuth {
        match self.token {
            true => RegistryAuth::Bearer(self.secret.to_string()),
            false => RegistryAuth::Basic(self.user.clone(), self.secret.to_string()),
        }
    }

    /// The same login for the engine (`X-Registry-Auth`): it pulls with it,
    /// and a Swarm manager hands it to the nodes that run the tasks.
    pub(crate) fn for_engine(&self, registry: &str) -> bollard::auth::DockerCredentials {
        let mut c = bollard::auth::DockerCredentials { serveraddress: Some(registry.to_owned()), ..Default::default() };
        match self.token {
            true => c.identitytoken = Some(self.secret.to_string()),
            false => {
                c.username = Some(self.user.clone());
                c.password = Some(self.secret.to_string());
            }
        }
        c
    }
}

/// Docker's config file: `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`.
fn docker_config() -> Option<PathBuf> {
    let dir = std::env::var_os("DOCKER_CONFIG")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".docker")))?;
    Some(dir.join("config.json"))
}

/// The login for `registry` (`host[:port]`), looked up as the docker CLI
/// stores it; `None` when there is no config file or it has no login for
/// the registry (the registry is then asked anonymously).
pub(crate) fn credentials(registry: &str) -> Result<Option<Credentials>, Error> {
    match docker_config().filter(|p| p.exists()) {
        Some(path) => credentials_in(&path, registry),
        None => Ok(None),
    }
}

/// The login for `registry` in the Docker config file at `path`.
fn credentials_in(path: &Path, registry: &str) -> Result<Option<Credentials>, Error> {
    use docker_credential::{CredentialRetrievalError as E, DockerCredential};
    let file = escape(&path.to_string_lossy()).into_owned();
    let text = std::fs::read(path).map_err(|source| Error::ConfigRead { file: file.clone(), source })?;
    let config: serde_json::Value =
        serde_json::from_slice(&text).map_err(|source| Error::ConfigJson { file: file.clone(), source })?;
    // Docker Hub's login is kept under its old address; any other under the
    // registry's name (docker_credential also finds `https://NAME/…` keys).
    let hub = matches!(registry, "docker.io" | "index.docker.io" | "registry-1.docker.io");
    let key = if hub { "https://index.docker.io/v1/" } else { registry };
    let program = |v: &serde_json::Value| v.as_str().filter(|h| !h.is_empty()).map(str::to_owned);
    let (helper, store) = (program(&config["credHelpers"][key]), program(&config["credsStore"]));
    let source = match (&helper, in_auths(&config, key), &store) {
        (Some(h), _, _) => format!("the credential helper docker-credential-{}", escape(h)),
        (None, true, _) | (None, false, None) => format!("{file} (`{}`)", escape(key)),
        (None, false, Some(s)) => format!("the credential store docker-credential-{}", escape(s)),
    };
    let (user, secret, token) = match docker_credential::get_credential_from_reader(&text[..], key) {
        Ok(DockerCredential::UsernamePassword(u, p)) => (u, Zeroizing::new(p), false),
        Ok(DockerCredential::IdentityToken(t)) => (String::new(), Zeroizing::new(t), true),
        Err(E::NoCredentialConfigured) => return Ok(None),
        Err(E::HelperFailure { helper: program, stdout, stderr }) => {
            // What the docker-credential-helpers programs print (on stdout)
            // when they hold nothing for a server.
            let said = if stderr.trim().is_empty() { stdout.trim() } else { stderr.trim() };
            if said.contains("credentials not found") && helper.is_none() {
                // The credential store has no login for this registry: anonymous.
                return Ok(None);
            }
            return Err(Error::Helper {
                helper: escape(&program).into_owned(),
                registry: escape(registry).into_owned(),
                said: escape(said).into_owned(),
            });
        }
        Err(E::HelperCommunicationError) => return Err(Error::HelperMissing { file, named: source }),
        Err(e) => {
            return Err(Error::Login {
                file,
                key: escape(key).into_owned(),
                registry: escape(registry).into_owned(),
                cause: e.to_string(),
            });
        }
    };
    Ok(Some(Credentials { user, secret, token, source }))
}

/// Whether Docker's config has a login for `key` under `auths` itself (not
/// an empty entry the docker CLI leaves when a credential store holds it),
/// under its own name or a `https://NAME/…` form of it.
fn in_auths(config: &serde_json::Value, key: &str) -> bool {
    let Some(auths) = config["auths"].as_object() else { return false };
    auths.iter().any(|(k, entry)| {
        let bare = k.strip_prefix("https://").or(k.strip_prefix("http://")).map(|r| r.split('/').next().unwrap_or(r));
        let same = k == key || bare == Some(key);
        let login =
            ["auth", "identitytoken", "username"].iter().any(|f| entry[*f].as_str().is_some_and(|v| !v.is_empty()));
        same && login
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::publish::tls::tests::pem;
    use crate::ops::publish::tls::trusted;

    #[test]
    fn credentials_from_docker_config() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        let auth = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, "ci:pa:ss");
        let config = serde_json::json!({
            "auths": {
                "reg.io:5000": { "auth": auth },
                "https://legacy.io": { "auth": auth },
                "bad.io": { "auth": "%%%" },
                "tok.io": { "identitytoken": "tok-123" },
                "https://index.docker.io/v1/": { "auth": auth },
            },
            "credHelpers": { "helped.io": "boxcar-test-no-such-helper" },
        });
        std::fs::write(&path, config.to_string()).unwrap();
        let found = credentials_in(&path, "reg.io:5000").unwrap().unwrap();
        assert_eq!((found.user.as_str(), found.secret.as_str(), found.token), ("ci", "pa:ss", false));
        assert!(found.source.contains("config.json"), "{}", found.source);
        let legacy = credentials_in(&path, "legacy.io").unwrap().unwrap();
        assert_eq!(legacy.user, "ci");
        let token = credentials_in(&path, "tok.io").unwrap().unwrap();
        assert!(token.token && token.secret.as_str() == "tok-123");
        assert!(matches!(token.auth(), RegistryAuth::Bearer(t) if t == "tok-123"));
        assert_eq!(token.for_engine("tok.io").identitytoken.as_deref(), Some("tok-123"));
        assert!(credentials_in(&path, "other.io").unwrap().is_none());
        // Docker Hub's login is stored under its old address, for both names.
        for hub in ["docker.io", "index.docker.io"] {
            assert_eq!(credentials_in(&path, hub).unwrap().unwrap().user, "ci", "{hub}");
        }
        let err = credentials_in(&path, "bad.io").unwrap_err().to_string();
        assert!(err.contains("config.json") && err.contains("docker login bad.io"), "{err}");
        let err = credentials_in(&path, "helped.io").unwrap_err().to_string();
        assert!(err.contains("docker-credential-boxcar-test-no-such-helper"), "{err}");
        std::fs::write(&path, "{not json").unwrap();
        let err = credentials_in(&path, "reg.io:5000").unwrap_err().to_string();
        assert!(err.contains("not JSON"), "{err}");
    }

    /// A credential helper as a shell script: `answers` maps a server to
    /// its (user, secret); any other server gets the credential store's
    /// "not found"; `boom` fails outright.
    fn helper(bin: &Path, name: &str, answers: &[(&str, &str, &str)]) {
        use std::os::unix::fs::PermissionsExt as _;
        let mut script = String::from("#!/bin/sh\nread server\ncase \"$server\" in\n");
        for (server, user, secret) in answers {
            script.push_str(&format!("  {server}) echo '{{\"Username\":\"{user}\",\"Secret\":\"{secret}\"}}' ;;\n"));
        }
        script.push_str("  boom.io) echo 'the keychain is locked' >&2; exit 1 ;;\n");
        // As docker-credential-helpers do: the message on stdout.
        script.push_str("  *) echo 'credentials not found in native keychain'; exit 1 ;;\nesac\n");
        let path = bin.join(format!("docker-credential-{name}"));
        std::fs::write(&path, script).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    /// What the environment decides (DOCKER_CONFIG, HOME, PATH for the
    /// helpers), run in a child process of this test binary so that the
    /// environment is its own: `in_a_child` below.
    #[test]
    fn docker_config_and_credential_helpers() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        helper(&bin, "boxcartest", &[("helped.io", "hu", "hs"), ("both.io", "bu", "bs"), ("tok.io", "<token>", "tt")]);
        helper(&bin, "boxcarstore", &[("store.io", "su", "ss")]);
        let auth = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, "au:as");
        let config = serde_json::json!({
            "auths": { "both.io": { "auth": auth }, "plain.io": { "auth": auth }, "store.io": {} },
            "credHelpers": {
                "helped.io": "boxcartest", "both.io": "boxcartest", "tok.io": "boxcartest",
                "nf.io": "boxcarstore", "boom.io": "boxcartest", "gone.io": "boxcar-no-such-helper",
            },
            "credsStore": "boxcarstore",
        });
        let config_dir = dir.path().join("docker");
        std::fs::create_dir(&config_dir).unwrap();
        std::fs::write(config_dir.join("config.json"), config.to_string()).unwrap();
        let home = dir.path().join("home");
        std::fs::create_dir_all(home.join(".docker")).unwrap();
        std::fs::write(home.join(".docker/config.json"), r#"{"auths":{"home.io":{"auth":"aG86aHA="}}}"#).unwrap();
        let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
        let bundle = dir.path().join("bundle.pem");
        std::fs::write(&bundle, format!("{}{}", pem(), pem())).unwrap();
        let no_bundle = dir.path().join("no-such-bundle.pem");
        for (case, docker_config, ssl_cert_file) in
            [("docker_config", Some(&config_dir), &bundle), ("home", None, &no_bundle)]
        {
            let mut child = std::process::Command::new(std::env::current_exe().unwrap());
            child.args([
                "--exact",
                "ops::publish::login::tests::in_a_child",
                "--ignored",
                "--nocapture",
                "--test-threads",
                "1",
            ]);
            child.env("BOXCAR_REGISTRY_TEST_CASE", case).env("HOME", &home).env("PATH", &path);
            child.env("SSL_CERT_FILE", ssl_cert_file);
            match docker_config {
                Some(d) => child.env("DOCKER_CONFIG", d),
                None => child.env_remove("DOCKER_CONFIG"),
            };
            let out = child.output().unwrap();
            let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
            assert!(out.status.success() && text.contains("1 passed"), "case {case}:\n{text}");
            assert!(text.contains(&format!("child case {case} done")), "case {case}:\n{text}");
        }
    }

    /// The child half of `docker_config_and_credential_helpers`; does
    /// nothing in a test run of its own.
    #[test]
    #[ignore = "run by docker_config_and_credential_helpers, in an environment of its own"]
    fn in_a_child() {
        let Ok(case) = std::env::var("BOXCAR_REGISTRY_TEST_CASE") else { return };
        let found =
            |r: &str| credentials(r).unwrap().map(|c| (c.user.clone(), c.secret.to_string(), c.token, c.source));
        if case == "home" {
            // SSL_CERT_FILE names no file: said, not ignored.
            let err = trusted("reg.io").unwrap_err().to_string();
            assert!(err.contains("SSL_CERT_FILE names") && err.contains("no-such-bundle.pem"), "{err}");
            let home = PathBuf::from(std::env::var_os("HOME").unwrap());
            assert_eq!(docker_config(), Some(home.join(".docker/config.json")));
            assert_eq!(found("home.io").map(|c| (c.0, c.1)), Some(("ho".to_owned(), "hp".to_owned())));
            assert_eq!(found("helped.io"), None);
        } else {
            // The bundle SSL_CERT_FILE names (no certs.d folder for reg.io here).
            assert_eq!(trusted("boxcar-test-no-such-registry.invalid").unwrap().len(), 2);
            let dir = PathBuf::from(std::env::var_os("DOCKER_CONFIG").unwrap());
            assert_eq!(docker_config(), Some(dir.join("config.json")));
            let helped = found("helped.io").unwrap();
            assert_eq!((helped.0.as_str(), helped.1.as_str(), helped.2), ("hu", "hs", false));
            assert_eq!(helped.3, "the credential helper docker-credential-boxcartest");
            // A helper for the registry wins over `auths`, as in the docker CLI.
            let both = found("both.io").unwrap();
            assert_eq!(
                (both.0.as_str(), both.3.as_str()),
                ("bu", "the credential helper docker-credential-boxcartest")
            );
            let token = found("tok.io").unwrap();
            assert_eq!((token.1.as_str(), token.2), ("tt", true));
            // `auths` with the credential store set: the store is not asked.
            let plain = found("plain.io").unwrap();
            assert_eq!((plain.0.as_str(), plain.1.as_str()), ("au", "as"));
            assert!(plain.3.contains("config.json (`plain.io`)"), "{}", plain.3);
            // The credential store has nothing for it: anonymous.
            assert_eq!(found("other.io"), None);
            // The docker CLI's empty entry for a login the store keeps.
            let stored = found("store.io").unwrap();
            assert_eq!(
                (stored.1.as_str(), stored.3.as_str()),
                ("ss", "the credential store docker-credential-boxcarstore")
            );
            // A helper named for the registry that has nothing, fails, or is
            // missing: an error that says which and what to do.
            for (registry, says) in [
                ("nf.io", "credentials not found"),
                ("boom.io", "the keychain is locked"),
                ("gone.io", "docker-credential-boxcar-no-such-helper, which could not be run"),
            ] {
                let err = credentials(registry).unwrap_err().to_string();
                assert!(err.contains(says), "{registry}: {err}");
            }
        }
        println!("child case {case} done");
    }

    #[test]
    fn credentials_never_show_in_debug() {
        let c = Credentials {
            user: "ci".to_owned(),
            secret: Zeroizing::new("hunter2-secret".to_owned()),
            token: false,
            source: "config.json".to_owned(),
        };
        let shown = format!("{c:?}");
        assert!(shown.contains("ci") && !shown.contains("hunter2"), "{shown}");
        let engine = c.for_engine("reg.io");
        assert_eq!(engine.password.as_deref(), Some("hunter2-secret"));
        assert_eq!((engine.username.as_deref(), engine.serveraddress.as_deref()), (Some("ci"), Some("reg.io")));
        assert_eq!(engine.identitytoken, None);
        assert!(matches!(c.auth(), RegistryAuth::Basic(u, p) if u == "ci" && p == "hunter2-secret"));
    }
}
