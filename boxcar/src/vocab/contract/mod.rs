//! The service contract: `boxcar.toml` at the workspace root declares each
//! service boxcar ships, and is everything the image and deploy machinery
//! knows about it (the way ko and Jib read a few declared fields and nothing
//! else). `docs/CONTRACT.md` documents every field.
//!
//! A file of its own rather than `[workspace.metadata]` in `Cargo.toml`: the
//! build copies `Cargo.toml` into the builder and hashes it, so a changed port
//! or label would recompile the service; `boxcar.toml` is left out of the
//! build, and changing it only rewrites the image (milliseconds).
//!
//! The common case is three lines:
//!
//! ```toml
//! [[service]]
//! name = "hello"
//! health.http = "/healthz"
//! ```

use std::path::{Path, PathBuf};

mod env;
mod raw;

use self::raw::{RawContract, check_service};
use crate::vocab::layout;
use crate::vocab::show::{escape, lines};

/// What is wrong with `boxcar.toml`, or with what it names.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("reading {FILE}")]
    Read(#[source] std::io::Error),
    /// Every problem is one line that names the file, the service and the
    /// field, and says what to do.
    #[error("{FILE} has {} problem(s); docs/CONTRACT.md describes every field:{}", .problems.len(), lines(.problems))]
    Invalid { problems: Vec<String> },
    /// Packages or binaries the workspace does not have, one line each.
    #[error("{FILE} names {} package(s) or binary(ies) the workspace does not have:{}", .problems.len(), lines(.problems))]
    Unresolved { problems: Vec<String> },
    #[error("reading the workspace with `cargo metadata`")]
    Metadata(#[source] cargo_metadata::Error),
    /// `--service NAME` names no service.
    #[error("--service {}: {FILE} has no such service; use one of: {known}", escape(.name))]
    NoSuchService { name: String, known: String },
    /// Several services, no `--service` and no `default`.
    #[error("{FILE} declares {count} services: pick one with --service ({known}), or set `default = \"…\"` in {FILE}")]
    Ambiguous { count: usize, known: String },
    /// An extra file the contract names cannot be read.
    #[error("{FILE}: service `{service}`: files: from = `{}` cannot be read", escape(&.from.display().to_string()))]
    ExtraFile { service: String, from: PathBuf, source: std::io::Error },
}

/// The contract's file name, at the workspace root.
pub const FILE: &str = "boxcar.toml";

/// Every service of a workspace.
#[derive(Debug, Clone)]
pub struct Contract {
    services: Vec<Service>,
    default: Option<String>,
}

/// One service, every field checked and defaulted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    /// `[a-z][a-z0-9-]*`: the image repository and the start of deployment names.
    pub name: String,
    /// The workspace package that holds the service.
    pub package: String,
    /// The binary target that is the service.
    pub bin: String,
    /// The port it listens on: published by `deploy`, checked by the health probe.
    pub port: u16,
    /// More ports it listens on (exposed, not published).
    pub extra_ports: Vec<u16>,
    /// Numeric user and group it runs as (never 0).
    pub user: u32,
    /// Absolute path of its data (a volume), if it keeps any.
    pub data: Option<String>,
    /// Folder of its environment files, relative to the workspace root.
    pub config_dir: PathBuf,
    /// Arguments after the binary (the image's CMD).
    pub args: Vec<String>,
    /// Variables baked into the image, placeholders expanded, sorted by name.
    pub env: Vec<(String, String)>,
    /// How its health is checked.
    pub health: Health,
    /// Whether several instances may run at once.
    pub instances: Instances,
    /// Its own check of an environment file (arguments to its binary, the
    /// file's path appended), run by `check` and `deploy`.
    pub check: Option<Vec<String>>,
    /// Variables that make a probe instance harmless (`deploy`'s trial run).
    pub probe_env: Vec<(String, String)>,
    /// Image labels.
    pub description: Option<String>,
    pub source: Option<String>,
    /// Extra files for the image.
    pub files: Vec<ExtraFile>,
    pub size_budget_kib: usize,
    pub memory_mib: u64,
    /// Ports a Kubernetes NetworkPolicy lets it reach, besides DNS.
    pub egress_ports: Vec<u16>,
    /// Debian packages the builder needs for this service (`build.packages`),
    /// sorted, each once.
    pub packages: Vec<String>,
    /// The package's version (from Cargo), once [`Contract::resolve`] ran.
    pub version: String,
}

