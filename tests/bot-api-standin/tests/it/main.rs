//! Integration tests of `bot-api-standin`: the program over plain
//! HTTP on 127.0.0.1, and the library's strict mode.
//!
//! A small blocking HTTP/1.1 client (`http`) keeps these tests free of an
//! HTTP client dependency; every request sends `Connection: close`.

// Helpers outside `#[test]` functions too: a panic is the failure report we want.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod ledger;
mod standin;

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

/// A `standin` process on 127.0.0.1 with a free port.
struct Running {
    child: Child,
    addr: String,
    stderr: Option<JoinHandle<String>>,
}

impl Running {
    fn start() -> Running {
        let mut child = Command::new(env!("CARGO_BIN_EXE_bot-api-standin"))
            .args(["--listen", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = stdout.read_line(&mut line);
            let _ = tx.send(line);
            // Whatever else it prints must still be read, or it would block on a full pipe.
            let _ = std::io::copy(&mut stdout, &mut std::io::sink());
        });
        let stderr = std::thread::spawn(move || {
            let mut all = String::new();
            let _ = stderr.read_to_string(&mut all);
            all
        });
        let line = rx.recv_timeout(Duration::from_secs(20)).expect("standin announces its address");
        let addr = line
            .strip_prefix("bot-api-standin listening on http://")
            .and_then(|rest| rest.strip_suffix('\n'))
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_owned();
        assert!(addr.starts_with("127.0.0.1:") && !addr.ends_with(":0"), "{addr}");
        Running { child, addr, stderr: Some(stderr) }
    }

    fn get(&self, path: &str) -> Answer {
        http(&self.addr, "GET", path, &[], b"")
    }

    fn post_form(&self, path: &str, extra: &[(&str, &str)], body: &str) -> Answer {
        let mut headers = vec![("Content-Type", "application/x-www-form-urlencoded")];
        headers.extend_from_slice(extra);
        http(&self.addr, "POST", path, &headers, body.as_bytes())
    }

    fn api(&self, token: &str, method: &str, params: &Value) -> (u16, Value) {
        api(&self.addr, token, method, params)
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill").arg(format!("-{name}")).arg(self.child.id().to_string()).status().unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit; returns its status, how long that took, and its stderr.
    fn wait(mut self, timeout: Duration) -> (ExitStatus, Duration, String) {
        let start = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(start.elapsed() < timeout, "standin still running after {timeout:?}");
            std::thread::sleep(Duration::from_millis(20));
        };
        let elapsed = start.elapsed();
        let stderr = self.stderr.take().unwrap().join().unwrap();
        (status, elapsed, stderr)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // Only when a test failed half-way: the process is still running.
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

fn http(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Answer {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    stream.write_all(request.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let raw = String::from_utf8(raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no header end in {raw:?}"));
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers =
        lines.map(|l| l.split_once(':').unwrap()).map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned())).collect();
    Answer { status, headers, body: body.to_owned() }
}

fn api(addr: &str, token: &str, method: &str, params: &Value) -> (u16, Value) {
    let answer = http(
        addr,
        "POST",
        &format!("/bot{token}/{method}"),
        &[("Content-Type", "application/json")],
        params.to_string().as_bytes(),
    );
    (answer.status, answer.json())
}
