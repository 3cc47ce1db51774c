//! Run-time approval (docs/FORMAT.md, "Run-time approval"): what the
//! contract gives a service at run time (its program, arguments, variables,
//! files) is approved with the environment file, as
//! `[boxcar.services.<service>]`, and a boxcar image says what it gives in
//! `/etc/boxcar/service.toml`. A service in an image refuses to start when the
//! two differ (step A10), so a variable added to `boxcar.toml` cannot send
//! opened values elsewhere unless the key holder approved it.
//!
//! This crate knows nothing of the fields: it compares the two tables by
//! their canonical encoding. `boxcar`'s contract says what they hold.

use std::collections::BTreeSet;
use std::path::Path;

use crate::approval::{self, ApprovalError};

/// The top-level table of an environment file that is boxcar's own.
pub const BOXCAR_TABLE: &str = "boxcar";
/// Under it, one table per service: its approved run-time contract.
pub const SERVICES: &str = "services";
/// Where a boxcar image holds the run-time contract it was built with.
pub const IMAGE_SERVICE_FILE: &str = "/etc/boxcar/service.toml";
/// Largest service file read: it holds a few short lists.
const MAX_SERVICE_FILE_LEN: u64 = 64 * 1024;

/// A boxcar image's `/etc/boxcar/service.toml`: which service the image is,
/// and the run-time contract it was built with.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceFile {
    /// The service's name in `boxcar.toml`.
    pub service: String,
    /// Its run-time contract.
    pub runtime: toml::Table,
}

impl ServiceFile {
    /// Reads the service file at `path`: `None` when there is none (a
    /// service outside an image). One that cannot be read or has the wrong
    /// shape is an error: a service never starts on a contract it cannot check.
    pub fn read(path: &Path) -> Result<Option<ServiceFile>, ApprovalError> {
        use std::io::Read as _;
        let unreadable = |why: String| ApprovalError::Runtime { service: String::new(), why };
        let file = match std::fs::File::open(path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(unreadable(format!("{} cannot be read: {e}", path.display()))),
        };
        let mut bytes = Vec::new();
        file.take(MAX_SERVICE_FILE_LEN + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| unreadable(format!("{} cannot be read: {e}", path.display())))?;
        if bytes.len() as u64 > MAX_SERVICE_FILE_LEN {
            return Err(unreadable(format!("{} is larger than {MAX_SERVICE_FILE_LEN} bytes", path.display())));
        }
        let text = String::from_utf8(bytes).map_err(|_| unreadable(format!("{} is not UTF-8", path.display())))?;
        ServiceFile::parse(&text).map(Some).map_err(|e| match e {
            ApprovalError::Runtime { service, why } => {
                ApprovalError::Runtime { service, why: format!("{}: {why}", path.display()) }
            }
            other => other,
        })
    }

    /// Parses a service file's text.
    pub fn parse(text: &str) -> Result<ServiceFile, ApprovalError> {
        let bad = |why: &str| ApprovalError::Runtime { service: String::new(), why: why.to_owned() };
        let mut table = crate::document::read_toml(text).map_err(|e| bad(&format!("malformed TOML: {e}")))?;
        let service = match table.remove("service") {
            Some(toml::Value::String(s)) if !s.is_empty() => s,
            _ => return Err(bad("`service` must be the service's name")),
        };
        let runtime = match table.remove("runtime") {
            Some(toml::Value::Table(t)) => t,
            _ => return Err(bad("`runtime` must be a table")),
        };
        Ok(ServiceFile { service, runtime })
    }

    /// The service file's text for `service` and its `runtime`.
    pub fn render(service: &str, runtime: &toml::Table) -> String {
        let mut root = toml::Table::new();
        root.insert("service".to_owned(), service.into());
        root.insert("runtime".to_owned(), runtime.clone().into());
        format!(
            "# What boxcar.toml gives service `{}` at run time, as this image was built with it\n\
             # (written by `cargo xtask image`). The service starts only on an environment file that\n\
             # approves the same, as [boxcar.services.{}] (docs/FORMAT.md, \"Run-time approval\").\n{}",
            crate::show::escape(service),
            crate::show::escape(service),
            toml::to_string(&root).unwrap_or_default()
        )
    }

