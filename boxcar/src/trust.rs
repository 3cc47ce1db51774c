//! What `check` knows of an environment file without any key: whether its
//! content is approved, and whether its keys descend from the environment's
//! first key, followed through the git history of the file.
//!
//! A pull request can set `public_key` and `approval_key` to keys of its own
//! and re-sign everything with them; the file alone then looks fine. What it
//! cannot do is make the environment's earlier key endorse the new one. So
//! the first key is taken from the oldest committed version of the file (or
//! from `--base`), and every key any version names must be reached from it
//! by endorsements (`[[previous_keys]]`, which `rotate-key` writes).

use std::collections::BTreeSet;
use std::path::Path;

use boxcar_secrets::approval::{self, KeyPair};
use boxcar_secrets::{EnvFile, KeyId};
use xshell::{Shell, cmd};

/// One version of an environment file: where it comes from, and its TOML.
struct Version {
    /// A short commit id, or "the work tree".
    origin: String,
    table: toml::Table,
}

/// What `check` found about one file's approval and keys.
#[derive(Debug)]
pub struct Report {
    /// Problems, one line each, without the file's name.
    pub problems: Vec<String>,
    /// What was verified, for the `ok` line.
    pub summary: String,
}

/// What `check` asks git once for every file: whether the checkout is
/// shallow, whether it has a commit yet, and the commit `--base` names.
#[derive(Debug)]
pub struct Git {
    shallow: bool,
    has_head: bool,
    /// The commit `--base` names, or why it names none.
    base: Result<Option<String>, String>,
}

impl Git {
    /// Asks git about the checkout the shell is in; `None` outside one.
    pub fn probe(sh: &Shell, base: Option<&str>) -> Option<Git> {
        cmd!(sh, "git rev-parse --is-inside-work-tree").quiet().ignore_stderr().read().ok()?;
        let shallow = cmd!(sh, "git rev-parse --is-shallow-repository").quiet().read().unwrap_or_default();
        let has_head = cmd!(sh, "git rev-parse --verify --quiet HEAD").quiet().ignore_stderr().read().is_ok();
        let base = base
            .map(|base| {
                let spec_commit = format!("{base}^{{commit}}");
                cmd!(sh, "git rev-parse --verify --quiet {spec_commit}")
                    .quiet()
                    .ignore_stderr()
                    .read()
                    .map_err(|_| format!("--base {}: no such commit here", crate::show::escape(base)))
            })
            .transpose();
        Some(Git { shallow: shallow.trim() == "true", has_head, base })
    }
}

/// Checks `file`'s approval, then follows its keys through its git history
/// (from `--base` when given, else from the file's first commit); `git` is
/// `None` outside a git checkout.
pub fn check(sh: &Shell, file: &EnvFile, git: Option<&Git>) -> Report {
    let mut problems = Vec::new();
    let approved = approval::verify(file.env(), file.table())
        .map_err(|problem| problems.push(format!("{problem}; {}", problem.hint(file.env()))))
        .ok();
    let mut summary = match &approved {
        Some(a) => format!("approved (serial {})", a.serial),
        None => "not approved".to_owned(),
    };
    match git.map(|git| history(sh, file.path(), git)) {
        Some(Err(why)) => problems.push(why),
        None => summary.push_str("; not a git checkout, so its key history was not followed"),
        Some(Ok(mut versions)) => {
            versions.push(Version { origin: "the work tree".to_owned(), table: file.table().clone() });
            let followed = follow(file.env(), &versions, &mut problems);
            summary.push_str(&followed);
        }
    }
    Report { problems, summary }
}

