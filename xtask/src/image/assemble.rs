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

/// Numeric user and group the app runs as (distroless's `nonroot`).
pub(crate) const UID: u64 = 65532;
/// Where the binary lives in the image.
pub(crate) const BINARY_PATH: &str = "usr/local/bin/app";
/// Where the public environment files live in the image.
pub(crate) const CONFIG_DIR: &str = "etc/boxcar/deploy-config";
/// The port the app listens on.
pub(crate) const PORT: u16 = 8080;

/// What goes into the runner image.
#[derive(Debug)]
pub(crate) struct Spec {
    pub(crate) binary: Vec<u8>,
    /// `(file name, content)` of each `deploy-config/<env>.toml`.
    pub(crate) env_files: Vec<(String, Vec<u8>)>,
    pub(crate) ca_bundle: Vec<u8>,
    /// Seconds since the epoch for every timestamp (SOURCE_DATE_EPOCH or the commit time).
    pub(crate) epoch: u64,
    pub(crate) version: String,
    pub(crate) revision: String,
    pub(crate) source: String,
    pub(crate) dirty: bool,
}

/// A built archive.
#[derive(Debug)]
pub(crate) struct Built {
    pub(crate) archive: Vec<u8>,
    /// `sha256:<hex>` of the config: the image ID the engine will report.
    pub(crate) image_id: String,
}

struct Entry {
    path: String,
    mode: u32,
    uid: u64,
    data: Option<Vec<u8>>,
}

fn dir(path: &str, mode: u32, uid: u64) -> Entry {
    Entry { path: format!("{path}/"), mode, uid, data: None }
}

fn file(path: &str, mode: u32, data: Vec<u8>) -> Entry {
    Entry { path: path.to_owned(), mode, uid: 0, data: Some(data) }
}

const PASSWD: &str = "root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n";
const GROUP: &str = "root:x:0:\nnonroot:x:65532:\n";

/// The single layer's tar.
pub(crate) fn layer(spec: &Spec) -> anyhow::Result<Vec<u8>> {
    let mut entries = vec![
        dir("data", 0o700, UID),
        dir("etc", 0o755, 0),
        dir("etc/boxcar", 0o755, 0),
        dir(CONFIG_DIR, 0o755, 0),
        file("etc/group", 0o444, GROUP.into()),
        file("etc/passwd", 0o444, PASSWD.into()),
        dir("etc/ssl", 0o755, 0),
        dir("etc/ssl/certs", 0o755, 0),
        file("etc/ssl/certs/ca-certificates.crt", 0o444, spec.ca_bundle.clone()),
        dir("home", 0o755, 0),
        dir("home/nonroot", 0o700, UID),
        dir("tmp", 0o1777, 0),
        dir("usr", 0o755, 0),
        dir("usr/local", 0o755, 0),
        dir("usr/local/bin", 0o755, 0),
        file(BINARY_PATH, 0o555, spec.binary.clone()),
    ];
    for (name, data) in &spec.env_files {
        entries.push(file(&format!("{CONFIG_DIR}/{name}"), 0o444, data.clone()));
    }
    tar_of(entries, spec.epoch)
}

/// A layer tar of `entries`, sorted, every time `epoch`.
fn tar_of(mut entries: Vec<Entry>, epoch: u64) -> anyhow::Result<Vec<u8>> {
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    let mut tar = tar::Builder::new(Vec::new());
    for e in &entries {
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
                tar.append_data(&mut header, &e.path, &data[..])?;
            }
            None => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_size(0);
                header.set_cksum();
                tar.append_data(&mut header, &e.path, std::io::empty())?;
            }
        }
    }
    Ok(tar.into_inner()?)
}

fn sha256(data: &[u8]) -> String {
    super::base::hex(&Sha256::digest(data))
}

fn rfc3339(epoch: u64) -> String {
    humantime::format_rfc3339_seconds(SystemTime::UNIX_EPOCH + Duration::from_secs(epoch)).to_string()
}

