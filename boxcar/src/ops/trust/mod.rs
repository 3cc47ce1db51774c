//! What `check` knows of the environments without any key: whether every
//! version between a trusted base and the work tree was approved by a key
//! that descends from the one the base holds, and never brought back an
//! older approval. The rules are docs/FORMAT.md's "Checking without a key"
//! (R0 to R5), applied to a [`History`] that `history` reads from git; this
//! module asks nothing of git, so every rule is tested on histories made in
//! memory.
//!
//! A pull request can set `public_key` and `approval_key` to keys of its own
//! and re-sign everything; the file alone then looks fine. What it cannot do
//! is write the base (the branch it merges into), or make a key the base
//! holds endorse its key. It can merge histories and move files, so every
//! parent of every merge is followed, and an environment is followed by name
//! and folder, service and key, not by path.
//!
//! [`evaluate`] runs the rules as named steps over a [`Walk`]; the keys an
//! environment trusts are in `keys`, which environment a version belongs to
//! in `environments`, and R3's memory of serials in `floor`.

mod environments;
mod floor;
mod keys;
mod model;

use std::collections::BTreeMap;
use std::path::PathBuf;

use self::environments::{Environment, Origin, Read, base_environment, continues, membership};
use self::floor::{Floor, Seen, changed_since, serial_problem};
use self::keys::Edge;
pub(crate) use self::model::{At, Base, FileVerdict, History, Node, Parent, Problem, Rule, Verdict, Version};
use crate::vocab::show::escape;

/// Applies R0 to R5 to `history`. `hint_service` gives, for a version, the
/// `--service` its hints name (none for the contract's default service).
pub(crate) fn evaluate(history: &History, hint_service: &dyn Fn(&Version) -> Option<String>) -> Verdict {
    let mut found = Found::default();
    let base_reads: Vec<Read<'_>> = history.base.iter().flat_map(|b| &b.versions).map(|v| Read::of(v, None)).collect();
    let reads: Vec<Read<'_>> = history
        .nodes
        .iter()
        .enumerate()
        .flat_map(|(i, n)| n.versions.iter().map(move |v| (i, v)))
        .map(|(i, v)| Read::of(v, Some(i)))
        .collect();
    let edges = endorsements(&base_reads, &reads);
    let mut envs: Vec<Environment> =
        base_reads.iter().enumerate().map(|(e, r)| base_environment(r, e, &edges, &mut found)).collect();
    let base_count = envs.len();
    let belongs = membership(&reads, &mut envs, &edges);
    let base_short = history.base.as_ref().map(|b| crate::adapters::git::short(&b.commit)).unwrap_or_default();
    let walk = Walk { history, reads, belongs, envs, base_count, base_short, hint_service };

    let last = walk.serials(&mut found);
    walk.approvals_and_keys(&last, &mut found);
    let mut notes = walk.gone_and_moved(&mut found);
    notes.extend(walk.new_environments());
    notes.extend(unrelated_roots(history));
    let files = walk.files(&found);
    Verdict { problems: found.problems.into_iter().map(|(p, _)| p).collect(), notes, files }
}

/// Every endorsement a readable chain holds, at the base or in the range.
fn endorsements(base_reads: &[Read<'_>], reads: &[Read<'_>]) -> Vec<Edge> {
    base_reads
        .iter()
        .chain(reads)
        .filter_map(|r| r.chain.as_ref().map(|c| (&r.v.env, c)))
        .flat_map(|(env, c)| c.windows(2).map(|w| (env.clone(), w[0].clone(), w[1].clone())))
        .collect()
}

/// The versions of the range read, each with the environments it belongs
/// to (the base's first, `base_count` of them, then the new ones).
struct Walk<'a> {
    history: &'a History,
    reads: Vec<Read<'a>>,
    belongs: Vec<Vec<usize>>,
    envs: Vec<Environment>,
    base_count: usize,
    /// The base's short commit id, for messages.
    base_short: String,
    hint_service: &'a dyn Fn(&Version) -> Option<String>,
}

