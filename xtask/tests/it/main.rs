//! CLI tests of the secret commands: each runs the real `xtask` binary in a
//! scratch git repository with its own key folder.

// Helpers outside `#[test]` functions too: a panic is the failure report we want.
#![allow(clippy::unwrap_used, clippy::expect_used)]

// The tests run the engine commands through the xtask binary cargo builds
// for them: built without them, it would hand each over to a build of its own,
// which waits for the lock this `cargo test` holds.
#[cfg(not(feature = "engine"))]
compile_error!(
    "xtask's tests drive its engine commands: run them with `--features xtask/engine` (`cargo xtask test` does)"
);

mod approval;
mod browser;
mod browser_selftest;
mod builds;
mod cluster;
mod contract;
mod demo;
mod deploy;
mod dev;
mod image;
mod kubernetes;
mod multinode;
mod secrets;
mod ship;
mod support;
mod tidy;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// A scratch project: a git work tree with `deploy-config/`, a key folder
/// outside it, and a bare repository that [`Repo::publish`] makes its origin.
pub(crate) struct Repo {
    pub(crate) root: tempfile::TempDir,
    pub(crate) keys: tempfile::TempDir,
    pub(crate) origin: tempfile::TempDir,
}

/// What a command did.
pub(crate) struct Run {
    pub(crate) code: i32,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl Run {
    pub(crate) fn ok(self) -> Run {
        assert_eq!(self.code, 0, "expected success\nstdout:\n{}\nstderr:\n{}", self.stdout, self.stderr);
        self
    }

    pub(crate) fn fails(self) -> Run {
        assert_ne!(self.code, 0, "expected failure\nstdout:\n{}\nstderr:\n{}", self.stdout, self.stderr);
        self
    }

    pub(crate) fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }

    /// The rest of the first stdout line that starts with `name` (the
    /// commands' `name       value` tables), trimmed.
    pub(crate) fn field(&self, name: &str) -> &str {
        self.stdout
            .lines()
            .find_map(|l| l.strip_prefix(name).map(str::trim))
            .unwrap_or_else(|| panic!("no `{name}` line in:\n{}\n{}", self.stdout, self.stderr))
    }

    /// Seconds in a deploy's `healthy    after 12.3 s` line.
    pub(crate) fn healthy_after(&self) -> f64 {
        self.field("healthy").trim_start_matches("after").trim().trim_end_matches(" s").parse().unwrap()
    }
}

impl Repo {
    pub(crate) fn new() -> Repo {
        let root = tempfile::tempdir().unwrap();
        let keys = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("deploy-config")).unwrap();
        let git = Command::new("git").args(["init", "-q"]).current_dir(root.path()).status().unwrap();
        assert!(git.success());
        Repo { root, keys, origin: tempfile::tempdir().unwrap() }
    }

    /// Pushes HEAD to the origin's `main` and makes it `origin/HEAD`: what is
    /// merged, and what `check` trusts by default.
    pub(crate) fn publish(&self) {
        publish(self.root.path(), self.origin.path());
    }

    /// `git add -A` and a commit.
    pub(crate) fn commit(&self, message: &str) {
        git(self.root.path(), &["add", "-A"]);
        git(self.root.path(), &["commit", "-qm", message]);
    }

    pub(crate) fn path(&self, rel: &str) -> PathBuf {
        self.root.path().join(rel)
    }

    pub(crate) fn env_file(&self, env: &str) -> PathBuf {
        self.path(&format!("deploy-config/{env}.toml"))
    }

    pub(crate) fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.path(rel)).unwrap()
    }

    /// The one key file for `env` in the key folder.
    pub(crate) fn key_files(&self, env: &str) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = std::fs::read_dir(self.keys.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.file_name().unwrap().to_str().unwrap().starts_with(&format!("{env}-")))
            .collect();
        out.sort();
        out
    }

    pub(crate) fn key_file(&self, env: &str) -> PathBuf {
        let files = self.key_files(env);
        assert_eq!(files.len(), 1, "{files:?}");
        files.into_iter().next().unwrap()
    }

    pub(crate) fn cmd(&self, args: &[&str]) -> Command {
        xtask(self.root.path(), self.keys.path(), args)
    }

    pub(crate) fn run(&self, args: &[&str]) -> Run {
        self.run_cmd(self.cmd(args), b"")
    }

    pub(crate) fn run_stdin(&self, args: &[&str], stdin: &[u8]) -> Run {
        self.run_cmd(self.cmd(args), stdin)
    }

    pub(crate) fn run_cmd(&self, mut cmd: Command, stdin: &[u8]) -> Run {
        Repo::run_with(&mut cmd, stdin)
    }

    /// Runs `cmd` with `stdin`, capturing its output.
    pub(crate) fn run_with(cmd: &mut Command, stdin: &[u8]) -> Run {
        let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        // Written from a thread, so a child that fills its output pipes first
        // cannot deadlock us; a child that exits without reading (bad
        // arguments) gives a broken pipe, which is fine.
        let mut pipe = child.stdin.take().unwrap();
        let input = stdin.to_vec();
        let writer = std::thread::spawn(move || match pipe.write_all(&input) {
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => panic!("writing stdin: {e}"),
            _ => {}
        });
        let Output { status, stdout, stderr } = child.wait_with_output().unwrap();
        writer.join().unwrap();
        Run {
            code: status.code().unwrap_or(-1),
            stdout: String::from_utf8(stdout).unwrap(),
            stderr: String::from_utf8(stderr).unwrap(),
        }
    }

    /// keygen + one sealed value per `(name, value)`.
    pub(crate) fn env_with(&self, env: &str, secrets: &[(&str, &str)]) {
        self.run(&["keygen", "--env", env]).ok();
        for (name, value) in secrets {
            self.run_stdin(&["encrypt-secret", "--env", env, name], value.as_bytes()).ok();
        }
        self.run(&["approve", "--env", env, "--yes"]).ok();
    }
}

