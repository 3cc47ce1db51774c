//! A small Chrome DevTools Protocol driver for end-to-end tests: starts
//! Debian's headless Chromium, opens pages, types, clicks, reads text and takes
//! PNG screenshots, all synchronously.
//!
//! Why our own client on `tungstenite` rather than the `headless_chrome` crate:
//! headless_chrome always adds flags of its own (`--verbose --log-level=0`, and
//! `--disable-setuid-sandbox` with `--no-sandbox`), picks the debugging port by
//! probing for a free one (a race it covers with up to ten restarts), closes
//! the browser after 30 s idle by default, and pulls in about 110 crates plus a
//! build script that generates the whole protocol; with its default `offline`
//! feature turned off, that build script downloads the protocol from GitHub,
//! which fails here. The handful of commands these tests need fit in the few
//! hundred lines below, on a websocket crate with no TLS and no async runtime.
//!
//! One websocket to the browser carries everything: each page is a target
//! attached with `flatten`, so its commands and events carry a `sessionId`.

#![allow(dead_code, reason = "test-support API: each test uses part of it")]

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::io::{BufRead as _, BufReader};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};
use tungstenite::{Message, WebSocket};

/// How long one protocol command, a page load or the browser's start may take.
pub(crate) const TIMEOUT: Duration = Duration::from_secs(30);

/// The viewport, chosen so screenshots of a desktop layout are readable.
const WINDOW: (u32, u32) = (1200, 900);

/// Names tried on `PATH`, in order.
const NAMES: [&str; 3] = ["chromium", "chromium-browser", "google-chrome"];

/// Where build output goes: `target/` at the workspace root, or wherever
/// `CARGO_TARGET_DIR` points. Screenshots belong under it.
pub(crate) fn target_dir() -> PathBuf {
    // Cargo sets CARGO_TARGET_TMPDIR to `<target>/tmp` for integration tests.
    Path::new(env!("CARGO_TARGET_TMPDIR")).parent().expect("CARGO_TARGET_TMPDIR has a parent").to_owned()
}

/// A headless Chromium with a fresh profile; killed, and its profile removed,
/// on drop.
pub(crate) struct Browser {
    cdp: RefCell<Cdp>,
    child: Child,
    /// The last lines Chromium wrote to stderr, for failure messages.
    stderr: Arc<Mutex<VecDeque<String>>>,
    profile: tempfile::TempDir,
}

impl std::fmt::Debug for Browser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Browser").field("pid", &self.child.id()).field("profile", &self.profile.path()).finish()
    }
}

impl Browser {
    /// Starts Chromium, or panics saying how to install it.
    pub(crate) fn start() -> Browser {
        let exe = find_chromium();
        let profile = tempfile::Builder::new().prefix("boxcar-chromium-").tempdir().expect("creating a profile folder");
        let mut child = Command::new(&exe)
            .args([
                "--headless",
                // Running as root, as CI does, needs this: the sandbox refuses root.
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
                // Containers often give /dev/shm 64 MB, where Chromium crashes
                // on a large page; this puts its shared memory in /tmp.
                "--disable-dev-shm-usage",
                // Without D-Bus (as in CI) Chromium logs dozens of harmless
                // connection errors per start; keep only fatal ones.
                "--log-level=3",
                // Port 0: Chromium picks a free port and prints it, so there
                // is no race with other tests for a port we chose.
                "--remote-debugging-port=0",
                &format!("--window-size={},{}", WINDOW.0, WINDOW.1),
                &format!("--user-data-dir={}", profile.path().display()),
                "about:blank",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", exe.display()));

        // A thread reads stderr for the browser's whole life: it hands over the
        // DevTools line, then keeps draining so Chromium never blocks on a full
        // pipe, keeping the last lines for failure messages.
        let stderr = Arc::new(Mutex::new(VecDeque::new()));
        let (tx, rx) = mpsc::channel();
        let pipe = child.stderr.take().expect("stderr is piped");
        let tail = Arc::clone(&stderr);
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                if let Some(url) = line.strip_prefix("DevTools listening on ") {
                    let _ = tx.send(url.trim().to_owned());
                }
                let mut tail = tail.lock().unwrap_or_else(|e| e.into_inner());
                if tail.len() == 50 {
                    tail.pop_front();
                }
                tail.push_back(line);
            }
        });

