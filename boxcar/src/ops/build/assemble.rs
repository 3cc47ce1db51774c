//! The runner image, written byte for byte by us rather than by a Dockerfile:
//! one layer with sorted entries, fixed times, owners and modes, and a config
//! with fixed timestamps, so the same inputs always give the same image ID.
//!
//! The archive is a docker-archive (`manifest.json`, what Docker 20.10's
//! `docker load` reads) and an OCI image layout (`oci-layout`, `index.json`,
//! `blobs/`) at once, sharing the same blobs.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use super::error::Result;
use crate::vocab::contract::Service;
use crate::vocab::labels;
use crate::vocab::layout::{self, CA_BUNDLE, PROBE_PATH};

/// What goes into the runner image.
#[derive(Debug, Clone)]
pub struct Spec {
    /// What the contract says of the service.
    pub service: Service,
    pub binary: Vec<u8>,
    /// `boxcar-probe`, when the service's health check needs it.
    pub probe: Option<Vec<u8>>,
    /// `(file name, content)` of each environment file.
    pub env_files: Vec<(String, Vec<u8>)>,
    /// The contract's extra files, with their content.
    pub files: Vec<(String, u32, Vec<u8>)>,
    pub ca_bundle: Vec<u8>,
    /// Seconds since the epoch for every timestamp (SOURCE_DATE_EPOCH or the commit time).
    pub epoch: u64,
    pub revision: String,
    pub dirty: bool,
    /// The build profile; anything but `release` is labelled.
    pub profile: super::compile::Profile,
}

/// A built archive.
#[derive(Debug)]
pub struct Built {
    pub archive: Vec<u8>,
    /// `sha256:<hex>` of the config: the image ID the engine will report.
    pub image_id: String,
    /// The manifest, config and layer, byte for byte as in the archive:
    /// what `image --push` uploads, so the registry's digest is this one.
    pub blobs: Blobs,
}

/// The three blobs of the one-layer image.
#[derive(Debug, Clone)]
pub struct Blobs {
    pub manifest: Blob,
    pub config: Blob,
    pub layer: Blob,
}

/// One content-addressed blob.
#[derive(Clone)]
pub struct Blob {
    /// `sha256:<hex>` of `data`.
    pub digest: String,
    pub media_type: &'static str,
    pub data: Vec<u8>,
}

impl std::fmt::Debug for Blob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Blob({} {}, {} bytes)", self.media_type, self.digest, self.data.len())
    }
}

/// Media types of what `archive` writes.
pub const MEDIA_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MEDIA_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const MEDIA_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";

struct Entry {
    mode: u32,
    uid: u64,
    data: Option<Vec<u8>>,
}

/// The layer's entries by path (directories end in `/`), so they come out
/// sorted and each parent folder is added once.
#[derive(Default)]
struct Entries(BTreeMap<String, Entry>);

impl Entries {
    fn dir(&mut self, path: &str, mode: u32, uid: u64) {
        self.parents(path);
        self.0.insert(format!("{}/", path.trim_matches('/')), Entry { mode, uid, data: None });
    }

    fn file(&mut self, path: &str, mode: u32, data: Vec<u8>) {
        self.parents(path);
        self.0.insert(path.trim_start_matches('/').to_owned(), Entry { mode, uid: 0, data: Some(data) });
    }

    /// Root-owned 0755 folders above `path`, where not given otherwise.
    fn parents(&mut self, path: &str) {
        let path = path.trim_matches('/');
        let mut at = 0;
        while let Some(i) = path[at..].find('/') {
            let parent = format!("{}/", &path[..at + i]);
            self.0.entry(parent).or_insert(Entry { mode: 0o755, uid: 0, data: None });
            at += i + 1;
        }
    }
}

fn passwd(uid: u32) -> String {
    format!("root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:{uid}:{uid}:nonroot:/home/nonroot:/sbin/nologin\n")
}

fn group(uid: u32) -> String {
    format!("root:x:0:\nnonroot:x:{uid}:\n")
}