/// The image config (Docker's and OCI's format agree on these fields).
pub(crate) fn config(spec: &Spec, diff_id: &str) -> Value {
    let created = rfc3339(spec.epoch);
    let mut labels = BTreeMap::from([
        ("org.opencontainers.image.title", "app".to_owned()),
        ("org.opencontainers.image.description", "multi-bot Telegram runner, packaged by boxcar".to_owned()),
        ("org.opencontainers.image.version", spec.version.clone()),
        ("org.opencontainers.image.revision", spec.revision.clone()),
        ("org.opencontainers.image.source", spec.source.clone()),
        ("org.opencontainers.image.created", created.clone()),
    ]);
    if spec.dirty {
        labels.insert("dev.boxcar.dirty", "true: built from uncommitted changes, not reproducible".to_owned());
    }
    json!({
        "architecture": "amd64",
        "os": "linux",
        "created": created,
        "config": {
            "User": format!("{UID}:{UID}"),
            "Entrypoint": [format!("/{BINARY_PATH}")],
            "Cmd": ["serve"],
            "Env": [
                "PATH=/usr/local/bin",
                format!("APP_CONFIG_DIR=/{CONFIG_DIR}"),
                "APP_DATA_DIR=/data",
                format!("APP_LISTEN=0.0.0.0:{PORT}"),
                "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt",
            ],
            "ExposedPorts": { format!("{PORT}/tcp"): {} },
            "Volumes": { "/data": {} },
            "WorkingDir": "/",
            "Labels": labels,
            "Healthcheck": {
                "Test": ["CMD", format!("/{BINARY_PATH}"), "healthcheck"],
                "Interval": 10_000_000_000u64,
                "Timeout": 3_000_000_000u64,
                "StartPeriod": 5_000_000_000u64,
                "Retries": 3,
            },
        },
        "rootfs": { "type": "layers", "diff_ids": [format!("sha256:{diff_id}")] },
        "history": [{
            "created": created,
            "created_by": "cargo xtask image: static musl binary, public deploy-config, CA bundle, passwd/group",
        }],
    })
}

/// Builds the archive for `tags` (e.g. `app:latest`, `app:<sha>`).
pub(crate) fn build(spec: &Spec, tags: &[String]) -> anyhow::Result<Built> {
    let layer = layer(spec)?;
    let config = config(spec, &sha256(&layer));
    archive(layer, &config, spec.epoch, tags)
}

/// The Bot API stand-in's image, for `cargo xtask demo`: its static binary,
/// passwd/group and `/tmp`, run as 65532 on port 8081. Never shipped.
pub(crate) fn standin(binary: Vec<u8>, epoch: u64, tags: &[String]) -> anyhow::Result<Built> {
    let entries = vec![
        dir("etc", 0o755, 0),
        file("etc/group", 0o444, GROUP.into()),
        file("etc/passwd", 0o444, PASSWD.into()),
        dir("tmp", 0o1777, 0),
        dir("usr", 0o755, 0),
        dir("usr/local", 0o755, 0),
        dir("usr/local/bin", 0o755, 0),
        file("usr/local/bin/bot-api-standin", 0o555, binary),
    ];
    let layer = tar_of(entries, epoch)?;
    let created = rfc3339(epoch);
    let config = json!({
        "architecture": "amd64",
        "os": "linux",
        "created": created,
        "config": {
            "User": format!("{UID}:{UID}"),
            "Entrypoint": ["/usr/local/bin/bot-api-standin"],
            "Cmd": ["--listen", "0.0.0.0:8081"],
            "Env": ["PATH=/usr/local/bin"],
            "ExposedPorts": { "8081/tcp": {} },
            "WorkingDir": "/",
            "Labels": {
                "org.opencontainers.image.title": "standin",
                "org.opencontainers.image.description": "Telegram Bot API stand-in with a chat page, for boxcar's demo; not Telegram",
            },
        },
        "rootfs": { "type": "layers", "diff_ids": [format!("sha256:{}", sha256(&layer))] },
        "history": [{ "created": created, "created_by": "cargo xtask demo: the Bot API stand-in" }],
    });
    archive(layer, &config, epoch, tags)
}

