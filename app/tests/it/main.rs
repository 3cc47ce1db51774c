//! End-to-end tests of the app binary against the Bot API stand-in: each test
//! seals a fresh environment with a key made at test time, starts the real
//! binary, and talks to it only over 127.0.0.1.

// Helpers outside `#[test]` functions too: a panic is the failure report we want.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod delivery;
mod runner;
mod startup;

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use boxcar_secrets::SecretKey;

/// A bot of a test environment.
pub(crate) struct BotSpec {
    pub(crate) name: &'static str,
    pub(crate) token: &'static str,
    pub(crate) extra: &'static str,
}

/// A sealed environment on disk: `<config>/test.toml`, its key file, a data dir.
pub(crate) struct TestEnv {
    pub(crate) config: tempfile::TempDir,
    pub(crate) data: tempfile::TempDir,
    pub(crate) key_file: PathBuf,
    pub(crate) key: SecretKey,
    pub(crate) secrets: Vec<String>,
}

impl TestEnv {
    /// An environment whose bots talk to `api_base`. `app_extra` is appended to
    /// `[app]`; `secrets` are sealed besides each bot's token.
    pub(crate) fn new(api_base: &str, bots: &[BotSpec], app_extra: &str, secrets: &[(&str, &str)]) -> TestEnv {
        let config = tempfile::tempdir().unwrap();
        let data = tempfile::tempdir().unwrap();
        let key = SecretKey::generate();
        let key_file = config.path().join("test.key");
        boxcar_secrets::write_key_file(&key_file, &key).unwrap();

        let mut text = format!(
            "public_key = \"{}\"\n\n[app]\napi_base = \"{api_base}\"\npoll_timeout = 2\n\
             messages_per_second = 10000\nmessages_per_chat_per_second = 10000\n{app_extra}\n",
            key.public_key().to_base64()
        );
        let mut sealed = Vec::new();
        let mut plain = Vec::new();
        for bot in bots {
            let secret = format!("{}_token", bot.name);
            text.push_str(&format!(
                "\n[[bots]]\nname = \"{}\"\ntoken_secret = \"{secret}\"\n{}\n",
                bot.name, bot.extra
            ));
            sealed.push((secret, bot.token.to_owned()));
            plain.push(bot.token.to_owned());
        }
        for (name, value) in secrets {
            sealed.push(((*name).to_owned(), (*value).to_owned()));
            plain.push((*value).to_owned());
        }
        text.push_str("\n[secrets]\n");
        for (name, value) in sealed {
            let v = boxcar_secrets::seal(key.public_key(), "test", &name, value.as_bytes()).unwrap();
            text.push_str(&format!("{name} = \"{v}\"\n"));
        }
        let path = config.path().join("test.toml");
        std::fs::write(&path, boxcar_secrets::approved_text(&path, &text, &key).unwrap()).unwrap();
        TestEnv { config, data, key_file, key, secrets: plain }
    }

    pub(crate) fn env_file(&self) -> PathBuf {
        self.config.path().join("test.toml")
    }

    /// Writes `text` as the environment file, approved by the key (what a
    /// key holder's `cargo xtask approve` does after an edit).
    pub(crate) fn write(&self, text: impl AsRef<str>) {
        let path = self.env_file();
        std::fs::write(&path, boxcar_secrets::approved_text(&path, text.as_ref(), &self.key).unwrap()).unwrap();
    }

    /// The app command, with the key given as a file.
    pub(crate) fn command(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_app"));
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("SECRET_KEY_FILE", &self.key_file)
            .env("APP_CONFIG_DIR", self.config.path())
            .env("APP_DATA_DIR", self.data.path())
            .env("APP_LISTEN", "127.0.0.1:0")
            .env("RUST_LOG", "info,app=debug");
        cmd
    }

    pub(crate) fn start(&self) -> App {
        App::spawn(self.command(), self.secrets.clone())
    }
}

