//! What the rules read and say: a [`History`] of [`Version`]s at commits
//! ([`Node`]s) from a [`Base`] to the work tree, as `history` reads it from
//! git, and the [`Verdict`] of [`Problem`]s by [`Rule`].

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::vocab::show::escape;

/// Where a version is: a commit, or the work tree.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum At {
    /// A commit, by its full id.
    Commit(String),
    /// The files on disk.
    WorkTree,
}

impl At {
    /// `commit 1a2b3c4d5e6f` or `the work tree`.
    pub(crate) fn describe(&self) -> String {
        match self {
            At::Commit(id) => format!("commit {}", crate::adapters::git::short(id)),
            At::WorkTree => "the work tree".to_owned(),
        }
    }
}

/// One environment file at one commit (or in the work tree).
#[derive(Debug, Clone)]
pub(crate) struct Version {
    pub at: At,
    /// Relative to the project root.
    pub path: PathBuf,
    /// The environment's name: the file's stem.
    pub env: String,
    /// The services whose folder holds it in that commit's contract, sorted.
    pub services: Vec<String>,
    /// The file, read as every reader reads it, or why it cannot be.
    pub content: Result<toml::Table, String>,
}

/// A commit of the range, or the work tree.
#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub at: At,
    /// Its parents (none for a root commit).
    pub parents: Vec<Parent>,
    pub versions: Vec<Version>,
}

/// A parent of a commit of the range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Parent {
    /// Another commit of the range: an index into [`History::nodes`], always earlier.
    Range(usize),
    /// A commit outside the range (the base, or one the base descends from):
    /// an index into [`History::outside`].
    Outside(usize),
}

/// The trusted base commit and what it holds.
#[derive(Debug, Clone)]
pub(crate) struct Base {
    pub commit: String,
    /// How it was chosen, for messages: `--base origin/main`.
    pub how: String,
    pub versions: Vec<Version>,
}

/// Everything `check` follows: the base (none in a repository without a
/// commit), the range, parents before children, the work tree last, and the
/// versions of the range's parents outside it.
#[derive(Debug, Clone)]
pub(crate) struct History {
    pub base: Option<Base>,
    pub nodes: Vec<Node>,
    /// The commits outside the range that commits of the range have as
    /// parents (the base among them), with their versions.
    pub outside: Vec<(String, Vec<Version>)>,
}

/// A rule of docs/FORMAT.md's "Checking without a key" that a version breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Rule {
    /// The base's version cannot be followed.
    R0,
    /// The work tree's version is not approved.
    R1,
    /// A key nothing trusted endorsed.
    R2,
    /// An approval serial that went down, or two approvals of one serial.
    R3,
    /// An environment of the base is gone.
    R4,
}

/// One problem: which version, where, what, and the rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Problem {
    pub rule: Rule,
    pub path: PathBuf,
    pub at: At,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let path = escape(&self.path.display().to_string()).into_owned();
        match &self.at {
            At::WorkTree => write!(f, "{path}: {} [{:?}]", self.message, self.rule),
            at => write!(f, "{path} at {}: {} [{:?}]", at.describe(), self.message, self.rule),
        }
    }
}

/// What `check` found.
#[derive(Debug, Default)]
pub(crate) struct Verdict {
    pub problems: Vec<Problem>,
    /// Moves, new environments, what was followed: worth saying, not wrong.
    pub notes: Vec<String>,
    /// Per file of the work tree: what was verified (for its `ok` line), and
    /// whether a problem concerns its environment.
    pub files: BTreeMap<PathBuf, FileVerdict>,
}

/// What `check` says of one file of the work tree.
#[derive(Debug, Default, Clone)]
pub(crate) struct FileVerdict {
    pub summary: String,
    pub troubled: bool,
    /// It belongs to no environment of the base (or there is no base).
    pub new: bool,
}
