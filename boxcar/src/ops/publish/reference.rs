//! The references a push and a deploy take: `--push REGISTRY/REPO[:TAG]`
//! parsed and checked, whether a reference is pinned by digest, and which
//! registry it names.

use oci_client::Reference;

use super::Error;
use crate::vocab::show::escape;

/// Parses `--push REGISTRY/REPO[:TAG]`: the registry must be named (a host
/// with a dot or a port, or `localhost`), no digest (the push makes it), and
/// the tag is `default_tag` when none is given.
pub(crate) fn parse_target(text: &str, default_tag: &str) -> Result<Reference, Error> {
    let shown = escape(text);
    let refuse = |problem: String| Err(Error::Target { target: shown.clone().into_owned(), problem });
    if text.contains('@') {
        return refuse("give REGISTRY/REPO[:TAG] without a digest; the push prints the digest".into());
    }
    if text.starts_with('[') {
        return refuse("an IPv6 address as the registry is not supported; give its host name".into());
    }
    let Some((host, rest)) = text.split_once('/') else {
        if text.contains('.') || text.contains(':') {
            return refuse(format!("add the repository after the registry, e.g. {shown}/team/app"));
        }
        return refuse(format!("name the registry, e.g. registry.example.com/team/{shown}"));
    };
    if rest.is_empty() {
        return refuse(format!("add the repository after the registry, e.g. {shown}team/app"));
    }
    if rest.chars().any(|c| c.is_ascii_uppercase()) && !rest.rsplit('/').next().is_some_and(|l| l.contains(':')) {
        return refuse("repository names are lowercase".into());
    }
    if !(host.contains('.') || host.contains(':') || host == "localhost") {
        return refuse(format!(
            "`{}` is not a registry host (it needs a dot or a port, or is `localhost`); \
             give REGISTRY/REPO[:TAG], e.g. registry.example.com/team/app",
            escape(host)
        ));
    }
    let has_tag = rest.rsplit('/').next().is_some_and(|last| last.contains(':'));
    let full = if has_tag { text.to_owned() } else { format!("{text}:{default_tag}") };
    match Reference::try_from(full.as_str()) {
        Ok(reference) => Ok(reference),
        Err(e) => refuse(format!("not an image reference: {e}")),
    }
}

/// Whether `image` is a registry reference pinned by digest
/// (`REGISTRY/REPO@sha256:<64 hex>`).
pub(crate) fn is_pinned(image: &str) -> bool {
    registry_of(image).is_some()
        && image.contains("@sha256:")
        && Reference::try_from(image).is_ok_and(|r| r.digest().is_some_and(|d| d.starts_with("sha256:")))
}

/// The registry host of a reference that names one (`host.tld/…`,
/// `host:port/…`, `localhost/…`).
pub(crate) fn registry_of(image: &str) -> Option<String> {
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
}
