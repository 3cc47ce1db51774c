//! The image check: static binary, numeric non-root user, no secret plaintext
//! or key material in any layer, the config or the history, and a size budget.
//! Runs at the end of every `image` (before anything is loaded) and as
//! `cargo xtask image-check` on an image in the engine.

use std::collections::BTreeMap;
use std::io::Read as _;

use super::error::{Error, Result};
use std::path::PathBuf;

use crate::vocab::project::Context;
use boxcar_secrets::{EnvFile, PublicKey};
use serde_json::Value;
use zeroize::Zeroizing;

/// A byte string that must not appear in the image, and what it is.
pub(crate) struct Needle {
    pub what: String,
    pub bytes: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for Needle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Needle").field("what", &self.what).field("bytes", &"<redacted>").finish()
    }
}

/// What the check found.
#[derive(Debug, Default)]
pub(crate) struct Report {
    pub problems: Vec<String>,
    pub binary_size: usize,
    pub image_size: usize,
    pub layers: usize,
    pub files: usize,
    pub user: String,
    pub labels: BTreeMap<String, String>,
}

/// Checks a docker-archive (what `docker save` writes, and what `image` builds).
pub(crate) fn check_archive(
    archive: &[u8],
    needles: &[Needle],
    public_keys: &[(String, PublicKey)],
    budget: usize,
) -> Result<Report> {
    let mut blobs: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for entry in tar::Archive::new(archive).entries()? {
        let mut entry = entry?;
        if entry.header().entry_type().is_file() {
            let path = entry.path()?.display().to_string();
            let mut data = Vec::new();
            entry.read_to_end(&mut data)?;
            blobs.insert(path, data);
        }
    }
    let manifest: Value = serde_json::from_slice(
        blobs.get("manifest.json").ok_or_else(|| malformed("the archive has no manifest.json"))?,
    )?;
    let item = &manifest[0];
    let config_path = item["Config"].as_str().ok_or_else(|| malformed("manifest.json names no config"))?;
    let config_bytes = blobs.get(config_path).ok_or_else(|| malformed("the archive lacks its config"))?;
    let config: Value = serde_json::from_slice(config_bytes)?;
    let mut report =
        Report { user: config["config"]["User"].as_str().unwrap_or_default().to_owned(), ..Report::default() };
    let (uid, gid) = report.user.split_once(':').unwrap_or((&report.user, ""));
    match uid.parse::<u32>() {
        Err(_) => report.problems.push(format!(
            "the image's user `{}` is not numeric; Kubernetes' runAsNonRoot cannot check a name",
            report.user
        )),
        Ok(0) => report.problems.push("the image runs as root (user 0)".to_owned()),
        Ok(_) => {}
    }
    if !gid.is_empty() && gid.parse::<u32>().is_err() {
        report.problems.push(format!("the image's group `{gid}` is not numeric"));
    }
    if let Some(labels) = config["config"]["Labels"].as_object() {
        report.labels = labels.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned())).collect();
    }
    let entrypoint = config["config"]["Entrypoint"][0].as_str().unwrap_or_default().trim_start_matches('/').to_owned();

    scan(
        "the image config (including its history and environment)",
        config_bytes,
        needles,
        public_keys,
        &mut report.problems,
    );

    let layers: Vec<&str> =
        item["Layers"].as_array().map(|l| l.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
    report.layers = layers.len();
    let mut binary = None;
    for layer_path in layers {
        let layer = blobs.get(layer_path).ok_or_else(|| malformed(&format!("the archive lacks layer {layer_path}")))?;
        report.image_size += layer.len();
        for entry in tar::Archive::new(&layer[..]).entries()? {
            let mut entry = entry?;
            if !entry.header().entry_type().is_file() {
                continue;
            }
            let path = entry.path()?.display().to_string();
            let executable = entry.header().mode().unwrap_or(0) & 0o111 != 0;
            let mut data = Vec::new();
            entry.read_to_end(&mut data)?;
            report.files += 1;
            scan(&format!("/{path}"), &data, needles, public_keys, &mut report.problems);
            let path = path.trim_start_matches("./");
            if path == entrypoint {
                binary = Some(data);
            } else if executable && let Err(why) = is_static(&data) {
                // The probe, or an extra file: anything the image can run
                // must run without a loader or libraries it does not have.
                report.problems.push(format!("/{path} is executable but not a static binary: {why}"));
            }
        }
    }
    match binary {
        None => report.problems.push(format!("the entrypoint /{entrypoint} is not in any layer")),
        Some(data) => {
            report.binary_size = data.len();
            if let Err(why) = is_static(&data) {
                report.problems.push(format!("/{entrypoint} is not a static binary: {why}"));
            }
        }
    }
    if report.image_size > budget {
        report.problems.push(format!(
            "the image is {} KiB, over its budget of {} KiB (--size-budget-kib)",
            report.image_size / 1024,
            budget / 1024
        ));
    }
    Ok(report)
}