/// The single layer's tar.
pub fn layer(spec: &Spec) -> Result<Vec<u8>> {
    let service = &spec.service;
    let uid = u64::from(service.user);
    let mut entries = Entries::default();
    entries.dir("etc", 0o755, 0);
    entries.dir(layout::CONFIG_DIR, 0o755, 0);
    entries.file(layout::GROUP, 0o444, group(service.user).into());
    entries.file(layout::PASSWD, 0o444, passwd(service.user).into());
    entries.file(CA_BUNDLE, 0o444, spec.ca_bundle.clone());
    entries.dir(layout::HOME, 0o700, uid);
    entries.dir(layout::TMP, 0o1777, 0);
    entries.dir(layout::BIN_DIR, 0o755, 0);
    entries.file(&service.binary_path(), 0o555, spec.binary.clone());
    if let Some(probe) = &spec.probe {
        entries.file(PROBE_PATH, 0o555, probe.clone());
    }
    if let Some(data) = &service.data {
        entries.dir(data, 0o700, uid);
    }
    for (to, mode, data) in &spec.files {
        entries.file(to, *mode, data.clone());
    }
    for (name, data) in &spec.env_files {
        entries.file(&format!("{}/{name}", layout::CONFIG_DIR), 0o444, data.clone());
    }
    // What the contract gives the service at run time, as this image was
    // built: the service starts only on an environment that approves it.
    let runtime = service.runtime_with(&spec.files);
    let service_file = boxcar_secrets::ServiceFile::render(&service.name, &runtime);
    entries.file(layout::SERVICE_FILE, 0o444, service_file.into_bytes());
    tar_of(entries, spec.epoch)
}

/// A layer tar of `entries`, sorted, every time `epoch`.
fn tar_of(entries: Entries, epoch: u64) -> Result<Vec<u8>> {
    let mut tar = tar::Builder::new(Vec::new());
    for (path, e) in &entries.0 {
        let mut header = tar::Header::new_ustar();
        header.set_mode(e.mode);
        header.set_uid(e.uid);
        header.set_gid(e.uid);
        header.set_mtime(epoch);
        match &e.data {
            Some(data) => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_size(data.len() as u64);
                header.set_cksum();
                tar.append_data(&mut header, path, &data[..])?;
            }
            None => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_size(0);
                header.set_cksum();
                tar.append_data(&mut header, path, std::io::empty())?;
            }
        }
    }
    Ok(tar.into_inner()?)
}