/// How a service's health is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    /// GET on the port answers 2xx.
    pub http: Option<String>,
    /// The image's HEALTHCHECK runs the service's binary with these arguments
    /// instead of boxcar's probe.
    pub command: Option<Vec<String>>,
    /// Readiness (Kubernetes): this path answers 2xx. Default: `http`.
    pub ready: Option<String>,
}

impl Health {
    /// Whether the image carries boxcar's probe (no command of the service's own).
    pub fn needs_probe(&self) -> bool {
        self.command.is_none()
    }
}

/// Whether several instances may run at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Instances {
    /// One at a time: an update stops the old one first.
    One,
    /// Side by side: updates start the new one first.
    Many,
    /// The service decides from its environment file: its binary, run with
    /// these arguments and the file, prints `one` or `many`.
    Ask(Vec<String>),
}

/// A file of the workspace copied into the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtraFile {
    /// Relative to the workspace root.
    pub from: PathBuf,
    /// Absolute path in the image.
    pub to: String,
    pub mode: u32,
}

impl Contract {
    /// Reads `boxcar.toml` in `root`; `None` when there is none.
    pub fn load(root: &Path) -> Result<Option<Contract>, Error> {
        let path = root.join(FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::Read(e)),
        };
        Contract::parse(&text).map(Some)
    }

    /// Parses and checks a contract: [`Error::Invalid`] lists every problem,
    /// one line each that names the file, the service and the field, and
    /// says what to do.
    pub fn parse(text: &str) -> Result<Contract, Error> {
        Contract::parse_problems(text).map_err(|problems| Error::Invalid { problems })
    }

    fn parse_problems(text: &str) -> Result<Contract, Vec<String>> {
        let raw: RawContract = toml::from_str(text).map_err(|e| {
            let at = e
                .span()
                .map(|span| {
                    let before = &text[..span.start.min(text.len())];
                    format!("line {}: ", before.matches('\n').count() + 1)
                })
                .unwrap_or_default();
            let message = e.message().trim_end().replace('\n', "; ");
            let hint = if message.starts_with("unknown field") { "; check the spelling" } else { "" };
            vec![format!("{FILE}: {at}{message}{hint}")]
        })?;
        let mut problems = Vec::new();
        let mut services: Vec<Service> = Vec::new();
        for (i, raw) in raw.service.into_iter().enumerate() {
            let at = format!("{FILE}: service `{}`", escape(&raw.name));
            let before = problems.len();
            let service = check_service(raw, &at, &mut problems);
            if problems.len() > before {
                continue;
            }
            if services.iter().any(|s| s.name == service.name) {
                problems.push(format!(
                    "{at} (the {}th [[service]]) is declared twice; give each service its own name",
                    i + 1
                ));
                continue;
            }
            services.push(service);
        }
        if let Some(d) = &raw.default
            && !services.iter().any(|s| &s.name == d)
            && problems.is_empty()
        {
            problems.push(format!(
                "{FILE}: default = `{}` names no service; use one of: {}",
                escape(d),
                names(&services)
            ));
        }
        if services.is_empty() && problems.is_empty() {
            problems.push(format!(
                "{FILE} declares no service; add one:\n  [[service]]\n  name = \"my-service\"\n  health.http = \"/healthz\""
            ));
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(Contract { services, default: raw.default })
    }

    /// Every service.
    pub fn services(&self) -> &[Service] {
        &self.services
    }

    /// The service `name`, else the default, else the only one.
    pub fn pick(&self, name: Option<&str>) -> Result<&Service, Error> {
        let wanted = name.or(self.default.as_deref());
        match wanted {
            Some(n) => self
                .services
                .iter()
                .find(|s| s.name == n)
                .ok_or_else(|| Error::NoSuchService { name: n.to_owned(), known: names(&self.services) }),
            None if self.services.len() == 1 => Ok(&self.services[0]),
            None => Err(Error::Ambiguous { count: self.services.len(), known: names(&self.services) }),
        }
    }

    /// Checks every service's package and binary against the workspace
    /// (`cargo metadata`), and takes each package's version and repository.
    pub fn resolve(&mut self, root: &Path) -> Result<(), Error> {
        let metadata = workspace(root)?;
        let mut problems = Vec::new();
        for service in &mut self.services {
            if let Err(p) = service.resolve(&metadata.packages) {
                problems.push(p);
            }
        }
        if !problems.is_empty() {
            return Err(Error::Unresolved { problems });
        }
        Ok(())
    }
}

