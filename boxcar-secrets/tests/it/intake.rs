//! Taking the secret key from the environment.
//!
//! `take_from_env` changes the process environment, which is only sound while one
//! thread runs, and refuses when more run; the test harness runs every test on a
//! thread of its own. So each test runs this test binary again as a child with a
//! marker variable set, and the child does the real work before the harness
//! starts (`CHILD_MAIN`, run by the loader as the process starts, with one
//! thread), prints the harness's own closing line and exits; the parent checks
//! that the child ran and passed. The key-file content checks call
//! `read_key_file`, which touches no environment, in process.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::Command;

use boxcar_secrets::{
    IntakeError, KeyError, KeySource, SECRET_KEY, SECRET_KEY_FILE, SecretKey, proc_environ_contains, read_key_file,
    take_from_env,
};
use zeroize::Zeroizing;

/// Set in a child to the name of the test it must run for real.
const CHILD: &str = "BOXCAR_IT_INTAKE_CHILD";
/// The key id the child should find (public; the key itself travels only in the variable under test).
const EXPECT_KEY_ID: &str = "BOXCAR_IT_EXPECT_KEY_ID";

/// Whether this process is the child for `test`.
fn is_child(test: &str) -> bool {
    std::env::var_os(CHILD).is_some_and(|v| v == test)
}