fn sha256(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn rfc3339(epoch: u64) -> String {
    humantime::format_rfc3339_seconds(SystemTime::UNIX_EPOCH + Duration::from_secs(epoch)).to_string()
}

/// The image's HEALTHCHECK test: the service's own command, else the probe.
pub fn health_test(service: &Service) -> Vec<String> {
    let mut test = vec!["CMD".to_owned()];
    match (&service.health.command, &service.health.http) {
        (Some(args), _) => {
            test.push(service.binary_path());
            test.extend(args.iter().cloned());
        }
        (None, path) => {
            test.extend([PROBE_PATH.to_owned(), "http".to_owned(), service.port.to_string()]);
            test.push(path.clone().unwrap_or_else(|| "/".to_owned()));
        }
    }
    test
}

/// The image config (Docker's and OCI's format agree on these fields).
pub fn config(spec: &Spec, diff_id: &str) -> Value {
    let service = &spec.service;
    let created = rfc3339(spec.epoch);
    let mut labels = BTreeMap::from([
        ("org.opencontainers.image.title", service.name.clone()),
        ("org.opencontainers.image.version", service.version.clone()),
        ("org.opencontainers.image.revision", spec.revision.clone()),
        ("org.opencontainers.image.created", created.clone()),
    ]);
    if let Some(d) = &service.description {
        labels.insert("org.opencontainers.image.description", d.clone());
    }
    if let Some(s) = &service.source {
        labels.insert("org.opencontainers.image.source", s.clone());
    }
    if spec.profile != super::compile::Profile::Release {
        labels.insert(labels::PROFILE, spec.profile.cargo_name().to_owned());
    }
    if spec.dirty {
        labels.insert(labels::DIRTY, "true: built from uncommitted changes, not reproducible".to_owned());
    }
    let mut env = vec![format!("{}={}", layout::PATH_VAR, layout::BIN_DIR)];
    env.extend(service.env.iter().map(|(k, v)| format!("{k}={v}")));
    env.push(format!("{}={CA_BUNDLE}", layout::CA_BUNDLE_VAR));
    let mut ports = serde_json::Map::new();
    for port in std::iter::once(&service.port).chain(&service.extra_ports) {
        ports.insert(format!("{port}/tcp"), json!({}));
    }
    let mut config = json!({
        "User": format!("{0}:{0}", service.user),
        "Entrypoint": [service.binary_path()],
        "Env": env,
        "ExposedPorts": ports,
        "WorkingDir": "/",
        "Labels": labels,
        "Healthcheck": {
            "Test": health_test(service),
            "Interval": 10_000_000_000u64,
            "Timeout": 3_000_000_000u64,
            "StartPeriod": 5_000_000_000u64,
            "Retries": 3,
        },
    });
    if !service.args.is_empty() {
        config["Cmd"] = json!(service.args);
    }
    if let Some(data) = &service.data {
        config["Volumes"] = json!({ data.clone(): {} });
    }
    json!({
        "architecture": "amd64",
        "os": "linux",
        "created": created,
        "config": config,
        "rootfs": { "type": "layers", "diff_ids": [format!("sha256:{diff_id}")] },
        "history": [{
            "created": created,
            // The words of the first images, which their IDs depend on (the
            // folder named is the default one, whatever the contract says).
            "created_by": format!(
                "cargo xtask image: static musl binary, public {}, CA bundle, passwd/group",
                crate::vocab::defaults::CONFIG_DIR
            ),
        }],
    })
}

/// Builds the archive for `tags` (e.g. `hello:latest`, `hello:<sha>`).
pub fn build(spec: &Spec, tags: &[String]) -> Result<Built> {
    let layer = layer(spec)?;
    // Uncompressed, the layer's digest is its diff ID: hashed once (the
    // layer holds the binary, and the xtask's dev profile hashes slowly).
    let layer_digest = sha256(&layer);
    let config = config(spec, &layer_digest);
    archive(layer, &layer_digest, &config, spec.epoch, tags)
}

/// The docker-archive and OCI layout of a one-layer image.
fn archive(layer: Vec<u8>, layer_digest: &str, config: &Value, epoch: u64, tags: &[String]) -> Result<Built> {
    let config_bytes = serde_json::to_vec(config)?;
    let config_digest = sha256(&config_bytes);
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_MANIFEST,
        "config": { "mediaType": MEDIA_CONFIG, "digest": format!("sha256:{config_digest}"), "size": config_bytes.len() },
        "layers": [{ "mediaType": MEDIA_LAYER, "digest": format!("sha256:{layer_digest}"), "size": layer.len() }],
        "annotations": { "org.opencontainers.image.created": rfc3339(epoch) },
    });
    let manifest_bytes = serde_json::to_vec(&manifest)?;
    let manifest_digest = sha256(&manifest_bytes);
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": tags.iter().map(|t| json!({
            "mediaType": MEDIA_MANIFEST,
            "digest": format!("sha256:{manifest_digest}"),
            "size": manifest_bytes.len(),
            "annotations": { "org.opencontainers.image.ref.name": t, "io.containerd.image.name": t },
        })).collect::<Vec<_>>(),
    });
    let docker_manifest = json!([{
        "Config": format!("blobs/sha256/{config_digest}"),
        "RepoTags": tags,
        "Layers": [format!("blobs/sha256/{layer_digest}")],
    }]);

    let blobs = Blobs {
        manifest: Blob {
            digest: format!("sha256:{manifest_digest}"),
            media_type: MEDIA_MANIFEST,
            data: manifest_bytes,
        },
        config: Blob { digest: format!("sha256:{config_digest}"), media_type: MEDIA_CONFIG, data: config_bytes },
        layer: Blob { digest: format!("sha256:{layer_digest}"), media_type: MEDIA_LAYER, data: layer },
    };
    let (index, docker_manifest) = (serde_json::to_vec(&index)?, serde_json::to_vec(&docker_manifest)?);
    // The blobs' bytes are borrowed, not copied: the layer holds the binary.
    let mut files: Vec<(String, &[u8])> = vec![
        (format!("blobs/sha256/{layer_digest}"), &blobs.layer.data),
        (format!("blobs/sha256/{config_digest}"), &blobs.config.data),
        (format!("blobs/sha256/{manifest_digest}"), &blobs.manifest.data),
        ("index.json".to_owned(), &index),
        ("manifest.json".to_owned(), &docker_manifest),
        ("oci-layout".to_owned(), br#"{"imageLayoutVersion":"1.0.0"}"#),
    ];
    files.sort_by(|a, b| a.0.cmp(&b.0));
    let mut tar = tar::Builder::new(Vec::new());
    let mut dirs_done = std::collections::BTreeSet::new();
    for (path, data) in &files {
        if let Some((parent, _)) = path.rsplit_once('/') {
            let mut acc = String::new();
            for part in parent.split('/') {
                acc = if acc.is_empty() { part.to_owned() } else { format!("{acc}/{part}") };
                if dirs_done.insert(acc.clone()) {
                    let mut h = tar::Header::new_ustar();
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_mode(0o755);
                    h.set_mtime(epoch);
                    h.set_size(0);
                    h.set_cksum();
                    tar.append_data(&mut h, format!("{acc}/"), std::io::empty())?;
                }
            }
        }
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_mtime(epoch);
        h.set_size(data.len() as u64);
        h.set_cksum();
        tar.append_data(&mut h, path, &data[..])?;
    }
    Ok(Built { archive: tar.into_inner()?, image_id: format!("sha256:{config_digest}"), blobs })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn spec() -> Spec {
        Spec {
            service: crate::vocab::contract::tests::service(),
            binary: b"\x7fELF pretend".to_vec(),
            probe: Some(b"\x7fELF probe".to_vec()),
            env_files: vec![("production.toml".to_owned(), b"public_key = \"x\"\n".to_vec())],
            files: vec![("/usr/share/svc/motd".to_owned(), 0o444, b"hi".to_vec())],
            ca_bundle: b"-----BEGIN CERTIFICATE-----\n".to_vec(),
            epoch: 1_700_000_000,
            revision: "abc".to_owned(),
            dirty: false,
            profile: super::super::compile::Profile::Release,
        }
    }

    #[test]
    fn same_inputs_same_bytes_and_id() {
        let tags = ["svc:latest".to_owned(), "svc:abc".to_owned()];
        let a = build(&spec(), &tags).unwrap();
        let b = build(&spec(), &tags).unwrap();
        assert_eq!(a.archive, b.archive);
        assert_eq!(a.image_id, b.image_id);
        let mut other = spec();
        other.epoch += 1;
        assert_ne!(build(&other, &tags).unwrap().image_id, a.image_id);
        let mut other = spec();
        other.service.port += 1;
        assert_ne!(build(&other, &tags).unwrap().image_id, a.image_id);
    }

    #[test]
    fn the_blobs_are_the_archives_bytes() {
        let built = build(&spec(), &["svc:latest".to_owned()]).unwrap();
        let mut archive = tar::Archive::new(&built.archive[..]);
        let mut files = BTreeMap::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let path = entry.path().unwrap().to_string_lossy().into_owned();
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut data).unwrap();
            files.insert(path, data);
        }
        let blobs = &built.blobs;
        for blob in [&blobs.manifest, &blobs.config, &blobs.layer] {
            assert_eq!(blob.digest, format!("sha256:{}", sha256(&blob.data)));
            let path = format!("blobs/sha256/{}", blob.digest.trim_start_matches("sha256:"));
            assert_eq!(files.get(&path), Some(&blob.data), "{path}");
        }
        assert_eq!(built.image_id, blobs.config.digest);
        let manifest: Value = serde_json::from_slice(&blobs.manifest.data).unwrap();
        assert_eq!(manifest["mediaType"], blobs.manifest.media_type);
        assert_eq!(manifest["config"]["digest"], blobs.config.digest);
        assert_eq!(manifest["config"]["mediaType"], blobs.config.media_type);
        assert_eq!(manifest["layers"][0]["digest"], blobs.layer.digest);
        assert_eq!(manifest["layers"][0]["mediaType"], blobs.layer.media_type);
        assert_eq!(manifest["layers"][0]["size"], blobs.layer.data.len());
        let index: Value = serde_json::from_slice(&files["index.json"]).unwrap();
        assert_eq!(index["manifests"][0]["digest"], blobs.manifest.digest);
    }

    /// What the assembly writes is what the contract's check keeps extra
    /// files away from (`layout::FILLED`): every file of a layer without the
    /// contract's files and data is a filled path, and every filled path is
    /// written. (Folders above them are made as they are needed.)
    #[test]
    fn the_assembly_fills_the_paths_the_contract_reserves() {
        let mut bare = spec();
        bare.files.clear();
        bare.service.data = None;
        bare.service.files.clear();
        let layer = layer(&bare).unwrap();
        let mut written = Vec::new();
        for e in tar::Archive::new(&layer[..]).entries().unwrap() {
            let e = e.unwrap();
            let path = format!("/{}", e.path().unwrap().display());
            if e.header().entry_type().is_file() {
                assert!(layout::is_filled(&path, None), "{path} is written but a contract's file may take it");
            }
            written.push(path);
        }
        for filled in layout::FILLED {
            assert!(written.iter().any(|w| w.starts_with(filled)), "{filled} is reserved but never written");
        }
        // A contract's file in a free place is written where it asks.
        assert!(!layout::is_filled("/usr/share/svc/motd", None));
    }

    #[test]
    fn layer_is_sorted_with_fixed_owners_and_modes() {
        let layer = layer(&spec()).unwrap();
        let mut archive = tar::Archive::new(&layer[..]);
        let mut seen = Vec::new();
        for e in archive.entries().unwrap() {
            let e = e.unwrap();
            let h = e.header();
            let path = e.path().unwrap().display().to_string();
            assert_eq!(h.mtime().unwrap(), 1_700_000_000, "{path}");
            match path.as_str() {
                "usr/local/bin/svc" | "usr/local/bin/boxcar-probe" => assert_eq!(h.mode().unwrap(), 0o555),
                "tmp/" => assert_eq!(h.mode().unwrap(), 0o1777),
                "var/lib/svc/" | "home/nonroot/" => assert_eq!((h.uid().unwrap(), h.mode().unwrap()), (1000, 0o700)),
                "var/" | "var/lib/" | "usr/share/" => assert_eq!((h.uid().unwrap(), h.mode().unwrap()), (0, 0o755)),
                "etc/passwd" => {
                    let mut text = String::new();
                    std::io::Read::read_to_string(&mut { e }, &mut text).unwrap();
                    assert!(text.contains("nonroot:x:1000:1000:"), "{text}");
                }
                _ => {}
            }
            seen.push(path);
        }
        let mut sorted = seen.clone();
        sorted.sort();
        assert_eq!(seen, sorted);
        for path in [
            "etc/boxcar/deploy-config/production.toml",
            "etc/boxcar/service.toml",
            "usr/share/svc/motd",
            "var/lib/svc/",
        ] {
            assert!(seen.contains(&path.to_owned()), "{path}: {seen:?}");
        }
    }

    #[test]
    fn the_image_says_what_the_contract_gives_the_service() {
        let spec = spec();
        let layer = layer(&spec).unwrap();
        let mut archive = tar::Archive::new(&layer[..]);
        let entry = archive
            .entries()
            .unwrap()
            .map(Result::unwrap)
            .find(|e| e.path().unwrap().to_str() == Some("etc/boxcar/service.toml"));
        let mut text = String::new();
        std::io::Read::read_to_string(&mut entry.unwrap(), &mut text).unwrap();
        let file = boxcar_secrets::ServiceFile::parse(&text).unwrap();
        assert_eq!(file.service, spec.service.name);
        assert_eq!(file.runtime, spec.service.runtime_with(&spec.files));
        assert_eq!(file.runtime["files"][0]["to"].as_str(), Some("/usr/share/svc/motd"));
        assert_eq!(file.runtime["files"][0]["mode"].as_str(), Some("0444"));
    }

    #[test]
    fn config_is_the_contract() {
        let c = config(&spec(), "00");
        let c = &c["config"];
        assert_eq!(c["User"], "1000:1000");
        assert_eq!(c["Entrypoint"], json!(["/usr/local/bin/svc"]));
        assert_eq!(c["Cmd"], json!(["run"]));
        assert_eq!(c["Healthcheck"]["Test"], json!(["CMD", PROBE_PATH, "http", "9000", "/health"]));
        assert_eq!(c["ExposedPorts"], json!({ "9000/tcp": {} }));
        assert_eq!(c["Volumes"], json!({ "/var/lib/svc": {} }));
        assert_eq!(
            c["Env"],
            json!([
                "PATH=/usr/local/bin",
                "SVC_CONFIG=/etc/boxcar/deploy-config",
                "SVC_DATA=/var/lib/svc",
                "SVC_LISTEN=0.0.0.0:9000",
                "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"
            ])
        );
        assert_eq!(c["Labels"]["org.opencontainers.image.title"], "svc");
        assert_eq!(c["Labels"]["org.opencontainers.image.version"], "1.2.3");
        assert_eq!(c["Labels"]["org.opencontainers.image.source"], "https://example.invalid/svc");
        assert!(c["Labels"].get(labels::PROFILE).is_none(), "a release build is not labelled");
        let mut fast = spec();
        fast.profile = super::super::compile::Profile::Fast;
        assert_eq!(config(&fast, "00")["config"]["Labels"][labels::PROFILE], "boxcar-fast");

        // A service with its own check command and no data, no arguments.
        let mut own = spec();
        own.service.health.command = Some(vec!["health".to_owned()]);
        own.service.data = None;
        own.service.args.clear();
        let c = config(&own, "00");
        assert_eq!(c["config"]["Healthcheck"]["Test"], json!(["CMD", "/usr/local/bin/svc", "health"]));
        assert!(c["config"].get("Volumes").is_none() && c["config"].get("Cmd").is_none());
    }
}
