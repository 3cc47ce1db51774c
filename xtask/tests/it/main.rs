//! CLI tests of the secret commands: each runs the real `xtask` binary in a
//! scratch git repository with its own key folder.

// Helpers outside `#[test]` functions too: a panic is the failure report we want.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod image;
mod secrets;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// A scratch project: a git work tree with `deploy-config/`, and a key folder
/// outside it.
pub(crate) struct Repo {
    pub(crate) root: tempfile::TempDir,
    pub(crate) keys: tempfile::TempDir,
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
}

impl Repo {
    pub(crate) fn new() -> Repo {
        let root = tempfile::tempdir().unwrap();
        let keys = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("deploy-config")).unwrap();
        let git = Command::new("git").args(["init", "-q"]).current_dir(root.path()).status().unwrap();
        assert!(git.success());
        Repo { root, keys }
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
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_xtask"));
        cmd.args(args)
            .current_dir(self.root.path())
            .env("BOXCAR_PROJECT_ROOT", self.root.path())
            .env("BOXCAR_KEY_DIR", self.keys.path())
            .env_remove("SECRET_KEY")
            .env_remove("SECRET_KEY_FILE");
        cmd
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
    }
}

pub(crate) fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}