        let url = match rx.recv_timeout(TIMEOUT) {
            Ok(url) => url,
            Err(e) => {
                let _ = child.kill();
                let status = child.wait().map(|s| s.to_string()).unwrap_or_default();
                let tail = stderr.lock().unwrap_or_else(|e| e.into_inner());
                let tail = tail.iter().map(String::as_str).collect::<Vec<_>>().join("\n");
                panic!(
                    "{} printed no DevTools address ({}; {status}); its stderr:\n{tail}",
                    exe.display(),
                    if matches!(e, mpsc::RecvTimeoutError::Timeout) { "timed out" } else { "it exited" },
                );
            }
        };
        let cdp = Cdp::connect(&url);
        Browser { cdp: RefCell::new(cdp), child, stderr, profile }
    }

    /// Opens a new tab on `about:blank`.
    pub(crate) fn new_page(&self) -> Page<'_> {
        let target = self.call(None, "Target.createTarget", json!({ "url": "about:blank" }));
        let target = str_field(&target, "targetId").to_owned();
        let attached = self.call(None, "Target.attachToTarget", json!({ "targetId": target, "flatten": true }));
        let session = str_field(&attached, "sessionId").to_owned();
        let page = Page { browser: self, target, session };
        page.call("Page.enable", json!({}));
        // Lifecycle events carry the loader id, which ties a `load` to the
        // navigation `goto` started rather than to an earlier one.
        page.call("Page.setLifecycleEventsEnabled", json!({ "enabled": true }));
        // --window-size sizes the window, and new headless mode takes 87 px of
        // it for emulated browser UI: set the viewport itself too.
        let (width, height) = WINDOW;
        let metrics = json!({ "width": width, "height": height, "deviceScaleFactor": 1, "mobile": false });
        page.call("Emulation.setDeviceMetricsOverride", metrics);
        page
    }

    fn call(&self, session: Option<&str>, method: &str, params: Value) -> Value {
        let result = self.cdp.borrow_mut().call(session, method, params, Instant::now() + TIMEOUT);
        result.unwrap_or_else(|e| panic!("{method}: {e}{}", self.stderr_note()))
    }

    /// Chromium's last stderr lines, if any, to end a failure message with.
    fn stderr_note(&self) -> String {
        let tail = self.stderr.lock().unwrap_or_else(|e| e.into_inner());
        if tail.is_empty() {
            return String::new();
        }
        let lines = tail.iter().map(String::as_str).collect::<Vec<_>>().join("\n");
        format!("\nchromium's last stderr lines:\n{lines}")
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ask first, so Chromium takes its helper processes down with it, then
        // make sure; the profile folder is removed after this, once no process
        // writes to it.
        if let Ok(mut cdp) = self.cdp.try_borrow_mut() {
            let _ = cdp.send(None, "Browser.close", json!({}));
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One tab. Closed on drop.
pub(crate) struct Page<'b> {
    browser: &'b Browser,
    target: String,
    session: String,
}

impl std::fmt::Debug for Page<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Page").field("target", &self.target).finish_non_exhaustive()
    }
}