    /// A10: the environment file `table` (whose approval was verified) must
    /// approve exactly this run-time contract for this service.
    pub fn check(&self, table: &toml::Table) -> Result<(), ApprovalError> {
        let approved = approved_runtime(table, &self.service);
        let why = match approved {
            None => "the environment file approves no run-time contract for it".to_owned(),
            Some(approved) => {
                let changed = differences(approved, &self.runtime);
                if changed.is_empty() {
                    return Ok(());
                }
                format!("it differs in {}", changed.join(", "))
            }
        };
        Err(ApprovalError::Runtime { service: crate::show::escape(&self.service).into_owned(), why })
    }
}

/// The run-time contract an environment file's `table` approves for
/// `service`, when it has one and it is a table.
pub fn approved_runtime<'a>(table: &'a toml::Table, service: &str) -> Option<&'a toml::Table> {
    table.get(BOXCAR_TABLE)?.as_table()?.get(SERVICES)?.as_table()?.get(service)?.as_table()
}

/// The fields whose values differ between two run-time contracts (compared by
/// their canonical encoding), each marked `(new)` or `(removed)` when only
/// `now` or only `approved` has it; empty when they are equal. Names are
/// escaped, and so are the keys of a field that is a table (`env.NAME`).
pub fn differences(approved: &toml::Table, now: &toml::Table) -> Vec<String> {
    let mut out = Vec::new();
    let fields: BTreeSet<&String> = approved.keys().chain(now.keys()).collect();
    for field in fields {
        match (approved.get(field), now.get(field)) {
            (Some(toml::Value::Table(a)), Some(toml::Value::Table(b))) => {
                let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
                for key in keys {
                    if let Some(change) = change(a.get(key), b.get(key)) {
                        out.push(format!("{}.{}{change}", show(field), show(key)));
                    }
                }
            }
            (a, b) => {
                if let Some(change) = change(a, b) {
                    out.push(format!("{}{change}", show(field)));
                }
            }
        }
    }
    out
}

/// How one value changed: `None` when it did not.
fn change(approved: Option<&toml::Value>, now: Option<&toml::Value>) -> Option<&'static str> {
    match (approved, now) {
        (None, None) => None,
        (None, Some(_)) => Some(" (new)"),
        (Some(_), None) => Some(" (removed)"),
        (Some(a), Some(b)) if same(a, b) => None,
        (Some(_), Some(_)) => Some(""),
    }
}

/// Equal by the canonical encoding (a date-time, which has none, is never equal).
fn same(a: &toml::Value, b: &toml::Value) -> bool {
    matches!((approval::encoded(a), approval::encoded(b)), (Some(a), Some(b)) if a == b)
}

