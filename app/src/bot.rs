//! One bot at run time: its long-polling loop (or webhook set-up) and the
//! update pipeline shared with the webhook route, which hands replies to the
//! bot's sender (`sender`).
//!
//! Each bot runs in its own tasks: a bot that fails, backs off or waits on a
//! rate limit never holds up another.

use std::num::NonZeroU32;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

use serde_json::json;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::commands::{self, BotInfo};
use crate::config::{Delivery, Mode, Token};
use crate::metrics::Metrics;
use crate::status::{State, StatusCell};
use crate::store::{Outgoing, Store};
use crate::telegram::{ApiError, BotApi, Me, Update};

/// Most updates one getUpdates call takes (Telegram's default is 100). All
/// of a poll's updates are handled in one transaction, and the sender's
/// commits wait behind it: the commit that records a reply's answer is the
/// one whose delay turns a crash into a reply sent twice (or, at most once,
/// a reply dropped though it was not on the wire). With 100 a debug build
/// under load held them back tens of milliseconds; 20 keeps that short and
/// is still far more than a bot answers in a second.
const POLL_LIMIT: u32 = 20;

/// Settings every bot shares.
#[derive(Debug, Clone)]
pub(crate) struct Shared {
    pub(crate) store: Arc<Store>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) poll_timeout: Duration,
    pub(crate) public_url: Option<reqwest::Url>,
    pub(crate) per_bot_rate: NonZeroU32,
    pub(crate) per_chat_rate: NonZeroU32,
    /// How long a sendMessage call may take.
    pub(crate) send_timeout: Duration,
    pub(crate) started: Instant,
}

/// One bot.
#[derive(Debug)]
pub(crate) struct Bot {
    pub(crate) name: String,
    pub(crate) mode: Mode,
    pub(crate) api: BotApi,
    pub(crate) status: StatusCell,
    pub(crate) webhook_secret: Option<Token>,
    pub(crate) delivery: Delivery,
    info: RwLock<BotInfo>,
    outbox: mpsc::UnboundedSender<Outgoing>,
    pub(crate) shared: Shared,
}

impl Bot {
    /// Creates the bot and the receiving end of its outbox, for `sender::send_loop`.
    pub(crate) fn new(
        config: crate::config::BotConfig,
        unauthorized: crate::config::Unauthorized,
        api: BotApi,
        shared: Shared,
    ) -> (Arc<Bot>, mpsc::UnboundedReceiver<Outgoing>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let info = BotInfo {
            name: config.name.clone(),
            username: None,
            allowed_users: config.allowed_users,
            admins: config.admins,
            unauthorized,
        };
        let bot = Bot {
            status: StatusCell::new(&config.name),
            name: config.name,
            mode: config.mode,
            api,
            webhook_secret: config.webhook_secret,
            delivery: config.delivery,
            info: RwLock::new(info),
            outbox: tx,
            shared,
        };
        (Arc::new(bot), rx)
    }

    /// Records and answers `updates` (from a poll or a webhook) in one
    /// transaction, then hands the replies to the sender. Returns how many
    /// were new.
    pub(crate) async fn handle_updates(
        self: &Arc<Self>,
        updates: Vec<Update>,
        advance_offset: bool,
    ) -> anyhow::Result<usize> {
        if updates.is_empty() {
            return Ok(0);
        }
        let bot = Arc::clone(self);
        let status_line = self.status_line();
        let (queued, new) = tokio::task::spawn_blocking(move || {
            let info = bot.info.read().unwrap_or_else(std::sync::PoisonError::into_inner);
            let now = unix_now();
            bot.shared.store.handle_batch(
                &bot.name,
                &updates,
                |u| u.update_id,
                advance_offset,
                now,
                |tx, u| commands::handle(tx, &info, u, &status_line, now),
            )
        })
        .await??;
        for out in queued {
            // The receiver lives as long as the sender task; if it is gone we
            // are shutting down and the row stays in the outbox for next time.
            let _ = self.outbox.send(out);
        }
        self.status.update(|s| s.updates_handled += new as u64);
        self.shared.metrics.updates.get_or_create(&Metrics::label(&self.name)).inc_by(new as u64);
        Ok(new)
    }

    fn status_line(&self) -> String {
        let s = self.status.get();
        let who = s.username.map(|u| format!(" (@{u})")).unwrap_or_default();
        let up = self.shared.started.elapsed().as_secs();
        format!(
            "{}{who}: {}. {} updates handled, {} replies sent. Up {}h{:02}m.",
            s.name,
            s.state.label(),
            s.updates_handled,
            s.messages_sent,
            up / 3600,
            up / 60 % 60
        )
    }

