//! What a push can end in: a target that names no registry, a login that
//! cannot be read or is refused, a CA that cannot be trusted, a registry that
//! cannot be reached or answers otherwise. Every text from a file, a helper
//! or a registry is escaped before it is put in here.

/// A failed `image --push`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `--push TEXT` is not `REGISTRY/REPO[:TAG]`; `problem` says how.
    #[error("--push {target}: {problem}")]
    Target { target: String, problem: String },
    /// Docker's config file could not be read.
    #[error("reading {file}")]
    ConfigRead { file: String, source: std::io::Error },
    /// Docker's config file is not JSON.
    #[error("{file}: not JSON; fix it or log in again with `docker login`")]
    ConfigJson { file: String, source: serde_json::Error },
    /// The credential helper named for the registry failed.
    #[error("{helper} failed for {registry}: {said}\nhint: log in with `docker login {registry}`")]
    Helper { helper: String, registry: String, said: String },
    /// The credential helper or store the config names could not be run.
    #[error("{file} names {named}, which could not be run; install it, or remove it from {file}")]
    HelperMissing { file: String, named: String },
    /// The login in the config could not be read.
    #[error("{file}: the login for `{key}`: {cause}; log in again with `docker login {registry}`")]
    Login { file: String, key: String, registry: String, cause: String },
    /// The login is an identity token, which a push cannot exchange.
    #[error(
        "the login for {registry} from {from} is an identity token, which `image --push` cannot exchange for \
         access; log in with a user name and a password or access token (`docker login {registry}`)"
    )]
    IdentityToken { registry: String, from: String },
    /// `SSL_CERT_FILE` names no file.
    #[error("SSL_CERT_FILE names {path}, which is not a file; point it at a CA bundle, or unset it")]
    CertFileMissing { path: String },
    /// A CA file could not be read.
    #[error("reading the CA file {file}")]
    CaRead { file: String, source: std::io::Error },
    /// A CA file is not PEM.
    #[error("{file}: not a PEM certificate file")]
    CaPem { file: String, source: rustls::pki_types::pem::Error },
    /// A CA file holds no certificate.
    #[error("{file}: no certificate in it")]
    CaEmpty { file: String },
    /// No CA at all to check the registry's certificate against.
    #[error("no CA to check {registry} against: set SSL_CERT_FILE to a bundle, or put the registry's CA in {dir}/")]
    NoCa { registry: String, dir: String },
    /// The registry client could not be set up.
    #[error("setting up the registry client")]
    Client { source: oci_client::errors::OciDistributionError },
    /// The registry refused the login (or the lack of one).
    #[error(
        "the registry {registry} refused {login} while {doing}\n\
         hint: `docker login {registry}` (boxcar reads the same config.json and credential helpers), \
         or check the account may push to this repository"
    )]
    Refused { registry: String, login: String, doing: String },
    /// The registry's certificate is not signed by a trusted CA.
    #[error(
        "the registry {registry} presented a TLS certificate boxcar does not trust while {doing}: {cause}\n\
         hint: put its CA in {certs_dir}/{registry}/ca.crt (the Docker engine reads it there too) \
         or in the bundle SSL_CERT_FILE names",
        certs_dir = super::tls::DOCKER_CERTS_DIR
    )]
    Untrusted { registry: String, doing: String, cause: String },
    /// The registry cannot be reached.
    #[error(
        "cannot reach the registry {registry} while {doing}: {cause}\n\
         hint: check the address and port, and that this machine reaches it (it speaks HTTPS only)"
    )]
    Unreachable { registry: String, doing: String, cause: String },
    /// Anything else the registry answered.
    #[error("the registry {registry}, while {doing}: {said}")]
    Registry { registry: String, doing: String, said: String },
    /// The tag names another manifest than the one pushed.
    #[error(
        "the registry answers {answered} for {tagged}, not the pushed {pushed}: the tag moved meanwhile (another \
         push?) or the registry changed the manifest; deploy by the digest boxcar printed only after checking \
         the registry, and push again"
    )]
    Moved { tagged: String, pushed: String, answered: String },
    /// A manifest media type that is not an HTTP header value.
    #[error("a media type that is not a header value")]
    MediaType { source: http::header::InvalidHeaderValue },
}
