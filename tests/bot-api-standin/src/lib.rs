//! A Telegram Bot API stand-in: speaks the JSON shapes of `getMe`,
//! `getUpdates`, `sendMessage`, `setWebhook`, `deleteWebhook` and
//! `getWebhookInfo` on 127.0.0.1, keeps per-token state like Telegram does
//! (updates confirmed by `offset`, one poller at a time, no polling while a
//! webhook is set), and injects faults on request.
//!
//! Built directly on hyper rather than a web framework: dropping a
//! connection without an answer (a fault Telegram's front ends do produce)
//! needs the service to fail at the connection level.
//!
//! Tests register each token with [`StandIn::add_bot`] and an unknown token
//! gets 401. The `bot-api-standin` program (`src/main.rs`, the demo's Bot API) switches on
//! [`StandIn::open_registration`] instead, and serves a chat page
//! ([`page`]) on the paths that do not start with `/bot`.

mod page;

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use http_body_util::{BodyExt as _, Full, LengthLimitError, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::Notify;

/// A fault the next call of a method gets instead of its normal answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// 429 with `parameters.retry_after`.
    RetryAfter(u64),
    /// 409 with this description.
    Conflict(String),
    /// This HTTP status with a Bot API error body (502, 500, 401…).
    Status(u16),
    /// Answer normally, but only after this long.
    Delay(Duration),
    /// Close the connection without answering.
    Drop,
    /// Answer 200 with a body that is not JSON.
    Malformed,
}

/// A message a bot sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    pub chat_id: i64,
    pub text: String,
    pub reply_to: Option<i64>,
    pub at: Instant,
}

/// The user id of the person on the chat page, also the id of their private chat with each bot.
pub const PAGE_USER_ID: i64 = 1000;
/// The first name of the person on the chat page (they have no username).
pub const PAGE_USER_NAME: &str = "You";

/// How many lines of conversation each bot keeps for the chat page: the
/// stand-in may run for days in a demo, and the page only needs the recent end.
const LOG_LINES: usize = 500;

/// Bodies larger than this are refused: every Bot API call and chat page
/// form is a few kilobytes at most.
const MAX_BODY: usize = 1 << 20;

/// One message of a conversation, as the chat page shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ChatLine {
    /// Increases by one per line and bot; the page's "anything new?" check.
    id: u64,
    chat_id: i64,
    from_bot: bool,
    /// The user's first name, or the bot's username.
    name: String,
    text: String,
    at: SystemTime,
}

#[derive(Debug, Default)]
struct BotState {
    id: i64,
    username: String,
    revoked: bool,
    next_update_id: i64,
    /// Updates not yet confirmed, oldest first.
    pending: VecDeque<Value>,
    sent: Vec<Sent>,
    webhook: Option<(String, String)>,
    faults: HashMap<String, VecDeque<Fault>>,
    calls: HashMap<String, usize>,
    /// Generation of the current getUpdates call; a newer call ends older ones with 409.
    poll_generation: u64,
    polling: bool,
    /// When a getUpdates call last started or ended, for the page's status line.
    last_poll: Option<Instant>,
    /// Both sides of every chat, oldest first, at most `LOG_LINES`.
    log: VecDeque<ChatLine>,
    next_line: u64,
}

impl BotState {
    fn log(&mut self, chat_id: i64, from_bot: bool, name: &str, text: &str) {
        self.next_line += 1;
        if self.log.len() == LOG_LINES {
            self.log.pop_front();
        }
        let line = ChatLine {
            id: self.next_line,
            chat_id,
            from_bot,
            name: name.to_owned(),
            text: text.to_owned(),
            at: SystemTime::now(),
        };
        self.log.push_back(line);
    }
}

#[derive(Default)]
struct Inner {
    /// By token.
    bots: HashMap<String, BotState>,
    /// Tokens with a username, in the order they were registered: the page's bot list.
    order: Vec<String>,
    /// Any well-formed token registers a bot on its first call.
    open: bool,
}

// By hand: the derived one would print every token (the map's keys).
impl fmt::Debug for Inner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let usernames: Vec<&str> =
            self.order.iter().filter_map(|t| self.bots.get(t)).map(|b| b.username.as_str()).collect();
        f.debug_struct("Inner").field("bots", &usernames).field("open", &self.open).finish_non_exhaustive()
    }
}

impl Inner {
    fn insert(&mut self, token: &str, id: i64, username: &str) {
        let bot = BotState { id, username: username.to_owned(), next_update_id: 1000, ..BotState::default() };
        self.bots.insert(token.to_owned(), bot);
        // Not `insert(..).is_none()`: `revoke` and `inject` may have made an entry without a username.
        if !self.order.iter().any(|t| t == token) {
            self.order.push(token.to_owned());
        }
    }

