//! Whom a push trusts: HTTPS only, to the CAs of the host's bundle
//! (`SSL_CERT_FILE`, else Debian's) and of the engine's own folder for the
//! registry (`/etc/docker/certs.d/<registry>/*.crt`), with bounded waits.

use std::path::{Path, PathBuf};
use std::time::Duration;

use oci_client::client::{Certificate, CertificateEncoding, ClientConfig};

use super::Error;
use crate::vocab::layout::CA_BUNDLE;
use crate::vocab::show::escape;

/// Where the Docker engine looks for a registry's CA (`<host[:port]>/*.crt`);
/// boxcar trusts the same files, so one CA set-up serves both.
pub(crate) const DOCKER_CERTS_DIR: &str = "/etc/docker/certs.d";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const READ_TIMEOUT: Duration = Duration::from_secs(120);

/// The CAs a push trusts: the host's bundle (SSL_CERT_FILE, else Debian's)
/// and the engine's own for the registry (`/etc/docker/certs.d/<registry>/*.crt`).
pub(super) fn trusted(registry: &str) -> Result<Vec<Certificate>, Error> {
    let bundle = match std::env::var_os("SSL_CERT_FILE").map(PathBuf::from) {
        Some(named) if !named.is_file() => {
            return Err(Error::CertFileMissing { path: escape(&named.to_string_lossy()).into_owned() });
        }
        Some(named) => named,
        None => PathBuf::from(CA_BUNDLE),
    };
    roots(&bundle, &Path::new(DOCKER_CERTS_DIR).join(registry), registry)
}

/// The certificates of `bundle` (if it is a file) and of every `*.crt` in
/// `engine_dir` (if it exists); a file without a certificate is an error, and
/// so is finding none at all.
pub(super) fn roots(bundle: &Path, engine_dir: &Path, registry: &str) -> Result<Vec<Certificate>, Error> {
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
        let shown = || file.display().to_string();
        let data = std::fs::read(file).map_err(|source| Error::CaRead { file: shown(), source })?;
        let before = certs.len();
        for cert in rustls::pki_types::pem::PemObject::pem_slice_iter(&data) {
            let cert: rustls::pki_types::CertificateDer<'_> =
                cert.map_err(|source| Error::CaPem { file: shown(), source })?;
            certs.push(Certificate { encoding: CertificateEncoding::Der, data: cert.to_vec() });
        }
        if certs.len() == before {
            return Err(Error::CaEmpty { file: shown() });
        }
    }
    if certs.is_empty() {
        return Err(Error::NoCa { registry: escape(registry).into_owned(), dir: engine_dir.display().to_string() });
    }
    Ok(certs)
}

/// How boxcar's registry client is set up: HTTPS only, trusting only
/// `certs`, bounded waits.
pub(super) fn client_config(certs: Vec<Certificate>) -> ClientConfig {
    // The default protocol is HTTPS for every registry (the test holds it).
    ClientConfig {
        tls_certs_only: certs,
        connect_timeout: Some(CONNECT_TIMEOUT),
        read_timeout: Some(READ_TIMEOUT),
        ..ClientConfig::default()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn pem() -> String {
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
}