/// Every committed version of `path`, oldest first: from `--base`'s version
/// when given, else from the first.
fn history(sh: &Shell, path: &Path, git: &Git) -> Result<Vec<Version>, String> {
    if git.shallow {
        return Err("the key history cannot be followed in a shallow clone: fetch the whole history \
                    (`git fetch --unshallow`, or `fetch-depth: 0` in CI), or pass --base with a commit that is there"
            .to_owned());
    }
    // `./` makes the path relative to the working directory, the project root.
    let spec = format!("./{}", path.display());
    let mut versions = Vec::new();
    let range = match git.base.clone()? {
        Some(commit) => {
            if let Some(table) = show(sh, &commit, &spec) {
                versions.push(Version { origin: short(&commit), table });
            }
            Some(format!("{commit}..HEAD"))
        }
        None => None,
    };
    if !git.has_head {
        return Ok(versions);
    }
    let log = match &range {
        Some(range) => cmd!(sh, "git log --format=%H --topo-order --reverse {range} -- {spec}").quiet().read(),
        None => cmd!(sh, "git log --format=%H --topo-order --reverse -- {spec}").quiet().read(),
    }
    .map_err(|e| format!("cannot read the history of {}: {e}", path.display()))?;
    for commit in log.lines().filter(|l| !l.is_empty()) {
        // A commit that deleted the file has no version of it.
        if let Some(table) = show(sh, commit, &spec) {
            versions.push(Version { origin: short(commit), table });
        }
    }
    Ok(versions)
}

fn show(sh: &Shell, commit: &str, spec: &str) -> Option<toml::Table> {
    let text = cmd!(sh, "git show {commit}:{spec}").quiet().ignore_stderr().read().ok()?;
    text.parse().ok()
}

fn short(commit: &str) -> String {
    commit.chars().take(10).collect()
}

/// Follows the keys from the first version's through every version, adding a
/// problem for each key of the current version that nothing endorsed, and for
/// a serial that went down. `versions` ends with the current one.
/// Returns what it followed, for the summary.
fn follow(env: &str, versions: &[Version], problems: &mut Vec<String>) -> String {
    // The first key: the oldest version that names an approval key (older
    // ones predate approvals and name only a public key).
    let Some(root_at) = versions.iter().position(|v| v.table.contains_key(approval::APPROVAL_KEY)) else {
        return String::new();
    };
    let root = &versions[root_at];
    let mut trusted: Vec<KeyPair> = match approval::key_chain(env, &root.table) {
        Ok(chain) => chain,
        Err(e) => {
            problems.push(format!("the first approved version ({}) has a broken key chain: {e}", root.origin));
            return String::new();
        }
    };
    // Every endorsement any version holds is a signed statement old → new.
    let mut edges: Vec<(KeyPair, KeyPair)> = Vec::new();
    for version in &versions[root_at..] {
        if let Ok(chain) = approval::key_chain(env, &version.table) {
            edges.extend(chain.windows(2).map(|w| (w[0].clone(), w[1].clone())));
        }
    }
    loop {
        let before = trusted.len();
        for (old, new) in &edges {
            if trusted.contains(old) && !trusted.contains(new) {
                trusted.push(new.clone());
            }
        }
        if trusted.len() == before {
            break;
        }
    }
    let trusted_public: BTreeSet<KeyId> = trusted.iter().map(|p| p.public_key.key_id()).collect();

    // The version just before approvals came in names only a public key: the
    // first approval must keep it (`approve`), not bring in another.
    if let Some(legacy) = root_at.checked_sub(1).map(|i| &versions[i])
        && let Some(id) = public_key_id(&legacy.table)
        && !trusted_public.contains(&id)
    {
        problems.push(format!(
            "the first approval ({}) brought in key {}, not the key {id} the file had before ({}); \
             nothing endorsed the change",
            root.origin,
            trusted[0].public_key.key_id(),
            legacy.origin
        ));
    }
    // Every pair the current version names, current or earlier, must be
    // trusted. (Only the current version: a replaced key that was reverted
    // since is no longer in effect.)
    let current = versions.last().unwrap_or(root);
    for pair in named_pairs(&current.table) {
        if !trusted.contains(&pair) {
            problems.push(format!(
                "key {} (approval key {}) was not endorsed by any earlier key of environment `{env}`: \
                 only the first commit of the file or `rotate-key` (which needs the old key) may bring in a key, \
                 and this is what a replaced key looks like; restore the file from a trusted commit",
                pair.public_key.key_id(),
                pair.approval_key.key_id(),
            ));
        }
    }
    // The highest serial a trusted key approved, in any committed version.
    let mut best: Option<(u64, &str)> = None;
    let committed = versions.split_last().map_or(&[][..], |(_, committed)| committed);
    for version in committed.get(root_at..).unwrap_or_default() {
        if let Ok(approved) = approval::verify(env, &version.table)
            && trusted.contains(approved.current())
            && best.is_none_or(|(s, _)| approved.serial > s)
        {
            best = Some((approved.serial, &version.origin));
        }
    }
    if let Some((highest, at)) = best
        && let Ok(now) = approval::verify(env, &current.table)
        && now.serial < highest
    {
        problems.push(format!(
            "approval serial {} is lower than serial {highest}, approved in {at}: an older approved version was brought back \
             (a replayed value or setting); if that is meant, approve it again with `cargo xtask approve --env {env}`",
            now.serial
        ));
    }
    let commits = versions.len() - 1;
    format!(
        "; {} key(s) from the first ({}), followed through {commits} commit(s)",
        trusted.len(),
        trusted[0].public_key.key_id()
    )
}

