//! Every version of every environment file between a trusted base commit and
//! the work tree, read from git as docs/FORMAT.md ("Checking without a key")
//! says: the base, the range of commits with every parent of every merge,
//! and at each commit the environment files of every folder any contract in
//! that history names. `trust` decides what the versions mean.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};

use xshell::Shell;

use crate::adapters::git;
use crate::ops::trust::{At, Base, History, Node, Parent, Version};

type Result<T, E = Error> = std::result::Result<T, E>;

/// The services of a contract, each `(name, folder)`.
type Services = Vec<(Option<String>, PathBuf)>;

/// Largest environment file read, as `boxcar_secrets` reads one.
const MAX_FILE_LEN: usize = 4 * 1024 * 1024;

/// Where the history starts: a commit the change under review cannot have
/// written, or nothing at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Start {
    /// The base commit, and how it was chosen (for messages).
    Base { commit: String, how: String },
    /// A repository without a commit: every environment is new.
    NoCommit,
    /// Not a git checkout: no history to follow.
    NotGit,
    /// All of HEAD's history, from its root commits, with no base: what
    /// `approve` reads to find the versions its key approved before (their
    /// signatures say whose they are; nothing else in them is trusted).
    Everything,
}

/// Why history cannot be read, or there is no base to read it from.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum Error {
    #[error("--base: this is not a git checkout")]
    BaseNotGit,
    #[error("--base: this repository has no commit yet, so there is nothing to start from")]
    BaseNoCommit,
    /// `--base REV` names no commit.
    #[error("--base {rev}: no such commit here")]
    NoSuchBase { rev: String },
    /// `--base REV` is not HEAD or an ancestor of it.
    #[error(
        "--base {rev} ({commit}) is not HEAD or an ancestor of it, so the history between them is not this \
         branch's: check the merge of this branch into it (as CI does for a pull request), or pass their \
         merge base (`--base $(git merge-base {rev} HEAD)`) to check this branch alone"
    )]
    NotAncestor { rev: String, commit: String },
    #[error(
        "no trusted base to check the history from: this checkout has no origin/HEAD (the remote's \
         default branch). Pass the commit to trust: in CI, the branch a pull request merges into \
         (`--base origin/main`); on your machine, the branch you trust (`--base main`). \
         `git remote set-head origin --auto` sets origin/HEAD"
    )]
    NoOriginHead,
    /// HEAD and `origin/HEAD` share no commit.
    #[error(
        "HEAD and origin/HEAD ({origin}) have no common history, so there is no trusted base: \
         pass the commit to trust with --base"
    )]
    Unrelated { origin: String },
    /// A commit of the range has its parents cut off.
    #[error(
        "the history between the base and HEAD is cut at commit {commit} (a shallow clone): fetch it whole \
         (`git fetch --unshallow`, or `fetch-depth: 0` in CI)"
    )]
    Shallow { commit: String },
    #[error(transparent)]
    Git(#[from] git::Error),
    #[error(transparent)]
    Secrets(#[from] boxcar_secrets::Error),
}

/// Finds the base as docs/FORMAT.md says: `--base`, else the merge base with
/// `origin/HEAD`; `Err` says why there is none and what to pass.
pub(crate) fn start(sh: &Shell, given: Option<&str>) -> Result<Start, Error> {
    if !git::is_checkout(sh) {
        return match given {
            Some(_) => Err(Error::BaseNotGit),
            None => Ok(Start::NotGit),
        };
    }
    let Some(head) = git::commit_of(sh, "HEAD") else {
        return match given {
            Some(_) => Err(Error::BaseNoCommit),
            None => Ok(Start::NoCommit),
        };
    };
    let shown = |r: &str| crate::vocab::show::escape(r).into_owned();
    match given {
        Some(rev) => {
            let commit = git::commit_of(sh, rev).ok_or_else(|| Error::NoSuchBase { rev: shown(rev) })?;
            if !git::is_ancestor(sh, &commit, &head) {
                return Err(Error::NotAncestor { rev: shown(rev), commit: git::short(&commit) });
            }
            Ok(Start::Base { commit, how: format!("--base {}", shown(rev)) })
        }
        None => {
            let origin = git::commit_of(sh, "refs/remotes/origin/HEAD").ok_or(Error::NoOriginHead)?;
            let commit =
                git::merge_base(sh, &head, &origin).ok_or_else(|| Error::Unrelated { origin: git::short(&origin) })?;
            Ok(Start::Base { commit, how: "the merge base of HEAD and origin/HEAD".to_owned() })
        }
    }
}

/// Reads every version from `start` to the work tree of the checkout the
/// shell is in (its root).
pub(crate) fn read(sh: &Shell, start: &Start) -> Result<History> {
    let work_contract = std::fs::read(sh.current_dir().join(crate::vocab::contract::FILE)).ok();
    let work_services = services_of(work_contract.as_deref());
    let (base_commit, how) = match start {
        Start::Base { commit, how } => (Some(commit.clone()), how.clone()),
        Start::Everything if git::commit_of(sh, "HEAD").is_some() => (None, String::new()),
        Start::NoCommit | Start::NotGit | Start::Everything => {
            // No history: the work tree alone.
            let folders = folders_of(&work_services);
            let versions = work_tree_versions(sh, &folders, &work_services)?;
            let nodes = vec![Node { at: At::WorkTree, parents: Vec::new(), versions }];
            return Ok(History { base: None, nodes, outside: Vec::new() });
        }
    };
    let commits = git::range(sh, base_commit.as_deref(), "HEAD")?;
    let shallow = git::shallow_commits(sh)?;
    if let Some((cut, _)) = commits.iter().find(|(id, _)| shallow.contains(id)) {
        return Err(Error::Shallow { commit: git::short(cut) });
    }
    let contracts = contracts(sh, base_commit.as_deref(), &commits)?;
    let index: BTreeMap<&str, usize> = commits.iter().enumerate().map(|(i, (id, _))| (id.as_str(), i)).collect();
    // Every folder any of these contracts names, at every commit.
    let mut folders: BTreeSet<PathBuf> = folders_of(&work_services).into_iter().collect();
    for services in contracts.values() {
        folders.extend(folders_of(services));
    }
    let folders: Vec<PathBuf> = folders.into_iter().collect();
    // The commits whose versions differ from their first parent's: those that
    // change an environment folder or the contract (which says whose files
    // they are).
    let mut watched = vec![crate::vocab::contract::FILE.to_owned()];
    watched.extend(folders.iter().map(|f| format!("{}/", f.display())));
    let touching = git::touching(sh, base_commit.as_deref(), "HEAD", &watched)?;

    let mut reader = BlobReader::default();
    let base = match base_commit {
        Some(commit) => {
            let versions = commit_versions(sh, &commit, &folders, &contracts[&commit], &mut reader)?;
            Some(Base { commit, how, versions })
        }
        None => None,
    };
    // The parents outside the range, each read once (the base as it is).
    let mut outside: Vec<(String, Vec<Version>)> = Vec::new();
    if let Some(base) = &base {
        outside.push((base.commit.clone(), base.versions.clone()));
    }
    for (_, parents) in &commits {
        for p in parents.iter().filter(|p| !index.contains_key(p.as_str())) {
            if !outside.iter().any(|(id, _)| id == p) {
                let services = contract_of(sh, p)?;
                outside.push((p.clone(), commit_versions(sh, p, &folders, &services, &mut reader)?));
            }
        }
    }
    let mut nodes: Vec<Node> = Vec::with_capacity(commits.len() + 1);
    for (id, parents) in &commits {
        let services = &contracts[id];
        let first_parent = parents.first().and_then(|p| index.get(p.as_str()).copied());
        let versions = match first_parent {
            Some(p) if !touching.contains(id) => nodes[p]
                .versions
                .iter()
                .map(|v| Version { at: At::Commit(id.clone()), services: services_for(services, &v.path), ..v.clone() })
                .collect(),
            _ => commit_versions(sh, id, &folders, services, &mut reader)?,
        };
        let parents = parents
            .iter()
            .map(|p| match index.get(p.as_str()) {
                Some(&i) => Parent::Range(i),
                None => Parent::Outside(outside.iter().position(|(id, _)| id == p).unwrap_or_default()),
            })
            .collect();
        nodes.push(Node { at: At::Commit(id.clone()), parents, versions });
    }
    let head = match commits.len().checked_sub(1) {
        Some(last) => Parent::Range(last),
        // Nothing since the base: HEAD is the base.
        None => Parent::Outside(0),
    };
    let versions = work_tree_versions(sh, &folders, &work_services)?;
    nodes.push(Node { at: At::WorkTree, parents: vec![head], versions });
    Ok(History { base, nodes, outside })
}

/// The services of each commit's own contract: read for the base and every
/// commit that changes boxcar.toml; the others have their first parent's
/// (read, when that parent is outside the range).
fn contracts(
    sh: &Shell,
    base_commit: Option<&str>,
    commits: &[(String, Vec<String>)],
) -> Result<BTreeMap<String, Services>> {
    let contract_file = vec![crate::vocab::contract::FILE.to_owned()];
    let changed_contract = git::touching(sh, base_commit, "HEAD", &contract_file)?;
    let mut read_contract: Vec<&str> = base_commit.into_iter().collect();
    read_contract.extend(commits.iter().filter(|(id, _)| changed_contract.contains(id)).map(|(id, _)| id.as_str()));
    let requests: Vec<String> =
        read_contract.iter().map(|c| format!("{c}:./{}", crate::vocab::contract::FILE)).collect();
    let texts = git::read_objects(sh, &requests)?;
    let mut contracts: BTreeMap<String, Services> = BTreeMap::new();
    for (commit, text) in read_contract.iter().zip(&texts) {
        contracts.insert((*commit).to_owned(), services_of(text.as_deref()));
    }
    for (id, parents) in commits {
        if contracts.contains_key(id) {
            continue;
        }
        let inherited = match parents.first() {
            Some(p) if contracts.contains_key(p) => contracts[p].clone(),
            Some(p) => contract_of(sh, p)?,
            None => services_of(None),
        };
        contracts.insert(id.clone(), inherited);
    }
    Ok(contracts)
}

/// Every folder any version of boxcar.toml in the repository (on any branch
/// or tag) named, with `deploy-config`: where environment files have lived.
pub(crate) fn folders_ever(sh: &Shell) -> Result<Vec<PathBuf>> {
    if !git::is_checkout(sh) {
        return Ok(vec![PathBuf::from(crate::vocab::defaults::CONFIG_DIR)]);
    }
    let file = crate::vocab::contract::FILE;
    let raw = xshell::cmd!(sh, "git log --all --no-renames --raw --no-abbrev -m --relative -z --format= -- {file}")
        .quiet()
        .read()
        .map_err(|source| git::Error::Git { what: format!("reading the history of {file}"), source })?;
    // `:<old mode> <new mode> <old id> <new id> <status>`, then the path.
    let ids: BTreeSet<String> = raw
        .split('\0')
        .filter_map(|f| f.trim_start_matches('\n').strip_prefix(':'))
        .filter_map(|meta| meta.split(' ').nth(3).map(str::to_owned))
        .filter(|id| id.chars().any(|c| c != '0'))
        .collect();
    let ids: Vec<String> = ids.into_iter().collect();
    let mut folders: BTreeSet<PathBuf> = [PathBuf::from(crate::vocab::defaults::CONFIG_DIR)].into();
    for text in git::read_objects(sh, &ids)? {
        folders.extend(folders_of(&services_of(text.as_deref())));
    }
    Ok(folders.into_iter().collect())
}

/// The services of `commit`'s own contract.
fn contract_of(sh: &Shell, commit: &str) -> Result<Services> {
    let text = git::read_objects(sh, &[format!("{commit}:./{}", crate::vocab::contract::FILE)])?;
    Ok(services_of(text.first().and_then(Option::as_deref)))
}

/// The services a contract's text names, read leniently: `(name, folder)`
/// for each `[[service]]` with a usable `config_dir` (default
/// `deploy-config`); no contract, or one that is not TOML, is `deploy-config`
/// with no service.
fn services_of(text: Option<&[u8]>) -> Services {
    let default = || vec![(None, PathBuf::from(crate::vocab::defaults::CONFIG_DIR))];
    let Some(table) = text.and_then(|t| std::str::from_utf8(t).ok()).and_then(|t| t.parse::<toml::Table>().ok()) else {
        return default();
    };
    let list = table.get("service").and_then(toml::Value::as_array).cloned().unwrap_or_default();
    list.iter()
        .filter_map(toml::Value::as_table)
        .filter_map(|s| {
            let name = s.get("name").and_then(toml::Value::as_str).map(str::to_owned);
            let dir = s.get("config_dir").and_then(toml::Value::as_str).unwrap_or(crate::vocab::defaults::CONFIG_DIR);
            let dir = Path::new(dir);
            let inside = !dir.as_os_str().is_empty() && dir.components().all(|c| matches!(c, Component::Normal(_)));
            inside.then(|| (name, dir.components().collect()))
        })
        .collect()
}

fn folders_of(services: &[(Option<String>, PathBuf)]) -> Vec<PathBuf> {
    let set: BTreeSet<PathBuf> = services.iter().map(|(_, f)| f.clone()).collect();
    set.into_iter().collect()
}

/// The names of the services whose folder holds `path`.
fn services_for(services: &[(Option<String>, PathBuf)], path: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        services.iter().filter(|(_, f)| Some(f.as_path()) == path.parent()).filter_map(|(n, _)| n.clone()).collect();
    names.sort();
    names.dedup();
    names
}

/// Whether `path` names an environment file: `<env>.toml`, a valid
/// environment name, not `Cargo.toml`.
fn env_of(path: &Path) -> Option<String> {
    if path.file_name().is_some_and(|n| n == "Cargo.toml") || path.extension().is_none_or(|e| e != "toml") {
        return None;
    }
    boxcar_secrets::env_of(path).ok()
}

/// Reads and parses blobs once each, by object id.
#[derive(Default)]
struct BlobReader {
    parsed: BTreeMap<String, Result<toml::Table, String>>,
}

fn commit_versions(
    sh: &Shell,
    commit: &str,
    folders: &[PathBuf],
    services: &[(Option<String>, PathBuf)],
    reader: &mut BlobReader,
) -> Result<Vec<Version>> {
    let files: Vec<(PathBuf, String, String)> = git::toml_files_in(sh, commit, folders)?
        .into_iter()
        .filter_map(|(path, id)| env_of(&path).map(|env| (path, env, id)))
        .collect();
    let missing: Vec<String> =
        files.iter().map(|(_, _, id)| id.clone()).filter(|id| !reader.parsed.contains_key(id)).collect();
    let missing: Vec<String> = missing.into_iter().collect::<BTreeSet<_>>().into_iter().collect();
    for (id, bytes) in missing.iter().zip(git::read_objects(sh, &missing)?) {
        let parsed = match bytes {
            None => Err("git does not have it".to_owned()),
            Some(bytes) => parse(&bytes),
        };
        reader.parsed.insert(id.clone(), parsed);
    }
    Ok(files
        .into_iter()
        .map(|(path, env, id)| Version {
            at: At::Commit(commit.to_owned()),
            services: services_for(services, &path),
            content: reader.parsed[&id].clone(),
            path,
            env,
        })
        .collect())
}

fn work_tree_versions(sh: &Shell, folders: &[PathBuf], services: &[(Option<String>, PathBuf)]) -> Result<Vec<Version>> {
    let mut out = Vec::new();
    for folder in folders {
        let dir = sh.current_dir().join(folder);
        if !dir.is_dir() {
            continue;
        }
        for path in boxcar_secrets::env_files(&dir)? {
            let rel = folder.join(path.file_name().unwrap_or_default());
            let Some(env) = env_of(&rel) else { continue };
            let content = match std::fs::read(&path) {
                Ok(bytes) => parse(&bytes),
                Err(e) => Err(format!("cannot be read: {e}")),
            };
            out.push(Version { at: At::WorkTree, services: services_for(services, &rel), path: rel, env, content });
        }
    }
    Ok(out)
}

/// An environment file's bytes read as every reader reads them: a file
/// without a valid `public_key` (A0) cannot be read either.
fn parse(bytes: &[u8]) -> Result<toml::Table, String> {
    if bytes.len() > MAX_FILE_LEN {
        return Err(format!("is larger than {} KiB", MAX_FILE_LEN / 1024));
    }
    let text = std::str::from_utf8(bytes).map_err(|e| format!("is not UTF-8 text (byte {})", e.valid_up_to()))?;
    let table = boxcar_secrets::read_toml(text).map_err(|e| format!("is malformed TOML: {e}"))?;
    match table.get("public_key").map(|k| k.as_str().map(boxcar_secrets::PublicKey::from_base64)) {
        Some(Some(Ok(_))) => Ok(table),
        None => Err("has no `public_key`".to_owned()),
        Some(None) => Err("`public_key` is not a string".to_owned()),
        Some(Some(Err(e))) => Err(format!("`public_key` {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contracts_are_read_leniently() {
        let default = vec![(None, PathBuf::from("deploy-config"))];
        assert_eq!(services_of(None), default);
        assert_eq!(services_of(Some(b"not = [toml")), default);
        assert_eq!(services_of(Some(b"\xff")), default);
        let text = b"[[service]]\nname = \"a\"\n[[service]]\nname = \"b\"\nconfig_dir = \"x/y/\"\nport = \"odd\"\n\
                     [[service]]\nconfig_dir = \"../out\"\n[[service]]\nname = 3\nconfig_dir = \"z\"\n\
                     [[service]]\nname = \"c\"\nconfig_dir = 4\n";
        assert_eq!(
            services_of(Some(text)),
            vec![
                (Some("a".to_owned()), PathBuf::from("deploy-config")),
                (Some("b".to_owned()), PathBuf::from("x/y")),
                (None, PathBuf::from("z")),
                (Some("c".to_owned()), PathBuf::from("deploy-config")),
            ]
        );
        // A contract with no service names no folder.
        assert!(services_of(Some(b"default = \"a\"")).is_empty());
        let services = services_of(Some(text));
        assert_eq!(folders_of(&services), [PathBuf::from("deploy-config"), PathBuf::from("x/y"), PathBuf::from("z")]);
        assert_eq!(services_for(&services, Path::new("x/y/prod.toml")), ["b"]);
        assert!(services_for(&services, Path::new("z/prod.toml")).is_empty());
    }

    #[test]
    fn every_folder_a_contract_ever_named() {
        let dir = tempfile::tempdir().unwrap();
        let sh = Shell::new().unwrap();
        sh.change_dir(dir.path());
        let git = |args: &[&str]| {
            xshell::cmd!(sh, "git -c user.name=t -c user.email=t@example.invalid {args...}").quiet().run().unwrap();
        };
        git(&["init", "-q"]);
        assert_eq!(folders_ever(&sh).unwrap(), [PathBuf::from("deploy-config")]);
        for dir in ["a", "b/c"] {
            let text = format!("[[service]]\nname = \"s\"\nconfig_dir = \"{dir}\"\n");
            std::fs::write(sh.current_dir().join("boxcar.toml"), text).unwrap();
            git(&["add", "boxcar.toml"]);
            git(&["commit", "-qm", dir]);
        }
        git(&["rm", "-q", "boxcar.toml"]);
        git(&["commit", "-qm", "gone"]);
        let expect = ["a", "b/c", "deploy-config"].map(PathBuf::from);
        assert_eq!(folders_ever(&sh).unwrap(), expect);
        let outside = Shell::new().unwrap();
        outside.change_dir(std::env::temp_dir());
        assert_eq!(folders_ever(&outside).unwrap(), [PathBuf::from("deploy-config")]);
    }

    fn key_file(text: &str) -> String {
        format!("public_key = \"{}\"\n{text}", boxcar_secrets::SecretKey::generate().public_key().to_base64())
    }

    #[test]
    fn the_base_is_given_or_the_merge_base_with_origin_or_nothing() {
        let outside = tempfile::tempdir().unwrap();
        let sh = Shell::new().unwrap();
        sh.change_dir(outside.path());
        assert_eq!(start(&sh, None).unwrap(), Start::NotGit);
        assert!(start(&sh, Some("main")).unwrap_err().to_string().contains("not a git checkout"));

        let r = crate::adapters::git::scratch::Repo::new();
        assert_eq!(start(&r.sh, None).unwrap(), Start::NoCommit);
        assert!(start(&r.sh, Some("main")).unwrap_err().to_string().contains("no commit yet"));
        let a = r.commit("a");
        let b = r.commit("b");
        assert!(start(&r.sh, None).unwrap_err().to_string().starts_with("no trusted base to check the history from"));
        assert_eq!(start(&r.sh, Some(&a)).unwrap(), Start::Base { commit: a.clone(), how: format!("--base {a}") });
        assert!(start(&r.sh, Some("nope")).unwrap_err().to_string().starts_with("--base nope: no such commit here"));
        // origin/HEAD: the merge base with HEAD.
        r.git(&["update-ref", "refs/remotes/origin/main", &a]);
        r.git(&["symbolic-ref", "refs/remotes/origin/HEAD", "refs/remotes/origin/main"]);
        let how = "the merge base of HEAD and origin/HEAD".to_owned();
        assert_eq!(start(&r.sh, None).unwrap(), Start::Base { commit: a.clone(), how: how.clone() });
        r.git(&["checkout", "-q", "-b", "other", &a]);
        let c = r.commit("c");
        r.git(&["update-ref", "refs/remotes/origin/main", &c]);
        r.git(&["checkout", "-q", "main"]);
        assert_eq!(start(&r.sh, None).unwrap(), Start::Base { commit: a, how });
        // --base must be an ancestor of HEAD.
        let err = start(&r.sh, Some("other")).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("--base other ({}) is not HEAD or an ancestor of it", git::short(&c))),
            "{err}"
        );
        assert!(start(&r.sh, Some(&b)).is_ok());
        // No common history with origin/HEAD.
        r.git(&["checkout", "-q", "--orphan", "lone"]);
        let lone = r.commit("lone");
        r.git(&["update-ref", "refs/remotes/origin/main", &lone]);
        r.git(&["checkout", "-q", "main"]);
        assert!(start(&r.sh, None).unwrap_err().to_string().starts_with("HEAD and origin/HEAD ("));
    }

    #[test]
    fn every_version_from_the_base_to_the_work_tree() {
        let r = crate::adapters::git::scratch::Repo::new();
        r.write("boxcar.toml", "[[service]]\nname = \"s\"\nconfig_dir = \"conf\"\n");
        r.write("conf/prod.toml", &key_file(""));
        let fork = r.commit("fork point");
        r.write("conf/prod.toml", &key_file("x = 1\n"));
        let base = r.commit("base");
        // A commit that changes no .toml file, then one that moves the folder.
        r.write("README", "hello\n");
        let quiet = r.commit("readme");
        r.git(&["mv", "conf", "conf2"]);
        r.write("boxcar.toml", "[[service]]\nname = \"s\"\nconfig_dir = \"conf2\"\n");
        let moved = r.commit("move");
        r.write("README", "moved\n");
        let after = r.commit("readme after the move");
        // A branch from before the base, merged in.
        r.git(&["checkout", "-q", "-b", "side", &fork]);
        r.write("conf/staging.toml", &key_file(""));
        let side = r.commit("side");
        r.git(&["checkout", "-q", "main"]);
        r.git(&["merge", "-q", "--no-ff", "side", "-m", "merge side"]);
        let merge = r.git(&["rev-parse", "HEAD"]);
        r.write("conf2/work.toml", &key_file(""));
        r.write("conf2/Cargo.toml", "[package]\n");
        r.write("conf2/Not-an-env.toml", "");

        let start = Start::Base { commit: base.clone(), how: "--base".into() };
        let h = read(&r.sh, &start).unwrap();
        let b = h.base.as_ref().unwrap();
        assert_eq!(b.commit, base);
        let paths = |vs: &[Version]| -> Vec<String> { vs.iter().map(|v| v.path.display().to_string()).collect() };
        assert_eq!(paths(&b.versions), ["conf/prod.toml"]);
        assert_eq!(b.versions[0].services, ["s"]);
        let at: Vec<At> = h.nodes.iter().map(|n| n.at.clone()).collect();
        let index = |id: &str| at.iter().position(|a| *a == At::Commit(id.to_owned())).unwrap();
        assert_eq!(at.len(), 6);
        assert_eq!(at.last(), Some(&At::WorkTree));
        // Parents: in the range, or outside it (the base, and the fork point).
        assert_eq!(h.outside.iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>(), [base.as_str(), fork.as_str()]);
        assert_eq!(h.nodes[index(&quiet)].parents, [Parent::Outside(0)]);
        assert_eq!(h.nodes[index(&side)].parents, [Parent::Outside(1)]);
        assert_eq!(h.nodes[index(&merge)].parents, [Parent::Range(index(&after)), Parent::Range(index(&side))]);
        assert_eq!(h.nodes[5].parents, [Parent::Range(index(&merge))]);
        assert_eq!(paths(&h.outside[1].1), ["conf/prod.toml"]);
        // What each commit holds, in every folder any contract named.
        assert_eq!(paths(&h.nodes[index(&quiet)].versions), ["conf/prod.toml"]);
        assert_eq!(h.nodes[index(&quiet)].versions[0].at, At::Commit(quiet.clone()));
        assert_eq!(paths(&h.nodes[index(&moved)].versions), ["conf2/prod.toml"]);
        assert_eq!(h.nodes[index(&moved)].versions[0].services, ["s"]);
        // A commit that changes no .toml file holds its parent's versions, as its own.
        assert_eq!(paths(&h.nodes[index(&after)].versions), ["conf2/prod.toml"]);
        assert_eq!(h.nodes[index(&after)].versions[0].at, At::Commit(after.clone()));
        assert_eq!(h.nodes[index(&after)].versions[0].services, ["s"]);
        assert_eq!(paths(&h.nodes[index(&side)].versions), ["conf/prod.toml", "conf/staging.toml"]);
        assert_eq!(h.nodes[index(&side)].versions[0].services, ["s"]);
        assert_eq!(paths(&h.nodes[index(&merge)].versions), ["conf/staging.toml", "conf2/prod.toml"]);
        assert!(h.nodes[index(&merge)].versions[0].services.is_empty(), "conf is no service's folder there");
        // The work tree: its own folder, and those of its history.
        assert_eq!(paths(&h.nodes[5].versions), ["conf/staging.toml", "conf2/prod.toml", "conf2/work.toml"]);
        assert!(h.nodes[5].versions[0].services.is_empty());
        assert!(h.nodes[5].versions[1..].iter().all(|v| v.content.is_ok() && v.services == ["s"]));

        // All of HEAD's history, without a base.
        let all = read(&r.sh, &Start::Everything).unwrap();
        assert!(all.base.is_none() && all.outside.is_empty());
        assert_eq!(all.nodes.len(), 8);
        assert!(all.nodes[0].parents.is_empty());
        // No history: the work tree alone.
        for start in [Start::NoCommit, Start::NotGit] {
            let alone = read(&r.sh, &start).unwrap();
            assert_eq!(alone.nodes.len(), 1);
            assert_eq!(paths(&alone.nodes[0].versions), ["conf2/prod.toml", "conf2/work.toml"]);
        }
        let empty = crate::adapters::git::scratch::Repo::new();
        assert_eq!(read(&empty.sh, &Start::Everything).unwrap().nodes.len(), 1);

        // A shallow clone is cut inside the range: refused.
        let clone = tempfile::tempdir().unwrap();
        let to = clone.path().join("c");
        r.git(&["clone", "-q", "--depth", "1", &format!("file://{}", r.path().display()), to.to_str().unwrap()]);
        let sh = Shell::new().unwrap();
        sh.change_dir(&to);
        let err = read(&sh, &Start::Everything).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("the history between the base and HEAD is cut at commit {}", git::short(&merge)))
        );
    }

    #[test]
    fn environment_files_by_name() {
        assert_eq!(env_of(Path::new("d/prod.toml")), Some("prod".to_owned()));
        assert_eq!(env_of(Path::new("d/Cargo.toml")), None);
        assert_eq!(env_of(Path::new("d/Prod.toml")), None);
        assert_eq!(env_of(Path::new("d/prod.txt")), None);
        let key = boxcar_secrets::SecretKey::generate();
        assert!(parse(format!("public_key = \"{}\"", key.public_key().to_base64()).as_bytes()).is_ok());
        assert_eq!(parse(b"a = 1").unwrap_err(), "has no `public_key`");
        assert_eq!(parse(b"public_key = 1").unwrap_err(), "`public_key` is not a string");
        assert!(parse(b"public_key = \"AAAA\"").unwrap_err().starts_with("`public_key` decodes to 3 bytes"));
        assert!(parse(b"\xff").unwrap_err().starts_with("is not UTF-8"));
        assert!(parse(b"a = \"\\e\"").unwrap_err().starts_with("is malformed TOML: line 1"));
        assert!(parse(&vec![b'#'; MAX_FILE_LEN + 1]).unwrap_err().contains("larger than 4096 KiB"));
        // Exactly the largest size is read.
        let mut text = format!("public_key = \"{}\"\n", key.public_key().to_base64()).into_bytes();
        text.resize(MAX_FILE_LEN, b'#');
        assert!(parse(&text).is_ok());
    }
}
