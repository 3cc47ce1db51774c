//! `boxcar.toml` as written, and the check that makes each `[[service]]` a
//! [`Service`]: every field checked in the order docs/CONTRACT.md lists them,
//! every problem said at once with its service and field, defaults filled in
//! and placeholders resolved.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use serde::Deserialize;

use super::{ExtraFile, Health, Instances, Service};
use crate::vocab::defaults;
use crate::vocab::layout::{self, SYSTEM_FOLDERS};
use crate::vocab::show::escape;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawContract {
    pub(super) default: Option<String>,
    #[serde(default)]
    pub(super) service: Vec<RawService>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawService {
    pub(super) name: String,
    pub(super) package: Option<String>,
    pub(super) bin: Option<String>,
    pub(super) port: Option<i64>,
    #[serde(default)]
    pub(super) extra_ports: Vec<i64>,
    pub(super) user: Option<i64>,
    pub(super) data: Option<String>,
    pub(super) config_dir: Option<String>,
    #[serde(default)]
    pub(super) args: Vec<String>,
    #[serde(default)]
    pub(super) env: BTreeMap<String, String>,
    pub(super) health: Option<RawHealth>,
    pub(super) instances: Option<RawInstances>,
    pub(super) check: Option<Vec<String>>,
    pub(super) probe: Option<RawProbe>,
    pub(super) description: Option<String>,
    pub(super) source: Option<String>,
    #[serde(default)]
    pub(super) files: Vec<RawFile>,
    pub(super) size_budget_kib: Option<i64>,
    pub(super) memory_mib: Option<i64>,
    pub(super) egress_ports: Option<Vec<i64>>,
    pub(super) build: Option<RawBuild>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBuild {
    #[serde(default)]
    pub(super) packages: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHealth {
    pub(super) http: Option<String>,
    pub(super) command: Option<Vec<String>>,
    pub(super) ready: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawProbe {
    #[serde(default)]
    pub(super) env: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFile {
    pub(super) from: String,
    pub(super) to: String,
    pub(super) mode: Option<u32>,
}

/// `"one"`, `"many"`, or a command: written by hand so a wrong value says
/// which three shapes are allowed (serde's untagged enums cannot).
#[derive(Debug)]
pub(super) enum RawInstances {
    One,
    Many,
    Ask(Vec<String>),
}

impl<'de> Deserialize<'de> for RawInstances {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        const EXPECTED: &str = "`one`, `many`, or the service's command that decides, like [\"instances\"]";
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = RawInstances;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(EXPECTED)
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RawInstances, E> {
                match v {
                    "one" => Ok(RawInstances::One),
                    "many" => Ok(RawInstances::Many),
                    other => Err(E::custom(format!("instances = `{other}`: expected {EXPECTED}"))),
                }
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<RawInstances, A::Error> {
                let mut args = Vec::new();
                while let Some(a) = seq.next_element::<String>()? {
                    args.push(a);
                }
                Ok(RawInstances::Ask(args))
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// Problems found in one service, each prefixed with where it is.
struct Problems<'a> {
    at: &'a str,
    list: &'a mut Vec<String>,
}

impl Problems<'_> {
    fn say(&mut self, problem: String) {
        self.list.push(format!("{}: {problem}", self.at));
    }
}

/// Checks one `[[service]]` (at `at`, for messages), every problem into
/// `problems`, in the order of docs/CONTRACT.md's fields; returns the
/// service with defaults filled in and placeholders resolved.
pub(super) fn check_service(raw: RawService, at: &str, problems: &mut Vec<String>) -> Service {
    let p = &mut Problems { at, list: problems };
    check_name(&raw.name, p);
    let port = raw.port.map_or(defaults::PORT, |v| port_of("port", v, p));
    let extra_ports: Vec<u16> = raw.extra_ports.iter().map(|v| port_of("extra_ports", *v, p)).collect();
    if extra_ports.contains(&port) {
        p.say(format!("extra_ports repeats port {port}; list only the other ports"));
    }
    let egress_ports = match &raw.egress_ports {
        Some(list) => list.iter().map(|v| port_of("egress_ports", *v, p)).collect(),
        None => defaults::EGRESS_PORTS.to_vec(),
    };
    let user = user(raw.user, p);
    let data = raw.data.map(|d| data_folder(d, p));
    let config_dir = config_dir(raw.config_dir, p);
    let health = health(raw.health, p);
    let instances = instances(raw.instances, p);
    if raw.check.as_ref().is_some_and(Vec::is_empty) {
        p.say("check = [] is empty; give the service's arguments, like [\"check-config\"], or leave it out".to_owned());
    }
    let placeholders =
        [("port", Some(port.to_string())), ("data", data.clone()), ("config", Some(layout::CONFIG_DIR.to_owned()))];
    let mut said = Vec::new();
    let env = super::env::variables(raw.env, "env", &placeholders, &mut said);
    let probe_env =
        super::env::variables(raw.probe.map(|p| p.env).unwrap_or_default(), "probe.env", &placeholders, &mut said);
    said.into_iter().for_each(|problem| p.say(problem));
    let files = raw.files.into_iter().map(|f| extra_file(f, data.as_deref(), p)).collect();
    let size_budget_kib = match raw.size_budget_kib {
        None => defaults::SIZE_BUDGET_KIB,
        Some(k) => usize::try_from(k).ok().filter(|k| *k > 0).unwrap_or_else(|| {
            p.say(format!("size_budget_kib = {k} must be a positive number of KiB"));
            0
        }),
    };
    let memory_mib = match raw.memory_mib {
        None => defaults::MEMORY_MIB,
        Some(m) => u64::try_from(m).ok().filter(|m| *m >= 16).unwrap_or_else(|| {
            p.say(format!("memory_mib = {m}: give at least 16"));
            0
        }),
    };
    let packages = packages(raw.build.map(|b| b.packages).unwrap_or_default(), p);
    Service {
        package: raw.package.unwrap_or_else(|| raw.name.clone()),
        name: raw.name,
        bin: raw.bin.unwrap_or_default(),
        port,
        extra_ports,
        user,
        data,
        config_dir: PathBuf::from(config_dir),
        args: raw.args,
        env,
        health,
        instances,
        check: raw.check,
        probe_env,
        description: raw.description,
        source: raw.source,
        files,
        size_budget_kib,
        memory_mib,
        egress_ports,
        packages,
        version: String::new(),
    }
}

/// `build.packages`: Debian package names (Debian Policy 5.6.1: lower-case
/// letters, digits, `+`, `-` and `.`, at least two, starting with a letter or
/// digit), sorted and each once, so the same set always names the same
/// builder. A name is all it takes: no version, no architecture, nothing the
/// shell would read.
fn packages(list: Vec<String>, p: &mut Problems<'_>) -> Vec<String> {
    let mut out = Vec::new();
    for name in list {
        let ok = name.len() >= 2
            && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            && name.bytes().all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'+' | b'-' | b'.'));
        if ok {
            out.push(name);
        } else {
            p.say(format!(
                "build.packages: `{}` is not a Debian package name (a-z, 0-9, `+`, `-`, `.`), like \"protobuf-compiler\"",
                escape(&name)
            ));
        }
    }
    out.sort();
    out.dedup();
    out
}

fn check_name(name: &str, p: &mut Problems<'_>) {
    let name_ok = !name.is_empty()
        && name.len() <= 24
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.bytes().all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'-'))
        && !name.ends_with('-');
    if !name_ok {
        p.say("name must be 1 to 24 characters of a-z, 0-9 and `-`, starting with a letter (it names images, containers and Kubernetes objects)".to_owned());
    }
}

fn port_of(field: &str, v: i64, p: &mut Problems<'_>) -> u16 {
    match u16::try_from(v) {
        Ok(port) if port > 0 => port,
        _ => {
            p.say(format!("{field} = {v} is not a port; use 1 to 65535"));
            0
        }
    }
}

fn user(user: Option<i64>, p: &mut Problems<'_>) -> u32 {
    match user {
        None => defaults::USER,
        Some(0) => {
            p.say(format!("user = 0 is root; give the numeric id of an unprivileged user, like {}", defaults::USER));
            0
        }
        Some(u) => u32::try_from(u).unwrap_or_else(|_| {
            p.say(format!("user = {u} is not a user id; use 1 to 4294967295"));
            0
        }),
    }
}

fn data_folder(d: String, p: &mut Problems<'_>) -> String {
    if let Err(why) = absolute_path(&d) {
        p.say(format!("data = `{}` {why}", escape(&d)));
    } else if d == "/" || SYSTEM_FOLDERS.iter().any(|s| d == *s || d.starts_with(&format!("{s}/"))) {
        p.say(format!("data = `{d}` is a system folder; use a folder of its own, like /data"));
    }
    d.trim_end_matches('/').to_owned()
}

fn config_dir(given: Option<String>, p: &mut Problems<'_>) -> String {
    let config_dir = given.unwrap_or_else(|| defaults::CONFIG_DIR.to_owned());
    let config_path = Path::new(&config_dir);
    if config_dir.is_empty()
        || config_path.is_absolute()
        || config_path.components().any(|c| !matches!(c, Component::Normal(_)))
    {
        p.say(format!(
            "config_dir = `{}` must be a folder inside the workspace, relative to it, like \"{}\"",
            escape(&config_dir),
            defaults::CONFIG_DIR
        ));
    }
    config_dir
}

fn health(raw: Option<RawHealth>, p: &mut Problems<'_>) -> Health {
    let Some(h) = raw else {
        p.say("has no health check; add health.http = \"/healthz\" (a path that answers 200) or health.command = [\"…\"] (a subcommand of the service that exits 0 when it is healthy)".to_owned());
        return Health { http: None, command: None, ready: None };
    };
    for (field, path) in [("health.http", &h.http), ("health.ready", &h.ready)] {
        if let Some(path) = path
            && (!path.starts_with('/') || path.bytes().any(|b| b.is_ascii_control() || b == b' '))
        {
            p.say(format!("{field} = `{}` must be a URL path with a leading `/`, like \"/healthz\"", escape(path)));
        }
    }
    if h.http.is_none() && h.command.is_none() {
        p.say("health needs http = \"/path\" or command = [\"…\"]".to_owned());
    }
    if h.command.as_ref().is_some_and(Vec::is_empty) {
        p.say("health.command is empty; give the service's arguments, like [\"healthcheck\"]".to_owned());
    }
    Health { http: h.http, command: h.command, ready: h.ready }
}

fn instances(raw: Option<RawInstances>, p: &mut Problems<'_>) -> Instances {
    match raw {
        None | Some(RawInstances::One) => Instances::One,
        Some(RawInstances::Many) => Instances::Many,
        Some(RawInstances::Ask(args)) if args.is_empty() => {
            p.say("instances = [] is empty; give the service's arguments, like [\"instances\"]".to_owned());
            Instances::One
        }
        Some(RawInstances::Ask(args)) => Instances::Ask(args),
    }
}

fn extra_file(f: RawFile, data: Option<&str>, p: &mut Problems<'_>) -> ExtraFile {
    let from = PathBuf::from(&f.from);
    if from.is_absolute() || from.components().any(|c| !matches!(c, Component::Normal(_))) {
        p.say(format!("files: from = `{}` must be a path inside the workspace, relative to it", escape(&f.from)));
    }
    if let Err(why) = absolute_path(&f.to) {
        p.say(format!("files: to = `{}` {why}", escape(&f.to)));
    } else if layout::is_filled(&f.to, data) {
        p.say(format!("files: to = `{}` is a place boxcar fills itself; choose another path", f.to));
    }
    let mode = f.mode.unwrap_or(0o444);
    // At most rwxr-xr-x: no set-id or sticky bit, nothing writable by group or others.
    if mode & !0o755 != 0 {
        p.say(format!("files: mode {mode:o} for `{}` must be at most 0o755 and not writable by group or others", f.to));
    }
    ExtraFile { from, to: f.to, mode }
}

/// An absolute path without `.`, `..` or a trailing `/` that means more.
fn absolute_path(p: &str) -> Result<(), &'static str> {
    let path = Path::new(p);
    if !path.is_absolute() {
        return Err("must be an absolute path, like /data");
    }
    if path.components().any(|c| matches!(c, Component::ParentDir | Component::CurDir)) || p.contains("//") {
        return Err("must not hold `.`, `..` or `//`");
    }
    if p.bytes().any(|b| b.is_ascii_control()) {
        return Err("holds a control character");
    }
    Ok(())
}