impl Walk<'_> {
    /// The versions of parents outside the range, each with the base
    /// environments it continues: what the range's approvals sit on.
    fn outside(&self) -> Vec<Vec<(Read<'_>, Vec<usize>)>> {
        self.history
            .outside
            .iter()
            .map(|(_, versions)| {
                versions
                    .iter()
                    .map(|v| {
                        let r = Read::of(v, None);
                        let about = (0..self.base_count).filter(|&e| continues(&r, &self.envs[e])).collect();
                        (r, about)
                    })
                    .collect()
            })
            .collect()
    }

    /// The approvals on every path to each commit, environment by
    /// environment, and R3 for the work tree's versions against them.
    /// Returns, per environment, what the work tree's versions sit on (what
    /// R1 says changed since).
    fn serials(&self, found: &mut Found) -> Vec<Floor> {
        let (history, reads, belongs) = (self.history, &self.reads, &self.belongs);
        let outside = self.outside();
        let mut last: Vec<Floor> = vec![Floor::default(); self.envs.len()];
        for (e, env) in self.envs.iter().enumerate() {
            let approval = |r: &Read<'_>, floor: &mut Floor, at: String| {
                if let (Ok(approved), Some(sig), Ok(table)) = (&r.approved, &r.signature, &r.v.content)
                    && env.trust.trusts(approved.current())
                {
                    floor.add(approved.serial, sig, Seen { at, table: table.clone() });
                }
            };
            let mut out: Vec<Floor> = Vec::with_capacity(history.nodes.len());
            for (n, node) in history.nodes.iter().enumerate() {
                let mut floor = Floor::default();
                for parent in &node.parents {
                    match *parent {
                        Parent::Range(p) => floor.merge(&out[p]),
                        Parent::Outside(p) => {
                            let at = match &history.base {
                                Some(base) if base.commit == history.outside[p].0 => {
                                    format!("the base ({})", self.base_short)
                                }
                                _ => format!("commit {}", crate::adapters::git::short(&history.outside[p].0)),
                            };
                            for (r, _) in outside[p].iter().filter(|(_, about)| about.contains(&e)) {
                                approval(r, &mut floor, at.clone());
                            }
                        }
                    }
                }
                if node.at == At::WorkTree {
                    last[e] = floor.clone();
                }
                for (_, r) in reads.iter().enumerate().filter(|(i, r)| r.node == Some(n) && belongs[*i].contains(&e)) {
                    approval(r, &mut floor, r.v.at.describe());
                }
                out.push(floor);
            }
            // R3: the work tree's versions against every approval before them.
            for (i, r) in reads.iter().enumerate().filter(|(i, r)| r.v.at == At::WorkTree && belongs[*i].contains(&e)) {
                let (Ok(approved), Some(sig)) = (&r.approved, &r.signature) else { continue };
                if !env.trust.trusts(approved.current()) {
                    continue;
                }
                if let Some(message) = serial_problem(&last[e], approved.serial, sig, r.v, (self.hint_service)(r.v)) {
                    found.add(Rule::R3, r.v, message, &belongs[i]);
                }
            }
        }
        last
    }

    /// R1 and R2, version by version: the work tree approved (saying what
    /// changed since the last approval under `last`), and every pair a
    /// version names trusted by each environment it belongs to.
    fn approvals_and_keys(&self, last: &[Floor], found: &mut Found) {
        for (i, r) in self.reads.iter().enumerate() {
            let work_tree = r.v.at == At::WorkTree;
            // A file that cannot be read is reported as such by its reader.
            if work_tree
                && r.v.content.is_ok()
                && let Err(e) = &r.approved
            {
                let newest =
                    self.belongs[i].iter().filter_map(|&e| last[e].top.as_ref()).max_by_key(|(serial, _)| *serial);
                let since = newest
                    .and_then(|(_, sigs)| sigs.values().next())
                    .map(|seen| changed_since(r.v, seen))
                    .unwrap_or_default();
                let message = format!(
                    "{e}; {}{since} [ApprovalError::{}]",
                    e.hint(&r.v.env, (self.hint_service)(r.v).as_deref()),
                    e.name()
                );
                found.add(Rule::R1, r.v, message, &self.belongs[i]);
            }
            if !(work_tree || r.approved.is_ok()) {
                continue;
            }
            for &e in &self.belongs[i] {
                self.keys_of(r, e, found);
            }
        }
    }

    /// R2 for version `r` in environment `e`.
    fn keys_of(&self, r: &Read<'_>, e: usize, found: &mut Found) {
        let env = &self.envs[e];
        if matches!(env.origin, Origin::New { first: None }) {
            return;
        }
        for pair in r.named.iter().filter(|p| !env.trust.trusts_named(p)) {
            let by = match &env.origin {
                Origin::Base => format!(
                    "the keys environment `{}` holds in the base ({}, {})",
                    escape(&env.env),
                    escape(&env.path.display().to_string()),
                    self.base_short,
                ),
                Origin::New { first } => format!(
                    "key {}, the first key of environment `{}` (new since the base, first approved in {})",
                    first.as_ref().map(|f| f.0.public_key.key_id().to_string()).unwrap_or_default(),
                    escape(&env.env),
                    first.as_ref().map(|f| f.1.as_str()).unwrap_or_default()
                ),
            };
            let approval_key = match &pair.approval_key {
                Some(key) => format!("approval key {}", key.key_id()),
                None => "no usable approval key".to_owned(),
            };
            let message = format!(
                "key {} ({approval_key}) is not endorsed by {by}: only `rotate-key`, which needs the old key, \
                 may bring in a key, and this is what a replaced key looks like; restore the file from a trusted \
                 commit",
                pair.public_key.key_id(),
            );
            found.add(Rule::R2, r.v, message, &[e]);
        }
    }

    /// The indices of the work tree's versions.
    fn work(&self) -> Vec<usize> {
        (0..self.reads.len()).filter(|&i| self.reads[i].v.at == At::WorkTree).collect()
    }

    /// R4 and R5, against the work tree: an environment of the base gone (a
    /// problem), moved or opened by other services (notes).
    fn gone_and_moved(&self, found: &mut Found) -> Vec<String> {
        let (work, base_short) = (self.work(), &self.base_short);
        let mut notes = Vec::new();
        for (e, env) in self.envs.iter().enumerate().take(self.base_count) {
            let here: Vec<usize> = work.iter().copied().filter(|&i| self.belongs[i].contains(&e)).collect();
            if here.is_empty() {
                let opened = match env.services.as_slice() {
                    [] => String::new(),
                    services => format!(", opened by service {},", list(services)),
                };
                let message = format!(
                    "environment `{}`{opened} is gone from the work tree: a service deployed to it will not find it. \
                     Restore it, or, if removing it is meant, have the removal reviewed and merged; checks from a \
                     later base (--base) no longer see it",
                    escape(&env.env)
                );
                let at = self.history.base.as_ref().map_or(At::WorkTree, |b| At::Commit(b.commit.clone()));
                found.problems.push((Problem { rule: Rule::R4, path: env.path.clone(), at, message }, vec![e]));
            }
            for v in here.iter().map(|&i| self.reads[i].v) {
                if v.path != env.path {
                    notes.push(format!(
                        "environment `{}` moved: {} in the base ({base_short}), {} now; its keys and serials carry over",
                        escape(&env.env),
                        escape(&env.path.display().to_string()),
                        escape(&v.path.display().to_string())
                    ));
                }
                if v.services != env.services {
                    notes.push(format!(
                        "environment `{}` ({}) is opened by {} now, by {} in the base ({base_short})",
                        escape(&env.env),
                        escape(&v.path.display().to_string()),
                        list(&v.services),
                        list(&env.services)
                    ));
                }
            }
        }
        notes
    }

    /// A note for each new environment of the work tree: its first key, for a
    /// reviewer to confirm (nothing in git can tell it from an attacker's).
    fn new_environments(&self) -> Vec<String> {
        let work = self.work();
        let mut notes = Vec::new();
        for (e, env) in self.envs.iter().enumerate().skip(self.base_count) {
            if let Origin::New { first: Some(first) } = &env.origin
                && let (key, at) = (&first.0, &first.1)
                && work.iter().any(|&i| self.belongs[i].contains(&e))
            {
                let since = match &self.history.base {
                    Some(_) => format!("not in the base ({})", self.base_short),
                    None => "there is no history before it".to_owned(),
                };
                notes.push(format!(
                    "environment `{}` ({}) is new ({since}): its first key is {}, first approved in {at}; make sure \
                     it is its key holder's",
                    escape(&env.env),
                    escape(&env.path.display().to_string()),
                    key.public_key.key_id()
                ));
            }
        }
        notes
    }

    /// What was followed, file by file of the work tree.
    fn files(&self, found: &Found) -> BTreeMap<PathBuf, FileVerdict> {
        let commits = self.history.nodes.len().saturating_sub(1);
        let mut files = BTreeMap::new();
        for i in self.work() {
            let r = &self.reads[i];
            let belongs = &self.belongs[i];
            let troubled = found.problems.iter().any(|(_, about)| about.iter().any(|e| belongs.contains(e)));
            let mut summary = match &r.approved {
                Ok(a) => format!("approved (serial {})", a.serial),
                Err(_) => "not approved".to_owned(),
            };
            let continued = belongs.iter().find(|&&e| e < self.base_count);
            match (&self.history.base, continued) {
                (Some(base), Some(&e)) => summary.push_str(&format!(
                    "; {} key(s) endorsed from the base ({}, {}), followed through {commits} commit(s)",
                    self.envs[e].trust.pairs.len().max(1),
                    crate::adapters::git::short(&base.commit),
                    base.how
                )),
                (Some(_), None) => summary.push_str(&format!("; new since the base ({})", self.base_short)),
                (None, _) => summary.push_str("; no history before it"),
            }
            files.insert(r.v.path.clone(), FileVerdict { summary, troubled, new: continued.is_none() });
        }
        files
    }
}

