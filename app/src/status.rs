//! Each bot's live state, shared by its tasks, the dashboard, `/readyz` and
//! `/metrics`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// What a bot is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum State {
    /// Checking its token and webhook before the first poll.
    Starting,
    /// Long polling works.
    Polling,
    /// Receiving updates by webhook.
    Webhook,
    /// Another consumer has the updates (second poller, or a webhook is set).
    Conflict(String),
    /// Waiting before trying again after an error.
    BackingOff(String),
    /// Stopped for good: the token was rejected.
    Failed(String),
    /// Shut down.
    Stopped,
}

impl State {
    /// The label the dashboard and metrics show.
    pub(crate) fn label(&self) -> &'static str {
        match self {
            State::Starting => "starting",
            State::Polling => "polling",
            State::Webhook => "webhook",
            State::Conflict(_) => "conflict",
            State::BackingOff(_) => "backing off",
            State::Failed(_) => "failed",
            State::Stopped => "stopped",
        }
    }

    /// The reason, for states that have one.
    pub(crate) fn reason(&self) -> Option<&str> {
        match self {
            State::Conflict(r) | State::BackingOff(r) | State::Failed(r) => Some(r),
            _ => None,
        }
    }
}

/// One bot's status.
#[derive(Debug, Clone)]
pub(crate) struct BotStatus {
    pub(crate) name: String,
    pub(crate) username: Option<String>,
    pub(crate) state: State,
    pub(crate) last_ok_poll: Option<SystemTime>,
    pub(crate) updates_handled: u64,
    pub(crate) messages_sent: u64,
}

/// A shared handle to one bot's status.
#[derive(Debug, Clone)]
pub(crate) struct StatusCell(Arc<Mutex<BotStatus>>);

impl StatusCell {
    pub(crate) fn new(name: &str) -> StatusCell {
        StatusCell(Arc::new(Mutex::new(BotStatus {
            name: name.to_owned(),
            username: None,
            state: State::Starting,
            last_ok_poll: None,
            updates_handled: 0,
            messages_sent: 0,
        })))
    }

    pub(crate) fn update(&self, f: impl FnOnce(&mut BotStatus)) {
        f(&mut self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
    }

    pub(crate) fn get(&self) -> BotStatus {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    pub(crate) fn set_state(&self, state: State) {
        self.update(|s| s.state = state);
    }
}

impl BotStatus {
    /// Whether the bot works: polling with a successful poll recently, or on a
    /// webhook. `poll_timeout` is the long-poll timeout: a healthy poller
    /// completes a poll at least that often.
    pub(crate) fn healthy(&self, now: SystemTime, poll_timeout: Duration) -> Result<(), String> {
        match &self.state {
            State::Webhook => Ok(()),
            State::Polling => {
                let limit = poll_timeout * 2 + Duration::from_secs(30);
                match self.last_ok_poll.and_then(|t| now.duration_since(t).ok()) {
                    Some(age) if age <= limit => Ok(()),
                    Some(age) => Err(format!("no successful poll for {} s", age.as_secs())),
                    None => Err("no successful poll yet".to_owned()),
                }
            }
            other => Err(match other.reason() {
                Some(r) => format!("{}: {r}", other.label()),
                None => other.label().to_owned(),
            }),
        }
    }
}