    /// Runs the bot until `cancel`: checks the token, then polls or sets up its
    /// webhook. Returns when the bot stops (cancelled, or its token rejected).
    pub(crate) async fn run(self: Arc<Self>, cancel: CancellationToken) {
        let Some(me) = self.until_ok(&cancel, "getMe", &json!({})).await else { return };
        let me: Me = me;
        self.info.write().unwrap_or_else(std::sync::PoisonError::into_inner).username = me.username.clone();
        self.status.update(|s| s.username = me.username);

        let store = Arc::clone(&self.shared.store);
        let name = self.name.clone();
        let last_mode =
            tokio::task::spawn_blocking(move || store.last_mode(&name)).await.ok().and_then(Result::ok).flatten();
        match self.mode {
            Mode::Polling => {
                if last_mode.as_deref() == Some("webhook") {
                    tracing::info!(bot = %self.name, "going back to polling: deleting the webhook");
                    let body = json!({ "drop_pending_updates": false });
                    if self.until_ok::<bool>(&cancel, "deleteWebhook", &body).await.is_none() {
                        return;
                    }
                }
                self.remember_mode("polling").await;
                self.poll_loop(cancel).await;
            }
            Mode::Webhook => {
                if let Some(base) = &self.shared.public_url {
                    let url = format!("{}/telegram/{}", base.as_str().trim_end_matches('/'), self.name);
                    let secret = self.webhook_secret.as_ref().map(Token::expose).unwrap_or_default();
                    let body = json!({ "url": url, "secret_token": secret, "allowed_updates": ["message"] });
                    if self.until_ok::<bool>(&cancel, "setWebhook", &body).await.is_none() {
                        return;
                    }
                    tracing::info!(bot = %self.name, %url, "webhook set");
                } else {
                    tracing::warn!(bot = %self.name, "webhook mode without app.public_url: expecting the webhook to be set elsewhere");
                }
                self.remember_mode("webhook").await;
                self.status.set_state(State::Webhook);
                self.set_up(true);
                cancel.cancelled().await;
            }
        }
        self.status.update(|s| {
            if !matches!(s.state, State::Failed(_)) {
                s.state = State::Stopped;
            }
        });
        self.set_up(false);
    }

    async fn remember_mode(&self, mode: &'static str) {
        let store = Arc::clone(&self.shared.store);
        let name = self.name.clone();
        if let Ok(Err(e)) = tokio::task::spawn_blocking(move || store.set_mode(&name, mode)).await {
            tracing::warn!(bot = %self.name, error = %e, "cannot record the bot's mode");
        }
    }

    fn set_up(&self, up: bool) {
        self.shared.metrics.bot_up.get_or_create(&Metrics::label(&self.name)).set(i64::from(up));
    }

    /// Calls `method` until it succeeds, backing off on transient errors.
    /// `None` when cancelled or when the token is rejected (the bot is then
    /// marked failed).
    async fn until_ok<T: serde::de::DeserializeOwned>(
        &self,
        cancel: &CancellationToken,
        method: &str,
        body: &serde_json::Value,
    ) -> Option<T> {
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        loop {
            let result = tokio::select! {
                () = cancel.cancelled() => return None,
                r = self.api.call::<T>(method, body, Duration::from_secs(30)) => r,
            };
            let wait = match result {
                Ok(v) => return Some(v),
                Err(e) => match self.classify(&e, &mut backoff) {
                    Some(wait) => wait,
                    None => return None,
                },
            };
            if !sleep_or_cancel(cancel, wait).await {
                return None;
            }
        }
    }

    /// Updates state and metrics for an error; returns how long to wait, or
    /// `None` when the bot must stop (token rejected).
    pub(crate) fn classify(&self, e: &ApiError, backoff: &mut Backoff) -> Option<Duration> {
        self.shared.metrics.error(&self.name, e.kind());
        self.set_up(false);
        let (state, wait) = match e {
            ApiError::Rejected { .. } => {
                tracing::error!(bot = %self.name, error = %e, "token rejected; this bot stops, the others go on");
                self.status.set_state(State::Failed(format!(
                    "{e}; check the bot's token_secret (seal a new token with cargo xtask encrypt-secret)"
                )));
                return None;
            }
            ApiError::RetryAfter(secs) => (State::BackingOff(e.to_string()), Duration::from_secs(*secs)),
            ApiError::Conflict(_) => (State::Conflict(e.to_string()), backoff.next().max(Duration::from_secs(5))),
            _ => (State::BackingOff(e.to_string()), backoff.next()),
        };
        tracing::warn!(bot = %self.name, error = %e, wait_ms = wait.as_millis() as u64, "Bot API call failed");
        self.status.set_state(state);
        Some(wait)
    }