/// Looks for every needle, and for secret keys of known environments however
/// they are written (`leaks::candidates`).
fn scan(place: &str, data: &[u8], needles: &[Needle], public_keys: &[(String, PublicKey)], problems: &mut Vec<String>) {
    for needle in needles {
        // memchr's search, not `windows`: in the xtask's dev profile, a
        // window at a time took most of a second per value in a 21 MiB binary.
        if !needle.bytes.is_empty() && memchr::memmem::find(data, &needle.bytes).is_some() {
            problems.push(format!("{place} contains {}", needle.what));
        }
    }
    if public_keys.is_empty() {
        return;
    }
    for found in crate::ops::leaks::candidates(data) {
        if let Some((env, _)) = public_keys.iter().find(|(_, pk)| *pk == found.public_key) {
            problems.push(format!("{place} contains the secret key of environment `{env}` (as {})", found.encoding));
        }
    }
}

/// A static ELF executable: no program interpreter, no shared libraries.
pub(crate) fn is_static(data: &[u8]) -> Result<(), String> {
    use object::read::elf::{Dyn as _, ElfFile64, FileHeader as _, ProgramHeader as _};
    let elf = ElfFile64::<object::Endianness>::parse(data).map_err(|e| format!("not an ELF executable ({e})"))?;
    let endian = elf.endian();
    let headers = elf.elf_header().program_headers(endian, data).map_err(|e| e.to_string())?;
    if headers.iter().any(|h| h.p_type(endian) == object::elf::PT_INTERP) {
        return Err("it asks for a program interpreter (dynamic loader)".to_owned());
    }
    for h in headers {
        if let Ok(Some(dynamic)) = h.dynamic(endian, data)
            && dynamic.iter().any(|d| d.d_tag(endian) == u64::from(object::elf::DT_NEEDED))
        {
            return Err("it needs shared libraries".to_owned());
        }
    }
    Ok(())
}

fn malformed(problem: &str) -> Error {
    Error::Archive { problem: problem.to_owned() }
}

/// Fails with every problem, one per line.
pub(crate) fn enforce(report: &Report) -> Result<()> {
    if report.problems.is_empty() {
        return Ok(());
    }
    Err(Error::CheckFailed { problems: report.problems.clone() })
}

/// Secret values shorter than this are not searched for: they would match
/// by chance. The check says which it skipped.
const MIN_NEEDLE: usize = 6;

/// The environment files of the command's folder; none when it does not exist.
fn config_files(ctx: &Context) -> Result<Vec<PathBuf>> {
    let dir = ctx.config_dir();
    if !dir.is_dir() {
        return Ok(Vec::new());
    }
    Ok(boxcar_secrets::env_files(&dir)?)
}

pub(crate) fn public_keys(ctx: &Context) -> Result<Vec<(String, PublicKey)>> {
    let mut out = Vec::new();
    for path in config_files(ctx)? {
        if let Ok(file) = EnvFile::load(&path) {
            out.push((file.env().to_owned(), file.public_key().clone()));
        }
    }
    Ok(out)
}