fn public_key_id(table: &toml::Table) -> Option<KeyId> {
    let text = table.get("public_key")?.as_str()?;
    boxcar_secrets::PublicKey::from_base64(text).ok().map(|k| k.key_id())
}

/// The key pairs a version names: its current pair and every earlier one in
/// `[[previous_keys]]`, whether or not their endorsements verify.
fn named_pairs(table: &toml::Table) -> Vec<KeyPair> {
    let pair = |t: &toml::Table| {
        let public_key = boxcar_secrets::PublicKey::from_base64(t.get("public_key")?.as_str()?).ok()?;
        let approval_key = boxcar_secrets::ApprovalKey::from_base64(t.get(approval::APPROVAL_KEY)?.as_str()?).ok()?;
        Some(KeyPair { public_key, approval_key })
    };
    let mut out: Vec<KeyPair> = table
        .get(approval::PREVIOUS_KEYS)
        .and_then(toml::Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|e| e.as_table().and_then(pair))
        .collect();
    out.extend(pair(table));
    out
}

#[cfg(test)]
mod tests {
    use boxcar_secrets::{EnvDocument, SecretKey};

    use super::*;

    /// A version at `origin` of environment `prod` with key `key`, approved by
    /// `approver`, holding `extra`; `endorsed_by` rotates from that key first.
    fn version(
        origin: &str,
        key: &SecretKey,
        approver: &SecretKey,
        endorsed_by: Option<&SecretKey>,
        extra: &str,
    ) -> Version {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("prod.toml");
        std::fs::write(&path, format!("public_key = \"{}\"\n{extra}", key.public_key().to_base64())).unwrap();
        let mut doc = EnvDocument::load_or_new(&path).unwrap();
        if let Some(old) = endorsed_by {
            doc.endorse(old, &KeyPair::of(key));
        }
        doc.approve(approver).unwrap();
        Version { origin: origin.to_owned(), table: doc.render().parse().unwrap() }
    }

    /// Approves `v` again `times` times with `key`, one serial up each time.
    fn reapprove(v: &mut Version, key: &SecretKey, times: usize) {
        for _ in 0..times {
            let path = std::path::Path::new("prod.toml");
            v.table =
                boxcar_secrets::approved_text(path, &toml::to_string(&v.table).unwrap(), key).unwrap().parse().unwrap();
        }
    }

    fn follow_all(versions: &[Version]) -> (String, Vec<String>) {
        let mut problems = Vec::new();
        let summary = follow("prod", versions, &mut problems);
        (summary, problems)
    }

