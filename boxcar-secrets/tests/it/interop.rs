//! Interoperability with libsodium: `tests/python/pynacl_interop.py` implements
//! docs/FORMAT.md with PyNaCl; values it seals must open here, values sealed here
//! must open there, and it must agree with the committed vectors.
//!
//! These tests need Python with PyNaCl and fail, rather than skip, without it:
//! a skipped interop test would let the format drift unnoticed.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use boxcar_secrets::{EnvFile, Error, MAX_VALUE_LEN, OpenError, SealedValue, SecretKey, SecretProblem};
use zeroize::Zeroizing;

use crate::{from_hex, to_hex, vectors_path, workspace_root};

/// The interpreter: `BOXCAR_PYTHON`, else the venv `cargo xtask test` creates.
fn python() -> &'static PathBuf {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let fix = "run `cargo xtask test` (it creates target/venv with PyNaCl) \
                   or set BOXCAR_PYTHON to a Python 3.11+ interpreter that can `import nacl`";
        let python = match std::env::var_os("BOXCAR_PYTHON") {
            Some(p) => PathBuf::from(p),
            None => workspace_root().join("target/venv/bin/python"),
        };
        if !python.exists() {
            panic!("no Python interpreter at {}; {fix}", python.display());
        }
        let status = Command::new(&python)
            .args(["-c", "import nacl.public, tomllib"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}; {fix}", python.display()));
        assert!(status.success(), "{} cannot import nacl (PyNaCl) and tomllib; {fix}", python.display());
        python
    })
}

fn script(name: &str) -> PathBuf {
    workspace_root().join("tests/python").join(name)
}

/// Runs a script with `stdin` (which may hold a secret key: never argv) and returns
/// its exit status and standard output, standard error included in panics.
fn run(args: &[&str], stdin: &str) -> (bool, String, String) {
    let mut child = Command::new(python())
        .args(args)
        .current_dir(workspace_root())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("running {}: {e}", python().display()));
    child.stdin.take().expect("piped").write_all(stdin.as_bytes()).expect("writing the request");
    let out = child.wait_with_output().expect("waiting for python");
    let stdout = String::from_utf8(out.stdout).expect("utf-8 output");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.success(), stdout, stderr)
}

fn run_ok(args: &[&str], stdin: &str) -> String {
    let (ok, stdout, stderr) = run(args, stdin);
    assert!(ok, "{args:?} failed:\n{stderr}\n{stdout}");
    stdout
}

fn str_value(s: &str) -> toml::Value {
    toml::Value::String(s.to_owned())
}

/// Values worth carrying across: empty, a trailing newline that must survive,
/// text, every byte, and the largest value allowed.
fn samples() -> Vec<(String, Vec<u8>)> {
    let largest: Vec<u8> = (0..MAX_VALUE_LEN).map(|i| (i * 7 % 251) as u8).collect();
    vec![
        ("empty".to_owned(), Vec::new()),
        ("telegram_token".to_owned(), b"123456789:AAFake-interop_token".to_vec()),
        ("with_newline".to_owned(), b"hunter2\n".to_vec()),
        ("utf8".to_owned(), "Grüße 🔑".as_bytes().to_vec()),
        ("every_byte".to_owned(), (0..=255u8).collect()),
        ("largest".to_owned(), largest),
        ("n".repeat(64), b"longest name".to_vec()),
    ]
}

#[test]
fn rust_opens_what_pynacl_seals() {
    let key = SecretKey::generate();
    let env = "interop-env_1";
    let samples = samples();
    let mut request = toml::Table::new();
    request.insert("env".to_owned(), str_value(env));
    request.insert("public_key".to_owned(), str_value(&key.public_key().to_base64()));
    let items = samples
        .iter()
        .map(|(name, value)| {
            let mut item = toml::Table::new();
            item.insert("name".to_owned(), str_value(name));
            item.insert("value_hex".to_owned(), str_value(&to_hex(value)));
            toml::Value::Table(item)
        })
        .collect();
    request.insert("item".to_owned(), toml::Value::Array(items));
    let file_text = run_ok(
        &[script("pynacl_interop.py").to_str().expect("utf-8 path"), "seal"],
        &toml::to_string(&request).expect("toml"),
    );

    // Load it from disk, as a program would.
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join(format!("{env}.toml"));
    std::fs::write(&path, &file_text).expect("writing the env file");
    let file = EnvFile::load(&path).unwrap_or_else(|e| panic!("{e}\n{file_text}"));
    assert_eq!(file.env(), env);
    assert_eq!(file.table()["settings"]["sealed_by"].as_str(), Some("pynacl"));
    assert!(file.problems().is_empty(), "{:?}", file.problems());
    let secrets = file.open_all(&key).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(secrets.len(), samples.len());
    for (name, value) in &samples {
        let opened = secrets.get(name).unwrap_or_else(|| panic!("{name} missing"));
        assert!(opened.expose_bytes() == value.as_slice(), "{name}: opened to other bytes");
    }
    // PyNaCl's base64 is the canonical form this library writes.
    for (name, raw) in file.table()["secrets"].as_table().expect("secrets table") {
        let text = raw.as_str().expect("string");
        assert_eq!(SealedValue::parse(text).expect("parses").to_string(), text, "{name}");
    }
}