/// The docker-archive and OCI layout of a one-layer image.
fn archive(layer: Vec<u8>, config: &Value, epoch: u64, tags: &[String]) -> anyhow::Result<Built> {
    let layer_digest = sha256(&layer);
    let config_bytes = serde_json::to_vec(config)?;
    let config_digest = sha256(&config_bytes);
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": format!("sha256:{config_digest}"), "size": config_bytes.len() },
        "layers": [{ "mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": format!("sha256:{layer_digest}"), "size": layer.len() }],
        "annotations": { "org.opencontainers.image.created": rfc3339(epoch) },
    });
    let manifest_bytes = serde_json::to_vec(&manifest)?;
    let manifest_digest = sha256(&manifest_bytes);
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": tags.iter().map(|t| json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
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

    let mut files: Vec<(String, Vec<u8>)> = vec![
        (format!("blobs/sha256/{layer_digest}"), layer),
        (format!("blobs/sha256/{config_digest}"), config_bytes),
        (format!("blobs/sha256/{manifest_digest}"), manifest_bytes),
        ("index.json".to_owned(), serde_json::to_vec(&index)?),
        ("manifest.json".to_owned(), serde_json::to_vec(&docker_manifest)?),
        ("oci-layout".to_owned(), br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec()),
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
    Ok(Built { archive: tar.into_inner()?, image_id: format!("sha256:{config_digest}") })
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn spec() -> Spec {
        Spec {
            binary: b"\x7fELF pretend".to_vec(),
            env_files: vec![("production.toml".to_owned(), b"public_key = \"x\"\n".to_vec())],
            ca_bundle: b"-----BEGIN CERTIFICATE-----\n".to_vec(),
            epoch: 1_700_000_000,
            version: "0.1.0".to_owned(),
            revision: "abc".to_owned(),
            source: "https://example.invalid/boxcar".to_owned(),
            dirty: false,
        }
    }

    #[test]
    fn same_inputs_same_bytes_and_id() {
        let tags = ["app:latest".to_owned(), "app:abc".to_owned()];
        let a = build(&spec(), &tags).unwrap();
        let b = build(&spec(), &tags).unwrap();
        assert_eq!(a.archive, b.archive);
        assert_eq!(a.image_id, b.image_id);
        let mut other = spec();
        other.epoch += 1;
        assert_ne!(build(&other, &tags).unwrap().image_id, a.image_id);
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
                "usr/local/bin/app" => assert_eq!(h.mode().unwrap(), 0o555),
                "tmp/" => assert_eq!(h.mode().unwrap(), 0o1777),
                "data/" => assert_eq!((h.uid().unwrap(), h.mode().unwrap()), (UID, 0o700)),
                _ => {}
            }
            seen.push(path);
        }
        let mut sorted = seen.clone();
        sorted.sort();
        assert_eq!(seen, sorted);
        assert!(seen.contains(&"etc/boxcar/deploy-config/production.toml".to_owned()));
    }

    #[test]
    fn config_runs_as_numeric_non_root_with_a_healthcheck() {
        let c = config(&spec(), "00");
        assert_eq!(c["config"]["User"], "65532:65532");
        assert_eq!(c["config"]["Healthcheck"]["Test"][2], "healthcheck");
        assert_eq!(c["created"], "2023-11-14T22:13:20Z");
        assert_eq!(c["config"]["Labels"]["org.opencontainers.image.revision"], "abc");
    }
}

#[cfg(test)]
mod dockerfile_tests {
    use super::*;

    /// docker/runner.Dockerfile documents the image; its settings must be the
    /// ones `config` writes.
    #[test]
    fn the_runner_dockerfile_says_what_the_image_is() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docker/runner.Dockerfile");
        let text = std::fs::read_to_string(path).unwrap().replace("\\\n", " ");
        let lines: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).collect();
        let find = |word: &str| -> String {
            lines
                .iter()
                .find_map(|l| l.strip_prefix(&format!("{word} ")))
                .unwrap_or_else(|| panic!("no {word}"))
                .trim()
                .to_owned()
        };
        let c = config(&tests::spec(), "00");
        let c = &c["config"];
        assert_eq!(find("USER"), c["User"].as_str().unwrap());
        assert_eq!(find("WORKDIR"), c["WorkingDir"].as_str().unwrap());
        let ports: Vec<&String> = c["ExposedPorts"].as_object().unwrap().keys().collect();
        assert_eq!(vec![&find("EXPOSE")], ports);
        let volumes: Vec<&String> = c["Volumes"].as_object().unwrap().keys().collect();
        assert_eq!(vec![&find("VOLUME")], volumes);
        let env: Vec<String> = find("ENV").split_whitespace().map(str::to_owned).collect();
        let expected: Vec<String> =
            c["Env"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_owned()).collect();
        assert_eq!(env, expected);
        let json = |v: &Value| serde_json::to_string(v).unwrap().replace(',', ", ");
        assert_eq!(find("ENTRYPOINT"), json(&c["Entrypoint"]));
        assert_eq!(find("CMD"), json(&c["Cmd"]));
        let hc = &c["Healthcheck"];
        let secs = |k: &str| hc[k].as_u64().unwrap() / 1_000_000_000;
        let test: Vec<Value> = hc["Test"].as_array().unwrap()[1..].to_vec();
        assert_eq!(
            find("HEALTHCHECK"),
            format!(
                "--interval={}s --timeout={}s --start-period={}s --retries={} CMD {}",
                secs("Interval"),
                secs("Timeout"),
                secs("StartPeriod"),
                hc["Retries"],
                json(&Value::Array(test))
            )
        );
        // Every file the layer holds is listed in the Dockerfile's comment.
        let layer = layer(&tests::spec()).unwrap();
        for e in tar::Archive::new(&layer[..]).entries().unwrap() {
            let p = e.unwrap().path().unwrap().display().to_string();
            let listed = p.trim_end_matches('/').rsplit('/').next().unwrap().to_owned();
            let listed =
                if p.contains("deploy-config/") && p.ends_with(".toml") { "<env>.toml".to_owned() } else { listed };
            assert!(text.contains(&listed), "docker/runner.Dockerfile does not mention {p}");
        }
    }
}
