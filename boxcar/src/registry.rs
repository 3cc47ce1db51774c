//! `image --push`: the image `image` wrote, uploaded byte for byte to a
//! registry through the OCI distribution API (the `oci-client` crate), with
//! the credentials Docker's own tools use for that registry (`config.json`,
//! credential helpers, through `docker_credential`) and the CAs the host and
//! the Docker engine trust for it. The manifest digest `image` prints is the
//! digest the registry serves, and the pinned reference
//! `REGISTRY/REPO@sha256:…` is what `deploy` and `manifests` take.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference, RegistryOperation};
use zeroize::Zeroizing;

use crate::image::assemble::{Blob, Blobs};
use crate::show::escape;

/// Where the Docker engine looks for a registry's CA (`<host[:port]>/*.crt`);
/// boxcar trusts the same files, so one CA set-up serves both.
pub const DOCKER_CERTS_DIR: &str = "/etc/docker/certs.d";
/// The host's CA bundle when SSL_CERT_FILE names none.
const HOST_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const READ_TIMEOUT: Duration = Duration::from_secs(120);

/// Parses `--push REGISTRY/REPO[:TAG]`: the registry must be named (a host
/// with a dot or a port, or `localhost`), no digest (the push makes it), and
/// the tag is `default_tag` when none is given.
pub fn parse_target(text: &str, default_tag: &str) -> anyhow::Result<Reference> {
    let shown = escape(text);
    if text.contains('@') {
        bail!("--push {shown}: give REGISTRY/REPO[:TAG] without a digest; the push prints the digest");
    }
    let Some((host, rest)) = text.split_once('/') else {
        bail!("--push {shown}: name the registry, e.g. registry.example.com/team/{shown}");
    };
    if !(host.contains('.') || host.contains(':') || host == "localhost") || rest.is_empty() {
        bail!(
            "--push {shown}: `{}` is not a registry host (it needs a dot or a port, or is `localhost`); \
             give REGISTRY/REPO[:TAG], e.g. registry.example.com/team/app",
            escape(host)
        );
    }
    let has_tag = rest.rsplit('/').next().is_some_and(|last| last.contains(':'));
    let full = if has_tag { text.to_owned() } else { format!("{text}:{default_tag}") };
    let reference = Reference::try_from(full.as_str())
        .map_err(|e| anyhow::anyhow!("--push {shown}: not an image reference: {e}"))?;
    Ok(reference)
}

/// A registry login, from Docker's config or a credential helper.
pub struct Credentials {
    user: String,
    secret: Zeroizing<String>,
    /// An identity token rather than a password.
    token: bool,
    /// Where it came from, for messages.
    pub source: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").field("user", &self.user).field("source", &self.source).finish_non_exhaustive()
    }
}

impl Credentials {
    fn auth(&self) -> RegistryAuth {
        match self.token {
            true => RegistryAuth::Bearer(self.secret.to_string()),
            false => RegistryAuth::Basic(self.user.clone(), self.secret.to_string()),
        }
    }