    /// Registers a well-formed token nobody added; returns the bot's username.
    fn register(&mut self, token: &str) -> Option<String> {
        if !self.open || self.bots.contains_key(token) || !well_formed(token) {
            return None;
        }
        let id: i64 = token.split(':').next()?.parse().ok()?;
        // Two tokens of one bot id (a token regenerated in BotFather) are two bots here.
        let username = std::iter::once(format!("demo{id}_bot"))
            .chain((2..).map(|n| format!("demo{id}_{n}_bot")))
            .find(|u| !self.bots.values().any(|b| &b.username == u))?;
        self.insert(token, id, &username);
        Some(username)
    }

    fn token_of(&self, username: &str) -> Option<&str> {
        self.order.iter().find(|t| self.bots.get(*t).is_some_and(|b| b.username == username)).map(String::as_str)
    }
}

/// `<bot id>:<secret>` as BotFather issues them: digits, a colon, and about
/// 35 characters of `A-Za-z0-9_-`.
fn well_formed(token: &str) -> bool {
    let Some((id, secret)) = token.split_once(':') else { return false };
    (1..=20).contains(&id.len())
        && id.bytes().all(|b| b.is_ascii_digit())
        && id.parse::<i64>().is_ok_and(|id| id > 0)
        && (30..=50).contains(&secret.len())
        && secret.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// A running stand-in. Dropping it stops the server.
#[derive(Debug, Clone)]
pub struct StandIn {
    addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
    changed: Arc<Notify>,
    stop: Arc<Notify>,
}

impl StandIn {
    /// Starts a stand-in on 127.0.0.1 with a free port.
    pub async fn start() -> std::io::Result<StandIn> {
        StandIn::start_on("127.0.0.1:0".parse().expect("valid address")).await
    }

    /// Starts a stand-in on `addr`.
    pub async fn start_on(addr: SocketAddr) -> std::io::Result<StandIn> {
        let listener = TcpListener::bind(addr).await?;
        let standin = StandIn {
            addr: listener.local_addr()?,
            inner: Arc::default(),
            changed: Arc::new(Notify::new()),
            stop: Arc::new(Notify::new()),
        };
        let server = standin.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = tokio::select! {
                    () = server.stop.notified() => return,
                    accepted = listener.accept() => match accepted {
                        Ok(a) => a,
                        Err(_) => continue,
                    },
                };
                let per_conn = server.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let s = per_conn.clone();
                        async move { s.serve(req).await }
                    });
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
                });
            }
        });
        Ok(standin)
    }

    /// Stops accepting connections.
    pub fn stop(&self) {
        self.stop.notify_one();
    }

    /// `http://127.0.0.1:<port>`, the app's `api_base`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn with<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        let mut inner = self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut inner)
    }

    /// Registers a bot token (a token the stand-in does not know gets 401,
    /// unless [`StandIn::open_registration`] is on).
    pub fn add_bot(&self, token: &str, username: &str) {
        let id = token.split(':').next().and_then(|id| id.parse().ok()).unwrap_or(1);
        self.with(|i| i.insert(token, id, username));
    }

    /// From now on, the first call with a well-formed token nobody added
    /// (`<digits>:<30 to 50 characters of A-Za-z0-9_->`) registers a bot
    /// named `demo<digits>_bot`, and says so on stderr (by username only).
    /// For the demo, which has no real token; tests leave it off, so a token
    /// they did not add still gets 401.
    pub fn open_registration(&self) {
        self.with(|i| i.open = true);
    }

    /// Makes a token invalid from now on (401), as a revoked token is.
    pub fn revoke(&self, token: &str) {
        self.with(|i| i.bots.entry(token.to_owned()).or_default().revoked = true);
    }

    /// A user writes `text` in a private chat with the bot; returns the update id.
    pub fn user_says(&self, token: &str, user_id: i64, first_name: &str, text: &str) -> i64 {
        self.chat_says(token, user_id, user_id, "private", first_name, text)
    }

    /// A user writes `text` in chat `chat_id` of kind `kind`; returns the update id.
    pub fn chat_says(&self, token: &str, chat_id: i64, user_id: i64, kind: &str, first_name: &str, text: &str) -> i64 {
        let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let id = self.with(|i| {
            let bot = i.bots.get_mut(token).expect("add_bot first");
            let id = bot.next_update_id;
            bot.next_update_id += 1;
            bot.log(chat_id, false, first_name, text);
            bot.pending.push_back(json!({
                "update_id": id,
                "message": {
                    "message_id": id * 10,
                    "date": now,
                    "chat": { "id": chat_id, "type": kind },
                    "from": { "id": user_id, "is_bot": false, "first_name": first_name },
                    "text": text,
                }
            }));
            id
        });
        self.changed.notify_waiters();
        id
    }

    /// Everything the bot sent so far.
    pub fn sent(&self, token: &str) -> Vec<Sent> {
        self.with(|i| i.bots.get(token).map(|b| b.sent.clone()).unwrap_or_default())
    }

    /// Waits until the bot has sent at least `n` messages, or `timeout`.
    pub async fn wait_sent(&self, token: &str, n: usize, timeout: Duration) -> Vec<Sent> {
        let deadline = Instant::now() + timeout;
        loop {
            let sent = self.sent(token);
            if sent.len() >= n || Instant::now() >= deadline {
                return sent;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Queues faults for the next calls of `method`.
    pub fn inject(&self, token: &str, method: &str, faults: impl IntoIterator<Item = Fault>) {
        self.with(|i| {
            i.bots.entry(token.to_owned()).or_default().faults.entry(method.to_owned()).or_default().extend(faults)
        });
    }

    /// How often `method` was called.
    pub fn calls(&self, token: &str, method: &str) -> usize {
        self.with(|i| i.bots.get(token).and_then(|b| b.calls.get(method).copied()).unwrap_or(0))
    }

    /// The webhook currently set: (url, secret token).
    pub fn webhook(&self, token: &str) -> Option<(String, String)> {
        self.with(|i| i.bots.get(token).and_then(|b| b.webhook.clone()))
    }

    /// Sets a webhook as another consumer would; an empty `url` removes it.
    pub fn set_webhook(&self, token: &str, url: &str) {
        let webhook = (!url.is_empty()).then(|| (url.to_owned(), String::new()));
        self.with(|i| i.bots.entry(token.to_owned()).or_default().webhook = webhook);
    }

    /// Updates not yet confirmed by an offset.
    pub fn unconfirmed(&self, token: &str) -> usize {
        self.with(|i| i.bots.get(token).map_or(0, |b| b.pending.len()))
    }

    async fn serve(&self, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, std::io::Error> {
        if !req.uri().path().starts_with("/bot") {
            return page::serve(self, req).await;
        }
        let path = req.uri().path().to_owned();
        let query = req.uri().query().unwrap_or_default().to_owned();
        let body = match read_body(req.into_body()).await? {
            Some(body) => body,
            None => return Ok(error(413, "Request Entity Too Large")),
        };
        let Some((token, method)) = path.strip_prefix("/bot").and_then(|rest| rest.rsplit_once('/')) else {
            return Ok(answer(404, json!({ "ok": false, "error_code": 404, "description": "Not Found" })));
        };
        let mut params: Value = if body.is_empty() {
            json!({})
        } else {
            match serde_json::from_slice(&body) {
                Ok(v) => v,
                Err(_) => return Ok(error(400, "Bad Request: can't parse JSON")),
            }
        };
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            params[k] = Value::String(v.to_owned());
        }

        let (registered, fault) = self.with(|i| {
            let registered = i.register(token);
            let fault = match i.bots.get_mut(token) {
                Some(bot) if !bot.revoked => {
                    *bot.calls.entry(method.to_owned()).or_default() += 1;
                    Ok(bot.faults.get_mut(method).and_then(VecDeque::pop_front))
                }
                _ => Err(()),
            };
            (registered, fault)
        });
        if let Some(username) = registered {
            eprintln!("standin: bot @{username} registered (first call: {method})");
        }
        let fault = match fault {
            Ok(f) => f,
            Err(()) => return Ok(error(401, "Unauthorized")),
        };
        match fault {
            Some(Fault::RetryAfter(secs)) => {
                return Ok(answer(
                    429,
                    json!({ "ok": false, "error_code": 429, "description": format!("Too Many Requests: retry after {secs}"), "parameters": { "retry_after": secs } }),
                ));
            }
            Some(Fault::Conflict(d)) => return Ok(error(409, &format!("Conflict: {d}"))),
            Some(Fault::Status(code)) => return Ok(error(code, "injected")),
            Some(Fault::Drop) => return Err(std::io::Error::other("dropped on purpose")),
            Some(Fault::Malformed) => {
                return Ok(Response::builder()
                    .status(200)
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from_static(b"{\"ok\": tru")))
                    .expect("valid response"));
            }
            Some(Fault::Delay(d)) => tokio::time::sleep(d).await,
            None => {}
        }
        Ok(self.method(token, method, &params).await)
    }

    async fn method(&self, token: &str, method: &str, params: &Value) -> Response<Full<Bytes>> {
        match method {
            "getMe" => self.with(|i| {
                let bot = &i.bots[token];
                ok(json!({ "id": bot.id, "is_bot": true, "first_name": bot.username, "username": bot.username }))
            }),
            "getUpdates" => self.get_updates(token, params).await,
            "sendMessage" => {
                let (Some(chat_id), Some(text)) = (int(&params["chat_id"]), params["text"].as_str()) else {
                    return error(400, "Bad Request: chat_id and text are required");
                };
                if text.is_empty() {
                    return error(400, "Bad Request: message text is empty");
                }
                let reply_to = int(&params["reply_parameters"]["message_id"]);
                let message_id = self.with(|i| {
                    let bot = i.bots.get_mut(token).expect("known token");
                    bot.sent.push(Sent { chat_id, text: text.to_owned(), reply_to, at: Instant::now() });
                    let name = bot.username.clone();
                    bot.log(chat_id, true, &name, text);
                    bot.sent.len() as i64
                });
                ok(
                    json!({ "message_id": message_id, "date": 1_700_000_000, "chat": { "id": chat_id, "type": "private" }, "text": text }),
                )
            }
            "setWebhook" => {
                let url = params["url"].as_str().unwrap_or_default().to_owned();
                let secret = params["secret_token"].as_str().unwrap_or_default().to_owned();
                self.with(|i| {
                    i.bots.get_mut(token).expect("known token").webhook = (!url.is_empty()).then_some((url, secret))
                });
                self.changed.notify_waiters();
                ok(json!(true))
            }
            "deleteWebhook" => {
                self.with(|i| i.bots.get_mut(token).expect("known token").webhook = None);
                ok(json!(true))
            }
            "getWebhookInfo" => self.with(|i| {
                let bot = &i.bots[token];
                let url = bot.webhook.as_ref().map(|w| w.0.clone()).unwrap_or_default();
                ok(json!({ "url": url, "has_custom_certificate": false, "pending_update_count": bot.pending.len() }))
            }),
            _ => error(404, "Not Found: method not found"),
        }
    }

    async fn get_updates(&self, token: &str, params: &Value) -> Response<Full<Bytes>> {
        let offset = int(&params["offset"]).unwrap_or(0);
        let timeout = int(&params["timeout"]).unwrap_or(0).clamp(0, 50) as u64;
        let limit = int(&params["limit"]).unwrap_or(100).clamp(1, 100) as usize;
        let deadline = Instant::now() + Duration::from_secs(timeout);
        let generation = self.with(|i| {
            let bot = i.bots.get_mut(token).expect("known token");
            bot.poll_generation += 1;
            bot.polling = true;
            bot.last_poll = Some(Instant::now());
            bot.poll_generation
        });
        // A newer poll ends this one, as Telegram does.
        self.changed.notify_waiters();
        loop {
            let notified = self.changed.notified();
            let result = self.with(|i| {
                let bot = i.bots.get_mut(token).expect("known token");
                if bot.webhook.is_some() {
                    return Some(error(409, "Conflict: can't use getUpdates method while webhook is active; use deleteWebhook to delete the webhook first"));
                }
                if bot.poll_generation != generation {
                    return Some(error(409, "Conflict: terminated by other getUpdates request; make sure that only one bot instance is running"));
                }
                // `offset` confirms every update before it.
                while bot.pending.front().and_then(|u| u["update_id"].as_i64()).is_some_and(|id| id < offset) {
                    bot.pending.pop_front();
                }
                let ready: Vec<Value> = bot.pending.iter().take(limit).cloned().collect();
                if !ready.is_empty() || Instant::now() >= deadline {
                    bot.polling = false;
                    bot.last_poll = Some(Instant::now());
                    return Some(ok(Value::Array(ready)));
                }
                None
            });
            if let Some(response) = result {
                return response;
            }
            let _ = tokio::time::timeout(deadline.saturating_duration_since(Instant::now()), notified).await;
        }
    }
}

/// The whole body, or `None` when it is larger than `MAX_BODY`.
async fn read_body(body: Incoming) -> std::io::Result<Option<Bytes>> {
    match Limited::new(body, MAX_BODY).collect().await {
        Ok(b) => Ok(Some(b.to_bytes())),
        Err(e) if e.is::<LengthLimitError>() => Ok(None),
        Err(e) => Err(std::io::Error::other(e)),
    }
}

fn int(v: &Value) -> Option<i64> {
    v.as_i64().or_else(|| v.as_str().and_then(|s| s.parse().ok()))
}

fn ok(result: Value) -> Response<Full<Bytes>> {
    answer(200, json!({ "ok": true, "result": result }))
}

fn error(code: u16, description: &str) -> Response<Full<Bytes>> {
    answer(code, json!({ "ok": false, "error_code": code, "description": description }))
}

fn answer(code: u16, body: Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("valid response")
}
