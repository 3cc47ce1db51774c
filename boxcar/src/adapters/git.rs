//! The few questions boxcar asks git, each one `git` command: which commit
//! a name is, whether one commit is an ancestor of another, the commits
//! between two, what a tree holds, the objects themselves in one batch, and
//! which files of a checkout git would commit.
//!
//! The git CLI rather than a library (gitoxide, libgit2): every machine that
//! has a checkout has git, the questions are few, and a git library would
//! add minutes to the first build of every xtask (a fresh checkout compiles
//! boxcar before its first command).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

type Result<T, E = Error> = std::result::Result<T, E>;

use xshell::{Shell, cmd};

/// What goes wrong asking git.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A git command failed; `what` says what it was asked.
    #[error("{what}")]
    Git { what: String, source: xshell::Error },
    #[error("reading git's list of shallow commits")]
    Shallow(#[source] std::io::Error),
    /// `git cat-file --batch` answered fewer objects than asked.
    #[error("git cat-file answered {answered} of {asked} requests")]
    Batch { answered: usize, asked: usize },
    /// A folder of a project that is not a git checkout could not be listed.
    #[error("reading {path}")]
    Read { path: String, source: std::io::Error },
}

fn asking(what: impl Into<String>) -> impl FnOnce(xshell::Error) -> Error {
    let what = what.into();
    move |source| Error::Git { what, source }
}

/// The first 12 hex digits of a commit id, as messages show it.
pub(crate) fn short(commit: &str) -> String {
    commit.chars().take(12).collect()
}

/// Whether the shell's folder is inside a git work tree.
pub(crate) fn is_checkout(sh: &Shell) -> bool {
    cmd!(sh, "git rev-parse --is-inside-work-tree").quiet().ignore_stderr().read().is_ok()
}

/// The full id of the commit `rev` names, if it names one.
pub(crate) fn commit_of(sh: &Shell, rev: &str) -> Option<String> {
    let spec = format!("{rev}^{{commit}}");
    cmd!(sh, "git rev-parse --verify --quiet --end-of-options {spec}")
        .quiet()
        .ignore_stderr()
        .read()
        .ok()
        .map(|id| id.trim().to_owned())
        .filter(|id| !id.is_empty())
}

/// Whether `ancestor` is `descendant` or one of its ancestors.
pub(crate) fn is_ancestor(sh: &Shell, ancestor: &str, descendant: &str) -> bool {
    cmd!(sh, "git merge-base --is-ancestor {ancestor} {descendant}").quiet().ignore_stderr().run().is_ok()
}

/// The merge base of two commits, if they have one.
pub(crate) fn merge_base(sh: &Shell, a: &str, b: &str) -> Option<String> {
    cmd!(sh, "git merge-base {a} {b}").quiet().ignore_stderr().read().ok().map(|id| id.trim().to_owned())
}

/// The commits reachable from `head` and not from `base` (all of `head`'s
/// history without one), every parent of every merge followed, parents
/// before children: `(id, parent ids)`.
pub(crate) fn range(sh: &Shell, base: Option<&str>, head: &str) -> Result<Vec<(String, Vec<String>)>> {
    let spec = match base {
        Some(base) => format!("{base}..{head}"),
        None => head.to_owned(),
    };
    let out = cmd!(sh, "git rev-list --topo-order --reverse --parents {spec}")
        .quiet()
        .read()
        .map_err(asking(format!("listing the commits of {spec}")))?;
    Ok(out
        .lines()
        .filter_map(|line| {
            let mut ids = line.split_whitespace().map(str::to_owned);
            Some((ids.next()?, ids.collect()))
        })
        .collect())
}

/// The commits of `range` (as for [`range`]) that change one of `paths`
/// (files, or folders written with a trailing `/`) against one of their
/// parents: the others hold there what their first parent holds.
pub(crate) fn touching(sh: &Shell, base: Option<&str>, head: &str, paths: &[String]) -> Result<BTreeSet<String>> {
    let spec = match base {
        Some(base) => format!("{base}..{head}"),
        None => head.to_owned(),
    };
    // `:(literal)`: a folder named with a `*` is no pattern. `--full-history
    // -m` keeps a merge that differs from any of its parents.
    let specs: Vec<String> = paths.iter().map(|p| format!(":(literal){p}")).collect();
    let out = cmd!(sh, "git log --full-history -m --format=%H {spec} -- {specs...}")
        .quiet()
        .read()
        .map_err(asking(format!("listing the commits of {spec} that change {}", paths.join(", "))))?;
    Ok(out.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_owned).collect())
}