    /// The same login for the engine (`X-Registry-Auth`): it pulls with it,
    /// and a Swarm manager hands it to the nodes that run the tasks.
    pub fn for_engine(&self, registry: &str) -> bollard::auth::DockerCredentials {
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
pub fn credentials(registry: &str) -> anyhow::Result<Option<Credentials>> {
    match docker_config().filter(|p| p.exists()) {
        Some(path) => credentials_in(&path, registry),
        None => Ok(None),
    }
}

/// The login for `registry` in the Docker config file at `path`.
fn credentials_in(path: &Path, registry: &str) -> anyhow::Result<Option<Credentials>> {
    use docker_credential::{CredentialRetrievalError as E, DockerCredential};
    let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let config: serde_json::Value = serde_json::from_slice(&text)
        .with_context(|| format!("{}: not JSON; fix it or log in again with `docker login`", path.display()))?;
    let hub = registry == "docker.io" || registry == "index.docker.io";
    let keys: Vec<String> = match hub {
        true => vec!["https://index.docker.io/v1/".to_owned()],
        false => vec![registry.to_owned(), format!("https://{registry}"), format!("https://{registry}/v1/")],
    };
    for key in keys {
        let helper = config["credHelpers"][&key].as_str().or(config["credsStore"].as_str()).filter(|h| !h.is_empty());
        let has_login = config["auths"].get(&key).is_some() || config["credHelpers"].get(&key).is_some();
        if !has_login && helper.is_none() {
            continue;
        }
        let source = match (config["auths"].get(&key), helper) {
            (Some(_), _) if config["credHelpers"].get(&key).is_none() => format!("{} (`{key}`)", path.display()),
            (_, Some(h)) => format!("the credential helper docker-credential-{h}"),
            _ => format!("{} (`{key}`)", path.display()),
        };
        let found = docker_credential::get_credential_from_reader(&text[..], &key);
        let (user, secret, token) = match found {
            Ok(DockerCredential::UsernamePassword(u, p)) => (u, Zeroizing::new(p), false),
            Ok(DockerCredential::IdentityToken(t)) => (String::new(), Zeroizing::new(t), true),
            Err(E::NoCredentialConfigured) => continue,
            // A credential store that has no login for this key says so with
            // a failure ("credentials not found in native keychain").
            Err(E::HelperFailure { stderr, .. }) if stderr.contains("not found") && !has_login => continue,
            Err(E::HelperFailure { helper, stderr, .. }) => bail!(
                "{helper} failed for {}: {}\nhint: log in again with `docker login {0}`",
                escape(registry),
                escape(stderr.trim())
            ),
            Err(E::HelperCommunicationError) => bail!(
                "{} names {source}, which could not be run; install it or remove it from the config",
                path.display()
            ),
            Err(e) => bail!("{}: the login for `{}`: {e}; log in again with `docker login {1}`", path.display(), key),
        };
        return Ok(Some(Credentials { user, secret, token, source }));
    }
    Ok(None)
}

/// The CAs a push trusts: the host's bundle (SSL_CERT_FILE, else Debian's)
/// and the engine's own for the registry (`/etc/docker/certs.d/<registry>/*.crt`).
fn roots(registry: &str) -> anyhow::Result<(Vec<Certificate>, Vec<PathBuf>)> {
    let mut files = Vec::new();
    let bundle = std::env::var_os("SSL_CERT_FILE").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(HOST_BUNDLE));
    if bundle.is_file() {
        files.push(bundle);
    }
    let engine_dir = Path::new(DOCKER_CERTS_DIR).join(registry);
    if let Ok(entries) = std::fs::read_dir(&engine_dir) {
        let mut crts: Vec<PathBuf> =
            entries.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "crt")).collect();
        crts.sort();
        files.extend(crts);
    }
    let mut certs = Vec::new();
    for file in &files {
        let data = std::fs::read(file).with_context(|| format!("reading the CA file {}", file.display()))?;
        let before = certs.len();
        for cert in rustls::pki_types::pem::PemObject::pem_slice_iter(&data) {
            let cert: rustls::pki_types::CertificateDer<'_> =
                cert.with_context(|| format!("{}: not a PEM certificate file", file.display()))?;
            certs.push(Certificate { encoding: CertificateEncoding::Der, data: cert.to_vec() });
        }
        if certs.len() == before {
            bail!("{}: no certificate in it", file.display());
        }
    }
    if certs.is_empty() {
        bail!(
            "no CA to check {} against: set SSL_CERT_FILE to a bundle, or put the registry's CA in {}/",
            escape(registry),
            engine_dir.display()
        );
    }
    Ok((certs, files))
}

/// A client for `registry`, trusting only `roots`.
fn client(registry: &str) -> anyhow::Result<Client> {
    // reqwest is built without a default crypto provider (the app picks
    // ring); take the same one. An error means one is installed already.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (tls_certs_only, _) = roots(registry)?;
    let config = ClientConfig {
        protocol: ClientProtocol::Https,
        tls_certs_only,
        connect_timeout: Some(CONNECT_TIMEOUT),
        read_timeout: Some(READ_TIMEOUT),
        ..ClientConfig::default()
    };
    Client::try_from(config).context("setting up the registry client")
}