/// The built xtask, pointed at a project root and a key folder, with no key
/// in its environment.
pub(crate) fn xtask(root: &Path, keys: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_xtask"));
    cmd.args(args)
        .current_dir(root)
        .env("BOXCAR_PROJECT_ROOT", root)
        .env("BOXCAR_KEY_DIR", keys)
        // A scratch copy builds on this checkout's target volume, not one of
        // its own (a new one for every copy, each compiled cold).
        .env("BOXCAR_TARGET_VOLUME", shared_target_volume())
        .env_remove("SECRET_KEY")
        .env_remove("SECRET_KEY_FILE");
    cmd
}

/// The target volume the tests' builds share: this checkout's.
pub(crate) fn shared_target_volume() -> String {
    boxcar::ops::build::target::target_volume(&project_root())
}

pub(crate) fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Pushes `root`'s HEAD to the bare repository `origin` (made on first use)
/// as `main`, and makes that `origin/HEAD`.
pub(crate) fn publish(root: &Path, origin: &Path) {
    if !origin.join("HEAD").exists() {
        std::fs::create_dir_all(origin).unwrap();
        git(origin, &["init", "-q", "--bare"]);
        git(origin, &["symbolic-ref", "HEAD", "refs/heads/main"]);
        git(root, &["remote", "add", "origin", origin.to_str().unwrap()]);
    }
    git(root, &["push", "-q", "--force", "origin", "HEAD:refs/heads/main"]);
    git(root, &["fetch", "-q", "origin"]);
    git(root, &["remote", "set-head", "origin", "main"]);
}

/// A copy of the working tree (tracked and new files) committed in a scratch
/// repository, with a test environment whose key is made now.
pub(crate) struct Checkout {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) keys: tempfile::TempDir,
    pub(crate) env: String,
    pub(crate) origin: tempfile::TempDir,
}

pub(crate) fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_owned()
}

pub(crate) fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_DATE", "2026-01-01T00:00:00Z")
        .env("GIT_COMMITTER_DATE", "2026-01-01T00:00:00Z")
        .env("GIT_AUTHOR_NAME", "test")
        .env("GIT_AUTHOR_EMAIL", "test@example.invalid")
        .env("GIT_COMMITTER_NAME", "test")
        .env("GIT_COMMITTER_EMAIL", "test@example.invalid")
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