    async fn poll_loop(self: &Arc<Self>, cancel: CancellationToken) {
        let store = Arc::clone(&self.shared.store);
        let name = self.name.clone();
        let mut offset = match tokio::task::spawn_blocking(move || store.next_offset(&name)).await {
            Ok(Ok(o)) => o,
            _ => 0,
        };
        let long = self.shared.poll_timeout;
        // The first poll returns at once: /readyz then says within a round
        // trip whether the bot reaches the Bot API, not a long poll later.
        let mut timeout = Duration::ZERO;
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        let latency = self.shared.metrics.poll_latency.get_or_create(&Metrics::label(&self.name)).clone();
        loop {
            let body = json!({ "offset": offset, "timeout": timeout.as_secs(), "limit": POLL_LIMIT, "allowed_updates": ["message"] });
            let start = Instant::now();
            // The HTTP timeout sits above the long-poll timeout, so an idle
            // poll ends with an empty answer, not a client-side timeout.
            let result = tokio::select! {
                // Dropping an in-flight poll is safe: nothing it returned has
                // been confirmed, so Telegram sends it again next time.
                () = cancel.cancelled() => return,
                r = self.api.call::<Vec<Update>>("getUpdates", &body, timeout + Duration::from_secs(15)) => r,
            };
            latency.observe(start.elapsed().as_secs_f64());
            match result {
                Ok(updates) => {
                    backoff.reset();
                    timeout = long;
                    self.status.update(|s| {
                        s.state = State::Polling;
                        s.last_ok_poll = Some(SystemTime::now());
                    });
                    self.set_up(true);
                    let next = updates.iter().map(|u| u.update_id + 1).max();
                    match self.handle_updates(updates, true).await {
                        Ok(_) => {
                            if let Some(next) = next {
                                offset = offset.max(next);
                            }
                        }
                        Err(e) => {
                            // Not confirmed: the same updates come again.
                            tracing::error!(bot = %self.name, error = %e, "cannot record updates");
                            self.shared.metrics.error(&self.name, "storage");
                            if !sleep_or_cancel(&cancel, backoff.next()).await {
                                return;
                            }
                        }
                    }
                }
                Err(e) => match self.classify(&e, &mut backoff) {
                    Some(wait) => {
                        if !sleep_or_cancel(&cancel, wait).await {
                            return;
                        }
                    }
                    None => return,
                },
            }
        }
    }
}

/// Sleeps for `wait`; `false` if cancelled first.
async fn sleep_or_cancel(cancel: &CancellationToken, wait: Duration) -> bool {
    tokio::select! {
        () = cancel.cancelled() => false,
        () = tokio::time::sleep(wait) => true,
    }
}

/// Exponential backoff with jitter: each wait is drawn between half and all of
/// `base * 2^attempt`, capped, so many bots that fail together do not retry
/// together.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
}

impl Backoff {
    pub(crate) fn new(base: Duration, cap: Duration) -> Backoff {
        Backoff { base, cap, attempt: 0 }
    }

    pub(crate) fn next(&mut self) -> Duration {
        let ceiling = self.base.saturating_mul(1 << self.attempt.min(16)).min(self.cap);
        self.attempt = self.attempt.saturating_add(1);
        let half = ceiling / 2;
        half + half.mul_f64(fastrand::f64())
    }

    pub(crate) fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// Seconds since the Unix epoch.
pub(crate) fn unix_now() -> i64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_and_caps() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        let waits: Vec<Duration> = (0..10).map(|_| b.next()).collect();
        assert!(waits[0] >= Duration::from_millis(500) && waits[0] <= Duration::from_secs(1));
        assert!(waits[3] >= Duration::from_secs(4) && waits[3] <= Duration::from_secs(8));
        assert!(waits.iter().all(|w| *w <= Duration::from_secs(60)));
        assert!(waits[9] >= Duration::from_secs(30));
        b.reset();
        assert!(b.next() <= Duration::from_secs(1));
    }
}