/// What a push did.
#[derive(Debug)]
pub struct Pushed {
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
pub struct Session {
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
    pub async fn open(target: Reference) -> anyhow::Result<Session> {
        let registry = target.registry().to_owned();
        let creds = credentials(&registry)?;
        let auth = creds.as_ref().map(Credentials::auth).unwrap_or(RegistryAuth::Anonymous);
        let client = client(&registry)?;
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

    fn explain(&self, e: OciDistributionError, doing: &str) -> anyhow::Error {
        explain(e, doing, self.target.registry(), self.creds.as_ref())
    }

    /// Pushes the image's blobs (those the registry lacks) and its manifest,
    /// then asks the registry which digest the tag names: it must be the
    /// manifest's.
    pub async fn push(&self, blobs: &Blobs) -> anyhow::Result<Pushed> {
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
fn confirm(tagged: &str, pushed: &str, answered: &str) -> anyhow::Result<()> {
    if answered != pushed {
        bail!(
            "the registry answers {} for {}, not the pushed {pushed}: the tag moved meanwhile (another push?) \
             or the registry changed the manifest; deploy by the digest boxcar printed only after checking \
             the registry, and push again",
            escape(answered),
            escape(tagged)
        );
    }
    Ok(())
}

fn http_header(media_type: &str) -> anyhow::Result<http::HeaderValue> {
    http::HeaderValue::from_str(media_type).context("a media type that is not a header value")
}

fn short_type(blob: &Blob) -> &'static str {
    match blob.media_type {
        crate::image::assemble::MEDIA_LAYER => "layer",
        crate::image::assemble::MEDIA_CONFIG => "config",
        _ => "blob",
    }
}

fn short(digest: &str) -> &str {
    digest.get(..19).unwrap_or(digest)
}

/// A registry error as the cause and what to do: unreachable, the TLS
/// certificate not trusted, the credentials refused, or what the registry said.
fn explain(err: OciDistributionError, doing: &str, registry: &str, creds: Option<&Credentials>) -> anyhow::Error {
    let shown = escape(registry);
    let login = match creds {
        Some(c) => format!("the login of `{}` from {}", escape(&c.user), c.source),
        None => "no login (none in Docker's config.json for it)".to_owned(),
    };
    let refused = || {
        anyhow::anyhow!(
            "the registry {shown} refused {login} while {doing}; nothing was deployed\n\
             hint: `docker login {shown}` (boxcar reads the same config.json and credential helpers), \
             or check the account may push to this repository"
        )
    };
    match &err {
        OciDistributionError::RequestError(e) => {
            if matches!(e.status().map(|s| s.as_u16()), Some(401 | 403)) {
                return refused();
            }
            let chain = error_chain(e);
            if chain.contains("certificate") || chain.contains("UnknownIssuer") {
                return anyhow::anyhow!(
                    "the registry {shown} presented a TLS certificate boxcar does not trust while {doing}: {}\n\
                     hint: put its CA in {DOCKER_CERTS_DIR}/{shown}/ca.crt (the Docker engine reads it there too) \
                     or in the bundle SSL_CERT_FILE names",
                    escape(&chain)
                );
            }
            if e.is_connect() || e.is_timeout() || chain.contains("connect") {
                return anyhow::anyhow!(
                    "cannot reach the registry {shown} while {doing}: {}\n\
                     hint: check the address and port, and that this machine reaches it (it speaks HTTPS only)",
                    escape(&chain)
                );
            }
            anyhow::anyhow!("the registry {shown}, while {doing}: {}", escape(&chain))
        }
        OciDistributionError::AuthenticationFailure(_) | OciDistributionError::UnauthorizedError { .. } => refused(),
        OciDistributionError::ServerError { code: 401 | 403, .. } => refused(),
        OciDistributionError::RegistryError { envelope, .. }
            if envelope.errors.iter().any(|e| {
                let code = format!("{:?}", e.code);
                code.contains("Unauthorized") || code.contains("Denied")
            }) =>
        {
            refused()
        }
        _ => anyhow::anyhow!("the registry {shown}, while {doing}: {}", escape(&err.to_string())),
    }
}

/// An error and its causes on one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// Whether `image` is a registry reference pinned by digest
/// (`REGISTRY/REPO@sha256:<64 hex>`).
pub fn is_pinned(image: &str) -> bool {
    Reference::try_from(image).is_ok_and(|r| r.digest().is_some_and(|d| d.starts_with("sha256:")))
        && image.contains("@sha256:")
}

/// The registry host of a reference that names one (`host.tld/…`,
/// `host:port/…`, `localhost/…`).
pub fn registry_of(image: &str) -> Option<String> {
    let (host, _) = image.split_once('/')?;
    (host.contains('.') || host.contains(':') || host == "localhost").then(|| host.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_targets_name_a_registry_and_no_digest() {
        let r = parse_target("registry.example.com/team/app", "abc123").unwrap();
        assert_eq!((r.registry(), r.repository(), r.tag()), ("registry.example.com", "team/app", Some("abc123")));
        let r = parse_target("10.0.0.1:5000/app:v2", "abc123").unwrap();
        assert_eq!((r.registry(), r.repository(), r.tag()), ("10.0.0.1:5000", "app", Some("v2")));
        let r = parse_target("localhost/app", "t").unwrap();
        assert_eq!(r.registry(), "localhost");
        // A port in the host is not a tag.
        assert_eq!(parse_target("host:5000/app", "t").unwrap().tag(), Some("t"));
        for bad in ["app", "team/app", "app:v1", "reg.io/", "reg.io/app@sha256:00", "reg.io/App"] {
            assert!(parse_target(bad, "t").is_err(), "{bad}");
        }
        let err = parse_target("team/app", "t").unwrap_err().to_string();
        assert!(err.contains("not a registry host"), "{err}");
        let err = parse_target("reg.io/a@sha256:x", "t").unwrap_err().to_string();
        assert!(err.contains("without a digest"), "{err}");
    }

    #[test]
    fn a_moved_tag_is_refused() {
        let a = format!("sha256:{}", "a".repeat(64));
        let b = format!("sha256:{}", "b".repeat(64));
        confirm("reg.io/app:v1", &a, &a).unwrap();
        let err = confirm("reg.io/app:v1", &a, &b).unwrap_err().to_string();
        assert!(err.contains(&b) && err.contains(&a) && err.contains("the tag moved"), "{err}");
    }

    #[test]
    fn pinned_references() {
        let d = "a".repeat(64);
        assert!(is_pinned(&format!("reg.io/app@sha256:{d}")));
        assert!(is_pinned(&format!("reg.io:5000/team/app:v1@sha256:{d}")));
        assert!(!is_pinned("reg.io/app:v1"));
        assert!(!is_pinned("reg.io/app@sha256:abc"));
        assert!(!is_pinned(&format!("sha256:{d}")));
        assert_eq!(registry_of("reg.io:5000/app@sha256:x").as_deref(), Some("reg.io:5000"));
        assert_eq!(registry_of("team/app"), None);
        assert_eq!(registry_of("app:latest"), None);
    }

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
        let err = credentials_in(&path, "bad.io").unwrap_err().to_string();
        assert!(err.contains("config.json") && err.contains("docker login bad.io"), "{err}");
        let err = credentials_in(&path, "helped.io").unwrap_err().to_string();
        assert!(err.contains("docker-credential-boxcar-test-no-such-helper"), "{err}");
        std::fs::write(&path, "{not json").unwrap();
        let err = credentials_in(&path, "reg.io:5000").unwrap_err().to_string();
        assert!(err.contains("not JSON"), "{err}");
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
        assert_eq!(c.for_engine("reg.io").password.as_deref(), Some("hunter2-secret"));
        assert!(matches!(c.auth(), RegistryAuth::Basic(u, p) if u == "ci" && p == "hunter2-secret"));
    }
}
