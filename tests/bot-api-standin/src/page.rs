//! The stand-in's chat page: a person talks to a bot through the stand-in as
//! a Telegram client would, for the demo, which has no real bot token.
//!
//! Paths (none starts with `/bot`, which is the Bot API's):
//! - `GET /`: the registered bots and the first one's chat.
//! - `GET /chat/<username>`: that bot's chat. `POST` with the form field
//!   `text` queues it as a private message of the page's user
//!   ([`PAGE_USER_ID`]), then redirects back (POST-redirect-GET).
//! - `GET /chat/<username>/messages.json`: the chat as JSON; the page's
//!   script polls it every second and redraws the list with `textContent`.
//! - `GET /chats.json`: the registered bots; the page without a bot polls it.
//! - `GET /healthz`: `ok`.
//!
//! The HTML is written by hand with one escaping function, [`esc`], rather
//! than with minijinja: the page has a dozen interpolations, and its script
//! is a constant that takes its URL from a data attribute, so the
//! Content-Security-Policy allows exactly that script (and style) by hash,
//! with no per-response nonce to generate.

use std::fmt::Write as _;
use std::sync::LazyLock;
use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderMap};
use hyper::{Method, Request, Response};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use super::{BotState, ChatLine, PAGE_USER_ID, PAGE_USER_NAME, StandIn, read_body};

const NOTICE: &str = "This is a stand-in for the Telegram Bot API, for trying boxcar without a real bot token. \
    Messages go to the bot running in the demo container, not to Telegram.";

/// Telegram's limit on a message's length, in characters.
const MAX_TEXT: usize = 4096;