impl Page<'_> {
    /// Loads `url` and waits for its `load` event; panics if the navigation
    /// fails (say, connection refused) or takes longer than [`TIMEOUT`].
    pub(crate) fn goto(&self, url: &str) {
        let nav = self.call("Page.navigate", json!({ "url": url }));
        if let Some(error) = nav.get("errorText").and_then(Value::as_str).filter(|e| !e.is_empty()) {
            panic!("loading {url}: {error}");
        }
        // No loader id means a same-document navigation (only the #fragment
        // changed): there is no load to wait for.
        let Some(loader) = nav.get("loaderId").and_then(Value::as_str) else { return };
        let loaded = self.browser.cdp.borrow_mut().wait_load(&self.session, loader, Instant::now() + TIMEOUT);
        loaded.unwrap_or_else(|e| panic!("loading {url}: {e}{}", self.browser.stderr_note()));
    }

    /// The value of the JavaScript expression `js` (awaited if a promise), as
    /// JSON: `undefined` is `null`, and a value JSON cannot hold (`NaN`, a
    /// BigInt) is its JavaScript spelling as a string. Panics with the
    /// exception's message if it throws.
    pub(crate) fn eval(&self, js: &str) -> Value {
        match self.try_eval(js) {
            Ok(value) => value,
            Err(EvalError::Thrown(message)) => panic!("{js}\nthrew: {message}"),
            Err(EvalError::Protocol(e)) => panic!("evaluating {js}: {e}{}", self.browser.stderr_note()),
        }
    }

    /// Replaces the text of the field matching `selector` with `text`, the way
    /// a person would: focus, select all, then text input, which fires the
    /// same trusted `beforeinput` and `input` events as typing, so scripts and
    /// form submission see it. No key events fire: a page that listens for
    /// `keydown` needs `Input.dispatchKeyEvent`, which this driver does not do.
    pub(crate) fn type_into(&self, selector: &str, text: &str) {
        self.on(
            selector,
            &format!("typing into {selector}"),
            "el.focus();
            if (document.activeElement !== el) throw new Error('it cannot take focus (disabled or hidden?)');
            if (typeof el.select === 'function') el.select(); else document.execCommand('selectAll');",
        );
        self.call("Input.insertText", json!({ "text": text }));
    }

    /// Clicks the middle of the element matching `selector` with real mouse
    /// events, after scrolling it into view.
    ///
    /// Mouse events rather than `element.click()`: they are trusted events at
    /// a point on the screen, so a click lands where a person's would. A
    /// hidden, zero-sized or covered element makes this panic instead of being
    /// clicked anyway, which is the bug an end-to-end test is there to catch.
    pub(crate) fn click(&self, selector: &str) {
        let at = self.on(
            selector,
            &format!("clicking {selector}"),
            "el.scrollIntoView({ block: 'center', inline: 'center' });
            const r = el.getBoundingClientRect();
            if (r.width === 0 || r.height === 0) throw new Error('it is not visible');
            const x = r.left + r.width / 2, y = r.top + r.height / 2;
            const hit = document.elementFromPoint(x, y);
            if (!el.contains(hit)) throw new Error('it is covered by ' + (hit ? hit.outerHTML.slice(0, 200) : 'nothing'));
            return { x, y };",
        );
        let (x, y) = (at["x"].clone(), at["y"].clone());
        self.call("Input.dispatchMouseEvent", json!({ "type": "mouseMoved", "x": x, "y": y }));
        for kind in ["mousePressed", "mouseReleased"] {
            let event = json!({ "type": kind, "x": x, "y": y, "button": "left", "buttons": 1, "clickCount": 1 });
            self.call("Input.dispatchMouseEvent", event);
        }
    }

    /// Evaluates `js_predicate` every 50 ms until its value is truthy (true)
    /// or `timeout` passes (false). A page in the middle of a navigation counts
    /// as not yet; an exception panics, since a mistyped predicate would
    /// otherwise just cost the whole timeout. Write `?.` where an element may
    /// not exist yet: `document.querySelector('#m')?.innerText.includes('hi')`.
    pub(crate) fn wait_for(&self, js_predicate: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            match self.try_eval(js_predicate) {
                Ok(value) if truthy(&value) => return true,
                Ok(_) | Err(EvalError::Protocol(_)) => {}
                Err(EvalError::Thrown(message)) => panic!("{js_predicate}\nthrew: {message}"),
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The rendered text (`innerText`) of the element matching `selector`.
    pub(crate) fn text(&self, selector: &str) -> String {
        let text = self.on(selector, &format!("reading the text of {selector}"), "return el.innerText;");
        text.as_str().expect("innerText is a string").to_owned()
    }

    /// The page's address now (after redirects).
    pub(crate) fn url(&self) -> String {
        self.eval("location.href").as_str().expect("location.href is a string").to_owned()
    }

    /// Saves the whole page, beyond the viewport if it is longer, as a PNG at
    /// `path`, creating its folder.
    pub(crate) fn screenshot(&self, path: &Path) {
        let metrics = self.call("Page.getLayoutMetrics", json!({}));
        let size = &metrics["cssContentSize"];
        let (width, height) = (size["width"].as_f64().unwrap_or(0.0), size["height"].as_f64().unwrap_or(0.0));
        let mut params = json!({ "format": "png", "captureBeyondViewport": true });
        if width > 0.0 && height > 0.0 {
            params["clip"] = json!({ "x": 0, "y": 0, "width": width, "height": height, "scale": 1 });
        }
        let shot = self.call("Page.captureScreenshot", params);
        let png = base64::engine::general_purpose::STANDARD
            .decode(str_field(&shot, "data"))
            .expect("Page.captureScreenshot returns base64");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        }
        std::fs::write(path, png).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    }

    /// The messages of the `alert`, `confirm` and `prompt` dialogs this page
    /// opened. Each was dismissed at once, since an open dialog blocks the
    /// page; a test of escaping can assert this is empty.
    pub(crate) fn dialogs(&self) -> Vec<String> {
        self.browser.cdp.borrow().dialogs.get(&self.session).cloned().unwrap_or_default()
    }

    /// Runs `body`, a function body, with `el` bound to the element matching
    /// `selector`. A failure names what the test was `doing`, not the script
    /// that does it.
    fn on(&self, selector: &str, doing: &str, body: &str) -> Value {
        let js = format!(
            "(sel => {{
                const el = document.querySelector(sel);
                if (!el) throw new Error('no element matches ' + sel);
                {body}
            }})({})",
            js_string(selector)
        );
        match self.try_eval(&js) {
            Ok(value) => value,
            Err(EvalError::Thrown(message)) => {
                // The description's first line is "Error: <message>"; the rest
                // is a stack trace into our own script.
                let message = message.lines().next().unwrap_or_default();
                panic!("{doing}: {}", message.strip_prefix("Error: ").unwrap_or(message))
            }
            Err(EvalError::Protocol(e)) => panic!("{doing}: {e}{}", self.browser.stderr_note()),
        }
    }

    fn try_eval(&self, js: &str) -> Result<Value, EvalError> {
        let params = json!({ "expression": js, "returnByValue": true, "awaitPromise": true });
        let deadline = Instant::now() + TIMEOUT;
        let reply = self.browser.cdp.borrow_mut().call(Some(&self.session), "Runtime.evaluate", params, deadline);
        let reply = match reply {
            Ok(reply) => reply,
            Err(e @ CallError::Protocol(_)) => return Err(EvalError::Protocol(e)),
            Err(e) => panic!("evaluating {js}: {e}{}", self.browser.stderr_note()),
        };
        if let Some(details) = reply.get("exceptionDetails") {
            let message = details["exception"]["description"]
                .as_str()
                .or_else(|| details["text"].as_str())
                .unwrap_or("an exception without a message");
            return Err(EvalError::Thrown(message.to_owned()));
        }
        let result = &reply["result"];
        if let Some(value) = result.get("value") {
            return Ok(value.clone());
        }
        Ok(result.get("unserializableValue").cloned().unwrap_or(Value::Null))
    }

    fn call(&self, method: &str, params: Value) -> Value {
        self.browser.call(Some(&self.session), method, params)
    }
}