#[test]
fn rust_refuses_malformed_frames_sealed_by_pynacl() {
    // Frames the library cannot make, sealed by libsodium: over the size limit, a
    // future inner version, and a name that differs only in case.
    let key = SecretKey::generate();
    let env = "interop";
    let frame = |version: u8, name: &str, value_len: usize| {
        let mut f = vec![version, env.len() as u8];
        f.extend_from_slice(env.as_bytes());
        f.push(name.len() as u8);
        f.extend_from_slice(name.as_bytes());
        f.extend(std::iter::repeat_n(b'x', value_len));
        f
    };
    let cases = [
        ("too_long", frame(1, "too_long", MAX_VALUE_LEN + 1), "OpenError::Frame"),
        ("future", frame(2, "future", 3), "OpenError::Frame"),
        ("upper", frame(1, "UPPER", 3), "OpenError::Frame"),
        ("at_limit", frame(1, "at_limit", MAX_VALUE_LEN), "ok"),
    ];
    let mut request = toml::Table::new();
    request.insert("env".to_owned(), str_value(env));
    request.insert("public_key".to_owned(), str_value(&key.public_key().to_base64()));
    let items = cases
        .iter()
        .map(|(name, frame, _)| {
            let mut item = toml::Table::new();
            item.insert("name".to_owned(), str_value(name));
            item.insert("frame_hex".to_owned(), str_value(&to_hex(frame)));
            toml::Value::Table(item)
        })
        .collect();
    request.insert("item".to_owned(), toml::Value::Array(items));
    let file_text = run_ok(
        &[script("pynacl_interop.py").to_str().expect("utf-8 path"), "seal"],
        &toml::to_string(&request).expect("toml"),
    );
    let file = EnvFile::parse(format!("{env}.toml").as_ref(), &file_text).unwrap_or_else(|e| panic!("{e}"));
    let secrets = file.table()["secrets"].as_table().expect("secrets table");
    for (name, _, expected) in &cases {
        let sealed = SealedValue::parse(secrets[*name].as_str().expect("string")).expect("parses");
        match (sealed.open(&key, env, name), *expected) {
            (Ok(v), "ok") => assert_eq!(v.len(), MAX_VALUE_LEN),
            (Err(OpenError::Frame { .. }), "OpenError::Frame") => {}
            (other, _) => panic!("{name}: expected {expected}, got {:?}", other.map(|v| v.len())),
        }
    }
    // In a file, all three fail together and nothing is returned.
    let Err(Error::Secrets { failures, .. }) = file.open_all(&key) else { panic!("the file opened") };
    let names: Vec<&str> = failures.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["future", "too_long", "upper"]);
    assert!(failures.iter().all(|f| matches!(f.problem, SecretProblem::Open(OpenError::Frame { .. }))));
}

#[test]
fn pynacl_opens_what_rust_seals() {
    let key = SecretKey::generate();
    let env = "staging";
    let samples = samples();
    let mut items = Vec::new();
    for (name, value) in &samples {
        let sealed = boxcar_secrets::seal(key.public_key(), env, name, value).expect("seal");
        let mut item = toml::Table::new();
        item.insert("name".to_owned(), str_value(name));
        item.insert("sealed".to_owned(), str_value(&sealed.to_string()));
        item.insert("value_hex".to_owned(), str_value(&to_hex(value)));
        items.push(toml::Value::Table(item));
    }
    let mut rest = toml::Table::new();
    rest.insert("env".to_owned(), str_value(env));
    rest.insert("item".to_owned(), toml::Value::Array(items));
    // The secret key goes to Python on stdin only, in a buffer wiped afterwards.
    let mut request = Zeroizing::new(String::new());
    request.push_str("secret_key = \"");
    request.push_str(&key.to_base64());
    request.push_str("\"\n");
    request.push_str(&toml::to_string(&rest).expect("toml"));
    let out = run_ok(&[script("pynacl_interop.py").to_str().expect("utf-8 path"), "open"], &request);

    let report: toml::Table = out.parse().unwrap_or_else(|e| panic!("{e}\n{out}"));
    let opened = report["opened"].as_array().expect("[[opened]]");
    assert_eq!(opened.len(), samples.len());
    for ((name, value), o) in samples.iter().zip(opened) {
        assert_eq!(o["name"].as_str(), Some(name.as_str()));
        assert_eq!(o["env"].as_str(), Some(env));
        assert_eq!(o["key_id"].as_str(), Some(key.key_id().to_string().as_str()));
        assert_eq!(o["frame_version"].as_integer(), Some(1));
        assert!(from_hex(o["value_hex"].as_str().expect("hex")) == *value, "{name}: other bytes");
    }
}