    #[test]
    fn a_rotation_is_followed_and_a_swap_is_not() {
        let (a, b, evil) = (SecretKey::generate(), SecretKey::generate(), SecretKey::generate());
        let first = version("c1", &a, &a, None, "");
        let rotated = version("c2", &b, &b, Some(&a), "");
        let (summary, problems) = follow_all(&[first, rotated]);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(summary, format!("; 2 key(s) from the first ({}), followed through 1 commit(s)", a.key_id()));

        // The attacker's key, re-signed with itself, in the work tree.
        let first = version("c1", &a, &a, None, "");
        let swapped = version("the work tree", &evil, &evil, None, "");
        let (_, problems) = follow_all(&[first, swapped]);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].starts_with(&format!(
                "key {} (approval key {}) was not endorsed",
                evil.key_id(),
                boxcar_secrets::ApprovalKey::of(&evil).key_id()
            )),
            "{problems:?}"
        );

        // An endorsement by the attacker's own earlier key does not help.
        let first = version("c1", &a, &a, None, "");
        let chained = version("the work tree", &b, &b, Some(&evil), "");
        let (_, problems) = follow_all(&[first, chained]);
        assert_eq!(problems.len(), 2, "{problems:?}");
    }

    #[test]
    fn the_serial_never_goes_down() {
        let a = SecretKey::generate();
        let v1 = version("c1", &a, &a, None, "");
        let mut v2 = version("c2", &a, &a, None, "[app]\nx = 1\n");
        // Approved twice more, so its serial is 3.
        reapprove(&mut v2, &a, 2);
        let back = Version { origin: "the work tree".to_owned(), table: v1.table.clone() };
        // A later commit with the same approval (a comment changed, say): the
        // serial was first approved in c2, and that is what is named.
        let v3 = Version { origin: "c3".to_owned(), table: v2.table.clone() };
        let (_, problems) = follow_all(&[v1, v2, v3, back]);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].starts_with("approval serial 1 is lower than serial 3, approved in c2"), "{problems:?}");
        // Equal serials, the same approval: fine.
        let v1 = version("c1", &a, &a, None, "");
        let same = Version { origin: "the work tree".to_owned(), table: v1.table.clone() };
        assert!(follow_all(&[v1, same]).1.is_empty());
    }

    #[test]
    fn a_serial_approved_by_an_untrusted_key_does_not_count() {
        let (a, evil) = (SecretKey::generate(), SecretKey::generate());
        let v1 = version("c1", &a, &a, None, "");
        // A version approved by another key, with a high serial.
        let mut high = version("c2", &evil, &evil, None, "");
        reapprove(&mut high, &evil, 3);
        let back = Version { origin: "the work tree".to_owned(), table: v1.table.clone() };
        assert!(follow_all(&[v1, high, back]).1.is_empty());
    }

    #[test]
    fn before_approvals_the_key_must_stay() {
        let (a, b) = (SecretKey::generate(), SecretKey::generate());
        let legacy = |key: &SecretKey| Version {
            origin: "c0".to_owned(),
            table: format!("public_key = \"{}\"\n", key.public_key().to_base64()).parse().unwrap(),
        };
        let (summary, problems) = follow_all(&[legacy(&a), version("the work tree", &a, &a, None, "")]);
        assert!(problems.is_empty(), "{problems:?}");
        assert!(summary.contains("1 key(s)"), "{summary}");
        let (_, problems) = follow_all(&[legacy(&a), version("the work tree", &b, &b, None, "")]);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(
            problems[0],
            format!(
                "the first approval (the work tree) brought in key {}, not the key {} the file had before (c0); nothing endorsed the change",
                b.key_id(),
                a.key_id()
            )
        );
        // Nothing approved anywhere: nothing to follow.
        let (summary, problems) = follow_all(&[legacy(&a)]);
        assert!(summary.is_empty() && problems.is_empty());
    }

    #[test]
    fn a_broken_chain_in_the_first_version_is_reported() {
        let (a, b, c) = (SecretKey::generate(), SecretKey::generate(), SecretKey::generate());
        // b's chain says a endorsed it, but the endorsement is c's.
        let mut v = version("c1", &b, &b, Some(&c), "");
        let text = toml::to_string(&v.table)
            .unwrap()
            .replace(&c.public_key().to_base64(), &a.public_key().to_base64())
            .replace(
                &boxcar_secrets::ApprovalKey::of(&c).to_base64(),
                &boxcar_secrets::ApprovalKey::of(&a).to_base64(),
            );
        v.table = text.parse().unwrap();
        let (summary, problems) = follow_all(&[v]);
        assert!(summary.is_empty());
        assert_eq!(problems.len(), 1);
        assert!(problems[0].starts_with("the first approved version (c1) has a broken key chain"), "{problems:?}");
    }

    #[test]
    fn named_pairs_lists_earlier_and_current_keys() {
        let (a, b) = (SecretKey::generate(), SecretKey::generate());
        let v = version("c1", &b, &b, Some(&a), "");
        assert_eq!(named_pairs(&v.table), vec![KeyPair::of(&a), KeyPair::of(&b)]);
        assert_eq!(public_key_id(&v.table), Some(b.key_id()));
        assert_eq!(public_key_id(&toml::Table::new()), None);
    }
}
