//! `image --push`: the image `image` wrote, uploaded byte for byte to a
//! registry through the OCI distribution API (the `oci-client` crate), with
//! the credentials Docker's own tools use for that registry ([`login`]) and
//! the CAs the host and the Docker engine trust for it ([`tls`]). The
//! manifest digest `image` prints is the digest the registry serves, and the
//! pinned reference `REGISTRY/REPO@sha256:…` ([`reference`]) is what `deploy`
//! and `manifests` take.

mod error;
mod login;
mod reference;
mod tls;

use std::time::{Duration, Instant};

use oci_client::client::Certificate;
use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference, RegistryOperation};

pub(crate) use self::error::Error;
pub(crate) use self::login::{Credentials, credentials};
pub(crate) use self::reference::{is_pinned, parse_target, registry_of};
pub(crate) use self::tls::DOCKER_CERTS_DIR;
use self::tls::{client_config, trusted};
use crate::ops::build::assemble::{Blob, Blobs};
use crate::vocab::show::escape;

/// What a push did.
#[derive(Debug)]
pub(crate) struct Pushed {
    /// `REGISTRY/REPO@sha256:…`.
    pub pinned: String,
    /// `REGISTRY/REPO:TAG`.
    pub tagged: String,
    /// Blobs sent, and blobs the registry had already.
    pub sent: Vec<String>,
    pub present: Vec<String>,
    pub bytes_sent: usize,
    pub took: Duration,
}

/// A signed-in connection to a registry for one push target.
pub(crate) struct Session {
    client: Client,
    auth: RegistryAuth,
    creds: Option<Credentials>,
    target: Reference,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").field("target", &self.target.whole()).field("creds", &self.creds).finish()
    }
}

impl Session {
    /// Signs in and checks that the login may read the repository, before
    /// anything is built: an unreachable registry, an untrusted certificate
    /// or refused credentials fail here, in a second.
    pub(crate) async fn open(target: Reference) -> Result<Session, Error> {
        let registry = target.registry().to_owned();
        let creds = credentials(&registry)?;
        let certs = trusted(&registry)?;
        Session::open_with(target, creds, certs).await
    }

    /// `open` with the login and the CAs given.
    async fn open_with(
        target: Reference,
        creds: Option<Credentials>,
        certs: Vec<Certificate>,
    ) -> Result<Session, Error> {
        let registry = target.registry().to_owned();
        if let Some(c) = creds.as_ref().filter(|c| c.token) {
            return Err(Error::IdentityToken { registry: escape(&registry).into_owned(), from: c.source.clone() });
        }
        // reqwest is built without a default crypto provider (the app picks
        // ring); take the same one. An error means one is installed already.
        // rustls 0.23.48 deprecates ring's provider for its lack of
        // post-quantum key exchange; the only provider that has it, aws-lc-rs,
        // needs cmake and a C toolchain on every host that builds the xtask,
        // for a push to a registry. Allowed, so a workspace whose lock file
        // picks a newer rustls sees no warning from boxcar's code.
        #[allow(deprecated)]
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = Client::try_from(client_config(certs)).map_err(|source| Error::Client { source })?;
        let auth = creds.as_ref().map(Credentials::auth).unwrap_or(RegistryAuth::Anonymous);
        let session = Session { client, auth, creds, target };
        eprintln!(
            "registry {}: pushing as {}",
            escape(&registry),
            session
                .creds
                .as_ref()
                .map(|c| format!("`{}` ({})", escape(&c.user), c.source))
                .unwrap_or("anonymous".into())
        );
        let t = &session.target;
        session
            .client
            .auth(t, &session.auth, RegistryOperation::Push)
            .await
            .map_err(|e| session.explain(e, "signing in"))?;
        // A blob no registry has (the digest of nothing): 404 to a login that
        // may read, 401 to one that may not.
        let nothing = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        session.client.blob_exists(t, nothing).await.map_err(|e| session.explain(e, "signing in"))?;
        Ok(session)
    }

    fn explain(&self, e: OciDistributionError, doing: &str) -> Error {
        explain(e, doing, self.target.registry(), self.creds.as_ref())
    }