impl Drop for Page<'_> {
    fn drop(&mut self) {
        if let Ok(mut cdp) = self.browser.cdp.try_borrow_mut() {
            let _ = cdp.send(None, "Target.closeTarget", json!({ "targetId": self.target }));
            cdp.loads.retain(|(session, _)| *session != self.session);
            cdp.dialogs.remove(&self.session);
        }
    }
}

enum EvalError {
    /// The script threw; the exception's description.
    Thrown(String),
    /// The page could not run it, usually because it was navigating.
    Protocol(CallError),
}

#[derive(Debug)]
enum CallError {
    Timeout,
    /// The browser closed the connection or it broke.
    Closed(String),
    /// The browser's error reply.
    Protocol(String),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Timeout => write!(f, "no answer from chromium within {TIMEOUT:?}"),
            CallError::Closed(e) => write!(f, "the connection to chromium broke: {e}"),
            CallError::Protocol(e) => write!(f, "chromium answered: {e}"),
        }
    }
}

/// The websocket to the browser, and what arrived on it that nobody has
/// asked for yet.
struct Cdp {
    ws: WebSocket<TcpStream>,
    next_id: u64,
    /// `(sessionId, loaderId)` of each page load seen and not yet waited for.
    loads: VecDeque<(String, String)>,
    /// Dialog messages by sessionId.
    dialogs: HashMap<String, Vec<String>>,
}

impl Cdp {
    fn connect(url: &str) -> Cdp {
        let addr = url
            .strip_prefix("ws://")
            .and_then(|rest| rest.split('/').next())
            .unwrap_or_else(|| panic!("unexpected DevTools address {url}"));
        let stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
        stream.set_read_timeout(Some(TIMEOUT)).expect("setting a read timeout");
        // Screenshots arrive as one base64 message, beyond tungstenite's
        // default 16 MiB frame limit for a long page.
        let config = tungstenite::protocol::WebSocketConfig::default()
            .max_message_size(Some(1 << 30))
            .max_frame_size(Some(1 << 30));
        let (ws, _) = tungstenite::client::client_with_config(url, stream, Some(config))
            .unwrap_or_else(|e| panic!("opening the DevTools websocket {url}: {e}"));
        Cdp { ws, next_id: 1, loads: VecDeque::new(), dialogs: HashMap::new() }
    }

