//! The stand-in's record of every `sendMessage` call: whether the message
//! was recorded (the chat shows it) and whether the client read the answer.
//! Tests compare a bot's replies against it: which updates were answered
//! once, twice or never, and whether each extra or missing answer is
//! explained by a call whose answer the client never had.
//!
//! "Read the answer" is decided on the connection: the answer counts as
//! delivered when the stand-in writes it to a client that is still there,
//! and stops counting if the connection then ends in a reset (a client
//! killed with the answer unread in its socket makes its kernel send one).
//! A client that reads the answer and goes on sends its next request, or
//! closes the connection cleanly.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::Fault;

/// One `sendMessage` call, as the stand-in saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct Attempt {
    pub chat_id: i64,
    /// `reply_parameters.message_id`: which message the reply answers.
    pub reply_to: Option<i64>,
    pub text: String,
    /// The fault the call met, if any.
    pub fault: Option<Fault>,
    /// Whether the message was recorded: the call was carried out.
    pub recorded: bool,
    /// When the request arrived.
    pub received: Instant,
    pub answer: Answer,
}

/// What became of a call's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// The call is still being handled.
    Pending,
    /// Written to a client that was there to read it, with this HTTP status.
    Delivered { status: u16, at: Instant },
    /// The client never read an answer; `at` is when the stand-in found out.
    Lost { why: Lost, at: Instant },
}

/// Why an answer was not read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lost {
    /// A fault closed the connection instead of answering.
    Dropped,
    /// The client had closed the connection before the answer (it timed
    /// out, or its process died while the call was being handled).
    ClientGone,
    /// The answer was written, then the connection was reset: the client's
    /// process died with the answer unread.
    Reset,
}

impl Attempt {
    /// Whether the client could not tell if the message was sent: it read
    /// no answer, or a 2xx answer it could not parse. The other answers say
    /// either "sent" or "not sent".
    pub fn ambiguous(&self) -> bool {
        match self.answer {
            Answer::Delivered { status, .. } => (200..300).contains(&status) && self.fault == Some(Fault::Malformed),
            Answer::Pending | Answer::Lost { .. } => true,
        }
    }

    /// Whether the client read an answer saying the message was sent.
    pub fn succeeded(&self) -> bool {
        matches!(self.answer, Answer::Delivered { status: 200..=299, .. }) && !self.ambiguous()
    }

    /// Whether the client read an answer saying the message was not sent
    /// (429, 5xx, any error status).
    pub fn refused(&self) -> bool {
        matches!(self.answer, Answer::Delivered { status, .. } if !(200..300).contains(&status))
    }

    /// When the call's fate was settled, for the client: the answer
    /// delivered, or found lost.
    pub fn settled(&self) -> Option<Instant> {
        match self.answer {
            Answer::Pending => None,
            Answer::Delivered { at, .. } | Answer::Lost { at, .. } => Some(at),
        }
    }

    /// Whether the call was in flight at `t`: received, and neither answered
    /// nor found lost yet.
    pub fn in_flight_at(&self, t: Instant) -> bool {
        self.received <= t && self.settled().is_none_or(|at| at >= t)
    }
}

/// Every call for one reply (a chat and the message it answers), in order.
pub fn by_reply(attempts: &[Attempt]) -> BTreeMap<(i64, Option<i64>), Vec<&Attempt>> {
    let mut out: BTreeMap<_, Vec<&Attempt>> = BTreeMap::new();
    for a in attempts {
        out.entry((a.chat_id, a.reply_to)).or_default().push(a);
    }
    out
}

/// A failed call and the one that repeated it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    /// From the failed call's answer (or the moment it was found lost) to
    /// the next call's arrival.
    pub delay: Duration,
    /// The `retry_after` of a 429, which says how long to wait.
    pub retry_after: Option<u64>,
    /// How many failures of this reply, 429s apart, came before and with
    /// this one: a client backing off exponentially waits longer each time.
    pub failures: u32,
}

/// Every retry among `attempts`: for each reply, each call that failed
/// (refused, or ambiguous) and was followed by another.
pub fn retries(attempts: &[Attempt]) -> Vec<Retry> {
    let mut out = Vec::new();
    for calls in by_reply(attempts).values() {
        let mut failures = 0;
        for pair in calls.windows(2) {
            let (failed, next) = (pair[0], pair[1]);
            let Some(settled) = failed.settled() else { continue };
            let retry_after = match failed.fault {
                Some(Fault::RetryAfter(secs)) => Some(secs),
                _ => None,
            };
            if retry_after.is_none() {
                failures += 1;
            }
            out.push(Retry { delay: next.received.saturating_duration_since(settled), retry_after, failures });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt(at: Instant, fault: Option<Fault>, recorded: bool, answer: Answer) -> Attempt {
        Attempt { chat_id: 1, reply_to: Some(10), text: "x".to_owned(), fault, recorded, received: at, answer }
    }

    #[test]
    fn kinds_of_answers() {
        let t = Instant::now();
        let ms = Duration::from_millis;
        let ok = attempt(t, None, true, Answer::Delivered { status: 200, at: t + ms(5) });
        let limited = attempt(t, Some(Fault::RetryAfter(1)), false, Answer::Delivered { status: 429, at: t + ms(5) });
        let garbled = attempt(t, Some(Fault::Malformed), false, Answer::Delivered { status: 200, at: t + ms(5) });
        let dropped = attempt(t, Some(Fault::Drop), false, Answer::Lost { why: Lost::Dropped, at: t + ms(5) });
        assert!(ok.succeeded() && !ok.ambiguous() && !ok.refused());
        assert!(limited.refused() && !limited.ambiguous() && !limited.succeeded());
        assert!(garbled.ambiguous() && !garbled.succeeded() && !garbled.refused());
        assert!(dropped.ambiguous() && !dropped.refused());
        assert!(ok.in_flight_at(t + ms(4)) && !ok.in_flight_at(t + ms(6)) && !ok.in_flight_at(t - ms(1)));
        let pending = attempt(t, None, true, Answer::Pending);
        assert!(pending.in_flight_at(t + Duration::from_secs(60)));
    }

    #[test]
    fn retries_count_failures_apart_from_429s() {
        let t = Instant::now();
        let s = Duration::from_secs;
        let calls = [
            attempt(t, Some(Fault::Status(502)), false, Answer::Delivered { status: 502, at: t }),
            attempt(t + s(1), Some(Fault::RetryAfter(3)), false, Answer::Delivered { status: 429, at: t + s(1) }),
            attempt(t + s(4), Some(Fault::Drop), false, Answer::Lost { why: Lost::Dropped, at: t + s(4) }),
            attempt(t + s(6), None, true, Answer::Delivered { status: 200, at: t + s(6) }),
        ];
        let r = retries(&calls);
        assert_eq!(
            r,
            [
                Retry { delay: s(1), retry_after: None, failures: 1 },
                Retry { delay: s(3), retry_after: Some(3), failures: 1 },
                Retry { delay: s(2), retry_after: None, failures: 2 },
            ]
        );
    }
}
