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
//! Every `sendMessage` call goes into a ledger ([`ledger`]) that says whether
//! the message was recorded and whether the client read the answer, so tests
//! can account for each reply exactly under faults and kills.
//!
//! Tests register each token with [`StandIn::add_bot`] and an unknown token
//! gets 401. The `bot-api-standin` program (`src/main.rs`, the demo's Bot API) switches on
//! [`StandIn::open_registration`] instead, and serves a chat page
//! ([`page`]) on the paths that do not start with `/bot`.

pub mod ledger;
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
    /// This HTTP status with a Bot API error body, after this long: a slow 502.
    SlowStatus(u16, Duration),
    /// Answer normally, but only after this long.
    Delay(Duration),
    /// Close the connection without answering; the call is not carried out.
    Drop,
    /// Answer 200 with a body that is not JSON; the call is not carried out.
    Malformed,
    /// Carry the call out (a message is recorded), then close the connection
    /// without answering: the answer is lost after the fact.
    LoseAnswer,
    /// Carry the call out at once, then hold the answer until the client
    /// gives up and closes the connection (or five minutes pass): a slow
    /// answer beyond the client's timeout, whatever that is.
    SlowAnswer,
}

/// Faults drawn at random for each call of a method, each with its share of
/// the calls, from a seeded generator so a run can be repeated. Faults
/// queued with [`StandIn::inject`] come first.
#[derive(Debug, Clone)]
pub struct FaultMix {
    faults: Vec<(f64, Fault)>,
    state: u64,
}

impl FaultMix {
    pub fn new(seed: u64) -> FaultMix {
        FaultMix { faults: Vec::new(), state: seed }
    }

    /// Gives `fault` to `share` (0 to 1) of the calls.
    #[must_use]
    pub fn with(mut self, share: f64, fault: Fault) -> FaultMix {
        self.faults.push((share, fault));
        self
    }

    /// A Bot API having a bad day, for sendMessage: 5% 429 (retry after
    /// 1 s), 5% 502, 2% dropped connections (half before the call is carried
    /// out, half after it: the answer is lost), 2% slow answers (half 300 ms
    /// late, half slower than the client waits: carried out, and answered
    /// once the client has given up), 1% malformed answers.
    pub fn bad_day_for_sends(seed: u64) -> FaultMix {
        FaultMix::new(seed)
            .with(0.05, Fault::RetryAfter(1))
            .with(0.05, Fault::Status(502))
            .with(0.01, Fault::Drop)
            .with(0.01, Fault::LoseAnswer)
            .with(0.01, Fault::Delay(Duration::from_millis(300)))
            .with(0.01, Fault::SlowAnswer)
            .with(0.01, Fault::Malformed)
    }

    /// The same day for getUpdates, but for the answers slower than the
    /// client waits, which would only delay a long poll: 5% 429, 5% 502, 2%
    /// dropped connections, 2% answers 200 ms late, 1% malformed answers.
    pub fn bad_day_for_polls(seed: u64) -> FaultMix {
        FaultMix::new(seed)
            .with(0.05, Fault::RetryAfter(1))
            .with(0.05, Fault::Status(502))
            .with(0.02, Fault::Drop)
            .with(0.02, Fault::Delay(Duration::from_millis(200)))
            .with(0.01, Fault::Malformed)
    }

