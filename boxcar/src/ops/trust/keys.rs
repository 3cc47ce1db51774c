//! The keys an environment trusts: its key chain and the pairs those
//! endorsed (for an environment of the base from before approvals, its
//! public key alone), and the pairs a version names.

use boxcar_secrets::PublicKey;
use boxcar_secrets::approval::{self, APPROVAL_KEY, KeyPair};

/// An endorsement: in environment `.0`, pair `.1` endorsed pair `.2`.
pub(super) type Edge = (String, KeyPair, KeyPair);

/// The keys an environment trusts: pairs, and for a base version from before
/// approvals, a public key that any approval key may stand beside.
#[derive(Debug, Clone, Default)]
pub(super) struct Trust {
    pub(super) pairs: Vec<KeyPair>,
    pub(super) legacy: Option<PublicKey>,
}

impl Trust {
    pub(super) fn trusts(&self, pair: &KeyPair) -> bool {
        self.pairs.contains(pair) || self.legacy.as_ref() == Some(&pair.public_key)
    }

    /// A pair a version names: one without a usable approval key is trusted
    /// only where a public key alone is (a base version from before approvals).
    pub(super) fn trusts_named(&self, named: &Named) -> bool {
        match &named.approval_key {
            Some(approval_key) => {
                self.trusts(&KeyPair { public_key: named.public_key.clone(), approval_key: *approval_key })
            }
            None => self.legacy.as_ref() == Some(&named.public_key),
        }
    }

    /// Adds every pair a trusted pair endorsed for environment `env`, until
    /// nothing changes (an endorsement names its environment). Pairs trusted
    /// through a public key alone endorse nothing: nothing proves that their
    /// approval key is the key holder's.
    pub(super) fn close_over(&mut self, env: &str, edges: &[Edge]) {
        loop {
            let before = self.pairs.len();
            for (_, old, new) in edges.iter().filter(|(e, _, _)| e == env) {
                if self.pairs.contains(old) && !self.pairs.contains(new) {
                    self.pairs.push(new.clone());
                }
            }
            if self.pairs.len() == before {
                break;
            }
        }
    }
}

pub(super) fn public_key(table: &toml::Table) -> Option<PublicKey> {
    PublicKey::from_base64(table.get("public_key")?.as_str()?).ok()
}

/// A key pair as a version names it: a public key, and its approval key when
/// the version gives a usable one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Named {
    pub(super) public_key: PublicKey,
    pub(super) approval_key: Option<boxcar_secrets::ApprovalKey>,
}

/// The key pairs a version names: its current pair and every earlier one in
/// `[[previous_keys]]`, whether or not their endorsements verify.
pub(super) fn named_pairs(table: &toml::Table) -> Vec<Named> {
    let pair = |t: &toml::Table| {
        let public_key = PublicKey::from_base64(t.get("public_key")?.as_str()?).ok()?;
        let approval_key = t
            .get(APPROVAL_KEY)
            .and_then(toml::Value::as_str)
            .and_then(|text| boxcar_secrets::ApprovalKey::from_base64(text).ok());
        Some(Named { public_key, approval_key })
    };
    let mut out: Vec<Named> = table
        .get(approval::PREVIOUS_KEYS)
        .and_then(toml::Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|e| e.as_table().and_then(pair))
        .collect();
    out.extend(pair(table));
    out
}