#[test]
fn pynacl_refuses_what_it_should() {
    // The Python reader is a second implementation of the checks, not only of the
    // happy path: a value sealed for another name must fail there too.
    let key = SecretKey::generate();
    let sealed = boxcar_secrets::seal(key.public_key(), "production", "api_key", b"v").expect("seal");
    let mut request = Zeroizing::new(format!("secret_key = \"{}\"\n", key.to_base64().as_str()));
    request.push_str(&format!(
        "env = \"production\"\n[[item]]\nname = \"db_password\"\nsealed = \"{sealed}\"\nvalue_hex = \"76\"\n"
    ));
    let (ok, _, stderr) = run(&[script("pynacl_interop.py").to_str().expect("utf-8 path"), "open"], &request);
    assert!(!ok, "python opened a value under another name");
    assert!(stderr.contains("OpenError::Context"), "{stderr}");
}

#[test]
fn pynacl_agrees_with_the_committed_vectors() {
    let path = vectors_path();
    let out = run_ok(
        &[
            script("pynacl_interop.py").to_str().expect("utf-8 path"),
            "check-vectors",
            path.to_str().expect("utf-8 path"),
        ],
        "",
    );
    let line = out.lines().last().unwrap_or_default();
    let (agree, total) = line.split_once(" of ").expect("`N of M vectors agree`");
    assert_eq!(agree, total.trim_end_matches(" vectors agree"), "{out}");
}

#[test]
fn committed_vectors_are_what_the_generator_writes() {
    let (ok, stdout, stderr) = run(&[script("make_vectors.py").to_str().expect("utf-8 path"), "--check"], "");
    assert!(
        ok,
        "boxcar-secrets/vectors/v1.toml differs from what tests/python/make_vectors.py writes; \
         regenerate it with `target/venv/bin/python tests/python/make_vectors.py` and review the diff\n{stdout}{stderr}"
    );
}

/// Drives the two Python functions of docs/FORMAT.md: they must open every positive
/// vector, refuse every negative one, and seal values this library opens.
const SNIPPET_DRIVER: &str = r#"
import sys, tomllib
import nacl.exceptions
with open(sys.argv[1], "rb") as f:
    vectors = tomllib.load(f)
keys = {"recipient": vectors["recipient"]["secret_key"], "wrong": vectors["wrong_key"]["secret_key"]}
public_key = vectors["recipient"]["public_key"]
for v in vectors["positive"]:
    value = v["value"].encode() if "value" in v else bytes.fromhex(v["value_hex"])
    assert open_value(v["sealed"], keys["recipient"], v["env"], v["name"]) == value, v["id"]
    print(f'[[sealed]]\nenv = "{v["env"]}"\nname = "{v["name"]}"\nvalue_hex = "{value.hex()}"')
    print(f'sealed = "{seal(public_key, v["env"], v["name"], value)}"')
for v in vectors["negative"]:
    try:
        open_value(v["sealed"], keys[v["key"]], v["env"], v["name"])
    except (ValueError, nacl.exceptions.CryptoError):
        continue
    raise AssertionError(f"negative vector {v['id']} opened")
"#;

#[test]
fn format_md_python_snippets_work() {
    let doc_path = workspace_root().join("docs/FORMAT.md");
    let doc = std::fs::read_to_string(&doc_path).unwrap_or_else(|e| panic!("reading {}: {e}", doc_path.display()));
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in doc.lines() {
        match (&mut current, line) {
            (None, "```python") => current = Some(String::new()),
            (Some(block), "```") => {
                blocks.push(std::mem::take(block));
                current = None;
            }
            (Some(block), _) => {
                block.push_str(line);
                block.push('\n');
            }
            (None, _) => {}
        }
    }
    assert_eq!(blocks.len(), 2, "docs/FORMAT.md should have a sealing and an opening Python snippet");
    let program = format!("{}\n{}\n{SNIPPET_DRIVER}", blocks[0], blocks[1]);
    let path = vectors_path();
    let out = run_ok(&["-", path.to_str().expect("utf-8 path")], &program);

    let sealed: toml::Table = out.parse().unwrap_or_else(|e| panic!("{e}\n{out}"));
    let sealed = sealed["sealed"].as_array().expect("[[sealed]]");
    assert!(!sealed.is_empty());
    let vectors: toml::Table = std::fs::read_to_string(&path).expect("vectors").parse().expect("toml");
    let key = SecretKey::from_base64(vectors["recipient"]["secret_key"].as_str().expect("secret_key")).expect("key");
    for s in sealed {
        let (env, name) = (s["env"].as_str().expect("env"), s["name"].as_str().expect("name"));
        let value = SealedValue::parse(s["sealed"].as_str().expect("sealed"))
            .unwrap_or_else(|e| panic!("{env}/{name}: {e}"))
            .open(&key, env, name)
            .unwrap_or_else(|e| panic!("{env}/{name}: {e}"));
        assert!(value.expose_bytes() == from_hex(s["value_hex"].as_str().expect("hex")), "{env}/{name}: other bytes");
    }
}