/// The workspace's members, as `cargo metadata --no-deps` (offline) reads them.
pub fn workspace(root: &Path) -> Result<cargo_metadata::Metadata, Error> {
    cargo_metadata::MetadataCommand::new()
        .current_dir(root)
        .no_deps()
        .other_options(vec!["--offline".to_owned()])
        .exec()
        .map_err(Error::Metadata)
}

fn names(services: &[Service]) -> String {
    services.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join(", ")
}

impl Service {
    fn resolve(&mut self, packages: &[cargo_metadata::Package]) -> Result<(), String> {
        let at = format!("{FILE}: service `{}`", self.name);
        let Some(package) = packages.iter().find(|p| p.name.as_str() == self.package) else {
            let mut known: Vec<&str> = packages.iter().map(|p| p.name.as_str()).collect();
            known.sort();
            return Err(format!(
                "{at}: package = `{}` is not a package of this workspace; use one of: {}",
                escape(&self.package),
                known.join(", ")
            ));
        };
        let bins: Vec<&str> = package
            .targets
            .iter()
            .filter(|t| t.kind.iter().any(|k| matches!(k, cargo_metadata::TargetKind::Bin)))
            .map(|t| t.name.as_str())
            .collect();
        if self.bin.is_empty() {
            self.bin = match bins.as_slice() {
                [one] => (*one).to_owned(),
                _ if bins.contains(&self.package.as_str()) => self.package.clone(),
                [] => return Err(format!("{at}: package `{}` has no binary target; add src/main.rs", self.package)),
                _ => {
                    return Err(format!(
                        "{at}: package `{}` has several binaries ({}); say which with bin = \"…\"",
                        self.package,
                        bins.join(", ")
                    ));
                }
            };
        } else if !bins.contains(&self.bin.as_str()) {
            return Err(format!(
                "{at}: bin = `{}` is not a binary target of package `{}` (its binaries: {})",
                escape(&self.bin),
                self.package,
                if bins.is_empty() { "none".to_owned() } else { bins.join(", ") }
            ));
        }
        self.version = package.version.to_string();
        if self.source.is_none() {
            self.source.clone_from(&package.repository);
        }
        if self.description.is_none() {
            self.description.clone_from(&package.description);
        }
        Ok(())
    }

    /// The binary's path in the image.
    pub fn binary_path(&self) -> String {
        format!("{}/{}", layout::BIN_DIR, self.bin)
    }

    /// `<name>-<env>`, with `_` as `-`: the default deployment name.
    pub fn deployment_name(&self, env: &str) -> String {
        format!("{}-{}", self.name, env.replace('_', "-"))
    }

    /// `<config dir>/<env>.toml` in the image.
    pub fn env_file_in_image(env: &str) -> String {
        format!("{}/{env}.toml", layout::CONFIG_DIR)
    }

    /// What the contract gives the service at run time, with its extra
    /// files read from the workspace at `root`: what the approval of each of
    /// its environments covers (docs/CONTRACT.md, "What the approval covers").
    pub fn runtime(&self, root: &Path) -> Result<toml::Table, Error> {
        let mut files = Vec::new();
        for f in &self.files {
            let data = std::fs::read(root.join(&f.from)).map_err(|source| Error::ExtraFile {
                service: self.name.clone(),
                from: f.from.clone(),
                source,
            })?;
            files.push((f.to.clone(), f.mode, data));
        }
        Ok(self.runtime_with(&files))
    }