const STYLE: &str = r#"
body { font: 16px/1.45 system-ui, sans-serif; max-width: 46rem; margin: 0 auto; padding: 0 1rem; color: #1b1b1b; background: #fff; }
.notice { background: #fff4ce; border: 1px solid #d9b84a; border-radius: 4px; padding: .6rem .8rem; }
.bots a + a { margin-left: .8rem; }
.bots a[aria-current] { font-weight: bold; }
h1 { font-size: 1.3rem; margin: 1rem 0 .2rem; }
#status { color: #555; font-size: .9rem; margin-top: 0; }
#status.down { color: #a40000; }
#messages { list-style: none; padding: 0; }
.msg { width: fit-content; max-width: 85%; margin: .45rem 0; padding: .4rem .7rem; border-radius: 8px; }
.msg.you { background: #d8efff; margin-left: auto; }
.msg.bot { background: #f0f0f0; }
.who { font-weight: bold; font-size: .85rem; }
time { color: #666; font-size: .8rem; }
.text { white-space: pre-wrap; overflow-wrap: anywhere; }
#compose { position: sticky; bottom: 0; display: flex; gap: .5rem; padding: .7rem 0; background: #fff; border-top: 1px solid #ddd; }
#text { flex: 1; font: inherit; padding: .4rem; }
#send { font: inherit; padding: .4rem 1rem; }
"#;

const SCRIPT: &str = r#"
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const list = $("messages"), empty = $("empty"), status = $("status"), bots = $("bots");
  const source = document.body.dataset.source;
  let last = list ? list.dataset.last : "";
  let names = bots.dataset.bots;
  const item = (m) => {
    const li = document.createElement("li");
    li.className = "msg " + m.from;
    li.dataset.from = m.from;
    li.dataset.id = m.id;
    const who = document.createElement("span");
    who.className = "who";
    who.textContent = m.name;
    const time = document.createElement("time");
    time.dateTime = m.datetime;
    time.textContent = m.time;
    const text = document.createElement("div");
    text.className = "text";
    text.textContent = m.text;
    li.append(who, " ", time, text);
    return li;
  };
  const link = (name, current) => {
    const a = document.createElement("a");
    a.href = "/chat/" + encodeURIComponent(name);
    a.textContent = "@" + name;
    if (name === current) a.setAttribute("aria-current", "page");
    return a;
  };
  const bottom = () => document.documentElement.scrollHeight;
  const tick = async () => {
    try {
      const answer = await fetch(source, { cache: "no-store" });
      if (!answer.ok) throw new Error("HTTP " + answer.status);
      const d = await answer.json();
      if (!list) {
        if (d.bots.length > 0) location.reload();
        return;
      }
      status.textContent = d.status;
      status.classList.remove("down");
      if (d.bots.join(" ") !== names) {
        names = d.bots.join(" ");
        bots.replaceChildren(...d.bots.map((n) => link(n, d.bot)));
      }
      const newest = d.messages.length ? String(d.messages[d.messages.length - 1].id) : "";
      if (newest !== last) {
        last = newest;
        const follow = window.innerHeight + window.scrollY >= bottom() - 48;
        list.replaceChildren(...d.messages.map(item));
        empty.hidden = d.messages.length > 0;
        if (follow) window.scrollTo(0, bottom());
      }
    } catch (e) {
      status.textContent = "The stand-in does not answer (" + e.message + "); is the demo still running?";
      status.classList.add("down");
    } finally {
      setTimeout(tick, 1000);
    }
  };
  window.scrollTo(0, bottom());
  setTimeout(tick, 1000);
})();
"#;

/// Allows the page's own script and style, fetches to itself, forms to itself, and nothing else.
static CSP: LazyLock<String> = LazyLock::new(|| {
    format!(
        "default-src 'none'; script-src {}; style-src {}; connect-src 'self'; form-action 'self'; \
         base-uri 'none'; frame-ancestors 'none'",
        csp_hash(SCRIPT),
        csp_hash(STYLE)
    )
});

fn csp_hash(source: &str) -> String {
    format!("'sha256-{}'", base64::engine::general_purpose::STANDARD.encode(Sha256::digest(source)))
}

/// One bot's chat with the page's user, copied out of the lock.
#[derive(Debug)]
struct Chat {
    username: String,
    lines: Vec<ChatLine>,
    status: String,
}

#[derive(Debug)]
struct View {
    /// Every registered bot's username, in registration order.
    bots: Vec<String>,
    /// The selected bot's chat; `None` when no bot has registered yet.
    chat: Option<Chat>,
}

impl StandIn {
    /// The page for `username`, or for the first bot; `None` when `username` names no bot.
    fn view(&self, username: Option<&str>) -> Option<View> {
        let now = Instant::now();
        self.with(|i| {
            let bots = i.order.iter().map(|t| i.bots[t].username.clone()).collect();
            let token = match username {
                Some(u) => Some(i.token_of(u)?),
                None => i.order.first().map(String::as_str),
            };
            let chat = token.map(|t| {
                let bot = &i.bots[t];
                Chat {
                    username: bot.username.clone(),
                    lines: bot.log.iter().filter(|l| l.chat_id == PAGE_USER_ID).cloned().collect(),
                    status: status(bot, now),
                }
            });
            Some(View { bots, chat })
        })
    }
}

/// What the page says about the bot's side, so a newcomer sees why nothing answers.
fn status(bot: &BotState, now: Instant) -> String {
    let mut status = if bot.revoked {
        "The bot's token was revoked: it cannot fetch messages.".to_owned()
    } else if bot.webhook.is_some() {
        "The bot has set a webhook; the stand-in does not deliver to webhooks, so messages wait here.".to_owned()
    } else {
        match bot.last_poll.map(|t| now.saturating_duration_since(t)) {
            _ if bot.polling => "The bot is polling for messages.".to_owned(),
            Some(idle) if idle < Duration::from_secs(5) => "The bot is polling for messages.".to_owned(),
            Some(idle) => format!("The bot last asked for messages {} s ago.", idle.as_secs()),
            None => "The bot has not asked for messages yet.".to_owned(),
        }
    };
    match bot.pending.len() {
        0 => {}
        1 => status.push_str(" 1 message not yet picked up by the bot."),
        n => {
            let _ = write!(status, " {n} messages not yet picked up by the bot.");
        }
    }
    status
}

/// Answers every path that does not start with `/bot`.
pub(super) async fn serve(standin: &StandIn, req: Request<Incoming>) -> std::io::Result<Response<Full<Bytes>>> {
    let path = req.uri().path().to_owned();
    let get = req.method() == Method::GET;
    let post = req.method() == Method::POST;
    match path.as_str() {
        "/healthz" if get => return Ok(respond(200, "text/plain; charset=utf-8", "ok")),
        "/" if get => return Ok(page(standin, None)),
        "/chats.json" if get => {
            let bots = standin.view(None).map(|v| v.bots).unwrap_or_default();
            return Ok(respond(200, "application/json", json!({ "bots": bots }).to_string()));
        }
        "/healthz" | "/" | "/chats.json" => return Ok(not_allowed()),
        _ => {}
    }
    let Some(rest) = path.strip_prefix("/chat/") else { return Ok(not_found()) };
    let (segment, tail) = rest.split_once('/').unwrap_or((rest, ""));
    let Some(username) = String::from_utf8(percent_decode(segment.as_bytes(), false)).ok() else {
        return Ok(not_found());
    };
    match tail {
        "" if get => Ok(page(standin, Some(&username))),
        "" if post => send(standin, &username, req).await,
        "messages.json" if get => Ok(messages(standin, &username)),
        "" | "messages.json" => Ok(not_allowed()),
        _ => Ok(not_found()),
    }
}

fn page(standin: &StandIn, username: Option<&str>) -> Response<Full<Bytes>> {
    match standin.view(username) {
        Some(view) => respond(200, "text/html; charset=utf-8", render(&view)),
        None => not_found(),
    }
}

fn messages(standin: &StandIn, username: &str) -> Response<Full<Bytes>> {
    let Some(View { bots, chat: Some(chat) }) = standin.view(Some(username)) else { return not_found() };
    let lines: Vec<Value> = chat.lines.iter().map(line_json).collect();
    let body = json!({ "bot": chat.username, "bots": bots, "status": chat.status, "messages": lines });
    respond(200, "application/json", body.to_string())
}

/// The form's POST: queues the text as the page user's private message, then redirects back.
async fn send(standin: &StandIn, username: &str, req: Request<Incoming>) -> std::io::Result<Response<Full<Bytes>>> {
    if !same_origin(req.headers()) {
        return Ok(respond(403, "text/plain; charset=utf-8", "refused: this form was posted from another site"));
    }
    let Some(token) = standin.with(|i| i.token_of(username).map(str::to_owned)) else { return Ok(not_found()) };
    let Some(body) = read_body(req.into_body()).await? else {
        return Ok(respond(413, "text/plain; charset=utf-8", "refused: the form is too large"));
    };
    let text = form_field(&body, "text").unwrap_or_default();
    if text.chars().count() > MAX_TEXT {
        let why = format!("refused: a Telegram message has at most {MAX_TEXT} characters; go back and shorten it");
        return Ok(respond(400, "text/plain; charset=utf-8", why));
    }
    // Telegram does not deliver a message that is only white space.
    if !text.trim().is_empty() {
        standin.user_says(&token, PAGE_USER_ID, PAGE_USER_NAME, &text);
    }
    let mut response = respond(303, "text/plain; charset=utf-8", "sent");
    let location = format!("/chat/{}", segment(username)).parse().expect("a percent-encoded path is a valid header");
    response.headers_mut().insert(header::LOCATION, location);
    Ok(response)
}

/// Refuses a form another site posted: a page elsewhere could otherwise make
/// a visitor's browser talk to the bot. Browsers send `Origin` with every
/// POST; curl and the tests need not.
fn same_origin(headers: &HeaderMap) -> bool {
    if headers.get("sec-fetch-site").is_some_and(|v| v.as_bytes() == b"cross-site") {
        return false;
    }
    let Some(origin) = headers.get(header::ORIGIN) else { return true };
    let host = headers.get(header::HOST).map(|h| h.as_bytes()).unwrap_or_default();
    origin.as_bytes().strip_prefix(b"http://").is_some_and(|o| o == host)
}

fn render(view: &View) -> String {
    let mut h = String::with_capacity(8192);
    let (title, source) = match &view.chat {
        Some(c) => {
            (format!("@{} · Bot API stand-in", c.username), format!("/chat/{}/messages.json", segment(&c.username)))
        }
        None => ("Bot API stand-in".to_owned(), "/chats.json".to_owned()),
    };
    let selected = view.chat.as_ref().map(|c| c.username.as_str());
    h.push_str("<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    h.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n");
    let _ = writeln!(h, "<title>{}</title>\n<style>{STYLE}</style>\n</head>", esc(&title));
    let _ = writeln!(h, "<body data-source=\"{}\">", esc(&source));
    let _ = writeln!(h, "<p class=\"notice\" id=\"notice\">{}</p>", esc(NOTICE));
    let _ = write!(h, "<p class=\"bots\">Bots: <span id=\"bots\" data-bots=\"{}\">", esc(&view.bots.join(" ")));
    for bot in &view.bots {
        let current = if Some(bot.as_str()) == selected { " aria-current=\"page\"" } else { "" };
        let _ = write!(h, "<a href=\"/chat/{}\"{current}>@{}</a>", esc(&segment(bot)), esc(bot));
    }
    h.push_str("</span></p>\n<main>\n");
    match &view.chat {
        None => {
            h.push_str("<h1>No bot yet</h1>\n<p id=\"status\">No bot has called the stand-in yet. ");
            h.push_str("When the app starts, its bot calls getMe and its chat appears here.</p>\n");
        }
        Some(chat) => {
            let _ = writeln!(h, "<h1>Chat with @{}</h1>", esc(&chat.username));
            let _ = writeln!(h, "<p id=\"status\">{}</p>", esc(&chat.status));
            let last = chat.lines.last().map(|l| l.id.to_string()).unwrap_or_default();
            let _ = writeln!(h, "<ol id=\"messages\" data-last=\"{last}\">");
            for line in &chat.lines {
                let (from, who) = speaker(line);
                let (time, datetime) = utc(line.at);
                let _ = writeln!(
                    h,
                    "<li class=\"msg {from}\" data-from=\"{from}\" data-id=\"{}\"><span class=\"who\">{}</span> \
                     <time datetime=\"{datetime}\">{time}</time><div class=\"text\">{}</div></li>",
                    line.id,
                    esc(&who),
                    esc(&line.text)
                );
            }
            h.push_str("</ol>\n");
            let hidden = if chat.lines.is_empty() { "" } else { " hidden" };
            let _ = writeln!(h, "<p id=\"empty\"{hidden}>No messages yet. Try /start.</p>");
            let _ =
                writeln!(h, "<form id=\"compose\" method=\"post\" action=\"/chat/{}\">", esc(&segment(&chat.username)));
            let _ = writeln!(
                h,
                "<input id=\"text\" name=\"text\" type=\"text\" aria-label=\"Message\" \
                 placeholder=\"Write a message, e.g. /start\" maxlength=\"{MAX_TEXT}\" autocomplete=\"off\" required autofocus>"
            );
            h.push_str("<button id=\"send\" type=\"submit\">Send</button>\n</form>\n");
        }
    }
    let _ = write!(h, "</main>\n<script>{SCRIPT}</script>\n</body>\n</html>\n");
    h
}

/// `("you" | "bot", the name shown)`.
fn speaker(line: &ChatLine) -> (&'static str, String) {
    if line.from_bot { ("bot", format!("@{}", line.name)) } else { ("you", line.name.clone()) }
}

fn line_json(line: &ChatLine) -> Value {
    let (from, name) = speaker(line);
    let (time, datetime) = utc(line.at);
    let unix_ms = line.at.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis());
    json!({
        "id": line.id, "from": from, "name": name, "text": line.text,
        "time": time, "datetime": datetime, "unix_ms": unix_ms,
    })
}

fn not_found() -> Response<Full<Bytes>> {
    respond(404, "text/plain; charset=utf-8", "not found: the chat page is at /")
}

fn not_allowed() -> Response<Full<Bytes>> {
    respond(405, "text/plain; charset=utf-8", "method not allowed")
}

fn respond(status: u16, content_type: &str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CONTENT_SECURITY_POLICY, CSP.as_str())
        .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff")
        // Not `no-referrer`: with it, Chromium sends `Origin: null` with the form's POST, which `same_origin` refuses.
        .header(header::REFERRER_POLICY, "same-origin")
        .header(header::CACHE_CONTROL, "no-store")
        .body(Full::new(body.into()))
        .expect("valid response")
}

/// Text for HTML content and quoted attribute values.
fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `text` as one percent-encoded path segment.
fn segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// Decodes `%XX` (and `+` as a space in form bodies); a `%` without two hex digits stays as it is.
fn percent_decode(text: &[u8], plus_is_space: bool) -> Vec<u8> {
    let hex = |b: Option<&u8>| b.and_then(|b| char::from(*b).to_digit(16));
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        match text[i] {
            b'+' if plus_is_space => out.push(b' '),
            b'%' => match (hex(text.get(i + 1)), hex(text.get(i + 2))) {
                (Some(high), Some(low)) => {
                    out.push((high * 16 + low) as u8);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    out
}

/// The first value of `name` in an `application/x-www-form-urlencoded` body.
fn form_field(body: &[u8], name: &str) -> Option<String> {
    body.split(|&b| b == b'&').find_map(|pair| {
        let (key, value) = match pair.iter().position(|&b| b == b'=') {
            Some(at) => (&pair[..at], &pair[at + 1..]),
            None => (pair, &[][..]),
        };
        (percent_decode(key, true) == name.as_bytes())
            .then(|| String::from_utf8_lossy(&percent_decode(value, true)).into_owned())
    })
}

/// `("HH:MM:SS UTC", "YYYY-MM-DDTHH:MM:SSZ")`: the page shows UTC, as the
/// stand-in knows no time zone (its container has none).
fn utc(at: SystemTime) -> (String, String) {
    let secs = at.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs()) as i64;
    let (days, of_day) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (h, m, s) = (of_day / 3600, of_day / 60 % 60, of_day % 60);
    let (year, month, day) = civil_from_days(days);
    (format!("{h:02}:{m:02}:{s:02} UTC"), format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}Z"))
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's
/// `civil_from_days`), so the stand-in needs no date crate for one timestamp.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            esc(r#"<script>alert('x') & "y"</script>"#),
            "&lt;script&gt;alert(&#39;x&#39;) &amp; &quot;y&quot;&lt;/script&gt;"
        );
    }

    #[test]
    fn decodes_form_bodies() {
        assert_eq!(form_field(b"text=hello+there%21&x=1", "text").as_deref(), Some("hello there!"));
        assert_eq!(form_field(b"x=1&text=%3Cb%3E%E2%9C%93", "text").as_deref(), Some("<b>✓"));
        assert_eq!(form_field(b"text=100%&x", "text").as_deref(), Some("100%"));
        assert_eq!(form_field(b"text", "text").as_deref(), Some(""));
        assert_eq!(form_field(b"texts=1", "text"), None);
    }

    #[test]
    fn path_segments_round_trip() {
        for name in ["demo123_bot", "a b/c?d", "é<>"] {
            assert_eq!(String::from_utf8(percent_decode(segment(name).as_bytes(), false)).unwrap(), name);
        }
        assert_eq!(segment("demo123_bot"), "demo123_bot");
        assert_eq!(segment("a b/\""), "a%20b%2F%22");
    }

    #[test]
    fn formats_utc() {
        let at = |secs| SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
        assert_eq!(utc(at(0)), ("00:00:00 UTC".to_owned(), "1970-01-01T00:00:00Z".to_owned()));
        assert_eq!(utc(at(1_700_000_000)).1, "2023-11-14T22:13:20Z");
        assert_eq!(utc(at(951_782_400)).1, "2000-02-29T00:00:00Z");
        assert_eq!(utc(at(4_107_542_399)).1, "2100-02-28T23:59:59Z");
    }

    #[test]
    fn csp_allows_exactly_the_page_script_and_style() {
        let view = View {
            bots: vec!["demo1_bot".to_owned()],
            chat: Some(Chat { username: "demo1_bot".to_owned(), lines: Vec::new(), status: String::new() }),
        };
        let html = render(&view);
        let inline = |open: &str, close: &str| {
            let start = html.find(open).unwrap() + open.len();
            html[start..start + html[start..].find(close).unwrap()].to_owned()
        };
        assert!(CSP.contains(&csp_hash(&inline("<script>", "</script>"))), "{}", *CSP);
        assert!(CSP.contains(&csp_hash(&inline("<style>", "</style>"))), "{}", *CSP);
        assert_eq!(html.matches("<script").count(), 1);
        assert!(!html.contains(" style="), "inline style attributes are not allowed by the policy");
    }
}