/// The commits a shallow clone cut off from their parents (git's `shallow`
/// file); empty in a whole clone.
pub(crate) fn shallow_commits(sh: &Shell) -> Result<BTreeSet<String>> {
    let path =
        cmd!(sh, "git rev-parse --git-path shallow").quiet().read().map_err(asking("finding git's shallow file"))?;
    match std::fs::read_to_string(sh.current_dir().join(path.trim())) {
        Ok(text) => Ok(text.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_owned).collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeSet::new()),
        Err(e) => Err(Error::Shallow(e)),
    }
}

/// The files (blobs, not links or submodules) directly in `folders` of
/// `commit`'s tree whose names end in `.toml`: `(path, object id)`. Folders
/// and paths are relative to the shell's folder, which need not be the
/// repository's top (a workspace in a folder of a larger repository).
pub(crate) fn toml_files_in(sh: &Shell, commit: &str, folders: &[PathBuf]) -> Result<Vec<(PathBuf, String)>> {
    if folders.is_empty() {
        return Ok(Vec::new());
    }
    // A trailing `/` lists a folder's entries; `:(literal)` keeps a folder
    // name with `*` in it from being a pattern.
    let specs: Vec<String> = folders.iter().map(|f| format!(":(literal){}/", f.display())).collect();
    let out = cmd!(sh, "git ls-tree -z {commit} -- {specs...}")
        .quiet()
        .read()
        .map_err(asking(format!("listing the environment folders of commit {commit}")))?;
    let mut files = Vec::new();
    for entry in out.split('\0').filter(|e| !e.is_empty()) {
        // `<mode> SP <type> SP <id> TAB <path>`
        let Some((meta, path)) = entry.split_once('\t') else { continue };
        let mut fields = meta.split(' ');
        let (Some(mode), Some(kind), Some(id)) = (fields.next(), fields.next(), fields.next()) else { continue };
        // Not recursive: a folder inside is a tree entry, left out.
        let path = PathBuf::from(path);
        if kind == "blob" && mode != "120000" && path.extension().is_some_and(|e| e == "toml") {
            files.push((path, id.to_owned()));
        }
    }
    Ok(files)
}

/// The contents of the objects `requests` name (`<id>`, or `<commit>:./<path>`
/// for a path relative to the shell's folder), in order, read by one
/// `git cat-file --batch`: `None` for one that is missing.
pub(crate) fn read_objects(sh: &Shell, requests: &[String]) -> Result<Vec<Option<Vec<u8>>>> {
    if requests.is_empty() {
        return Ok(Vec::new());
    }
    let input: String = requests.iter().map(|r| format!("{r}\n")).collect();
    let out =
        cmd!(sh, "git cat-file --batch").stdin(input).quiet().output().map_err(asking("reading objects from git"))?;
    let contents = batch_contents(&out.stdout);
    if contents.len() != requests.len() {
        return Err(Error::Batch { answered: contents.len(), asked: requests.len() });
    }
    Ok(contents)
}

/// The contents `git cat-file --batch` printed, in order: `None` for an
/// object it reported missing (or ambiguous).
pub(crate) fn batch_contents(out: &[u8]) -> Vec<Option<Vec<u8>>> {
    let mut contents = Vec::new();
    let mut rest = out;
    while let Some(end) = rest.iter().position(|b| *b == b'\n') {
        // `<id> <type> <size>`, then the content and a newline; or `<request> missing`.
        let (header, after) = rest.split_at(end);
        let header = String::from_utf8_lossy(header).into_owned();
        rest = after.get(1..).unwrap_or_default();
        let size = match header.rsplit(' ').next() {
            Some("missing" | "ambiguous") => None,
            Some(size) => size.parse::<usize>().ok(),
            None => None,
        };
        match size {
            Some(size) => {
                contents.push(Some(rest.get(..size).unwrap_or_default().to_vec()));
                rest = rest.get(size + 1..).unwrap_or_default();
            }
            None => contents.push(None),
        }
    }
    contents
}