    /// [`Service::runtime`] with the extra files' `(to, mode, content)` given,
    /// as `image` has them. Every field is always there (empty when the
    /// contract sets nothing), so two spellings of one contract give one table.
    pub fn runtime_with(&self, files: &[(String, u32, Vec<u8>)]) -> toml::Table {
        use sha2::Digest as _;
        let strings = |list: &[String]| toml::Value::Array(list.iter().map(|a| a.as_str().into()).collect());
        let variables = |vars: &[(String, String)]| {
            toml::Value::Table(vars.iter().map(|(k, v)| (k.clone(), v.as_str().into())).collect())
        };
        let files = files
            .iter()
            .map(|(to, mode, data)| {
                let sha256 = hex::encode(sha2::Sha256::digest(data));
                let entry: toml::Table = [
                    ("to".to_owned(), to.as_str().into()),
                    ("mode".to_owned(), format!("{mode:04o}").into()),
                    ("sha256".to_owned(), sha256.into()),
                ]
                .into_iter()
                .collect();
                toml::Value::Table(entry)
            })
            .collect();
        [
            ("bin", self.bin.as_str().into()),
            ("config_dir", self.config_dir.display().to_string().into()),
            ("args", strings(&self.args)),
            ("env", variables(&self.env)),
            ("health_command", strings(self.health.command.as_deref().unwrap_or_default())),
            ("probe_env", variables(&self.probe_env)),
            ("files", toml::Value::Array(files)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::vocab::defaults;

    /// A service with every default changed, for the other modules' tests.
    pub(crate) fn service() -> Service {
        let text = r#"
            [[service]]
            name = "svc"
            bin = "svc"
            port = 9000
            user = 1000
            data = "/var/lib/svc"
            args = ["run"]
            env.SVC_LISTEN = "0.0.0.0:{port}"
            env.SVC_DATA = "{data}"
            env.SVC_CONFIG = "{config}"
            health.http = "/health"
            probe.env.SVC_UPSTREAM = "http://127.0.0.1:9"
            description = "a test service"
            source = "https://example.invalid/svc"
            build.packages = ["protobuf-compiler", "cmake", "protobuf-compiler", "libssl-dev", "g++"]
        "#;
        let mut s = Contract::parse_problems(text).unwrap().services[0].clone();
        s.version = "1.2.3".to_owned();
        s
    }

    #[test]
    fn three_lines_are_enough() {
        let c = Contract::parse_problems("[[service]]\nname = \"hello\"\nhealth.http = \"/healthz\"\n").unwrap();
        let s = c.pick(None).unwrap();
        assert_eq!(s.package, "hello");
        assert_eq!(s.port, defaults::PORT);
        assert_eq!(s.user, defaults::USER);
        assert_eq!(s.config_dir, Path::new(defaults::CONFIG_DIR));
        assert_eq!(s.data, None);
        assert_eq!(s.instances, Instances::One);
        assert_eq!(s.size_budget_kib, defaults::SIZE_BUDGET_KIB);
        assert_eq!(s.egress_ports, defaults::EGRESS_PORTS);
        assert!(s.health.needs_probe());
        assert!(s.packages.is_empty());
    }

    #[test]
    fn placeholders_expand_and_variables_sort() {
        let s = service();
        let env: Vec<String> = s.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        assert_eq!(env, ["SVC_CONFIG=/etc/boxcar/deploy-config", "SVC_DATA=/var/lib/svc", "SVC_LISTEN=0.0.0.0:9000"]);
        assert_eq!(s.probe_env, [("SVC_UPSTREAM".to_owned(), "http://127.0.0.1:9".to_owned())]);
        assert_eq!(s.deployment_name("eu_west"), "svc-eu-west");
        assert_eq!(s.packages, ["cmake", "g++", "libssl-dev", "protobuf-compiler"]);

        // `{{` and `}}` are braces; placeholders may repeat and sit anywhere.
        let c = Contract::parse_problems(
            "[[service]]\nname = \"b\"\nport = 81\nhealth.http = \"/\"\nenv.A = \"{{port}}={port}{port}\"\nenv.J = '{{\"k\": \"{config}\"}}'\n",
        )
        .unwrap();
        let env = &c.pick(None).unwrap().env;
        assert_eq!(env[0], ("A".to_owned(), "{port}=8181".to_owned()));
        assert_eq!(env[1], ("J".to_owned(), "{\"k\": \"/etc/boxcar/deploy-config\"}".to_owned()));
    }

    #[test]
    fn several_services_need_a_choice() {
        let two = "[[service]]\nname = \"a\"\nhealth.http = \"/\"\n[[service]]\nname = \"b\"\nhealth.http = \"/\"\n";
        let c = Contract::parse_problems(two).unwrap();
        let err = c.pick(None).unwrap_err().to_string();
        assert!(err.contains("declares 2 services: pick one with --service (a, b)"), "{err}");
        assert_eq!(c.pick(Some("b")).unwrap().name, "b");
        assert!(c.pick(Some("c")).unwrap_err().to_string().contains("has no such service; use one of: a, b"));
        let c = Contract::parse_problems(&format!("default = \"b\"\n{two}")).unwrap();
        assert_eq!(c.pick(None).unwrap().name, "b");
    }

    /// Each bad contract gives one line that names the field and says what to do.
    #[test]
    fn bad_contracts_name_the_field() {
        let base = "[[service]]\nname = \"hello\"\nhealth.http = \"/healthz\"\n";
        let cases = [
            ("port = 70000\n", "service `hello`: port = 70000 is not a port; use 1 to 65535"),
            ("port = 0\n", "port = 0 is not a port"),
            ("prot = 1\n", "unknown field `prot`"),
            ("data = \"data\"\n", "data = `data` must be an absolute path"),
            ("data = \"/srv/../etc\"\n", "must not hold `.`, `..`"),
            ("data = \"/etc/svc\"\n", "is a system folder"),
            ("data = \"/\"\n", "is a system folder"),
            ("data = \"/run\"\n", "is a system folder"),
            ("user = 0\n", "user = 0 is root"),
            ("health.ready = \"ready\"\n", "health.ready = `ready` must be a URL path with a leading `/`"),
            ("config_dir = \"../elsewhere\"\n", "config_dir = `../elsewhere` must be a folder inside the workspace"),
            ("env.PATH = \"/bin\"\n", "env.PATH is set by boxcar itself"),
            ("env.X = \"{data}\"\n", "env.X = `{data}`: uses {data}, but the service has no `data` folder"),
            (
                "data = \"/d\"\nenv.X = \"{dat}/db\"\n",
                "env.X = `{dat}/db`: {dat} is not a placeholder; boxcar knows {port}, {data}, {config}",
            ),
            ("probe.env.X = \"http://x:{Port}\"\n", "probe.env.X = `http://x:{Port}`: {Port} is not a placeholder"),
            ("env.X = \"{\\\"a\\\": 1}\"\n", "a lone `{`; write {{ or }} for a brace"),
            ("env.X = \"a}\"\n", "a lone `}`; write {{ or }} for a brace"),
            ("build.packages = [\"Protoc\"]\n", "build.packages: `Protoc` is not a Debian package name"),
            ("build.packages = [\"a\"]\n", "build.packages: `a` is not a Debian package name"),
            ("build.packages = [\"-y\"]\n", "build.packages: `-y` is not a Debian package name"),
            ("build.packages = [\"gcc; rm -rf /\"]\n", "build.packages: `gcc; rm -rf /` is not a Debian package name"),
            ("build.packages = [\"libssl-dev=3.0\"]\n", "`libssl-dev=3.0` is not a Debian package name"),
            ("build.packages = [\"g++:arm64\"]\n", "`g++:arm64` is not a Debian package name"),
            ("build.package = [\"cmake\"]\n", "unknown field `package`"),
            ("env.X = \"{port\"\n", "a lone `{`"),
            ("env.X = \"{}\"\n", "a lone `{`"),
            ("env.X = \"{\\u001b[31m}\"\n", "a lone `{`"),
            ("instances = \"two\"\n", "instances = `two`: expected `one`, `many`"),
            ("files = [{ from = \"a\", to = \"/etc/passwd\" }]\n", "is a place boxcar fills itself"),
            ("files = [{ from = \"/abs\", to = \"/x\" }]\n", "must be a path inside the workspace"),
            ("size_budget_kib = 0\n", "size_budget_kib = 0 must be a positive number"),
            ("memory_mib = 15\n", "memory_mib = 15: give at least 16"),
            ("instances = 5\n", "expected `one`, `many`, or the service's command that decides"),
            ("instances = []\n", "instances = [] is empty"),
            ("config_dir = \"/etc/conf\"\n", "config_dir = `/etc/conf` must be a folder inside the workspace"),
            ("config_dir = \"\"\n", "config_dir = `` must be a folder inside the workspace"),
            ("health.ready = \"/a b\"\n", "health.ready = `/a b` must be a URL path"),
            ("env.1X = \"a\"\n", "env.1X is not a variable name"),
            ("env.\"A-B\" = \"a\"\n", "env.A-B is not a variable name"),
            ("files = [{ from = \"../x\", to = \"/x\" }]\n", "must be a path inside the workspace"),
            ("files = [{ from = \"a\", to = \"/x\", mode = 0o1755 }]\n", "files: mode 1755 for `/x` must be at most"),
            ("files = [{ from = \"a\", to = \"/x\", mode = 0o775 }]\n", "files: mode 775 for `/x` must be at most"),
        ];
        for (extra, expected) in cases {
            let problems = Contract::parse_problems(&format!("{base}{extra}")).unwrap_err();
            assert_eq!(problems.len(), 1, "{extra}: {problems:?}");
            assert!(problems[0].starts_with("boxcar.toml: "), "{problems:?}");
            assert!(problems[0].contains(expected), "{extra}: {problems:?}");
        }
        let no_health = Contract::parse_problems("[[service]]\nname = \"hello\"\n").unwrap_err();
        assert!(no_health[0].contains("has no health check; add health.http"), "{no_health:?}");
        let twice = Contract::parse_problems(&format!("{base}{base}")).unwrap_err();
        assert!(twice[0].contains("service `hello` (the 2th [[service]]) is declared twice"), "{twice:?}");
        let bad_name = Contract::parse_problems("[[service]]\nname = \"Hello_1\"\nhealth.http = \"/\"\n").unwrap_err();
        assert!(bad_name[0].contains("name must be 1 to 24 characters"), "{bad_name:?}");
        let default = Contract::parse_problems(&format!("default = \"nope\"\n{base}")).unwrap_err();
        assert!(default[0].contains("default = `nope` names no service"), "{default:?}");
        assert!(Contract::parse_problems("").unwrap_err()[0].contains("declares no service"));
        let hostile =
            Contract::parse_problems("[[service]]\nname = \"a\\u001b[2J\"\nhealth.http = \"/\"\n").unwrap_err();
        assert!(!hostile[0].contains('\u{1b}'), "a control character reached the terminal: {hostile:?}");
    }

    /// The limits at their lowest allowed values are taken as given.
    #[test]
    fn the_lowest_limits_are_allowed() {
        let text = "[[service]]\nname = \"hello\"\nhealth.http = \"/\"\nsize_budget_kib = 1\nmemory_mib = 16\n";
        let service = Contract::parse_problems(text).unwrap().services[0].clone();
        assert_eq!((service.size_budget_kib, service.memory_mib), (1, 16));
        let text = "[[service]]\nname = \"hello\"\nhealth.http = \"/\"\ninstances = [\"instances\"]\n\
                    files = [{ from = \"a\", to = \"/x\", mode = 0o755 }]\nenv.A_1 = \"x\"\n";
        let service = Contract::parse_problems(text).unwrap().services[0].clone();
        assert_eq!(service.instances, Instances::Ask(vec!["instances".to_owned()]));
        assert_eq!((service.files[0].mode, service.env.clone()), (0o755, vec![("A_1".to_owned(), "x".to_owned())]));
    }
}