fn show(name: &str) -> std::borrow::Cow<'_, str> {
    crate::show::escape(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(text: &str) -> toml::Table {
        text.parse().unwrap()
    }

    #[test]
    fn the_image_must_hold_what_the_file_approves() {
        let env = table(
            "public_key = \"x\"\n[boxcar.services.app]\nbin = \"app\"\nargs = [\"serve\"]\n\
             env = { A = \"1\", B = \"2\" }\n",
        );
        let same = ServiceFile::parse(
            "service = \"app\"\n[runtime]\nargs = [ \"serve\" ]\nbin = 'app'\nenv.B = \"2\"\nenv.A = \"1\"\n",
        )
        .unwrap();
        assert_eq!(same.check(&env), Ok(()));

        let more = ServiceFile::parse(
            "service = \"app\"\n[runtime]\nbin = \"app\"\nargs = [\"serve\", \"-v\"]\n\
             env = { A = \"1\", B = \"3\", EVIL = \"https://evil.example\" }\nfiles = []\n",
        )
        .unwrap();
        assert_eq!(
            more.check(&env),
            Err(ApprovalError::Runtime {
                service: "app".into(),
                why: "it differs in args, env.B, env.EVIL (new), files (new)".into()
            })
        );
        let fewer = ServiceFile::parse("service = \"app\"\n[runtime]\nbin = \"app\"\nenv = {}\n").unwrap();
        assert_eq!(
            fewer.check(&env).unwrap_err().to_string(),
            "the run-time contract of service `app` in this image is not the one this file approves: \
             it differs in args (removed), env.A (removed), env.B (removed)"
        );
        // Another service of the same image name approves nothing for this one.
        let other = ServiceFile { service: "worker".into(), runtime: same.runtime.clone() };
        assert!(matches!(other.check(&env), Err(ApprovalError::Runtime { why, .. }) if why.contains("approves no")));
        // A table of another type than a table under the service's name.
        let wrong = table("[boxcar.services]\napp = 3\n");
        assert!(same.check(&wrong).is_err());
        assert!(same.check(&table("boxcar = 1")).is_err());
        assert!(same.check(&table("[boxcar]\nservices = 1")).is_err());
    }

    #[test]
    fn service_files_are_read_strictly() {
        for (text, why) in [
            ("runtime = {}", "`service` must be the service's name"),
            ("service = \"\"\nruntime = {}", "`service` must be the service's name"),
            ("service = 1\nruntime = {}", "`service` must be the service's name"),
            ("service = \"app\"", "`runtime` must be a table"),
            ("service = \"app\"\nruntime = []", "`runtime` must be a table"),
            ("service = \"app\"\nruntime = { a = \"\\e\" }", "malformed TOML: line 2, column 18: the escape"),
        ] {
            let err = ServiceFile::parse(text).unwrap_err();
            assert!(matches!(&err, ApprovalError::Runtime { why: w, .. } if w.starts_with(why)), "{text}: {err}");
        }
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(ServiceFile::read(&dir.path().join("none.toml")), Ok(None));
        let path = dir.path().join("service.toml");
        let runtime = table("bin = \"a\"\nargs = []\n[env]\nX = \"\\u001b\"\n");
        std::fs::write(&path, ServiceFile::render("a\u{1b}", &runtime)).unwrap();
        let read = ServiceFile::read(&path).unwrap().unwrap();
        assert_eq!(read, ServiceFile { service: "a\u{1b}".into(), runtime: runtime.clone() });
        assert!(std::fs::read_to_string(&path).unwrap().starts_with("# What boxcar.toml gives service `a\\u{1b}`"));
        std::fs::write(&path, vec![b'#'; 64 * 1024 + 1]).unwrap();
        let err = ServiceFile::read(&path).unwrap_err().to_string();
        assert!(err.contains("is larger than 65536 bytes"), "{err}");
        std::fs::write(&path, b"service = \"\xff\"").unwrap();
        assert!(ServiceFile::read(&path).unwrap_err().to_string().contains("is not UTF-8"));
        std::fs::write(&path, b"service = 1").unwrap();
        let err = ServiceFile::read(&path).unwrap_err().to_string();
        assert!(err.contains(&format!("{}: `service` must be", path.display())), "{err}");
        // A folder where the file should be cannot be read, nor can a path
        // through a file (an error that is not "not found" is never "none").
        let err = ServiceFile::read(dir.path()).unwrap_err().to_string();
        assert!(err.contains("cannot be read"), "{err}");
        let err = ServiceFile::read(&path.join("service.toml")).unwrap_err().to_string();
        assert!(err.contains("cannot be read"), "{err}");
        // Exactly the largest size is read.
        let mut text = ServiceFile::render("a", &runtime);
        text.push_str(&"#".repeat(64 * 1024 - text.len()));
        std::fs::write(&path, &text).unwrap();
        assert_eq!(ServiceFile::read(&path).unwrap().unwrap().service, "a");
    }

    #[test]
    fn differences_name_fields_escaped() {
        let a = table("x = 1\n[env]\n\"K\u{202e}\" = \"1\"\n");
        let b = table("x = 1.0\n[env]\n");
        assert_eq!(differences(&a, &b), ["env.K\\u{202e} (removed)", "x"]);
        assert!(differences(&a, &a).is_empty());
        // A date-time has no encoding: never equal, so never approved.
        let d = table("x = 1979-05-27");
        assert_eq!(differences(&d, &d), ["x"]);
        // A field that is a table on one side only is one change.
        assert_eq!(differences(&table("x = { a = 1 }"), &table("x = 1")), ["x"]);
    }
}