    /// Pushes the image's blobs (those the registry lacks) and its manifest,
    /// then asks the registry which digest the tag names: it must be the
    /// manifest's.
    pub(crate) async fn push(&self, blobs: &Blobs) -> Result<Pushed, Error> {
        let started = Instant::now();
        let target = &self.target;
        let tagged = target.whole();
        let (mut sent, mut present, mut bytes_sent) = (Vec::new(), Vec::new(), 0);
        for blob in [&blobs.layer, &blobs.config] {
            let what = format!("{} {}", short_type(blob), short(&blob.digest));
            if self.client.blob_exists(target, &blob.digest).await.map_err(|e| self.explain(e, "asking for a blob"))? {
                eprintln!("  {what}: already there");
                present.push(blob.digest.clone());
                continue;
            }
            let t = Instant::now();
            self.client
                .push_blob(target, blob.data.clone(), &blob.digest)
                .await
                .map_err(|e| self.explain(e, &format!("uploading the {what}")))?;
            eprintln!(
                "  {what}: sent {:.1} KiB in {:.1} s",
                blob.data.len() as f64 / 1024.0,
                t.elapsed().as_secs_f64()
            );
            bytes_sent += blob.data.len();
            sent.push(blob.digest.clone());
        }
        let content_type = http_header(blobs.manifest.media_type)?;
        self.client
            .push_manifest_raw(target, blobs.manifest.data.clone(), content_type)
            .await
            .map_err(|e| self.explain(e, "uploading the manifest"))?;
        let answered = self
            .client
            .fetch_manifest_digest(target, &self.auth)
            .await
            .map_err(|e| self.explain(e, "reading the tag back"))?;
        confirm(&tagged, &blobs.manifest.digest, &answered)?;
        let pinned = format!("{}/{}@{}", target.registry(), target.repository(), blobs.manifest.digest);
        Ok(Pushed { pinned, tagged, sent, present, bytes_sent, took: started.elapsed() })
    }
}

/// The registry must name the manifest boxcar pushed: another digest means
/// the tag moved meanwhile (another push) or the registry rewrote it.
fn confirm(tagged: &str, pushed: &str, answered: &str) -> Result<(), Error> {
    if answered != pushed {
        return Err(Error::Moved {
            tagged: escape(tagged).into_owned(),
            pushed: pushed.to_owned(),
            answered: escape(answered).into_owned(),
        });
    }
    Ok(())
}

fn http_header(media_type: &str) -> Result<http::HeaderValue, Error> {
    http::HeaderValue::from_str(media_type).map_err(|source| Error::MediaType { source })
}

fn short_type(blob: &Blob) -> &'static str {
    match blob.media_type {
        crate::ops::build::assemble::MEDIA_LAYER => "layer",
        crate::ops::build::assemble::MEDIA_CONFIG => "config",
        _ => "blob",
    }
}

fn short(digest: &str) -> &str {
    digest.get(..19).unwrap_or(digest)
}