/// What must not be in the image, from every key supplied: each opened value
/// and the key itself (base64 and raw).
pub(crate) fn needles(ctx: &mut Context, key_files: &[PathBuf]) -> Result<Vec<Needle>> {
    let mut intakes = Vec::new();
    if let Some(intake) = std::mem::replace(&mut ctx.env_key, Ok(None))? {
        intakes.push(intake);
    }
    for path in key_files {
        intakes.push(boxcar_secrets::read_key_file(&ctx.user_path(path), "--key-file")?);
    }
    let mut files = Vec::new();
    let mut unreadable = Vec::new();
    for path in config_files(ctx)? {
        match EnvFile::load(&path) {
            Ok(file) => files.push(file),
            Err(e) => unreadable.push(e.to_string()),
        }
    }
    let mut needles = Vec::new();
    for intake in intakes {
        let key = intake.key;
        let Some(file) = files.iter().find(|f| f.public_key() == key.public_key()) else {
            return Err(Error::KeyOfNoEnvironment {
                from: intake.source.to_string(),
                key_id: key.key_id().to_string(),
                dir: ctx.show(&ctx.config_dir()),
                unreadable,
            });
        };
        let secrets = file.open_approved(&key)?;
        for (name, value) in secrets.iter() {
            if value.len() < MIN_NEEDLE {
                eprintln!(
                    "image check: secrets.{name} of `{}` is shorter than {MIN_NEEDLE} bytes; not searched for",
                    file.env()
                );
                continue;
            }
            needles.push(Needle {
                what: format!("the plaintext of secrets.{name} of environment `{}`", file.env()),
                bytes: Zeroizing::new(value.expose_bytes().to_vec()),
            });
        }
        let b64 = key.to_base64();
        let raw =
            base64::Engine::decode(&base64::engine::general_purpose::STANDARD, b64.as_bytes()).map(Zeroizing::new)?;
        for bytes in [Zeroizing::new(b64.as_bytes().to_vec()), raw] {
            needles.push(Needle { what: format!("the secret key of environment `{}`", file.env()), bytes });
        }
        eprintln!("image check: searching for {} value(s) and the key of `{}`", secrets.len(), file.env());
    }
    Ok(needles)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_test_binary_itself_is_dynamic_on_glibc() {
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        if cfg!(target_env = "gnu") {
            assert!(is_static(&me).is_err());
        }
        assert!(is_static(b"#!/bin/sh\n").is_err());
    }
}

#[cfg(test)]
mod archive_tests {
    use super::*;
    use crate::ops::build::assemble::{Spec, build};

    fn spec(env_file: &[u8]) -> Spec {
        Spec {
            service: crate::vocab::contract::tests::service(),
            // Not an executable at all: the static check must say so. (This test's
            // own binary would not do: it holds the needles as string literals.)
            binary: b"not an ELF file".to_vec(),
            probe: Some(b"#!/bin/sh\nexit 0\n".to_vec()),
            env_files: vec![("prod.toml".to_owned(), env_file.to_vec())],
            files: Vec::new(),
            ca_bundle: b"certs".to_vec(),
            epoch: 1,
            revision: "r".to_owned(),
            dirty: false,
            profile: crate::ops::build::compile::Profile::Release,
        }
    }

    #[test]
    fn finds_plaintext_keys_budget_overruns_and_dynamic_executables() {
        let key = boxcar_secrets::SecretKey::generate();
        let b64 = key.to_base64();
        let file = format!("public_key = \"x\"\n# oops: hunter2-plaintext and {}\n", &*b64);
        let built = build(&spec(file.as_bytes()), &["t:latest".to_owned()]).unwrap();
        let needles = [Needle {
            what: "the plaintext of secrets.pw".to_owned(),
            bytes: Zeroizing::new(b"hunter2-plaintext".to_vec()),
        }];
        let keys = [("prod".to_owned(), key.public_key().clone())];
        let report = check_archive(&built.archive, &needles, &keys, 1024).unwrap();
        let text = report.problems.join("\n");
        assert!(text.contains("/etc/boxcar/deploy-config/prod.toml contains the plaintext of secrets.pw"), "{text}");
        assert!(
            text.contains("/etc/boxcar/deploy-config/prod.toml contains the secret key of environment `prod`"),
            "{text}"
        );
        assert!(text.contains("over its budget of 1 KiB"), "{text}");
        assert!(text.contains("/usr/local/bin/svc is not a static binary: not an ELF executable"), "{text}");
        assert!(text.contains("/usr/local/bin/boxcar-probe is executable but not a static binary"), "{text}");
        assert_eq!(report.user, "1000:1000");
        assert!(!text.contains("hunter2-plaintext"), "the check printed the secret it found");

        let clean = build(&spec(b"public_key = \"x\"\n"), &["t:latest".to_owned()]).unwrap();
        let report = check_archive(&clean.archive, &needles, &keys, usize::MAX).unwrap();
        assert!(report.problems.iter().all(|p| p.contains("not a static binary")), "{:?}", report.problems);
        assert_eq!(report.problems.len(), 2, "{:?}", report.problems);
    }
}