/// Histories merged in from elsewhere: checked like the rest, and said.
fn unrelated_roots(history: &History) -> Option<String> {
    let roots: Vec<String> = history
        .nodes
        .iter()
        .filter(|n| n.parents.is_empty() && n.at != At::WorkTree)
        .map(|n| n.at.describe())
        .collect();
    if roots.is_empty() {
        return None;
    }
    Some(format!(
        "{} since the base {} no parent ({}): a history merged in with --allow-unrelated-histories; every \
         environment file in it was followed like the rest",
        if roots.len() == 1 { "1 commit".to_owned() } else { format!("{} commits", roots.len()) },
        if roots.len() == 1 { "has" } else { "have" },
        roots.join(", ")
    ))
}

/// Problems, each with the environments it concerns.
#[derive(Default)]
struct Found {
    problems: Vec<(Problem, Vec<usize>)>,
}

impl Found {
    fn add(&mut self, rule: Rule, v: &Version, message: String, about: &[usize]) {
        let problem = Problem { rule, path: v.path.clone(), at: v.at.clone(), message };
        if !self.problems.iter().any(|(p, _)| *p == problem) {
            self.problems.push((problem, about.to_vec()));
        }
    }
}

fn list(services: &[String]) -> String {
    if services.is_empty() {
        return "no service".to_owned();
    }
    services.iter().map(|s| escape(s).into_owned()).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use boxcar_secrets::{EnvDocument, SecretKey};

    use boxcar_secrets::approval::KeyPair;

    use super::keys::{Named, Trust};
    use super::*;

    const P: &str = "deploy-config/prod.toml";

    fn id(c: char) -> String {
        std::iter::repeat_n(c, 40).collect()
    }

    /// Environment `prod`'s file with public key `key`, approved by
    /// `approver` at a serial above `above` (none: not approved), after
    /// `endorsed_by` endorsed `key`, holding `extra`.
    fn file(
        key: &SecretKey,
        approver: Option<&SecretKey>,
        endorsed_by: Option<&SecretKey>,
        above: u64,
        extra: &str,
    ) -> toml::Table {
        let path = std::path::Path::new("prod.toml");
        let mut doc =
            EnvDocument::parse(path, &format!("public_key = \"{}\"\n{extra}", key.public_key().to_base64())).unwrap();
        if let Some(old) = endorsed_by {
            doc.endorse(old, &KeyPair::of(key));
        }
        if let Some(approver) = approver {
            doc.approve_above(approver, above).unwrap();
        }
        boxcar_secrets::read_toml(&doc.render()).unwrap()
    }

    fn version(at: &At, path: &str, services: &[&str], table: &toml::Table) -> Version {
        Version {
            at: at.clone(),
            path: PathBuf::from(path),
            env: PathBuf::from(path).file_stem().unwrap().to_string_lossy().into_owned(),
            services: services.iter().map(|s| (*s).to_owned()).collect(),
            content: Ok(table.clone()),
        }
    }

    /// A history: the base holds `base` at `P`; each commit (one parent, the
    /// one before it, the first on the base) holds its versions; the work tree `work`.
    fn linear(base: &[Version], commits: Vec<Vec<Version>>, work: Vec<Version>) -> History {
        let mut nodes = Vec::new();
        for (i, versions) in commits.into_iter().enumerate() {
            let parents = if i == 0 { vec![Parent::Outside(0)] } else { vec![Parent::Range(i - 1)] };
            nodes.push(Node { at: versions.first().map_or(At::Commit(id('c')), |v| v.at.clone()), parents, versions });
        }
        let head = nodes.len().checked_sub(1).map_or(Parent::Outside(0), Parent::Range);
        nodes.push(Node { at: At::WorkTree, parents: vec![head], versions: work });
        History {
            base: Some(Base { commit: id('b'), how: "--base main".to_owned(), versions: base.to_vec() }),
            nodes,
            outside: vec![(id('b'), base.to_vec())],
        }
    }

    fn rules(verdict: &Verdict) -> Vec<(Rule, String, At)> {
        verdict.problems.iter().map(|p| (p.rule, p.path.display().to_string(), p.at.clone())).collect()
    }

    fn eval(history: &History) -> Verdict {
        evaluate(history, &|_| None)
    }

    #[test]
    fn the_work_tree_as_the_base_has_it_passes() {
        let a = SecretKey::generate();
        let t = file(&a, Some(&a), None, 0, "");
        let base = [version(&At::Commit(id('b')), P, &[], &t)];
        let verdict = eval(&linear(&base, vec![], vec![version(&At::WorkTree, P, &[], &t)]));
        assert!(verdict.problems.is_empty(), "{:?}", verdict.problems);
        assert!(verdict.notes.is_empty(), "{:?}", verdict.notes);
        let f = &verdict.files[&PathBuf::from(P)];
        assert!(!f.troubled && !f.new);
        assert_eq!(
            f.summary,
            "approved (serial 1); 1 key(s) endorsed from the base (bbbbbbbbbbbb, --base main), followed through 0 commit(s)"
        );
    }

    #[test]
    fn a_swapped_key_is_r2_wherever_it_was_approved() {
        let (a, evil) = (SecretKey::generate(), SecretKey::generate());
        let good = file(&a, Some(&a), None, 0, "");
        let bad = file(&evil, Some(&evil), None, 99, "");
        let unapproved = file(&evil, None, None, 0, "");
        let base = [version(&At::Commit(id('b')), P, &[], &good)];
        let c1 = At::Commit(id('1'));
        let c2 = At::Commit(id('2'));
        // Approved by the attacker in commit 1, then restored, unapproved in commit 2.
        let history = linear(
            &base,
            vec![vec![version(&c1, P, &[], &bad)], vec![version(&c2, P, &[], &unapproved)]],
            vec![version(&At::WorkTree, P, &[], &bad)],
        );
        let verdict = eval(&history);
        assert_eq!(rules(&verdict), [(Rule::R2, P.to_owned(), c1), (Rule::R2, P.to_owned(), At::WorkTree)]);
        assert!(verdict.files[&PathBuf::from(P)].troubled);
        assert!(verdict.problems[1].message.starts_with(&format!(
            "key {} (approval key {}) is not endorsed by the keys environment `prod` holds in the base ({P}, bbbbbbbbbbbb)",
            evil.key_id(),
            boxcar_secrets::ApprovalKey::of(&evil).key_id()
        )));
        assert_eq!(verdict.problems[1].to_string(), format!("{P}: {} [R2]", verdict.problems[1].message));
        assert_eq!(
            verdict.problems[0].to_string(),
            format!("{P} at commit 111111111111: {} [R2]", verdict.problems[0].message)
        );
    }

    #[test]
    fn a_rotation_is_followed_but_not_across_environments() {
        let (a, b) = (SecretKey::generate(), SecretKey::generate());
        let base = [version(&At::Commit(id('b')), P, &[], &file(&a, Some(&a), None, 0, ""))];
        let rotated = file(&b, Some(&b), Some(&a), 1, "");
        let verdict = eval(&linear(&base, vec![], vec![version(&At::WorkTree, P, &[], &rotated)]));
        assert!(verdict.problems.is_empty(), "{:?}", verdict.problems);
        assert!(verdict.files[&PathBuf::from(P)].summary.contains("2 key(s) endorsed"));
        // The same keys endorsed for another environment do not carry over:
        // the endorsement names its environment (and so its chain fails there).
        let path = std::path::Path::new("staging.toml");
        let mut doc = EnvDocument::parse(path, &format!("public_key = \"{}\"\n", b.public_key().to_base64())).unwrap();
        doc.endorse(&a, &KeyPair::of(&b));
        doc.approve(&b).unwrap();
        let staging = boxcar_secrets::read_toml(&doc.render()).unwrap();
        let mut swapped = file(&b, Some(&b), None, 1, "");
        swapped.remove("previous_keys");
        let history = linear(
            &base,
            vec![],
            vec![
                version(&At::WorkTree, "deploy-config/staging.toml", &[], &staging),
                version(&At::WorkTree, P, &[], &swapped),
            ],
        );
        let verdict = eval(&history);
        assert!(
            verdict.problems.iter().any(|p| p.rule == Rule::R2 && p.path == std::path::Path::new(P)),
            "{:?}",
            verdict.problems
        );
    }

    #[test]
    fn serials_never_go_below_an_approval_on_any_path() {
        let a = SecretKey::generate();
        let v2 = file(&a, Some(&a), None, 1, "");
        let v3 = file(&a, Some(&a), None, 2, "[app]\nx = 1\n");
        let other3 = file(&a, Some(&a), None, 2, "[app]\nx = 2\n");
        let base = [version(&At::Commit(id('b')), P, &[], &v2)];
        let c1 = At::Commit(id('1'));
        // Approved at 3 in commit 1, and the work tree brings back 2.
        let history = linear(&base, vec![vec![version(&c1, P, &[], &v3)]], vec![version(&At::WorkTree, P, &[], &v2)]);
        let verdict = eval(&history);
        assert_eq!(rules(&verdict), [(Rule::R3, P.to_owned(), At::WorkTree)]);
        assert!(
            verdict.problems[0].message.starts_with(
                "approval serial 2 is lower than serial 3, approved before it in commit 111111111111: an older approved"
            ),
            "{}",
            verdict.problems[0].message
        );
        // The same approval again is fine; another approval of 3 is not.
        let same = linear(&base, vec![vec![version(&c1, P, &[], &v3)]], vec![version(&At::WorkTree, P, &[], &v3)]);
        assert!(eval(&same).problems.is_empty());
        let met = linear(&base, vec![vec![version(&c1, P, &[], &v3)]], vec![version(&At::WorkTree, P, &[], &other3)]);
        let verdict = eval(&met);
        assert_eq!(rules(&verdict), [(Rule::R3, P.to_owned(), At::WorkTree)]);
        assert!(
            verdict.problems[0].message.starts_with("approval serial 3 was also given to other content, in commit")
        );
        // Against the base itself.
        let v1 = file(&a, Some(&a), None, 0, "");
        let verdict = eval(&linear(&base, vec![], vec![version(&At::WorkTree, P, &[], &v1)]));
        assert!(verdict.problems[0].message.contains("approved before it in the base (bbbbbbbbbbbb)"));
        // An earlier commit that went down is not held to R3 (a revert, then an approval).
        let v4 = file(&a, Some(&a), None, 3, "");
        let history = linear(
            &base,
            vec![vec![version(&c1, P, &[], &v3)], vec![version(&At::Commit(id('2')), P, &[], &v2)]],
            vec![version(&At::WorkTree, P, &[], &v4)],
        );
        assert!(eval(&history).problems.is_empty());
        // An approval by an untrusted key sets no floor.
        let evil = SecretKey::generate();
        let high = file(&evil, Some(&evil), None, 50, "");
        let history = linear(&base, vec![vec![version(&c1, P, &[], &high)]], vec![version(&At::WorkTree, P, &[], &v3)]);
        assert_eq!(rules(&eval(&history)), [(Rule::R2, P.to_owned(), c1)]);
    }

    /// Environment `env`'s file with `key`, approved by it above `above`.
    fn approved_file(env: &str, key: &SecretKey, above: u64) -> toml::Table {
        let path = std::path::PathBuf::from(format!("{env}.toml"));
        let mut doc =
            EnvDocument::parse(&path, &format!("public_key = \"{}\"\n", key.public_key().to_base64())).unwrap();
        doc.approve_above(key, above).unwrap();
        boxcar_secrets::read_toml(&doc.render()).unwrap()
    }

    #[test]
    fn environments_sharing_a_key_keep_their_own_serials() {
        let a = SecretKey::generate();
        const S: &str = "deploy-config/staging.toml";
        let (prod1, staging1) = (approved_file("prod", &a, 0), approved_file("staging", &a, 0));
        let (prod2, staging5) = (approved_file("prod", &a, 1), approved_file("staging", &a, 4));
        let base = [version(&At::Commit(id('b')), P, &[], &prod1), version(&At::Commit(id('b')), S, &[], &staging1)];
        let c1 = At::Commit(id('1'));
        let history = linear(
            &base,
            vec![vec![version(&c1, P, &[], &prod1), version(&c1, S, &[], &staging5)]],
            vec![version(&At::WorkTree, P, &[], &prod2), version(&At::WorkTree, S, &[], &staging5)],
        );
        // Staging's serial 5 is no floor for production's 2.
        assert!(eval(&history).problems.is_empty(), "{:?}", rules(&eval(&history)));
    }

    #[test]
    fn an_approval_in_a_parent_outside_the_range_is_named_by_its_commit() {
        let a = SecretKey::generate();
        let (v1, v2, v3) =
            (file(&a, Some(&a), None, 0, ""), file(&a, Some(&a), None, 1, ""), file(&a, Some(&a), None, 2, ""));
        let base = vec![version(&At::Commit(id('b')), P, &[], &v1)];
        // Commit 1 of the range has a parent the base descends from, not the base.
        let older = vec![version(&At::Commit(id('o')), P, &[], &v3)];
        let c1 = At::Commit(id('1'));
        let history = History {
            base: Some(Base { commit: id('b'), how: "--base main".to_owned(), versions: base.clone() }),
            nodes: vec![
                Node {
                    at: c1.clone(),
                    parents: vec![Parent::Outside(0), Parent::Outside(1)],
                    versions: vec![version(&c1, P, &[], &v1)],
                },
                Node {
                    at: At::WorkTree,
                    parents: vec![Parent::Range(0)],
                    versions: vec![version(&At::WorkTree, P, &[], &v2)],
                },
            ],
            outside: vec![(id('b'), base), (id('o'), older)],
        };
        let verdict = eval(&history);
        assert_eq!(rules(&verdict), [(Rule::R3, P.to_owned(), At::WorkTree)]);
        let message = &verdict.problems[0].message;
        assert!(message.contains("lower than serial 3, approved before it in commit oooooooooooo"), "{message}");
    }

    #[test]
    fn merges_follow_every_parent_and_roots_start_afresh() {
        let a = SecretKey::generate();
        let v2 = file(&a, Some(&a), None, 1, "");
        let v3 = file(&a, Some(&a), None, 2, "");
        let (c1, root, merge) = (At::Commit(id('1')), At::Commit(id('2')), At::Commit(id('3')));
        let base = [version(&At::Commit(id('b')), P, &[], &v3)];
        // An unrelated root holding the old version, merged in: the work tree
        // takes it. The root itself is not held to anything; the work tree is.
        let nodes = vec![
            Node { at: root.clone(), parents: vec![], versions: vec![version(&root, P, &[], &v2)] },
            Node {
                at: merge.clone(),
                parents: vec![Parent::Outside(0), Parent::Range(0)],
                versions: vec![version(&merge, P, &[], &v3)],
            },
            Node {
                at: At::WorkTree,
                parents: vec![Parent::Range(1)],
                versions: vec![version(&At::WorkTree, P, &[], &v2)],
            },
        ];
        let history = History {
            base: Some(Base { commit: id('b'), how: String::new(), versions: base.to_vec() }),
            nodes,
            outside: vec![(id('b'), base.to_vec())],
        };
        let verdict = eval(&history);
        assert_eq!(rules(&verdict), [(Rule::R3, P.to_owned(), At::WorkTree)]);
        assert_eq!(
            verdict.notes,
            ["1 commit since the base has no parent (commit 222222222222): a history merged in with \
              --allow-unrelated-histories; every environment file in it was followed like the rest"]
        );
        // A parent outside the range other than the base counts for itself.
        let fork = id('f');
        let nodes = vec![
            Node { at: c1.clone(), parents: vec![Parent::Outside(1)], versions: vec![version(&c1, P, &[], &v2)] },
            Node {
                at: At::WorkTree,
                parents: vec![Parent::Range(0)],
                versions: vec![version(&At::WorkTree, P, &[], &v2)],
            },
        ];
        let history = History {
            base: Some(Base { commit: id('b'), how: String::new(), versions: base.to_vec() }),
            nodes,
            outside: vec![(id('b'), base.to_vec()), (fork.clone(), vec![version(&At::Commit(fork), P, &[], &v2)])],
        };
        assert!(eval(&history).problems.is_empty(), "{:?}", eval(&history).problems);
    }

    #[test]
    fn an_environment_is_followed_by_service_and_by_key_when_it_moves() {
        let a = SecretKey::generate();
        let t = file(&a, Some(&a), None, 1, "");
        let old = file(&a, Some(&a), None, 0, "");
        let base = [version(&At::Commit(id('b')), P, &["api"], &t)];
        // Moved with its service: followed, and said.
        let moved = linear(&base, vec![], vec![version(&At::WorkTree, "conf/prod.toml", &["api"], &t)]);
        let verdict = eval(&moved);
        assert!(verdict.problems.is_empty(), "{:?}", verdict.problems);
        assert_eq!(
            verdict.notes,
            [format!(
                "environment `prod` moved: {P} in the base (bbbbbbbbbbbb), conf/prod.toml now; its keys and serials carry over"
            )]
        );
        // Moved, service renamed, an old version: followed by its key, so R3.
        let replay = linear(&base, vec![], vec![version(&At::WorkTree, "conf/prod.toml", &["api2"], &old)]);
        let verdict = eval(&replay);
        assert_eq!(rules(&verdict), [(Rule::R3, "conf/prod.toml".to_owned(), At::WorkTree)]);
        assert!(
            verdict.notes.iter().any(|n| n.contains("is opened by api2 now, by api in the base")),
            "{:?}",
            verdict.notes
        );
        // Moved with its service and another key: R2 (not a new environment).
        let evil = SecretKey::generate();
        let swapped = linear(
            &base,
            vec![],
            vec![version(&At::WorkTree, "conf/prod.toml", &["api"], &file(&evil, Some(&evil), None, 5, ""))],
        );
        assert_eq!(rules(&eval(&swapped)), [(Rule::R2, "conf/prod.toml".to_owned(), At::WorkTree)]);
        // Removed: R4, at the base.
        let gone = linear(&base, vec![], vec![]);
        let verdict = eval(&gone);
        assert_eq!(rules(&verdict), [(Rule::R4, P.to_owned(), At::Commit(id('b')))]);
        assert!(
            verdict.problems[0]
                .message
                .starts_with("environment `prod`, opened by service api, is gone from the work tree")
        );
    }

    #[test]
    fn new_environments_trust_their_first_key() {
        let (a, b, evil) = (SecretKey::generate(), SecretKey::generate(), SecretKey::generate());
        let c1 = At::Commit(id('1'));
        let s = "deploy-config/staging.toml";
        let staging = |key: &SecretKey, above| {
            let mut t = file(key, None, None, 0, "");
            let path = std::path::Path::new("staging.toml");
            let mut doc = EnvDocument::parse(path, &toml::to_string(&t).unwrap()).unwrap();
            doc.approve_above(key, above).unwrap();
            t = boxcar_secrets::read_toml(&doc.render()).unwrap();
            t
        };
        let history = linear(
            &[],
            vec![vec![version(&c1, s, &[], &staging(&a, 0))]],
            vec![version(&At::WorkTree, s, &[], &staging(&a, 1))],
        );
        let verdict = eval(&history);
        assert!(verdict.problems.is_empty(), "{:?}", verdict.problems);
        assert!(verdict.files[&PathBuf::from(s)].new);
        assert_eq!(verdict.files[&PathBuf::from(s)].summary, "approved (serial 2); new since the base (bbbbbbbbbbbb)");
        assert_eq!(
            verdict.notes,
            [format!(
                "environment `staging` ({s}) is new (not in the base (bbbbbbbbbbbb)): its first key is {}, first approved in commit 111111111111; make sure it is its key holder's",
                a.key_id()
            )]
        );
        // Another key later: R2 against the first key.
        let history = linear(
            &[],
            vec![vec![version(&c1, s, &[], &staging(&a, 0))]],
            vec![version(&At::WorkTree, s, &[], &staging(&evil, 1))],
        );
        let verdict = eval(&history);
        assert_eq!(rules(&verdict), [(Rule::R2, s.to_owned(), At::WorkTree)]);
        assert!(
            verdict.problems[0]
                .message
                .contains(&format!("is not endorsed by key {}, the first key of environment `staging`", a.key_id()))
        );
        // With no approved version, nothing is trusted and R1 says it.
        let history = linear(&[], vec![], vec![version(&At::WorkTree, s, &[], &file(&b, None, None, 0, ""))]);
        let verdict = eval(&history);
        assert_eq!(rules(&verdict), [(Rule::R1, s.to_owned(), At::WorkTree)]);
        assert!(verdict.notes.is_empty());
        // No history at all.
        let alone = History {
            base: None,
            nodes: vec![Node {
                at: At::WorkTree,
                parents: vec![],
                versions: vec![version(&At::WorkTree, s, &[], &staging(&a, 0))],
            }],
            outside: vec![],
        };
        let verdict = eval(&alone);
        assert!(verdict.problems.is_empty());
        assert!(verdict.files[&PathBuf::from(s)].summary.ends_with("; no history before it"));
        assert!(verdict.notes[0].contains("is new (there is no history before it)"));
    }

    #[test]
    fn the_work_tree_must_be_approved_and_says_what_changed() {
        let a = SecretKey::generate();
        let t = file(&a, Some(&a), None, 0, "[app]\nurl = \"a\"\n");
        let base = [version(&At::Commit(id('b')), P, &["api"], &t)];
        let mut changed = t.clone();
        changed["app"].as_table_mut().unwrap().insert("url".into(), "b".into());
        let history = linear(&base, vec![], vec![version(&At::WorkTree, P, &["api"], &changed)]);
        let verdict = evaluate(&history, &|v| v.services.first().cloned());
        assert_eq!(rules(&verdict), [(Rule::R1, P.to_owned(), At::WorkTree)]);
        assert_eq!(
            verdict.problems[0].message,
            "is not approved as it is: its content, or its environment, differs from what was approved; a holder of \
             the secret key must review the change and approve it: `cargo xtask approve --service api --env prod` \
             (`cargo xtask check` names what changed); changed since the version approved in the base (bbbbbbbbbbbb): \
             app.url [ApprovalError::Signature]"
        );
        // A file that cannot be read is not R1 (its reader says what is wrong).
        let mut unreadable = version(&At::WorkTree, P, &["api"], &t);
        unreadable.content = Err("is malformed".to_owned());
        assert!(eval(&linear(&base, vec![], vec![unreadable])).problems.is_empty());
    }

    #[test]
    fn the_base_must_be_readable_and_its_chain_whole() {
        let (a, b, c) = (SecretKey::generate(), SecretKey::generate(), SecretKey::generate());
        let mut broken = version(&At::Commit(id('b')), P, &[], &file(&a, Some(&a), None, 0, ""));
        broken.content = Err("is malformed TOML".to_owned());
        let verdict = eval(&linear(&[broken], vec![], vec![]));
        assert_eq!(rules(&verdict)[0], (Rule::R0, P.to_owned(), At::Commit(id('b'))));
        assert!(verdict.problems[0].message.starts_with("is malformed TOML: nothing can be followed from it"));
        // An endorsement that does not verify (c's, listed as a's).
        let forged = toml::to_string(&file(&b, Some(&b), Some(&c), 0, ""))
            .unwrap()
            .replace(&c.public_key().to_base64(), &a.public_key().to_base64())
            .replace(
                &boxcar_secrets::ApprovalKey::of(&c).to_base64(),
                &boxcar_secrets::ApprovalKey::of(&a).to_base64(),
            );
        let base = [version(&At::Commit(id('b')), P, &[], &forged.parse().unwrap())];
        let verdict = eval(&linear(&base, vec![], vec![]));
        assert!(verdict.problems[0].message.starts_with("its key chain does not verify"), "{:?}", verdict.problems);
        // A base with no valid public key.
        let nokey = [version(&At::Commit(id('b')), P, &[], &"x = 1".parse().unwrap())];
        let verdict = eval(&linear(&nokey, vec![], vec![]));
        assert!(verdict.problems[0].message.starts_with("it has no valid `public_key`"));
    }

    #[test]
    fn a_base_from_before_approvals_trusts_its_public_key_alone() {
        let (a, b, evil) = (SecretKey::generate(), SecretKey::generate(), SecretKey::generate());
        let legacy: toml::Table = format!("public_key = \"{}\"\n", a.public_key().to_base64()).parse().unwrap();
        let base = [version(&At::Commit(id('b')), P, &[], &legacy)];
        let first = file(&a, Some(&a), None, 0, "");
        assert!(eval(&linear(&base, vec![], vec![version(&At::WorkTree, P, &[], &first)])).problems.is_empty());
        let other = file(&b, Some(&b), None, 0, "");
        assert_eq!(
            rules(&eval(&linear(&base, vec![], vec![version(&At::WorkTree, P, &[], &other)]))),
            [(Rule::R2, P.to_owned(), At::WorkTree)]
        );
        // The public key beside another approval key passes (the service
        // holding the key refuses it: NotThisKey), but that pair endorses
        // nothing: nothing proves whose its approval key is.
        let paired = file(&a, Some(&evil), None, 0, "");
        assert!(eval(&linear(&base, vec![], vec![version(&At::WorkTree, P, &[], &paired)])).problems.is_empty());
        let mut trust = Trust { pairs: vec![], legacy: Some(a.public_key().clone()) };
        let beside =
            KeyPair { public_key: a.public_key().clone(), approval_key: boxcar_secrets::ApprovalKey::of(&evil) };
        assert!(trust.trusts(&beside));
        trust.close_over("prod", &[("prod".to_owned(), beside, KeyPair::of(&evil))]);
        assert!(!trust.trusts(&KeyPair::of(&evil)));
        assert!(trust.pairs.is_empty());
        // A version naming the public key with no approval key is trusted by it.
        assert!(
            Trust { pairs: vec![], legacy: Some(a.public_key().clone()) }
                .trusts_named(&Named { public_key: a.public_key().clone(), approval_key: None })
        );
        assert!(
            !Trust { pairs: vec![KeyPair::of(&a)], legacy: None }
                .trusts_named(&Named { public_key: a.public_key().clone(), approval_key: None })
        );
    }
}
