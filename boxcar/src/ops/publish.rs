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
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig};
use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference, RegistryOperation};
use zeroize::Zeroizing;

use crate::ops::build::assemble::{Blob, Blobs};
use crate::vocab::show::escape;

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
    if text.starts_with('[') {
        bail!("--push {shown}: an IPv6 address as the registry is not supported; give its host name");
    }
    let Some((host, rest)) = text.split_once('/') else {
        if text.contains('.') || text.contains(':') {
            bail!("--push {shown}: add the repository after the registry, e.g. {shown}/team/app");
        }
        bail!("--push {shown}: name the registry, e.g. registry.example.com/team/{shown}");
    };
    if rest.is_empty() {
        bail!("--push {shown}: add the repository after the registry, e.g. {shown}team/app");
    }
    if rest.chars().any(|c| c.is_ascii_uppercase()) && !rest.rsplit('/').next().is_some_and(|l| l.contains(':')) {
        bail!("--push {shown}: repository names are lowercase");
    }
    if !(host.contains('.') || host.contains(':') || host == "localhost") {
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
    let file = escape(&path.to_string_lossy()).into_owned();
    let text = std::fs::read(path).with_context(|| format!("reading {file}"))?;
    let config: serde_json::Value = serde_json::from_slice(&text)
        .with_context(|| format!("{file}: not JSON; fix it or log in again with `docker login`"))?;
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
            bail!(
                "{} failed for {}: {}\nhint: log in with `docker login {1}`",
                escape(&program),
                escape(registry),
                escape(said)
            )
        }
        Err(E::HelperCommunicationError) => {
            bail!("{file} names {source}, which could not be run; install it, or remove it from {file}")
        }
        Err(e) => {
            bail!("{file}: the login for `{}`: {e}; log in again with `docker login {}`", escape(key), escape(registry))
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

/// The CAs a push trusts: the host's bundle (SSL_CERT_FILE, else Debian's)
/// and the engine's own for the registry (`/etc/docker/certs.d/<registry>/*.crt`).
fn trusted(registry: &str) -> anyhow::Result<Vec<Certificate>> {
    let bundle = match std::env::var_os("SSL_CERT_FILE").map(PathBuf::from) {
        Some(named) if !named.is_file() => bail!(
            "SSL_CERT_FILE names {}, which is not a file; point it at a CA bundle, or unset it",
            escape(&named.to_string_lossy())
        ),
        Some(named) => named,
        None => PathBuf::from(HOST_BUNDLE),
    };
    roots(&bundle, &Path::new(DOCKER_CERTS_DIR).join(registry), registry)
}

/// The certificates of `bundle` (if it is a file) and of every `*.crt` in
/// `engine_dir` (if it exists); a file without a certificate is an error, and
/// so is finding none at all.
fn roots(bundle: &Path, engine_dir: &Path, registry: &str) -> anyhow::Result<Vec<Certificate>> {
    let mut files = Vec::new();
    if bundle.is_file() {
        files.push(bundle.to_owned());
    }
    if let Ok(entries) = std::fs::read_dir(engine_dir) {
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
    Ok(certs)
}

/// How boxcar's registry client is set up: HTTPS only, trusting only
/// `certs`, bounded waits.
fn client_config(certs: Vec<Certificate>) -> ClientConfig {
    // The default protocol is HTTPS for every registry (the test holds it).
    ClientConfig {
        tls_certs_only: certs,
        connect_timeout: Some(CONNECT_TIMEOUT),
        read_timeout: Some(READ_TIMEOUT),
        ..ClientConfig::default()
    }
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
        let certs = trusted(&registry)?;
        Session::open_with(target, creds, certs).await
    }

    /// `open` with the login and the CAs given.
    async fn open_with(
        target: Reference,
        creds: Option<Credentials>,
        certs: Vec<Certificate>,
    ) -> anyhow::Result<Session> {
        let registry = target.registry().to_owned();
        if let Some(c) = creds.as_ref().filter(|c| c.token) {
            bail!(
                "the login for {} from {} is an identity token, which `image --push` cannot exchange for \
                 access; log in with a user name and a password or access token (`docker login {0}`)",
                escape(&registry),
                c.source
            );
        }
        // reqwest is built without a default crypto provider (the app picks
        // ring); take the same one. An error means one is installed already.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = Client::try_from(client_config(certs)).context("setting up the registry client")?;
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
fn explain(err: OciDistributionError, doing: &str, registry: &str, creds: Option<&Credentials>) -> anyhow::Error {
    let shown = escape(registry);
    let login = match creds {
        Some(c) => format!("the login of `{}` from {}", escape(&c.user), c.source),
        None => "no login (none in Docker's config.json for it)".to_owned(),
    };
    let refused = || {
        anyhow::anyhow!(
            "the registry {shown} refused {login} while {doing}\n\
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
            if chain.contains("certificate") {
                return anyhow::anyhow!(
                    "the registry {shown} presented a TLS certificate boxcar does not trust while {doing}: {}\n\
                     hint: put its CA in {DOCKER_CERTS_DIR}/{shown}/ca.crt (the Docker engine reads it there too) \
                     or in the bundle SSL_CERT_FILE names",
                    escape(&chain)
                );
            }
            if e.is_connect() || e.is_timeout() {
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
    registry_of(image).is_some()
        && image.contains("@sha256:")
        && Reference::try_from(image).is_ok_and(|r| r.digest().is_some_and(|d| d.starts_with("sha256:")))
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
        for (bad, says) in [
            ("reg.io/", "add the repository after the registry"),
            ("reg.io:5000", "add the repository after the registry, e.g. reg.io:5000/team/app"),
            ("reg.io", "add the repository after the registry, e.g. reg.io/team/app"),
            ("registry:5000", "add the repository after the registry"),
            ("app", "name the registry, e.g. registry.example.com/team/app"),
            ("reg.io/Team/App", "repository names are lowercase"),
            ("[fd00::1]:5000/app", "IPv6"),
        ] {
            let err = parse_target(bad, "t").unwrap_err().to_string();
            assert!(err.contains(says), "{bad}: {err}");
        }
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
        // Docker Hub shorthand names no registry: not a pinned registry reference.
        assert!(!is_pinned(&format!("svc@sha256:{d}")));
        assert!(!is_pinned(&format!("team/svc@sha256:{d}")));
        assert!(is_pinned(&format!("docker.io/team/svc@sha256:{d}")));
        assert_eq!(registry_of("reg.io:5000/app@sha256:x").as_deref(), Some("reg.io:5000"));
        assert_eq!(registry_of("reg.io/app").as_deref(), Some("reg.io"));
        assert_eq!(registry_of("registry:5000/app").as_deref(), Some("registry:5000"));
        assert_eq!(registry_of("localhost/app").as_deref(), Some("localhost"));
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

    fn pem() -> String {
        let params = rcgen::CertificateParams::new(vec!["reg.io".to_owned()]).unwrap();
        params.self_signed(&rcgen::KeyPair::generate().unwrap()).unwrap().pem()
    }

    #[test]
    fn the_host_bundle_and_the_engines_ca_files_are_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let bundle = dir.path().join("bundle.pem");
        std::fs::write(&bundle, format!("{}{}", pem(), pem())).unwrap();
        let engine = dir.path().join("certs.d/reg.io:5000");
        std::fs::create_dir_all(&engine).unwrap();
        std::fs::write(engine.join("ca.crt"), pem()).unwrap();
        // Docker's client certificate and key sit beside the CA: not CAs.
        std::fs::write(engine.join("client.cert"), pem()).unwrap();
        std::fs::write(engine.join("client.key"), "not a certificate").unwrap();
        let nowhere = dir.path().join("none");
        assert_eq!(roots(&bundle, &engine, "reg.io:5000").unwrap().len(), 3);
        assert_eq!(roots(&nowhere, &engine, "reg.io:5000").unwrap().len(), 1);
        assert_eq!(roots(&bundle, &nowhere, "reg.io:5000").unwrap().len(), 2);
        assert!(roots(&bundle, &nowhere, "x").unwrap().iter().all(|c| matches!(c.encoding, CertificateEncoding::Der)));
        let err = roots(&nowhere, &nowhere, "reg.io:5000").unwrap_err().to_string();
        assert!(err.contains("no CA to check reg.io:5000") && err.contains("SSL_CERT_FILE"), "{err}");
        std::fs::write(engine.join("empty.crt"), "").unwrap();
        let err = roots(&nowhere, &engine, "reg.io:5000").unwrap_err().to_string();
        assert!(err.contains("empty.crt: no certificate in it"), "{err}");
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
    fn the_client_speaks_https_to_the_given_cas_only_and_waits_boundedly() {
        use oci_client::client::ClientProtocol;
        let certs = vec![Certificate { encoding: CertificateEncoding::Pem, data: pem().into_bytes() }];
        let config = client_config(certs);
        assert!(matches!(config.protocol, ClientProtocol::Https));
        assert_eq!(config.tls_certs_only.len(), 1);
        assert!(config.extra_root_certificates.is_empty() && !config.accept_invalid_certificates);
        assert_eq!(config.connect_timeout, Some(CONNECT_TIMEOUT));
        assert_eq!(config.read_timeout, Some(READ_TIMEOUT));
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
        assert_eq!(error_chain(&outer), "connecting: connection refused");
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
                "ops::publish::tests::in_a_child",
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