/// A registry error as the cause and what to do: unreachable, the TLS
/// certificate not trusted, the credentials refused, or what the registry said.
fn explain(err: OciDistributionError, doing: &str, registry: &str, creds: Option<&Credentials>) -> Error {
    let shown = escape(registry).into_owned();
    let doing = doing.to_owned();
    let login = match creds {
        Some(c) => format!("the login of `{}` from {}", escape(&c.user), c.source),
        None => "no login (none in Docker's config.json for it)".to_owned(),
    };
    let refused = |registry, doing| Error::Refused { registry, login, doing };
    match &err {
        OciDistributionError::RequestError(e) => {
            if matches!(e.status().map(|s| s.as_u16()), Some(401 | 403)) {
                return refused(shown, doing);
            }
            let cause = escape(&crate::vocab::show::chain(e)).into_owned();
            if cause.contains("certificate") {
                return Error::Untrusted { registry: shown, doing, cause };
            }
            if e.is_connect() || e.is_timeout() {
                return Error::Unreachable { registry: shown, doing, cause };
            }
            Error::Registry { registry: shown, doing, said: cause }
        }
        OciDistributionError::AuthenticationFailure(_) | OciDistributionError::UnauthorizedError { .. } => {
            refused(shown, doing)
        }
        OciDistributionError::ServerError { code: 401 | 403, .. } => refused(shown, doing),
        OciDistributionError::RegistryError { envelope, .. }
            if envelope.errors.iter().any(|e| {
                let code = format!("{:?}", e.code);
                code.contains("Unauthorized") || code.contains("Denied")
            }) =>
        {
            refused(shown, doing)
        }
        _ => Error::Registry { registry: shown, doing, said: escape(&err.to_string()).into_owned() },
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use zeroize::Zeroizing;

    use super::*;
    use crate::ops::publish::tls::roots;
    use crate::ops::publish::tls::tests::pem;

    #[test]
    fn a_moved_tag_is_refused() {
        let a = format!("sha256:{}", "a".repeat(64));
        let b = format!("sha256:{}", "b".repeat(64));
        confirm("reg.io/app:v1", &a, &a).unwrap();
        let err = confirm("reg.io/app:v1", &a, &b).unwrap_err().to_string();
        assert!(err.contains(&b) && err.contains(&a) && err.contains("the tag moved"), "{err}");
    }

    fn login() -> Credentials {
        Credentials {
            user: "ci".to_owned(),
            secret: Zeroizing::new("pw-123456".to_owned()),
            token: false,
            source: "/home/ci/.docker/config.json".to_owned(),
        }
    }

    #[test]
    fn registry_errors_say_the_cause_and_what_to_do() {
        use oci_client::errors::{OciEnvelope, OciError, OciErrorCode};
        let refused = |e: OciDistributionError, creds: Option<&Credentials>| {
            let text = explain(e, "uploading", "reg.io:5000", creds).to_string();
            assert!(text.contains("refused") && text.contains("docker login reg.io:5000"), "{text}");
            assert!(!text.contains("pw-123456"), "{text}");
            text
        };
        let server = |code| OciDistributionError::ServerError { code, url: "u".into(), message: "m".into() };
        let envelope = |code| OciDistributionError::RegistryError {
            envelope: OciEnvelope {
                errors: vec![OciError { code, message: "no".into(), detail: serde_json::Value::Null }],
            },
            url: "u".into(),
        };
        let text = refused(server(401), Some(&login()));
        assert!(text.contains("`ci` from /home/ci/.docker/config.json") && text.contains("while uploading"), "{text}");
        let text = refused(server(403), None);
        assert!(text.contains("no login"), "{text}");
        refused(envelope(OciErrorCode::Unauthorized), None);
        refused(envelope(OciErrorCode::Denied), None);
        refused(OciDistributionError::AuthenticationFailure("x".into()), None);
        refused(OciDistributionError::UnauthorizedError { url: "u".into() }, None);
        for other in [server(500), envelope(OciErrorCode::BlobUnknown), OciDistributionError::RegistryNoDigestError] {
            let text = explain(other, "uploading", "reg.io:5000", None).to_string();
            assert!(text.starts_with("the registry reg.io:5000, while uploading: "), "{text}");
            assert!(!text.contains("refused"), "{text}");
        }
        // A connection refused, found when signing in: where, and that it speaks HTTPS.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let target = parse_target(&format!("127.0.0.1:{port}/svc"), "t").unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let text = rt.block_on(Session::open(target)).unwrap_err().to_string();
        assert!(text.starts_with(&format!("cannot reach the registry 127.0.0.1:{port} while signing in")), "{text}");
        assert!(text.contains("HTTPS only"), "{text}");
    }

    #[test]
    fn progress_names_blobs_briefly() {
        let built = crate::ops::build::assemble::build(&crate::ops::build::assemble::tests::spec(), &[]).unwrap();
        assert_eq!(short_type(&built.blobs.layer), "layer");
        assert_eq!(short_type(&built.blobs.config), "config");
        assert_eq!(short_type(&built.blobs.manifest), "blob");
        assert_eq!(short(&built.blobs.layer.digest), &built.blobs.layer.digest[..19]);
        assert_eq!(short("sha256:ab"), "sha256:ab");
    }

    #[test]
    fn an_error_and_its_causes_on_one_line() {
        let inner = std::io::Error::other("connection refused");
        let outer = std::io::Error::other(Wrapped(inner));
        assert_eq!(crate::vocab::show::chain(&outer), "connecting: connection refused");
    }

    #[derive(Debug)]
    struct Wrapped(std::io::Error);

    impl std::fmt::Display for Wrapped {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("connecting")
        }
    }

    impl std::error::Error for Wrapped {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    const PASSWORD: &str = "unit-test-registry-password";

    /// Debian's registry (`docker-registry`, which `cargo xtask test`
    /// installs) on 127.0.0.1, with TLS from a CA made here and basic auth
    /// for `ci` with `PASSWORD`.
    struct TestRegistry {
        child: std::process::Child,
        address: String,
        dir: tempfile::TempDir,
    }

    impl TestRegistry {
        fn start() -> TestRegistry {
            use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
            let program = Path::new("/usr/bin/docker-registry");
            assert!(program.exists(), "these tests need Debian's docker-registry (`cargo xtask test` installs it)");
            let dir = tempfile::tempdir().unwrap();
            let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
            ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
            let key = KeyPair::generate().unwrap();
            let server = CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap().signed_by(&key, &ca).unwrap();
            std::fs::write(dir.path().join("ca.crt"), ca.pem()).unwrap();
            std::fs::write(dir.path().join("server.crt"), server.pem()).unwrap();
            std::fs::write(dir.path().join("server.key"), key.serialize_pem()).unwrap();
            // The lowest cost: the registry checks the hash on every request.
            std::fs::write(dir.path().join("htpasswd"), format!("ci:{}\n", bcrypt::hash(PASSWORD, 4).unwrap()))
                .unwrap();
            let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            let address = format!("127.0.0.1:{port}");
            let d = dir.path().display();
            let config = format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {d}/storage\n\
                 http:\n  addr: {address}\n  tls:\n    certificate: {d}/server.crt\n    key: {d}/server.key\n\
                 auth:\n  htpasswd:\n    realm: test\n    path: {d}/htpasswd\n"
            );
            std::fs::write(dir.path().join("config.yml"), config).unwrap();
            let log = std::fs::File::create(dir.path().join("log")).unwrap();
            let child = std::process::Command::new(program)
                .arg("serve")
                .arg(dir.path().join("config.yml"))
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap();
            let registry = TestRegistry { child, address, dir };
            let deadline = Instant::now() + Duration::from_secs(20);
            while std::net::TcpStream::connect(&registry.address).is_err() {
                let log = std::fs::read_to_string(registry.dir.path().join("log")).unwrap_or_default();
                assert!(Instant::now() < deadline, "the registry did not start:\n{log}");
                std::thread::sleep(Duration::from_millis(50));
            }
            registry
        }

        /// Its CA, as a push would trust it.
        fn ca(&self) -> Vec<Certificate> {
            roots(&self.dir.path().join("ca.crt"), Path::new("/nonexistent"), &self.address).unwrap()
        }
    }

    impl Drop for TestRegistry {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    fn as_ci(password: &str) -> Option<Credentials> {
        let secret = Zeroizing::new(password.to_owned());
        Some(Credentials { user: "ci".to_owned(), secret, token: false, source: "the test".to_owned() })
    }

    #[test]
    fn a_push_to_a_real_registry() {
        let registry = TestRegistry::start();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let target = parse_target(&format!("{}/team/svc", registry.address), "v1").unwrap();
        let open = |creds, certs| rt.block_on(Session::open_with(target.clone(), creds, certs));

        // Refused before anything is sent: a wrong password, no login, a CA
        // that did not sign the registry's certificate.
        let err = open(as_ci("wrong"), registry.ca()).unwrap_err().to_string();
        assert!(err.contains("refused the login of `ci` from the test while signing in"), "{err}");
        let err = open(None, registry.ca()).unwrap_err().to_string();
        assert!(err.contains("refused no login"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("other.pem"), pem()).unwrap();
        let other = roots(&dir.path().join("other.pem"), dir.path(), "x").unwrap();
        let err = open(as_ci(PASSWORD), other).unwrap_err().to_string();
        assert!(err.contains("a TLS certificate boxcar does not trust while signing in"), "{err}");
        assert!(err.contains(&format!("/etc/docker/certs.d/{}/ca.crt", registry.address)), "{err}");

        let token = Some(Credentials {
            user: String::new(),
            secret: Zeroizing::new("refresh-token".to_owned()),
            token: true,
            source: "the test".to_owned(),
        });
        let err = open(token, registry.ca()).unwrap_err().to_string();
        assert!(err.contains("is an identity token") && !err.contains("refresh-token"), "{err}");
        let session = open(as_ci(PASSWORD), registry.ca()).unwrap();
        assert!(!format!("{session:?}").contains(PASSWORD));
        assert!(format!("{session:?}").contains("team/svc:v1"));
        let built = crate::ops::build::assemble::build(&crate::ops::build::assemble::tests::spec(), &[]).unwrap();
        let blobs = &built.blobs;
        let pushed = rt.block_on(session.push(blobs)).unwrap();
        assert_eq!(pushed.sent, [blobs.layer.digest.clone(), blobs.config.digest.clone()]);
        assert!(pushed.present.is_empty());
        assert_eq!(pushed.bytes_sent, blobs.layer.data.len() + blobs.config.data.len());
        assert_eq!(pushed.pinned, format!("{}/team/svc@{}", registry.address, blobs.manifest.digest));
        assert_eq!(pushed.tagged, format!("{}/team/svc:v1", registry.address));
        // The registry serves the manifest's own bytes under its digest.
        let by_digest = Reference::try_from(pushed.pinned.as_str()).unwrap();
        let media = [blobs.manifest.media_type];
        let (raw, digest) = rt.block_on(session.client.pull_manifest_raw(&by_digest, &session.auth, &media)).unwrap();
        assert_eq!((&raw[..], digest.as_str()), (&blobs.manifest.data[..], blobs.manifest.digest.as_str()));
        // Again: nothing to send.
        let again = rt.block_on(session.push(blobs)).unwrap();
        assert!(again.sent.is_empty() && again.bytes_sent == 0, "{again:?}");
        assert_eq!(again.present.len(), 2);
        assert_eq!(again.pinned, pushed.pinned);
    }
}