impl Checkout {
    /// `env` gets a key, one sealed value per `secrets` entry, then `settings`
    /// (plain TOML appended to the file); everything is committed.
    pub(crate) fn new(env: &str, secrets: &[(&str, &str)], settings: &str) -> Checkout {
        let c = Checkout::plain(env);
        c.run(&["keygen", "--env", env]).ok();
        for (name, value) in secrets {
            c.seal(name, value);
        }
        let env_file = c.env_file();
        let text = std::fs::read_to_string(&env_file).unwrap();
        std::fs::write(&env_file, format!("{text}{settings}")).unwrap();
        c.approve(env);
        c.commit();
        c.publish();
        c
    }

    /// The copy alone, committed, with `env` as its environment's name.
    pub(crate) fn plain(env: &str) -> Checkout {
        let root = project_root();
        let dir = tempfile::tempdir().unwrap();
        let list = git(&root, &["ls-files", "-z", "--cached", "--others", "--exclude-standard"]);
        for rel in list.split('\0').filter(|s| !s.is_empty()) {
            let from = root.join(rel);
            if !from.is_file() {
                continue;
            }
            let to = dir.path().join(rel);
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            std::fs::copy(&from, &to).unwrap();
        }
        git(dir.path(), &["init", "-q"]);
        let keys = tempfile::tempdir().unwrap();
        let c = Checkout { dir, keys, env: env.to_owned(), origin: tempfile::tempdir().unwrap() };
        c.commit();
        c.publish();
        c
    }

    pub(crate) fn env_file(&self) -> PathBuf {
        self.dir.path().join(format!("deploy-config/{}.toml", self.env))
    }

    pub(crate) fn commit(&self) {
        git(self.dir.path(), &["add", "-A"]);
        git(self.dir.path(), &["commit", "-qm", "scratch"]);
    }

    /// Pushes HEAD to the checkout's origin and makes it `origin/HEAD`.
    pub(crate) fn publish(&self) {
        publish(self.dir.path(), self.origin.path());
    }

    /// `approve --yes` for `env`: what a key holder does after a change.
    pub(crate) fn approve(&self, env: &str) {
        self.run(&["approve", "--env", env, "--yes"]).ok();
    }

    /// `approve --yes` for `service`'s environment `env`.
    pub(crate) fn approve_service(&self, service: &str, env: &str) {
        self.run(&["approve", "--service", service, "--env", env, "--yes"]).ok();
    }

    pub(crate) fn seal(&self, name: &str, value: &str) {
        let mut cmd = self.cmd(&["encrypt-secret", "--env", &self.env, name]);
        Repo::run_with(&mut cmd, value.as_bytes()).ok();
    }

    pub(crate) fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = xtask(self.dir.path(), self.keys.path(), args);
        // `check` and `manifests` build the app on the host to ask it: one
        // target folder for every scratch checkout, so that happens once.
        cmd.env("CARGO_TARGET_DIR", project_root().join("target/scratch"));
        cmd
    }

    pub(crate) fn run(&self, args: &[&str]) -> Run {
        Repo::run_with(&mut self.cmd(args), b"")
    }

    /// The newest key file of the checkout's environment (after a rotation there are two).
    pub(crate) fn key_file(&self) -> PathBuf {
        self.key_file_of(&self.env)
    }

    /// The newest key file of `env`.
    pub(crate) fn key_file_of(&self, env: &str) -> PathBuf {
        let mut files: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(self.keys.path())
            .unwrap()
            .map(|e| e.unwrap())
            .filter(|e| e.file_name().to_string_lossy().starts_with(&format!("{env}-")))
            .map(|e| (e.metadata().unwrap().modified().unwrap(), e.path()))
            .collect();
        files.sort();
        files.pop().unwrap().1
    }

    /// `hello-api`'s environment `hello` with `api_key` sealed and approved,
    /// committed.
    pub(crate) fn hello(&self, api_key: &str) {
        self.run(&["keygen", "--service", "hello-api", "--env", "hello"]).ok();
        let mut seal = self.cmd(&["encrypt-secret", "--service", "hello-api", "--env", "hello", "api_key"]);
        Repo::run_with(&mut seal, api_key.as_bytes()).ok();
        self.approve_service("hello-api", "hello");
        self.commit();
        self.publish();
    }

    pub(crate) fn head(&self) -> String {
        git(self.dir.path(), &["rev-parse", "HEAD"]).trim().to_owned()
    }
}