    /// The fault for the next call, if any.
    pub fn draw(&mut self) -> Option<Fault> {
        // splitmix64: enough randomness for picking faults, and no dependency.
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        let mut roll = (z >> 11) as f64 / (1u64 << 53) as f64;
        for (share, fault) in &self.faults {
            if roll < *share {
                return Some(fault.clone());
            }
            roll -= share;
        }
        None
    }
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
    mixes: HashMap<String, FaultMix>,
    calls: HashMap<String, usize>,
    /// Every sendMessage call, in the order they arrived.
    attempts: Vec<ledger::Attempt>,
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
                let Ok((stream, conn)) = Conn::split(stream) else { continue };
                let conn = Arc::new(conn);
                let per_conn = server.clone();
                tokio::spawn(async move {
                    let (standin, service_conn) = (per_conn.clone(), Arc::clone(&conn));
                    let service = hyper::service::service_fn(move |req| {
                        let (s, c) = (standin.clone(), Arc::clone(&service_conn));
                        async move { s.serve(req, &c).await }
                    });
                    let io = hyper_util::rt::TokioIo::new(Watched { stream, conn: Arc::clone(&conn) });
                    let served = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
                    // hyper ends a connection reset between requests without
                    // an error, so the socket's own errors are watched too.
                    if served.is_err() || conn.failed.load(std::sync::atomic::Ordering::Relaxed) {
                        per_conn.connection_failed(&conn);
                    }
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

    /// Every sendMessage call so far, in the order they arrived (see [`ledger`]).
    pub fn attempts(&self, token: &str) -> Vec<ledger::Attempt> {
        self.with(|i| i.bots.get(token).map(|b| b.attempts.clone()).unwrap_or_default())
    }

    /// From now on, calls of `method` that no injected fault is queued for
    /// meet faults drawn from `mix`.
    pub fn set_fault_mix(&self, token: &str, method: &str, mix: FaultMix) {
        self.with(|i| i.bots.entry(token.to_owned()).or_default().mixes.insert(method.to_owned(), mix));
    }

    async fn serve(&self, req: Request<Incoming>, conn: &Conn) -> Result<Response<Full<Bytes>>, std::io::Error> {
        // A new request on this connection: the client read the last answer.
        conn.confirm();
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
                    let queued = bot.faults.get_mut(method).and_then(VecDeque::pop_front);
                    Ok(queued.or_else(|| bot.mixes.get_mut(method).and_then(FaultMix::draw)))
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
        if method != "sendMessage" {
            return self.call(token, method, &params, fault, conn, None).await;
        }
        // The ledger's entry, settled below; if hyper drops this future (the
        // client went away mid-call), the guard settles it as lost.
        let index = self.with(|i| {
            let bot = i.bots.get_mut(token).expect("known token");
            bot.attempts.push(ledger::Attempt {
                chat_id: int(&params["chat_id"]).unwrap_or_default(),
                reply_to: int(&params["reply_parameters"]["message_id"]),
                text: params["text"].as_str().unwrap_or_default().to_owned(),
                fault: fault.clone(),
                recorded: false,
                received: Instant::now(),
                answer: ledger::Answer::Pending,
            });
            bot.attempts.len() - 1
        });
        let _guard = Unsettled { standin: self.clone(), token: token.to_owned(), index };
        let result = self.call(token, method, &params, fault, conn, Some(index)).await;
        let now = Instant::now();
        let settled = match &result {
            Err(_) => ledger::Answer::Lost { why: ledger::Lost::Dropped, at: now },
            Ok(_) if conn.client_gone() => ledger::Answer::Lost { why: ledger::Lost::ClientGone, at: now },
            Ok(response) => ledger::Answer::Delivered { status: response.status().as_u16(), at: now },
        };
        self.settle(token, index, settled);
        if matches!(settled, ledger::Answer::Delivered { .. }) {
            conn.answered(token, index);
        }
        result
    }

    /// Carries out `method`, or the fault it met instead. `attempt` is the
    /// ledger entry of a sendMessage call.
    async fn call(
        &self,
        token: &str,
        method: &str,
        params: &Value,
        fault: Option<Fault>,
        conn: &Conn,
        attempt: Option<usize>,
    ) -> Result<Response<Full<Bytes>>, std::io::Error> {
        let dropped = || std::io::Error::other("dropped on purpose");
        match fault {
            None => {}
            Some(Fault::RetryAfter(secs)) => {
                return Ok(answer(
                    429,
                    json!({ "ok": false, "error_code": 429, "description": format!("Too Many Requests: retry after {secs}"), "parameters": { "retry_after": secs } }),
                ));
            }
            Some(Fault::Conflict(d)) => return Ok(error(409, &format!("Conflict: {d}"))),
            Some(Fault::Status(code)) => return Ok(error(code, "injected")),
            Some(Fault::SlowStatus(code, d)) => {
                tokio::time::sleep(d).await;
                return Ok(error(code, "injected"));
            }
            Some(Fault::Drop) => return Err(dropped()),
            Some(Fault::Malformed) => {
                return Ok(Response::builder()
                    .status(200)
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from_static(b"{\"ok\": tru")))
                    .expect("valid response"));
            }
            Some(Fault::Delay(d)) => tokio::time::sleep(d).await,
            Some(Fault::LoseAnswer) => {
                let _ = self.method(token, method, params, attempt).await;
                return Err(dropped());
            }
            Some(Fault::SlowAnswer) => {
                let response = self.method(token, method, params, attempt).await;
                let give_up = Instant::now() + Duration::from_secs(300);
                while !conn.client_gone() && Instant::now() < give_up {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                return Ok(response);
            }
        }
        Ok(self.method(token, method, params, attempt).await)
    }

    /// Settles a ledger entry that is still pending.
    fn settle(&self, token: &str, index: usize, settled: ledger::Answer) {
        self.with(|i| {
            if let Some(a) = i.bots.get_mut(token).and_then(|b| b.attempts.get_mut(index))
                && a.answer == ledger::Answer::Pending
            {
                a.answer = settled;
            }
        });
    }

    /// A connection ended in an error (a reset): the answer it carried last,
    /// if no request came after it, was not read.
    fn connection_failed(&self, conn: &Conn) {
        let Some((token, index)) = conn.unconfirmed.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take()
        else {
            return;
        };
        self.with(|i| {
            if let Some(a) = i.bots.get_mut(&token).and_then(|b| b.attempts.get_mut(index))
                && matches!(a.answer, ledger::Answer::Delivered { .. })
            {
                a.answer = ledger::Answer::Lost { why: ledger::Lost::Reset, at: Instant::now() };
            }
        });
    }

    async fn method(&self, token: &str, method: &str, params: &Value, attempt: Option<usize>) -> Response<Full<Bytes>> {
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
                    if let Some(a) = attempt.and_then(|n| bot.attempts.get_mut(n)) {
                        a.recorded = true;
                    }
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

/// One client connection, as seen from beside hyper.
#[derive(Debug)]
struct Conn {
    /// A second handle on the socket, to peek whether the client is still there.
    peer: std::net::TcpStream,
    /// The sendMessage call answered last on this connection, until the
    /// client's next request shows it read the answer: (token, ledger index).
    unconfirmed: Mutex<Option<(String, usize)>>,
    /// Reading or writing the socket failed (a reset, mostly).
    failed: std::sync::atomic::AtomicBool,
}

/// The socket hyper reads and writes, noting any error on the connection.
struct Watched {
    stream: tokio::net::TcpStream,
    conn: Arc<Conn>,
}

impl Watched {
    fn note<T>(&self, result: std::task::Poll<std::io::Result<T>>) -> std::task::Poll<std::io::Result<T>> {
        if let std::task::Poll::Ready(Err(_)) = &result {
            self.conn.failed.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        result
    }
}

impl tokio::io::AsyncRead for Watched {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let result = std::pin::Pin::new(&mut self.stream).poll_read(cx, buf);
        self.note(result)
    }
}

impl tokio::io::AsyncWrite for Watched {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let result = std::pin::Pin::new(&mut self.stream).poll_write(cx, buf);
        self.note(result)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let result = std::pin::Pin::new(&mut self.stream).poll_flush(cx);
        self.note(result)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let result = std::pin::Pin::new(&mut self.stream).poll_shutdown(cx);
        self.note(result)
    }
}

impl Conn {
    /// The stream for hyper, and the connection's own handle on the same socket.
    fn split(stream: tokio::net::TcpStream) -> std::io::Result<(tokio::net::TcpStream, Conn)> {
        let std = stream.into_std()?;
        let peer = std.try_clone()?;
        Ok((tokio::net::TcpStream::from_std(std)?, Conn { peer, unconfirmed: Mutex::new(None), failed: false.into() }))
    }

    /// Whether the client has closed or reset its end: an answer written now
    /// would not be read. (The socket is non-blocking: a live, quiet client
    /// makes the peek fail with `WouldBlock`.)
    fn client_gone(&self) -> bool {
        let mut byte = [0u8; 1];
        match self.peer.peek(&mut byte) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
        }
    }

    fn answered(&self, token: &str, index: usize) {
        *self.unconfirmed.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some((token.to_owned(), index));
    }

    fn confirm(&self) {
        self.unconfirmed.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
    }
}

/// Settles a sendMessage call's ledger entry as lost if the call is dropped
/// before it is settled (hyper drops a call whose client went away).
struct Unsettled {
    standin: StandIn,
    token: String,
    index: usize,
}

impl Drop for Unsettled {
    fn drop(&mut self) {
        let lost = ledger::Answer::Lost { why: ledger::Lost::ClientGone, at: Instant::now() };
        self.standin.settle(&self.token, self.index, lost);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fault_mix_gives_each_fault_its_share_and_repeats_with_its_seed() {
        let draws = |seed| {
            let mut mix = FaultMix::new(seed)
                .with(0.05, Fault::RetryAfter(1))
                .with(0.02, Fault::Drop)
                .with(0.01, Fault::Malformed);
            (0..20_000).map(|_| mix.draw()).collect::<Vec<_>>()
        };
        let a = draws(7);
        assert_eq!(a, draws(7), "the same seed gives the same faults");
        assert_ne!(a, draws(8));
        let share = |f: &Fault| a.iter().filter(|d| d.as_ref() == Some(f)).count() as f64 / a.len() as f64;
        assert!((share(&Fault::RetryAfter(1)) - 0.05).abs() < 0.01, "{}", share(&Fault::RetryAfter(1)));
        assert!((share(&Fault::Drop) - 0.02).abs() < 0.006, "{}", share(&Fault::Drop));
        assert!((share(&Fault::Malformed) - 0.01).abs() < 0.004, "{}", share(&Fault::Malformed));
        assert!((a.iter().filter(|d| d.is_none()).count() as f64 / a.len() as f64 - 0.92).abs() < 0.012);
    }
}
