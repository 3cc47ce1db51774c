//! R3's memory: the highest approval serial on every path to a commit, with
//! the signatures that approved it, and the problem a lower or a doubled
//! serial is.

use std::collections::BTreeMap;

use super::Version;
use crate::vocab::show::escape;

/// The highest approval serial seen so far on the way to a commit, with the
/// signatures that approved it and where each was first seen.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct Floor {
    pub(super) top: Option<(u64, BTreeMap<String, Seen>)>,
}

/// Where an approval was seen, and the version, to say what changed since.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Seen {
    pub(super) at: String,
    pub(super) table: toml::Table,
}

impl Floor {
    pub(super) fn merge(&mut self, other: &Floor) {
        let Some((serial, sigs)) = &other.top else { return };
        match &mut self.top {
            Some((mine, own)) if *mine == *serial => {
                for (sig, seen) in sigs {
                    own.entry(sig.clone()).or_insert_with(|| seen.clone());
                }
            }
            Some((mine, _)) if *mine > *serial => {}
            _ => self.top = other.top.clone(),
        }
    }

    pub(super) fn add(&mut self, serial: u64, signature: &str, seen: Seen) {
        let mut one = BTreeMap::new();
        one.insert(signature.to_owned(), seen);
        self.merge(&Floor { top: Some((serial, one)) });
    }
}

/// R3 for an approval at `serial` with `sig`, given the floor before it.
pub(super) fn serial_problem(
    before: &Floor,
    serial: u64,
    sig: &str,
    v: &Version,
    service: Option<String>,
) -> Option<String> {
    let (top, sigs) = before.top.as_ref()?;
    if serial > *top || (serial == *top && sigs.len() == 1 && sigs.contains_key(sig)) {
        return None;
    }
    let approve = format!(
        "`cargo xtask approve {}--env {}`",
        service.map(|s| format!("--service {} ", escape(&s))).unwrap_or_default(),
        escape(&v.env)
    );
    let at = sigs.iter().find(|(s, _)| s.as_str() != sig).map(|(_, seen)| seen.at.clone()).unwrap_or_default();
    Some(if serial < *top {
        format!(
            "approval serial {serial} is lower than serial {top}, approved before it in {at}: an older approved \
             version was brought back (a replayed value or setting); if that is meant, approve it again with {approve}"
        )
    } else {
        format!(
            "approval serial {serial} was also given to other content, in {at}: two approvals met in a merge; \
             approve the merged file again with {approve}"
        )
    })
}

/// `; changed since the version approved at X: a, b (new)`, or nothing.
pub(super) fn changed_since(v: &Version, seen: &Seen) -> String {
    let Ok(now) = &v.content else { return String::new() };
    let changed = crate::vocab::entries::changes(&seen.table, now);
    if changed.is_empty() {
        return String::new();
    }
    format!("; changed since the version approved in {}: {}", seen.at, changed.join(", "))
}