    fn send(&mut self, session: Option<&str>, method: &str, params: Value) -> Result<u64, CallError> {
        let id = self.next_id;
        self.next_id += 1;
        let mut message = json!({ "id": id, "method": method, "params": params });
        if let Some(session) = session {
            message["sessionId"] = json!(session);
        }
        self.ws.send(Message::text(message.to_string())).map_err(|e| CallError::Closed(e.to_string()))?;
        Ok(id)
    }

    /// Sends a command and reads until its reply, keeping the events that
    /// arrive meanwhile.
    fn call(
        &mut self,
        session: Option<&str>,
        method: &str,
        params: Value,
        deadline: Instant,
    ) -> Result<Value, CallError> {
        let id = self.send(session, method, params)?;
        loop {
            let message = self.read(deadline)?;
            if message["id"].as_u64() != Some(id) {
                continue;
            }
            if let Some(error) = message.get("error") {
                return Err(CallError::Protocol(error["message"].as_str().unwrap_or("an error").to_owned()));
            }
            return Ok(message.get("result").cloned().unwrap_or(Value::Null));
        }
    }

    /// Waits for the `load` lifecycle event of `loader` in `session`.
    fn wait_load(&mut self, session: &str, loader: &str, deadline: Instant) -> Result<(), CallError> {
        loop {
            if self.loads.iter().any(|(s, l)| s == session && l == loader) {
                // Older loads of this page can never be waited for any more.
                self.loads.retain(|(s, _)| s != session);
                return Ok(());
            }
            self.read(deadline)?;
        }
    }

    /// Reads one message, handling the events this driver cares about.
    fn read(&mut self, deadline: Instant) -> Result<Value, CallError> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(CallError::Timeout);
            }
            self.ws.get_ref().set_read_timeout(Some(left)).map_err(|e| CallError::Closed(e.to_string()))?;
            let text = match self.ws.read() {
                Ok(Message::Text(text)) => text,
                Ok(_) => continue,
                Err(tungstenite::Error::Io(e))
                    if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) =>
                {
                    return Err(CallError::Timeout);
                }
                Err(e) => return Err(CallError::Closed(e.to_string())),
            };
            let message: Value = serde_json::from_str(text.as_str())
                .map_err(|e| CallError::Closed(format!("unreadable message: {e}")))?;
            self.on_event(&message)?;
            return Ok(message);
        }
    }

    fn on_event(&mut self, message: &Value) -> Result<(), CallError> {
        let session = message["sessionId"].as_str().unwrap_or_default();
        match message["method"].as_str() {
            Some("Page.lifecycleEvent") if message["params"]["name"] == "load" => {
                let loader = message["params"]["loaderId"].as_str().unwrap_or_default();
                self.loads.push_back((session.to_owned(), loader.to_owned()));
            }
            Some("Page.javascriptDialogOpening") => {
                let text = message["params"]["message"].as_str().unwrap_or_default();
                self.dialogs.entry(session.to_owned()).or_default().push(text.to_owned());
                // Its reply is read and dropped like any other unclaimed one.
                self.send(Some(session), "Page.handleJavaScriptDialog", json!({ "accept": false }))?;
            }
            _ => {}
        }
        Ok(())
    }
}

fn find_chromium() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found =
        NAMES.iter().find_map(|name| std::env::split_paths(&path).map(|dir| dir.join(name)).find(|p| p.is_file()));
    let Some(exe) = found else {
        panic!("no Chromium on PATH (looked for {}); install it with `apt-get install -y chromium`", NAMES.join(", "));
    };
    // Debian's /usr/bin/chromium is a shell script that adds flags of its own
    // (extensions, GPU rasterization) and tests /dev/shm with a `[` that
    // breaks when findmnt prints two lines; run the binary it would exec.
    let debian = Path::new("/usr/lib/chromium/chromium");
    let is_script = std::fs::read(&exe).map(|bytes| bytes.starts_with(b"#!")).unwrap_or(false);
    if is_script && debian.is_file() { debian.to_owned() } else { exe }
}

fn str_field<'v>(value: &'v Value, name: &str) -> &'v str {
    value[name].as_str().unwrap_or_else(|| panic!("no {name} in {value}"))
}

/// `s` as a JavaScript string literal (JSON's is one).
fn js_string(s: &str) -> String {
    Value::from(s).to_string()
}

/// JavaScript's truthiness of a JSON value.
fn truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|n| n != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(_) | Value::Object(_) => true,
    }
}