/// Runs `test` again in a child process with `vars` set and the real key variables
/// removed, and asserts that it ran exactly that test and passed.
fn run_child(test: &str, vars: &[(&str, &OsStr)]) {
    let exe = std::env::current_exe().expect("current exe");
    let mut cmd = Command::new(exe);
    cmd.args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(CHILD, test)
        .env_remove(SECRET_KEY)
        .env_remove(SECRET_KEY_FILE)
        .env_remove(EXPECT_KEY_ID);
    for (k, v) in vars {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("running the child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "child for {test} failed ({}):\n{stdout}\n{stderr}", out.status);
    // A name that matches no test would "pass" with zero tests run.
    assert!(stdout.contains("test result: ok. 1 passed"), "child did not run {test}:\n{stdout}\n{stderr}");
}

/// Every child-side test, by name.
const CHILDREN: [(&str, fn()); 10] = [
    (SECRET_KEY_IS_TAKEN, secret_key_is_taken_and_scrubbed),
    (SECRET_KEY_NEWLINE, secret_key_may_end_in_one_newline),
    (NEITHER, neither_variable_gives_none),
    (BOTH, both_variables_are_refused_and_both_removed),
    (FILE_0644, key_file_others_can_read_gives_a_warning),
    (FILE_MISSING, missing_key_file_is_a_read_error),
    (FILE_DIR, unreadable_key_file_is_a_read_error),
    (FILE_BAD, key_file_with_bad_content_is_refused),
    (ENV_BAD, bad_secret_key_is_refused_and_still_scrubbed),
    (ENV_NOT_UNICODE, secret_key_that_is_not_text_is_refused),
];

/// In a child, runs its test before `main` (and the harness's threads) start,
/// then exits: 0 with the harness's closing line, or 101 if it panicked.
extern "C" fn child_main() {
    let Some(name) = std::env::var_os(CHILD) else { return };
    let Some((_, test)) = CHILDREN.iter().find(|(n, _)| name == *n) else { return };
    let passed = std::panic::catch_unwind(test).is_ok();
    if passed {
        println!("test result: ok. 1 passed; 0 failed");
    }
    std::process::exit(if passed { 0 } else { 101 });
}

// The loader runs `.init_array` entries as the process starts, before `main`,
// with one thread: the one moment the harness gives a single-threaded process.
#[allow(unsafe_code)]
#[used]
#[unsafe(link_section = ".init_array")]
static CHILD_MAIN: extern "C" fn() = child_main;

/// The entries of this process's original environment block.
fn environ_entries() -> Vec<Vec<u8>> {
    let raw = std::fs::read("/proc/self/environ").expect("reading /proc/self/environ");
    raw.split(|b| *b == 0).filter(|e| !e.is_empty()).map(<[u8]>::to_vec).collect()
}

/// In a child: what `env` (a grandchild) sees, so children are shown not to inherit the key.
fn grandchild_environment() -> String {
    let out = Command::new("env").output().expect("running env");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn key_file(dir: &Path, content: &[u8], mode: u32) -> std::path::PathBuf {
    let path = dir.join("production-0123456789abcdef.key");
    std::fs::write(&path, content).expect("writing the key file");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    path
}

/// Child side of the `SECRET_KEY` tests: the key is taken, the variable removed,
/// and its bytes gone from the process's original environment block.
fn child_takes_secret_key_and_scrubs() {
    let text = Zeroizing::new(std::env::var(SECRET_KEY).expect("the parent set SECRET_KEY"));
    let key_part = text.trim_end_matches(['\n', '\r']);
    assert!(
        proc_environ_contains(key_part.as_bytes()).expect("reading /proc/self/environ"),
        "the key should start out in the block"
    );

    let others = environ_entries().into_iter().filter(|e| !e.starts_with(b"SECRET_KEY=")).collect::<Vec<_>>();
    let intake = take_from_env().expect("intake").expect("a key");
    // Every other variable in the block is as it was: the wipe stayed inside the key's value.
    let after = environ_entries();
    for entry in &others {
        assert!(after.contains(entry), "{} was damaged", String::from_utf8_lossy(entry));
    }
    // No part of the key is left, at either end.
    for part in [&key_part[..16], &key_part[key_part.len() - 16..]] {
        assert!(!proc_environ_contains(part.as_bytes()).expect("environ"), "part of the key is still in environ");
    }
    assert_eq!(intake.key.key_id().to_string(), std::env::var(EXPECT_KEY_ID).expect("expected key id"));
    assert_eq!(intake.source, KeySource::EnvVar);
    assert!(intake.warnings.is_empty());
    assert!(std::env::var_os(SECRET_KEY).is_none(), "SECRET_KEY is still set");
    assert!(
        !proc_environ_contains(key_part.as_bytes()).expect("reading /proc/self/environ"),
        "/proc/self/environ still shows the key"
    );
    assert!(!grandchild_environment().contains(key_part), "a child process still sees the key");
    assert!(!format!("{intake:?}").contains(key_part), "Debug shows the key");
}

const SECRET_KEY_IS_TAKEN: &str = "intake::secret_key_is_taken_and_scrubbed";
#[test]
fn secret_key_is_taken_and_scrubbed() {
    if is_child(SECRET_KEY_IS_TAKEN) {
        return child_takes_secret_key_and_scrubs();
    }
    let key = SecretKey::generate();
    let id = key.key_id().to_string();
    run_child(SECRET_KEY_IS_TAKEN, &[(SECRET_KEY, key.to_base64().as_str().as_ref()), (EXPECT_KEY_ID, id.as_ref())]);
}

const SECRET_KEY_NEWLINE: &str = "intake::secret_key_may_end_in_one_newline";
#[test]
fn secret_key_may_end_in_one_newline() {
    if is_child(SECRET_KEY_NEWLINE) {
        return child_takes_secret_key_and_scrubs();
    }
    let key = SecretKey::generate();
    let id = key.key_id().to_string();
    let value = Zeroizing::new(format!("{}\n", key.to_base64().as_str()));
    run_child(SECRET_KEY_NEWLINE, &[(SECRET_KEY, value.as_str().as_ref()), (EXPECT_KEY_ID, id.as_ref())]);
}

const NEITHER: &str = "intake::neither_variable_gives_none";
#[test]
fn neither_variable_gives_none() {
    if is_child(NEITHER) {
        assert!(take_from_env().expect("no error").is_none());
        return;
    }
    run_child(NEITHER, &[]);
}

const BOTH: &str = "intake::both_variables_are_refused_and_both_removed";
#[test]
fn both_variables_are_refused_and_both_removed() {
    if is_child(BOTH) {
        let text = Zeroizing::new(std::env::var(SECRET_KEY).expect("SECRET_KEY"));
        let err = take_from_env().expect_err("both set");
        assert!(matches!(err, IntakeError::Both), "{err:?}");
        assert!(std::env::var_os(SECRET_KEY).is_none() && std::env::var_os(SECRET_KEY_FILE).is_none());
        assert!(!proc_environ_contains(text.as_bytes()).expect("environ"), "the refused key is still in environ");
        assert!(!err.to_string().contains(text.as_str()));
        return;
    }
    let key = SecretKey::generate();
    let dir = tempfile::tempdir().expect("temp dir");
    let path = key_file(dir.path(), key.to_base64().as_bytes(), 0o600);
    run_child(BOTH, &[(SECRET_KEY, key.to_base64().as_str().as_ref()), (SECRET_KEY_FILE, path.as_os_str())]);
}

const FILE_0644: &str = "intake::key_file_others_can_read_gives_a_warning";
#[test]
fn key_file_others_can_read_gives_a_warning() {
    if is_child(FILE_0644) {
        let path = std::env::var_os(SECRET_KEY_FILE).expect("SECRET_KEY_FILE");
        let intake = take_from_env().expect("intake").expect("a key");
        assert_eq!(intake.key.key_id().to_string(), std::env::var(EXPECT_KEY_ID).expect("expected key id"));
        assert_eq!(intake.source, KeySource::File(path.into()));
        assert_eq!(intake.warnings.len(), 1, "{:?}", intake.warnings);
        assert!(
            intake.warnings[0].contains("mode 0644") && intake.warnings[0].contains("chmod 600"),
            "{:?}",
            intake.warnings
        );
        assert!(std::env::var_os(SECRET_KEY_FILE).is_none(), "SECRET_KEY_FILE is still set");
        assert!(!grandchild_environment().contains("SECRET_KEY_FILE="), "a child process still sees SECRET_KEY_FILE");
        return;
    }
    let key = SecretKey::generate();
    let id = key.key_id().to_string();
    let dir = tempfile::tempdir().expect("temp dir");
    let content = Zeroizing::new(format!("{}\n", key.to_base64().as_str()));
    let path = key_file(dir.path(), content.as_bytes(), 0o644);
    run_child(FILE_0644, &[(SECRET_KEY_FILE, path.as_os_str()), (EXPECT_KEY_ID, id.as_ref())]);
}

const FILE_MISSING: &str = "intake::missing_key_file_is_a_read_error";
#[test]
fn missing_key_file_is_a_read_error() {
    if is_child(FILE_MISSING) {
        let err = take_from_env().expect_err("missing file");
        let IntakeError::ReadFile { path, origin, cause: source } = &err else { panic!("{err:?}") };
        assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        assert_eq!(*origin, SECRET_KEY_FILE);
        assert!(path.ends_with("absent.key"));
        assert!(err.to_string().contains("absent.key") && err.to_string().contains(SECRET_KEY_FILE), "{err}");
        assert!(std::env::var_os(SECRET_KEY_FILE).is_none());
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    run_child(FILE_MISSING, &[(SECRET_KEY_FILE, dir.path().join("absent.key").as_os_str())]);
}

const FILE_DIR: &str = "intake::unreadable_key_file_is_a_read_error";
#[test]
fn unreadable_key_file_is_a_read_error() {
    // A directory opens but cannot be read. (A mode-000 file would not do: these
    // tests may run as root, who reads it anyway.)
    if is_child(FILE_DIR) {
        let err = take_from_env().expect_err("a directory");
        assert!(matches!(err, IntakeError::ReadFile { .. }), "{err:?}");
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    run_child(FILE_DIR, &[(SECRET_KEY_FILE, dir.path().as_os_str())]);
}

const FILE_BAD: &str = "intake::key_file_with_bad_content_is_refused";
#[test]
fn key_file_with_bad_content_is_refused() {
    if is_child(FILE_BAD) {
        let err = take_from_env().expect_err("bad content");
        assert!(matches!(err, IntakeError::FileKey { cause: KeyError::Base64, .. }), "{err:?}");
        assert!(!err.to_string().contains("hunter2"), "{err}");
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let path = key_file(dir.path(), b"hunter2 is not a key\n", 0o600);
    run_child(FILE_BAD, &[(SECRET_KEY_FILE, path.as_os_str())]);
}

const ENV_BAD: &str = "intake::bad_secret_key_is_refused_and_still_scrubbed";
#[test]
fn bad_secret_key_is_refused_and_still_scrubbed() {
    if is_child(ENV_BAD) {
        let err = take_from_env().expect_err("bad key");
        assert!(matches!(err, IntakeError::EnvKey(KeyError::Base64)), "{err:?}");
        assert!(!err.to_string().contains("hunter2") && !format!("{err:?}").contains("hunter2"), "{err}");
        assert!(!proc_environ_contains(b"hunter2").expect("environ"), "a refused value is still in environ");
        assert!(std::env::var_os(SECRET_KEY).is_none());
        return;
    }
    run_child(ENV_BAD, &[(SECRET_KEY, "hunter2-is-no-key".as_ref())]);
}

const ENV_NOT_UNICODE: &str = "intake::secret_key_that_is_not_text_is_refused";
#[test]
fn secret_key_that_is_not_text_is_refused() {
    if is_child(ENV_NOT_UNICODE) {
        let err = take_from_env().expect_err("not unicode");
        assert!(matches!(err, IntakeError::NotUnicode), "{err:?}");
        assert!(!proc_environ_contains(b"\xffkey\xfe").expect("environ"));
        return;
    }
    run_child(ENV_NOT_UNICODE, &[(SECRET_KEY, OsStr::from_bytes(b"\xffkey\xfe"))]);
}

#[test]
fn key_file_contents() {
    // `read_key_file` reads no environment, so its cases run in process.
    let dir = tempfile::tempdir().expect("temp dir");
    let key = SecretKey::generate();
    let b64 = key.to_base64();
    let ok = |content: &[u8]| {
        let path = key_file(dir.path(), content, 0o600);
        let intake = read_key_file(&path, "--key-file").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(intake.key.key_id(), key.key_id());
        assert!(intake.warnings.is_empty(), "{:?}", intake.warnings);
    };
    ok(b64.as_bytes());
    ok(format!("{}\n", b64.as_str()).as_bytes());
    ok(format!("{}\r\n", b64.as_str()).as_bytes());

    let refused = |content: &[u8]| {
        let path = key_file(dir.path(), content, 0o600);
        match read_key_file(&path, "--key-file") {
            Err(IntakeError::FileKey { cause, .. }) => cause,
            other => panic!("expected FileKey, got {:?}", other.map(|i| i.source)),
        }
    };
    assert_eq!(refused(b""), KeyError::Empty);
    assert_eq!(refused(b"\n"), KeyError::Empty);
    assert_eq!(refused(format!("{}\n\n", b64.as_str()).as_bytes()), KeyError::Base64);
    assert_eq!(refused(format!(" {}", b64.as_str()).as_bytes()), KeyError::Base64);
    assert_eq!(refused(b"\xff\xfe not text"), KeyError::Base64);
    assert_eq!(refused(b"AAAA"), KeyError::Length { found: 3 });
    assert!(matches!(refused(&[b'A'; 4096]), KeyError::Length { .. }));
    // A public key in the secret key's place decodes fine: it is simply another key.
    let path = key_file(dir.path(), key.public_key().to_base64().as_bytes(), 0o600);
    let other = read_key_file(&path, "--key-file").expect("32 bytes of base64");
    assert_ne!(other.key.key_id(), key.key_id());
}

/// In the test harness, with its threads, `take_from_env` refuses and leaves
/// the variables alone.
#[test]
fn refused_while_other_threads_run() {
    let other = std::thread::spawn(|| std::thread::sleep(std::time::Duration::from_millis(500)));
    let before = std::env::var_os(SECRET_KEY_FILE);
    let err = take_from_env().unwrap_err();
    assert!(matches!(err, IntakeError::Threads { count: Some(n) } if n >= 2), "{err}");
    assert!(err.to_string().starts_with("the secret key must be taken before any other thread starts"), "{err}");
    assert_eq!(std::env::var_os(SECRET_KEY_FILE), before);
    other.join().unwrap();
}
