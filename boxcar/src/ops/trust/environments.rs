//! Which environment each version belongs to: the base's environments
//! (their trusted keys, or R0 when one cannot be followed), and for the rest
//! new environments grouped by name and a path, a service or a named pair in
//! common, each trusting the chain of its first approved version.

use std::collections::BTreeMap;
use std::path::PathBuf;

use boxcar_secrets::ApprovalError;
use boxcar_secrets::approval::{self, APPROVAL_KEY, Approved, KeyPair};

use super::keys::{Edge, Named, Trust, named_pairs, public_key};
use super::{Found, Rule, Version};

/// A version with what can be read from it without a key.
pub(super) struct Read<'a> {
    pub(super) v: &'a Version,
    pub(super) node: Option<usize>,
    /// The approval, when A1, A2 and A4 to A9 hold.
    pub(super) approved: Result<Approved, ApprovalError>,
    /// The key chain, when A8 and A9 hold.
    pub(super) chain: Option<Vec<KeyPair>>,
    /// The pairs it names, whether or not their endorsements verify.
    pub(super) named: Vec<Named>,
    pub(super) signature: Option<String>,
}

impl<'a> Read<'a> {
    pub(super) fn of(v: &'a Version, node: Option<usize>) -> Read<'a> {
        let (approved, chain, named, signature) = match &v.content {
            Ok(t) => (
                approval::verify(&v.env, t),
                approval::key_chain(&v.env, t).ok(),
                named_pairs(t),
                t.get(approval::APPROVAL_TABLE)
                    .and_then(|a| a.get("signature"))
                    .and_then(|s| s.as_str())
                    .map(str::to_owned),
            ),
            Err(why) => (
                Err(ApprovalError::Malformed { field: "the file".to_owned(), why: why.clone() }),
                None,
                Vec::new(),
                None,
            ),
        };
        Read { v, node, approved, chain, named, signature }
    }
}

/// An environment the rules follow: one of the base's, or a new one.
pub(super) struct Environment {
    pub(super) env: String,
    /// The base's version (a base environment), or the first version seen.
    pub(super) path: PathBuf,
    pub(super) services: Vec<String>,
    pub(super) trust: Trust,
    /// Where it comes from, for messages.
    pub(super) origin: Origin,
}

pub(super) enum Origin {
    Base,
    /// A new environment: its first key and where that was first approved
    /// (boxed: a key pair is large beside nothing).
    New {
        first: Option<Box<(KeyPair, String)>>,
    },
}

/// The environment version `r` of the base is (R0 when it cannot be followed).
pub(super) fn base_environment(r: &Read<'_>, e: usize, edges: &[Edge], found: &mut Found) -> Environment {
    let mut trust = Trust::default();
    let cannot = |why: String| format!("{why}: nothing can be followed from it; check from another base (--base)");
    match &r.v.content {
        Err(why) => found.add(Rule::R0, r.v, cannot(why.clone()), &[e]),
        Ok(table) if !table.contains_key(APPROVAL_KEY) => match public_key(table) {
            Some(key) => trust.legacy = Some(key),
            None => found.add(Rule::R0, r.v, cannot("it has no valid `public_key`".to_owned()), &[e]),
        },
        Ok(table) => match approval::key_chain(&r.v.env, table) {
            Ok(chain) => trust.pairs = chain,
            Err(err) => found.add(Rule::R0, r.v, cannot(format!("its key chain does not verify ({err})")), &[e]),
        },
    }
    trust.close_over(&r.v.env, edges);
    Environment {
        env: r.v.env.clone(),
        path: r.v.path.clone(),
        services: r.v.services.clone(),
        trust,
        origin: Origin::Base,
    }
}

/// Whether version `r` continues environment `e`: the same name, and the
/// same path, a service in common, or a pair `e` trusts.
pub(super) fn continues(r: &Read<'_>, e: &Environment) -> bool {
    r.v.env == e.env
        && (r.v.path == e.path
            || r.v.services.iter().any(|s| e.services.contains(s))
            || r.named.iter().any(|p| e.trust.trusts_named(p)))
}

/// The environments each version of the range belongs to: the base's it
/// continues, else a new one (same name, and a path, a service or a named
/// pair in common with another of its versions, transitively), which trusts
/// the chain of its first approved version. New environments are added to `envs`.
pub(super) fn membership(reads: &[Read<'_>], envs: &mut Vec<Environment>, edges: &[Edge]) -> Vec<Vec<usize>> {
    let base_count = envs.len();
    let mut belongs: Vec<Vec<usize>> =
        reads.iter().map(|r| (0..base_count).filter(|&e| continues(r, &envs[e])).collect()).collect();
    let loose: Vec<usize> = (0..reads.len()).filter(|&i| belongs[i].is_empty()).collect();
    // Union-find over the loose versions, each pointing at the lowest index
    // of its group.
    let mut leader: BTreeMap<usize, usize> = loose.iter().map(|&i| (i, i)).collect();
    let find = |leader: &BTreeMap<usize, usize>, mut i: usize| {
        while leader[&i] != i {
            i = leader[&i];
        }
        i
    };
    for (a, &i) in loose.iter().enumerate() {
        for &j in &loose[a + 1..] {
            let (x, y) = (&reads[i], &reads[j]);
            let related = x.v.env == y.v.env
                && (x.v.path == y.v.path
                    || x.v.services.iter().any(|s| y.v.services.contains(s))
                    || x.named.iter().any(|p| y.named.contains(p)));
            if related {
                let (li, lj) = (find(&leader, i), find(&leader, j));
                leader.insert(li.max(lj), li.min(lj));
            }
        }
    }
    let mut index: BTreeMap<usize, usize> = BTreeMap::new();
    for &i in &loose {
        let l = find(&leader, i);
        let e = *index.entry(l).or_insert_with(|| {
            envs.push(Environment {
                env: reads[l].v.env.clone(),
                path: reads[l].v.path.clone(),
                services: reads[l].v.services.clone(),
                trust: Trust::default(),
                origin: Origin::New { first: None },
            });
            envs.len() - 1
        });
        belongs[i].push(e);
    }
    for (e, env) in envs.iter_mut().enumerate().skip(base_count) {
        let first = (0..reads.len()).find(|&i| belongs[i].contains(&e) && reads[i].approved.is_ok());
        if let Some(chain) = first.and_then(|i| reads[i].chain.clone()) {
            let at = first.map(|i| reads[i].v.at.describe()).unwrap_or_default();
            env.origin = Origin::New { first: Some(Box::new((chain[0].clone(), at))) };
            env.trust.pairs = chain;
            env.trust.close_over(&env.env.clone(), edges);
        }
    }
    belongs
}