/// A running app process, its address, and everything it printed.
pub(crate) struct App {
    pub(crate) child: Child,
    pub(crate) addr: SocketAddr,
    pub(crate) output: Arc<Mutex<String>>,
    secrets: Vec<String>,
}

impl App {
    pub(crate) fn spawn(mut cmd: Command, secrets: Vec<String>) -> App {
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        let output = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let output = Arc::clone(&output);
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { break };
                    if line.contains("\"message\":\"listening\"") {
                        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
                        let _ = tx.send(v["addr"].as_str().unwrap().parse::<SocketAddr>().unwrap());
                    }
                    let mut out = output.lock().unwrap();
                    out.push_str(&line);
                    out.push('\n');
                }
            });
        }
        let addr = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(addr) => addr,
            Err(_) => {
                let _ = child.kill();
                panic!("the app did not start listening:\n{}", output.lock().unwrap());
            }
        };
        App { child, addr, output, secrets }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub(crate) fn logs(&self) -> String {
        self.output.lock().unwrap().clone()
    }

    /// Waits until the logs contain `needle`.
    pub(crate) async fn wait_log(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.logs().contains(needle) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        false
    }

    pub(crate) fn kill9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM, then the exit code and how long it took.
    pub(crate) fn terminate(&mut self) -> (Option<i32>, Duration) {
        let start = Instant::now();
        let pid = self.child.id().to_string();
        assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status.code(), start.elapsed());
            }
            assert!(Instant::now() < deadline, "no exit 15 s after SIGTERM:\n{}", self.logs());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// No token or other secret value in anything the app printed.
    pub(crate) fn assert_no_secrets(&self) {
        let logs = self.logs();
        for secret in &self.secrets {
            assert!(!logs.contains(secret.as_str()), "a secret appeared in the logs:\n{logs}");
            if let Some((_, tail)) = secret.split_once(':') {
                assert!(!logs.contains(tail), "a token's secret half appeared in the logs:\n{logs}");
            }
        }
    }
}

impl Drop for App {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP client for talking to the app.
pub(crate) fn http() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap()
}

/// The app's `/metrics`: its content type, and its body as a Prometheus
/// text-format parser written apart from the app reads it.
pub(crate) async fn metrics(app: &App) -> (String, prometheus_parse::Scrape) {
    let response = http().get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
    let body = response.text().await.unwrap();
    let scrape = prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_owned()))).unwrap();
    (content_type, scrape)
}

/// The value of metric `name` for `bot`, with `label` (name, value) too if given.
pub(crate) fn sample<'a>(
    scrape: &'a prometheus_parse::Scrape,
    name: &str,
    bot: &str,
    label: Option<(&str, &str)>,
) -> Option<&'a prometheus_parse::Value> {
    scrape
        .samples
        .iter()
        .find(|s| {
            s.metric == name
                && s.labels.get("bot") == Some(bot)
                && label.is_none_or(|(k, v)| s.labels.get(k) == Some(v))
        })
        .map(|s| &s.value)
}

/// Waits (up to `timeout`) until every bot has nothing left to do: the
/// stand-in holds no unconfirmed update and no call in progress, and the
/// app's queue of replies is empty, twice in a row 200 ms apart (a reply
/// handled but not yet queued would show on the second look).
pub(crate) async fn settle(standin: &bot_api_standin::StandIn, app: &App, bots: &[(&str, &str)], timeout: Duration) {
    let deadline = Instant::now() + timeout;
    let mut quiet = 0;
    while quiet < 2 {
        let (_, scrape) = metrics(app).await;
        let idle = bots.iter().all(|(name, token)| {
            standin.unconfirmed(token) == 0
                && standin.attempts(token).iter().all(|a| a.answer != bot_api_standin::ledger::Answer::Pending)
                && sample(&scrape, "app_replies_queued", name, None) == Some(&prometheus_parse::Value::Gauge(0.0))
        });
        quiet = if idle { quiet + 1 } else { 0 };
        assert!(Instant::now() < deadline, "not settled within {timeout:?}:\n{}", app.logs());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