/// Files git tracks (plus new files not ignored), or every file when the
/// project is not a git checkout. Whatever is listed is there to be scanned:
/// a path that is not a regular file is listed too, and `check` says why it
/// cannot scan it.
pub(crate) fn tracked_files(sh: &Shell, root: &Path) -> Result<Vec<PathBuf>> {
    if !is_checkout(sh) {
        let mut out = Vec::new();
        walk(root, root, &mut out)?;
        return Ok(out);
    }
    // A submodule (mode 160000) is a repository of its own, checked there;
    // the rest of each line is `<mode> <id> <stage>\t<path>`.
    let staged = cmd!(sh, "git ls-files -z --stage").quiet().read().map_err(asking("listing the files git tracks"))?;
    let mut files: Vec<PathBuf> = staged
        .split('\0')
        .filter_map(|line| line.split_once('\t'))
        .filter(|(meta, _)| !meta.starts_with("160000 "))
        .map(|(_, path)| PathBuf::from(path))
        .collect();
    // `--others --exclude-standard` adds files about to be committed with
    // `git add -A`; a folder listed there (`name/`) is another repository,
    // which `git add` would record as a submodule.
    let others = cmd!(sh, "git ls-files -z --others --exclude-standard")
        .quiet()
        .read()
        .map_err(asking("listing the files git would add"))?;
    files.extend(others.split('\0').filter(|p| !p.is_empty() && !p.ends_with('/')).map(PathBuf::from));
    files.sort();
    files.dedup();
    Ok(files)
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let reading = |path: &Path| {
        let path = path.display().to_string();
        move |source| Error::Read { path, source }
    };
    for entry in std::fs::read_dir(dir).map_err(reading(dir))? {
        let entry = entry.map_err(reading(dir))?;
        let path = entry.path();
        let name = entry.file_name();
        if name == "target" || name == ".git" {
            continue;
        }
        // The entry's own type: a symlink to a folder is listed, not entered.
        let is_dir = entry.file_type().map_err(reading(&path))?.is_dir();
        if is_dir {
            walk(root, &path, out)?;
        } else {
            out.push(path.strip_prefix(root).unwrap_or(&path).to_owned());
        }
    }
    Ok(())
}

/// A scratch git repository for tests, with a shell in it.
#[cfg(test)]
pub(crate) mod scratch {
    use std::path::Path;

    use xshell::{Shell, cmd};

