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

impl Retry {
    /// How much longer than it had to the retry waited: after a 429, its
    /// `retry_after`; after any other failure, the ceiling of an exponential
    /// backoff that starts at `base` and doubles with each failure, up to `cap`.
    pub fn beyond(&self, base: Duration, cap: Duration) -> Duration {
        let allowed = match self.retry_after {
            Some(secs) => Duration::from_secs(secs),
            None => base.saturating_mul(1 << self.failures.saturating_sub(1).min(16)).min(cap),
        };
        self.delay.saturating_sub(allowed)
    }
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

/// How often each expected reply was recorded.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    pub once: usize,
    pub twice_or_more: usize,
    pub never: usize,
    /// Recordings beyond the first, over all replies.
    pub extra: usize,
    /// Calls whose fate the client could not know ([`Attempt::ambiguous`]).
    pub ambiguous_calls: usize,
}

/// Tallies the replies `expected` (keys as in [`by_reply`]) in `attempts`.
pub fn tally(attempts: &[Attempt], expected: &[(i64, Option<i64>)]) -> Tally {
    let calls = by_reply(attempts);
    let mut t = Tally::default();
    for key in expected {
        let Some(c) = calls.get(key) else {
            t.never += 1;
            continue;
        };
        match c.iter().filter(|a| a.recorded).count() {
            0 => t.never += 1,
            1 => t.once += 1,
            n => {
                t.twice_or_more += 1;
                t.extra += n - 1;
            }
        }
        t.ambiguous_calls += c.iter().filter(|a| a.ambiguous()).count();
    }
    t
}

/// The share of pairs of replies recorded in the reverse order of
/// `expected` (each reply counted at its first recording; replies never
/// recorded are left out).
pub fn out_of_order(attempts: &[Attempt], expected: &[(i64, Option<i64>)]) -> f64 {
    let rank: BTreeMap<(i64, Option<i64>), usize> = expected.iter().enumerate().map(|(i, k)| (*k, i)).collect();
    let mut seen = std::collections::BTreeSet::new();
    let order: Vec<usize> = attempts
        .iter()
        .filter(|a| a.recorded)
        .filter_map(|a| rank.get(&(a.chat_id, a.reply_to)).copied())
        .filter(|r| seen.insert(*r))
        .collect();
    inverted_pairs(&order)
}

/// The share of pairs (i before j) with `order[i] > order[j]`, counted by
/// merge sort: the lists run to tens of thousands.
fn inverted_pairs(order: &[usize]) -> f64 {
    fn sort(v: &mut Vec<usize>) -> u64 {
        if v.len() < 2 {
            return 0;
        }
        let mut right = v.split_off(v.len() / 2);
        let mut inversions = sort(v) + sort(&mut right);
        let mut merged = Vec::with_capacity(v.len() + right.len());
        let (mut i, mut j) = (0, 0);
        while i < v.len() && j < right.len() {
            if right[j] < v[i] {
                inversions += (v.len() - i) as u64;
                merged.push(right[j]);
                j += 1;
            } else {
                merged.push(v[i]);
                i += 1;
            }
        }
        merged.extend_from_slice(&v[i..]);
        merged.extend_from_slice(&right[j..]);
        *v = merged;
        inversions
    }
    let pairs = (order.len() * order.len().saturating_sub(1) / 2).max(1);
    sort(&mut order.to_vec()) as f64 / pairs as f64
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
    fn inverted_pairs_counts_pairs_out_of_order() {
        assert_eq!(inverted_pairs(&[0, 1, 2, 3]), 0.0);
        assert_eq!(inverted_pairs(&[3, 2, 1, 0]), 1.0);
        assert_eq!(inverted_pairs(&[1, 0, 2, 3]), 1.0 / 6.0);
        assert_eq!(inverted_pairs(&[2, 3, 0, 1]), 4.0 / 6.0);
    }

    #[test]
    fn tally_and_order_count_recordings() {
        let t = Instant::now();
        let ok = |chat, reply: i64| Attempt {
            chat_id: chat,
            reply_to: Some(reply),
            text: String::new(),
            fault: None,
            recorded: true,
            received: t,
            answer: Answer::Delivered { status: 200, at: t },
        };
        let lost = Attempt { recorded: false, answer: Answer::Lost { why: Lost::Dropped, at: t }, ..ok(2, 20) };
        let attempts = [ok(1, 10), ok(3, 30), lost, ok(1, 10), ok(4, 40)];
        let expected = [(1, Some(10)), (2, Some(20)), (3, Some(30)), (4, Some(40)), (5, Some(50))];
        let tally = tally(&attempts, &expected);
        assert_eq!(tally, Tally { once: 2, twice_or_more: 1, never: 2, extra: 1, ambiguous_calls: 1 });
        // Recorded first: 1, 3, 4 (the repeat of 1 does not count): in order.
        assert_eq!(out_of_order(&attempts, &expected), 0.0);
        assert_eq!(out_of_order(&[ok(3, 30), ok(1, 10)], &expected), 1.0);
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
        let (base, cap) = (s(1), s(60));
        assert_eq!(r.iter().map(|r| r.beyond(base, cap)).collect::<Vec<_>>(), [s(0), s(0), s(0)]);
        let late = Retry { delay: s(5), retry_after: None, failures: 3 };
        assert_eq!(late.beyond(base, cap), s(1));
        assert_eq!(Retry { delay: s(70), retry_after: None, failures: 9 }.beyond(base, cap), s(10));
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
