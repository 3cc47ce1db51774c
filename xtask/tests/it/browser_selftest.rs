//! Self-test of the browser driver: a tiny chat served from a thread, driven
//! through typing, a click, a form POST and its redirect, then a screenshot.

use std::collections::HashMap;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::browser::{Browser, target_dir};

#[test]
fn browser_types_clicks_and_reads_escaped_text() {
    let server = Chat::start();
    let started = Instant::now();
    let browser = Browser::start();
    let page = browser.new_page();
    let ready = started.elapsed();

    for message in ["<script>alert(1)</script>", "hello"] {
        page.goto(&server.url("/"));
        page.type_into("#text", message);
        // Input.insertText fires `input`, which the page mirrors below the field.
        assert_eq!(page.text("#echo"), message);
        page.click("#send");
        let literal = serde_json::Value::from(message);
        let shown = format!("[...document.querySelectorAll('#messages li')].some(li => li.textContent === {literal})");
        assert!(page.wait_for(&shown, Duration::from_secs(10)), "{message:?} never listed; page: {}", page.url());
    }

    assert!(page.url().ends_with("/messages"), "{}", page.url());
    let text = page.text("#messages");
    assert!(text.contains("<script>alert(1)</script>"), "{text:?}");
    assert!(text.contains("hello"), "{text:?}");
    assert_eq!(page.eval("document.querySelectorAll('#messages script').length"), 0);
    assert_eq!(page.dialogs(), Vec::<String>::new(), "a message ran as script");
    assert_eq!(server.received(), ["<script>alert(1)</script>", "hello"]);

    let png = target_dir().join("browser-selftest/page.png");
    let before = Instant::now();
    page.screenshot(&png);
    let shot = before.elapsed();
    let bytes = std::fs::read(&png).unwrap();
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "{} is not a PNG", png.display());
    eprintln!(
        "browser self-test: start + new page {ready:?}, screenshot {shot:?} ({} bytes at {}), all {:?}",
        bytes.len(),
        png.display(),
        started.elapsed()
    );

    // The driver's other answers: values and timeouts.
    assert_eq!(page.eval("Promise.resolve(6 * 7)"), 42);
    assert_eq!(page.eval("undefined"), serde_json::Value::Null);
    assert_eq!(page.eval("({ a: [1, 'b'] })"), serde_json::json!({ "a": [1, "b"] }));
    assert!(!page.wait_for("document.title === 'never'", Duration::from_millis(200)));
}

#[test]
#[should_panic(expected = "threw: TypeError: Cannot read properties of null")]
fn browser_eval_panics_with_the_exception() {
    let browser = Browser::start();
    browser.new_page().eval("null.x");
}

/// The chat: `/` has the form, POST `/send` stores the text and redirects to
/// `/messages`, which lists everything received, HTML-escaped.
struct Chat {
    addr: SocketAddr,
    messages: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Chat {
    fn start() -> Chat {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let messages = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (msgs, stopping) = (Arc::clone(&messages), Arc::clone(&stop));
        let thread = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let msgs = Arc::clone(&msgs);
                // A thread per connection: Chromium opens spare connections
                // that may never send a request.
                std::thread::spawn(move || serve(stream, &msgs));
            }
        });
        Chat { addr, messages, stop, thread: Some(thread) }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn received(&self) -> Vec<String> {
        self.messages.lock().unwrap().clone()
    }
}

impl Drop for Chat {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

const FORM: &str = r#"<!doctype html>
<title>chat</title>
<h1>Chat</h1>
<form method="post" action="/send">
  <input id="text" name="text" autofocus>
  <button id="send">Send</button>
</form>
<p>Typing: <output id="echo"></output></p>
<script>
  document.querySelector('#text').addEventListener('input', e => {
    document.querySelector('#echo').textContent = e.target.value;
  });
</script>
"#;

/// Answers one request and closes the connection.
fn serve(stream: TcpStream, messages: &Mutex<Vec<String>>) {
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut reader = BufReader::new(&stream);
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
        return;
    }
    let mut headers = HashMap::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_owned());
        }
    }
    let length: usize = headers.get("content-length").and_then(|l| l.parse().ok()).unwrap_or(0);
    let mut body = vec![0; length];
    if reader.read_exact(&mut body).is_err() {
        return;
    }

    let mut parts = request_line.split_whitespace();
    let response = match (parts.next().unwrap_or(""), parts.next().unwrap_or("")) {
        ("GET", "/") => page(FORM),
        ("POST", "/send") => {
            let form = String::from_utf8_lossy(&body).into_owned();
            let text = form.split('&').find_map(|pair| pair.strip_prefix("text=")).map(form_decode).unwrap_or_default();
            messages.lock().unwrap().push(text);
            "HTTP/1.1 303 See Other\r\nLocation: /messages\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_owned()
        }
        ("GET", "/messages") => {
            let items: String =
                messages.lock().unwrap().iter().map(|m| format!("  <li>{}</li>\n", html_escape(m))).collect();
            page(&format!(
                "<!doctype html>\n<title>messages</title>\n<h1>Messages</h1>\n<ul id=\"messages\">\n{items}</ul>\n"
            ))
        }
        _ => "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_owned(),
    };
    let _ = (&stream).write_all(response.as_bytes());
}

fn page(html: &str) -> String {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{html}",
        html.len()
    )
}

/// Decodes one `application/x-www-form-urlencoded` value.
fn form_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;").replace('\'', "&#39;")
}