    /// `git` in `dir`, with an identity of its own; its output.
    pub(crate) fn git(dir: &Path, args: &[&str]) -> String {
        let out = std::process::Command::new("git")
            .args(["-c", "user.name=test", "-c", "user.email=test@example.invalid", "-c", "protocol.file.allow=always"])
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    /// A shell in `dir`.
    pub(crate) fn shell(dir: &Path) -> Shell {
        let sh = Shell::new().unwrap();
        sh.change_dir(dir);
        sh
    }

    pub(crate) struct Repo {
        pub(crate) dir: tempfile::TempDir,
        pub(crate) sh: Shell,
    }

    impl Repo {
        pub(crate) fn new() -> Repo {
            let dir = tempfile::tempdir().unwrap();
            let sh = Shell::new().unwrap();
            sh.change_dir(dir.path());
            let repo = Repo { dir, sh };
            repo.git(&["init", "-q", "-b", "main"]);
            repo
        }

        /// `git` with a fixed identity and date; its output, trimmed.
        pub(crate) fn git(&self, args: &[&str]) -> String {
            let sh = &self.sh;
            let _env = [
                sh.push_env("GIT_AUTHOR_DATE", "2026-01-01T00:00:00Z"),
                sh.push_env("GIT_COMMITTER_DATE", "2026-01-01T00:00:00Z"),
            ];
            cmd!(sh, "git -c user.name=t -c user.email=t@example.invalid -c protocol.file.allow=always {args...}")
                .quiet()
                .read()
                .unwrap()
        }

        pub(crate) fn write(&self, rel: &str, text: &str) {
            let path = self.dir.path().join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }

        /// Commits everything; the new commit's id.
        pub(crate) fn commit(&self, message: &str) -> String {
            self.git(&["add", "-A"]);
            self.git(&["commit", "-q", "--allow-empty", "-m", message]);
            self.git(&["rev-parse", "HEAD"])
        }

        pub(crate) fn path(&self) -> &Path {
            self.dir.path()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::scratch::{Repo, git, shell};
    use super::*;

    #[test]
    fn commits_ancestry_and_ranges() {
        let r = Repo::new();
        assert!(is_checkout(&r.sh));
        assert_eq!(commit_of(&r.sh, "HEAD"), None, "no commit yet");
        let a = r.commit("a");
        assert_eq!(commit_of(&r.sh, "HEAD").as_deref(), Some(a.as_str()));
        assert_eq!(commit_of(&r.sh, "main").as_deref(), Some(a.as_str()));
        assert_eq!(commit_of(&r.sh, "no-such-ref"), None);
        assert_eq!(commit_of(&r.sh, "--all"), None, "an option is no name");
        r.git(&["checkout", "-q", "-b", "side"]);
        r.write("side.toml", "x = 1\n");
        let b = r.commit("b");
        r.git(&["checkout", "-q", "main"]);
        let c = r.commit("c");
        r.git(&["merge", "-q", "--no-ff", "side", "-m", "merge"]);
        let m = commit_of(&r.sh, "HEAD").unwrap();
        assert!(is_ancestor(&r.sh, &a, &m) && is_ancestor(&r.sh, &b, &m) && is_ancestor(&r.sh, &m, &m));
        assert!(!is_ancestor(&r.sh, &m, &a) && !is_ancestor(&r.sh, &b, &c));
        assert_eq!(merge_base(&r.sh, &b, &c).as_deref(), Some(a.as_str()));
        let all = range(&r.sh, None, "HEAD").unwrap();
        assert_eq!(all.first(), Some(&(a.clone(), vec![])));
        assert_eq!(all.last(), Some(&(m.clone(), vec![c.clone(), b.clone()])));
        assert_eq!(all.len(), 4);
        let since = range(&r.sh, Some(&a), "HEAD").unwrap();
        let ids: Vec<&str> = since.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(ids.len(), 3);
        assert_eq!(ids.last(), Some(&m.as_str()));
        assert!(ids.contains(&b.as_str()) && ids.contains(&c.as_str()));
        // The merge brings side.toml in relative to c: it touches it.
        let changed = touching(&r.sh, Some(&a), "HEAD", &["side.toml".to_owned()]).unwrap();
        assert_eq!(changed, [b.clone(), m.clone()].into_iter().collect());
        assert!(touching(&r.sh, Some(&a), "HEAD", &["other/".to_owned()]).unwrap().is_empty());
        assert_eq!(
            touching(&r.sh, None, "HEAD", &["side.toml".to_owned()]).unwrap(),
            [b, m.clone()].into_iter().collect()
        );
        assert!(range(&r.sh, Some("no-such-ref"), "HEAD").is_err());
        assert!(shallow_commits(&r.sh).unwrap().is_empty());
        // A list that cannot be read is an error, never "not shallow".
        std::fs::create_dir(r.path().join(".git/shallow")).unwrap();
        assert!(shallow_commits(&r.sh).is_err());
        std::fs::remove_dir(r.path().join(".git/shallow")).unwrap();
        // A shallow clone lists where it was cut.
        let clone = tempfile::tempdir().unwrap();
        let url = format!("file://{}", r.path().display());
        let to = clone.path().join("c");
        let to = to.to_str().unwrap();
        r.git(&["clone", "-q", "--depth", "1", &url, to]);
        let sh = Shell::new().unwrap();
        sh.change_dir(to);
        assert_eq!(shallow_commits(&sh).unwrap(), [m].into_iter().collect());
    }

    #[test]
    fn the_toml_files_directly_in_folders() {
        let r = Repo::new();
        r.write("conf/prod.toml", "a = 1\n");
        r.write("conf/notes.txt", "x\n");
        r.write("conf/deeper/other.toml", "b = 1\n");
        r.write("else/x.toml", "c = 1\n");
        r.write("we*ird/y.toml", "d = 1\n");
        std::os::unix::fs::symlink("prod.toml", r.path().join("conf/link.toml")).unwrap();
        let c = r.commit("files");
        let found = toml_files_in(&r.sh, &c, &[PathBuf::from("conf"), PathBuf::from("we*ird")]).unwrap();
        let paths: Vec<&str> = found.iter().map(|(p, _)| p.to_str().unwrap()).collect();
        assert_eq!(paths, ["conf/prod.toml", "we*ird/y.toml"]);
        assert_eq!(found[0].1.len(), 40);
        assert!(toml_files_in(&r.sh, &c, &[]).unwrap().is_empty());
        let read = read_objects(&r.sh, &[found[0].1.clone(), format!("{c}:./conf/prod.toml"), format!("{c}:./none")]);
        assert_eq!(read.unwrap(), [Some(b"a = 1\n".to_vec()), Some(b"a = 1\n".to_vec()), None]);
        assert!(read_objects(&r.sh, &[]).unwrap().is_empty());
    }

    #[test]
    fn batch_output_is_split_by_its_sizes() {
        let out = b"aa blob 3\nx\ny\nbb missing\ncc blob 0\n\ndd tree 2\n\n\n\nee ambiguous\nff commit 3\nx\ny\n";
        assert_eq!(
            batch_contents(out),
            vec![Some(b"x\ny".to_vec()), None, Some(Vec::new()), Some(b"\n\n".to_vec()), None, Some(b"x\ny".to_vec())]
        );
        assert!(batch_contents(b"").is_empty());
    }

    #[test]
    fn tracked_files_are_what_git_would_commit() {
        let tree = tempfile::tempdir().unwrap();
        let root = tree.path();
        git(root, &["init", "-q"]);
        std::fs::write(root.join("committed"), "x").unwrap();
        std::fs::write(root.join(".gitignore"), "ignored\n").unwrap();
        std::fs::write(root.join("ignored"), "x").unwrap();
        std::fs::write(root.join("new"), "x").unwrap();
        std::fs::write(root.join("gone"), "x").unwrap();
        std::os::unix::fs::symlink("/etc", root.join("link")).unwrap();
        git(root, &["add", "committed", "gone"]);
        git(root, &["commit", "-qm", "first"]);
        std::fs::remove_file(root.join("gone")).unwrap();
        // Repositories of their own: a submodule, and one `git add` would record as one.
        let other = tempfile::tempdir().unwrap();
        git(other.path(), &["init", "-q"]);
        std::fs::write(other.path().join("file"), "x").unwrap();
        git(other.path(), &["add", "file"]);
        git(other.path(), &["commit", "-qm", "other"]);
        git(root, &["submodule", "add", "-q", other.path().to_str().unwrap(), "sub"]);
        std::fs::create_dir(root.join("nested")).unwrap();
        git(&root.join("nested"), &["init", "-q"]);
        std::fs::write(root.join("nested/file"), "x").unwrap();

        let files = tracked_files(&shell(root), root).unwrap();
        let expect = [".gitignore", ".gitmodules", "committed", "gone", "link", "new"].map(PathBuf::from);
        assert_eq!(files, expect);
    }

    #[test]
    fn without_git_every_file_is_listed_but_build_output() {
        let tree = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let root = tree.path();
        for dir in ["a/b", "target", ".git", "a/target"] {
            std::fs::create_dir_all(root.join(dir)).unwrap();
        }
        for file in ["top", "a/b/deep", "target/out", ".git/config", "a/target/out"] {
            std::fs::write(root.join(file), "x").unwrap();
        }
        std::fs::write(outside.path().join("file"), "x").unwrap();
        // A link to a folder is listed, not entered.
        std::os::unix::fs::symlink(outside.path(), root.join("a/out")).unwrap();
        let mut files = tracked_files(&shell(root), root).unwrap();
        files.sort();
        assert_eq!(files, ["a/b/deep", "a/out", "top"].map(PathBuf::from));
    }
}
