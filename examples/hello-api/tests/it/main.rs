//! `hello-api` as its users run it: a sealed environment made at test time,
//! the real binary on 127.0.0.1, and plain HTTP requests.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use boxcar_secrets::SecretKey;

const API_KEY: &str = "hello-test-api-key-0123456789";

struct Env {
    dir: tempfile::TempDir,
    key_file: std::path::PathBuf,
}

fn env(secrets: &[(&str, &str)]) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let key = SecretKey::generate();
    let mut text = format!("public_key = \"{}\"\n[secrets]\n", key.public_key().to_base64());
    for (name, value) in secrets {
        text.push_str(&format!(
            "{name} = \"{}\"\n",
            boxcar_secrets::seal(key.public_key(), "test", name, value.as_bytes()).unwrap()
        ));
    }
    let path = dir.path().join("test.toml");
    std::fs::write(&path, boxcar_secrets::approved_text(&path, &text, &key).unwrap()).unwrap();
    let keys = tempfile::tempdir().unwrap().keep();
    let key_file = keys.join("test.key");
    boxcar_secrets::write_key_file(&key_file, &key).unwrap();
    Env { dir, key_file }
}

fn command(env: &Env, port: u16) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hello-api"));
    cmd.env_clear()
        .env("SECRET_KEY_FILE", &env.key_file)
        .env("HELLO_CONFIG_DIR", env.dir.path())
        .env("PORT", port.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `(status, body)` of a GET on 127.0.0.1.
fn get(port: u16, path: &str, auth: Option<&str>) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    let auth = auth.map(|a| format!("Authorization: {a}\r\n")).unwrap_or_default();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n{auth}\r\n").ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    let status = text.get(9..12)?.parse().ok()?;
    Some((status, text.split_once("\r\n\r\n")?.1.to_owned()))
}

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_bearer_of_the_sealed_key_is_greeted_and_no_one_else() {
    let env = env(&[("api_key", API_KEY)]);
    let port = free_port();
    let _app = Running(command(&env, port).spawn().unwrap());
    let deadline = Instant::now() + Duration::from_secs(20);
    while get(port, "/healthz", None).is_none() {
        assert!(Instant::now() < deadline, "hello-api never answered");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(get(port, "/healthz", None).unwrap(), (200, "ok\n".to_owned()));
    assert_eq!(
        get(port, "/hello", Some(&format!("Bearer {API_KEY}"))).unwrap(),
        (200, "hello from `test`\n".to_owned())
    );
    for wrong in [None, Some("Bearer nope".to_owned()), Some(format!("Bearer {API_KEY}x")), Some(API_KEY.to_owned())] {
        let (status, body) = get(port, "/hello", wrong.as_deref()).unwrap();
        assert_eq!(status, 401, "{wrong:?}");
        assert!(!body.contains(API_KEY));
    }
}

#[test]
fn refuses_to_start_without_its_key_or_its_secret() {
    let run = |mut cmd: Command| {
        let out = cmd.output().unwrap();
        (out.status.code(), String::from_utf8(out.stderr).unwrap())
    };
    let env_ok = env(&[("api_key", API_KEY)]);
    let mut no_key = command(&env_ok, free_port());
    no_key.env_remove("SECRET_KEY_FILE");
    let (code, err) = run(no_key);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("no secret key"), "{err}");

    let missing = env(&[("other", "x")]);
    let (code, err) = run(command(&missing, free_port()));
    assert_eq!(code, Some(4), "{err}");
    assert!(err.contains("no sealed `api_key`"), "{err}");

    let mut wrong_key = command(&env_ok, free_port());
    wrong_key.env("SECRET_KEY_FILE", &missing.key_file);
    let (code, err) = run(wrong_key);
    assert_eq!(code, Some(3), "{err}");
    assert!(!err.contains(API_KEY));
}
