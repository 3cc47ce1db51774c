//! A bot's sender: its replies go out in the order they became due, each
//! chat's in order, within the per-bot and per-chat rate limits, and a reply
//! whose send failed is retried when its backoff is over. One delivery
//! policy decides, while running and after a restart alike, what becomes of
//! a reply that may or may not have arrived.
//!
//! The queue: a reply is due from the moment it is queued. Every chat with a
//! reply that may go has one entry in a heap ordered by (when its first
//! reply was queued, outbox id), so the longest waiting goes first, and
//! replies to different chats go out in the order of their updates as far as
//! the rate limits allow. A reply whose send failed keeps its place but
//! waits aside until its backoff is over; then it is among the oldest, so
//! it goes at the next slot the rate limits give, not behind every reply
//! queued since. Each chat has at most one request in flight, which keeps
//! its replies in order. Both rate limits are asked before either is spent,
//! so a refusal takes nothing: a chat refused by its own limit waits aside
//! (keeping its place) until that limit allows it; a refusal by the bot's
//! limit ends the round.
//!
//! The marks: a reply is marked attempted, committed, just before its
//! request goes on the wire, and the mark is cleared (or the reply removed)
//! in a commit right after its answer. A reply waiting for a retry is not
//! marked. So a mark found at startup means what it says: that request was
//! in flight when the process stopped.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::bot::{Backoff, Bot, unix_now};
use crate::config::Delivery;
use crate::metrics::Metrics;
use crate::store::{Changes, Outgoing};
use crate::telegram::ApiError;

/// How long a stopping sender waits for the answers of requests already in
/// flight. The process must be gone within 10 s of SIGTERM (`main` keeps
/// that); a request still unanswered then stays marked, and the next start
/// treats it as one that may have arrived.
pub(crate) const DRAIN: Duration = Duration::from_secs(6);

/// The first retry waits 0.5 to 1 s, each next one up to twice as long.
const BACKOFF_BASE: Duration = Duration::from_secs(1);
const BACKOFF_CAP: Duration = Duration::from_secs(60);

/// A rate limit of `n` a second with bursts of up to `n`, as the generic
/// cell rate algorithm, split in two so a refusal spends nothing: `ready_at`
/// asks when the next send may go, `spend` records one.
#[derive(Debug, Clone, Copy)]
struct Rate {
    interval: Duration,
    /// How far ahead of its theoretical arrival time a send may go: the burst.
    tolerance: Duration,
}

impl Rate {
    fn per_second(n: NonZeroU32) -> Rate {
        let interval = Duration::from_secs(1) / n.get();
        Rate { interval, tolerance: interval * (n.get() - 1) }
    }

    /// The earliest instant a send may go, given the limit's theoretical
    /// arrival time (`None`: never used, or long idle).
    fn ready_at(&self, tat: Option<Instant>, now: Instant) -> Instant {
        match tat {
            Some(tat) => tat.checked_sub(self.tolerance).map_or(now, |t| t.max(now)),
            None => now,
        }
    }

    /// The theoretical arrival time after a send at `now`.
    fn spend(&self, tat: Option<Instant>, now: Instant) -> Instant {
        tat.map_or(now, |t| t.max(now)) + self.interval
    }
}

/// A chat's place in the queue: the heap's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Due {
    /// When the chat's first reply was queued.
    at: Instant,
    /// The outbox id: among replies queued at once, the older update first.
    id: i64,
    chat: i64,
}

#[derive(Debug)]
struct Waiting {
    out: Outgoing,
    /// When it was queued: when it became due, unless it is retried.
    queued: Instant,
}

/// One chat's replies.
#[derive(Debug)]
struct Chat {
    replies: VecDeque<Waiting>,
    in_flight: bool,
    /// The first reply's failed attempts so far.
    backoff: Backoff,
}

/// A bot's replies waiting to go, and the rule that picks which go next.
/// Pure bookkeeping: `send_loop` does the storage and the sending.
#[derive(Debug)]
struct Queue {
    chats: HashMap<i64, Chat>,
    /// One entry for every chat whose first reply may go now.
    ready: BinaryHeap<Reverse<Due>>,
    /// Chats whose first reply may not go before an instant (its retry's
    /// backoff, or the chat's rate limit), keeping their place until then.
    later: BinaryHeap<Reverse<(Instant, Due)>>,
    per_bot: Rate,
    bot_tat: Option<Instant>,
    per_chat: Rate,
    chat_tat: HashMap<i64, Instant>,
    len: usize,
}

/// What to do with a chat's first reply once its send has an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    /// It leaves the queue: delivered, refused for good, or given up.
    Done,
    /// It stays first and goes again after this long.
    RetryAfter(Duration),
    /// It stays first and goes again after the chat's next backoff.
    RetryWithBackoff,
}

impl Queue {
    fn new(per_bot: NonZeroU32, per_chat: NonZeroU32) -> Queue {
        Queue {
            chats: HashMap::new(),
            ready: BinaryHeap::new(),
            later: BinaryHeap::new(),
            per_bot: Rate::per_second(per_bot),
            bot_tat: None,
            per_chat: Rate::per_second(per_chat),
            chat_tat: HashMap::new(),
            len: 0,
        }
    }

    /// Replies queued, in flight included.
    fn len(&self) -> usize {
        self.len
    }

    fn push(&mut self, out: Outgoing, now: Instant) {
        let chat_id = out.chat_id;
        let chat = self.chats.entry(chat_id).or_insert_with(|| Chat {
            replies: VecDeque::new(),
            in_flight: false,
            backoff: Backoff::new(BACKOFF_BASE, BACKOFF_CAP),
        });
        let first = chat.replies.is_empty() && !chat.in_flight;
        let id = out.id;
        chat.replies.push_back(Waiting { out, queued: now });
        self.len += 1;
        if first {
            self.ready.push(Reverse(Due { at: now, id, chat: chat_id }));
        }
    }

    /// Takes the replies that may go at `now`, oldest due first, spending
    /// both rate limits for each; marks their chats in flight. Also returns
    /// when the next one may go, if any is waiting.
    fn take(&mut self, now: Instant) -> (Vec<Outgoing>, Option<Instant>) {
        while let Some(Reverse((at, due))) = self.later.peek().copied()
            && at <= now
        {
            self.later.pop();
            self.ready.push(Reverse(due));
        }
        let mut batch = Vec::new();
        let mut wake = self.later.peek().map(|Reverse((at, _))| *at);
        while let Some(Reverse(due)) = self.ready.peek().copied() {
            let chat_at = self.per_chat.ready_at(self.chat_tat.get(&due.chat).copied(), now);
            if chat_at > now {
                self.ready.pop();
                self.later.push(Reverse((chat_at, due)));
                wake = earliest(wake, chat_at);
                continue;
            }
            let bot_at = self.per_bot.ready_at(self.bot_tat, now);
            if bot_at > now {
                wake = earliest(wake, bot_at);
                break;
            }
            self.ready.pop();
            let Some(chat) = self.chats.get_mut(&due.chat) else { continue };
            let Some(first) = chat.replies.front() else { continue };
            chat.in_flight = true;
            self.bot_tat = Some(self.per_bot.spend(self.bot_tat, now));
            self.chat_tat.insert(due.chat, self.per_chat.spend(self.chat_tat.get(&due.chat).copied(), now));
            batch.push(first.out.clone());
        }
        (batch, wake)
    }

    /// Records the answer to `chat`'s reply in flight. Returns the wait
    /// before its retry, if it is retried.
    fn answered(&mut self, chat_id: i64, next: Next, now: Instant) -> Option<Duration> {
        let chat = self.chats.get_mut(&chat_id).filter(|c| c.in_flight)?;
        chat.in_flight = false;
        let wait = match next {
            Next::Done => {
                chat.replies.pop_front();
                self.len -= 1;
                chat.backoff.reset();
                let Some(first) = chat.replies.front() else {
                    self.chats.remove(&chat_id);
                    return None;
                };
                // Due since it was queued: it keeps its place among other chats' replies.
                self.ready.push(Reverse(Due { at: first.queued, id: first.out.id, chat: chat_id }));
                return None;
            }
            Next::RetryAfter(wait) => wait,
            Next::RetryWithBackoff => chat.backoff.next(),
        };
        let first = chat.replies.front()?;
        let due = Due { at: first.queued, id: first.out.id, chat: chat_id };
        self.later.push(Reverse((now + wait, due)));
        Some(wait)
    }

    /// Forgets per-chat rate state that no longer limits anything.
    fn tidy(&mut self, now: Instant) {
        self.chat_tat.retain(|_, tat| *tat > now);
    }
}

fn earliest(a: Option<Instant>, b: Instant) -> Option<Instant> {
    Some(a.map_or(b, |a| a.min(b)))
}

/// What an answer means for the reply, by the bot's delivery policy.
fn next_for(result: &Result<serde_json::Value, ApiError>, delivery: Delivery) -> Next {
    match result {
        Ok(_) => Next::Done,
        // The chat is gone or blocked the bot: retrying cannot help.
        Err(ApiError::BadRequest { .. }) => Next::Done,
        Err(ApiError::RetryAfter(secs)) => Next::RetryAfter(Duration::from_secs(*secs)),
        Err(e) if e.may_have_arrived() => match delivery {
            Delivery::AtLeastOnce => Next::RetryWithBackoff,
            Delivery::AtMostOnce => Next::Done,
        },
        // Known not delivered: 5xx, 409, no connection, a malformed error answer.
        Err(_) => Next::RetryWithBackoff,
    }
}

/// Sends a bot's replies until `cancel`, then waits up to `DRAIN` for the
/// answers of those in flight. Starts with what the outbox already holds:
/// replies queued before a restart, and those in flight when the last run
/// stopped, which the delivery policy sends again or gives up.
pub(crate) async fn send_loop(
    bot: Arc<Bot>,
    mut incoming: mpsc::UnboundedReceiver<Outgoing>,
    cancel: CancellationToken,
) {
    let delivery = bot.delivery;
    let timeout = bot.shared.send_timeout;
    let label = Metrics::label(&bot.name);
    let queued_gauge = bot.shared.metrics.replies_queued.get_or_create(&label).clone();
    let mut queue = Queue::new(bot.shared.per_bot_rate, bot.shared.per_chat_rate);
    // Rows read from the outbox at start may also arrive on the channel: skip those.
    let mut loaded_up_to = 0;
    for out in recover(&bot).await {
        loaded_up_to = loaded_up_to.max(out.id);
        queue.push(out, Instant::now());
    }

    let mut tasks: JoinSet<(Outgoing, Sent)> = JoinSet::new();
    // What send tasks could not commit, committed again before anything else is sent.
    let mut unrecorded = Changes::default();
    let mut stopping: Option<Instant> = None;
    let mut last_tidy = Instant::now();
    loop {
        while let Ok(out) = incoming.try_recv() {
            if out.id > loaded_up_to {
                queue.push(out, Instant::now());
            }
        }
        let now = Instant::now();
        let mut wake = None;
        if !unrecorded.is_empty() {
            if commit_now(&bot, &unrecorded) {
                unrecorded = Changes::default();
            } else {
                wake = Some(now + Duration::from_secs(1));
            }
        }
        // While an answer is not recorded, nothing is sent: a new mark could
        // be undone by that answer's late commit.
        if stopping.is_none() && unrecorded.is_empty() {
            let (batch, next) = queue.take(now);
            wake = next;
            for out in batch {
                tasks.spawn(send_one(Arc::clone(&bot), out, delivery, timeout));
            }
        }
        queued_gauge.set(queue.len() as i64);
        if let Some(since) = stopping
            && (tasks.is_empty() || since.elapsed() >= DRAIN)
        {
            break;
        }
        if now.duration_since(last_tidy) > Duration::from_secs(60) {
            queue.tidy(now);
            last_tidy = now;
        }

        let sleep = match (stopping, wake) {
            (Some(since), _) => (since + DRAIN).saturating_duration_since(now),
            (None, Some(at)) => at.saturating_duration_since(now),
            (None, None) => Duration::from_secs(3600),
        };
        tokio::select! {
            () = cancel.cancelled(), if stopping.is_none() => {
                stopping = Some(Instant::now());
            }
            Some(out) = incoming.recv(), if stopping.is_none() => {
                if out.id > loaded_up_to {
                    queue.push(out, Instant::now());
                }
            }
            Some(joined) = tasks.join_next(), if !tasks.is_empty() => {
                let mut answers = vec![joined];
                while let Some(more) = tasks.try_join_next() {
                    answers.push(more);
                }
                for answer in answers {
                    let Ok((out, sent)) = answer else { continue };
                    if let Some(stop) = on_answer(&bot, &mut queue, &mut unrecorded, out, sent) {
                        tracing::error!(bot = %bot.name, reason = %stop, "sender stops");
                        stopping.get_or_insert_with(Instant::now);
                    }
                }
            }
            () = tokio::time::sleep(sleep) => {}
        }
    }
    let left = tasks.len();
    tasks.abort_all();
    if left > 0 {
        tracing::warn!(
            bot = %bot.name,
            in_flight = left,
            "stopping with replies still in flight; the next start decides by the delivery policy ({})",
            delivery.name()
        );
    }
}

/// What one send did.
#[derive(Debug)]
enum Sent {
    /// The mark could not be committed, so nothing was sent.
    NotMarked,
    /// The request went out and this came back; `next` is what the reply
    /// becomes, and `recorded` whether that was committed.
    Answered { result: Result<serde_json::Value, ApiError>, next: Next, recorded: bool },
}

/// Sends one reply: marks it (committed), sends it, and commits what the
/// answer means for it. Each commit sits right against the request, so a
/// mark covers as little time off the wire as can be: a crash between the
/// mark and the request, or between reading the answer and its commit, is
/// the only way a reply is counted in flight without being so.
async fn send_one(bot: Arc<Bot>, out: Outgoing, delivery: Delivery, timeout: Duration) -> (Outgoing, Sent) {
    let mut body = json!({ "chat_id": out.chat_id, "text": out.text });
    if let Some(reply_to) = out.reply_to {
        body["reply_parameters"] = json!({ "message_id": reply_to, "allow_sending_without_reply": true });
    }
    if !commit_now(&bot, &Changes { mark: vec![out.id], ..Changes::default() }) {
        return (out, Sent::NotMarked);
    }
    let result = bot.api.call::<serde_json::Value>("sendMessage", &body, timeout).await;
    let next = next_for(&result, delivery);
    let changes = if next == Next::Done {
        Changes { done: vec![out.id], ..Changes::default() }
    } else {
        Changes { unmark: vec![out.id], ..Changes::default() }
    };
    let recorded = commit_now(&bot, &changes);
    (out, Sent::Answered { result, next, recorded })
}

/// Commits `changes` on this very thread, which the runtime gives up for
/// the moment: handing the commit to another thread and waiting to be woken
/// would put a scheduling round between the commit and the request (or the
/// answer and its commit), the very time a crash turns into a reply in
/// doubt; in the `delivery` tests that round left several times as many
/// replies marked but not yet on the wire at a kill. (`block_in_place`
/// needs the multi-threaded runtime, which `main` builds.) `false` (logged)
/// if the database refused.
fn commit_now(bot: &Bot, changes: &Changes) -> bool {
    match tokio::task::block_in_place(|| bot.shared.store.settle(changes, unix_now())) {
        Ok(()) => true,
        Err(e) => {
            tracing::error!(bot = %bot.name, error = %e, "cannot record the outbox's changes; retrying shortly");
            false
        }
    }
}

/// Handles one send's outcome in the queue (and keeps what it could not
/// commit). Returns why the sender must stop, if it must (token rejected).
fn on_answer(bot: &Bot, queue: &mut Queue, unrecorded: &mut Changes, out: Outgoing, sent: Sent) -> Option<String> {
    let now = Instant::now();
    let chat = out.chat_id;
    let (result, next) = match sent {
        Sent::NotMarked => {
            queue.answered(chat, Next::RetryAfter(Duration::from_secs(1)), now);
            return None;
        }
        Sent::Answered { result, next, recorded } => {
            if !recorded {
                let list = if next == Next::Done { &mut unrecorded.done } else { &mut unrecorded.unmark };
                list.push(out.id);
            }
            (result, next)
        }
    };
    match &result {
        Ok(_) => {
            bot.status.update(|s| s.messages_sent += 1);
            bot.shared.metrics.messages_sent.get_or_create(&Metrics::label(&bot.name)).inc();
        }
        Err(e @ ApiError::Rejected { .. }) => {
            // The reply stays queued (unmarked) for a run with a good token.
            bot.classify(e, &mut Backoff::new(BACKOFF_BASE, BACKOFF_BASE));
            queue.answered(chat, Next::RetryWithBackoff, now);
            return Some(e.to_string());
        }
        Err(e) => {
            bot.shared.metrics.error(&bot.name, e.kind());
            if e.may_have_arrived() {
                let action = if next == Next::Done { "dropped" } else { "resent" };
                bot.shared.metrics.uncertain(&bot.name, action, 1);
            }
        }
    }
    let wait = queue.answered(chat, next, now);
    match (&result, wait) {
        (Err(ApiError::BadRequest { code, description }), _) => {
            tracing::warn!(bot = %bot.name, chat, code, %description, "reply refused; dropping it");
        }
        (Err(e), None) => tracing::warn!(
            bot = %bot.name,
            chat,
            error = %e,
            "reply may or may not have arrived; not sending it again (delivery = at-most-once)"
        ),
        (Err(e), Some(wait)) if e.may_have_arrived() => tracing::warn!(
            bot = %bot.name,
            chat,
            error = %e,
            wait_ms = wait.as_millis() as u64,
            "reply may or may not have arrived; sending it again (delivery = at-least-once)"
        ),
        (Err(e), Some(wait)) => {
            tracing::warn!(bot = %bot.name, chat, error = %e, wait_ms = wait.as_millis() as u64, "reply not sent; will retry");
        }
        (Ok(_), _) => {}
    }
    None
}

/// At startup: applies the delivery policy to the replies the last run had
/// in flight, then reads what is queued, oldest first.
async fn recover(bot: &Arc<Bot>) -> Vec<Outgoing> {
    let store = Arc::clone(&bot.shared.store);
    let name = bot.name.clone();
    let delivery = bot.delivery;
    let loaded = tokio::task::spawn_blocking(move || {
        let in_flight = match delivery {
            Delivery::AtLeastOnce => store.unmark_in_flight(&name)?,
            Delivery::AtMostOnce => store.drop_in_flight(&name)?,
        };
        Ok::<_, rusqlite::Error>((in_flight, store.pending(&name)?))
    })
    .await;
    let (in_flight, pending) = match loaded {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => {
            tracing::error!(bot = %bot.name, error = %e, "cannot read the outbox");
            return Vec::new();
        }
        Err(e) => {
            tracing::error!(bot = %bot.name, error = %e, "cannot read the outbox");
            return Vec::new();
        }
    };
    if in_flight > 0 {
        match delivery {
            Delivery::AtMostOnce => tracing::warn!(
                bot = %bot.name,
                uncertain = in_flight,
                "replies were in flight when the last run stopped; not sending them again, to never answer twice \
                 (delivery = at-most-once)"
            ),
            Delivery::AtLeastOnce => tracing::warn!(
                bot = %bot.name,
                uncertain = in_flight,
                "replies were in flight when the last run stopped; sending them again, to never leave one \
                 unanswered (delivery = at-least-once)"
            ),
        }
        let action = if delivery == Delivery::AtMostOnce { "dropped" } else { "resent" };
        bot.shared.metrics.uncertain(&bot.name, action, in_flight as u64);
    }
    if !pending.is_empty() {
        tracing::info!(bot = %bot.name, count = pending.len(), "sending replies queued before the restart");
    }
    pending
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(id: i64, chat_id: i64) -> Outgoing {
        Outgoing { id, chat_id, text: format!("reply {id}"), reply_to: None }
    }

    fn ids(batch: &[Outgoing]) -> Vec<i64> {
        batch.iter().map(|o| o.id).collect()
    }

    fn rate(n: u32) -> NonZeroU32 {
        NonZeroU32::new(n).unwrap()
    }

    #[test]
    fn the_rate_limit_allows_a_burst_then_one_per_interval_and_asking_spends_nothing() {
        let rate = Rate::per_second(rate(4));
        let t0 = Instant::now();
        let mut tat = None;
        for _ in 0..4 {
            assert_eq!(rate.ready_at(tat, t0), t0);
            tat = Some(rate.spend(tat, t0));
        }
        let next = rate.ready_at(tat, t0);
        assert_eq!(next, t0 + Duration::from_millis(250));
        // Asking again changes nothing.
        assert_eq!(rate.ready_at(tat, t0), next);
        assert_eq!(rate.ready_at(tat, next), next);
        // Idle for a second: a full burst again.
        assert_eq!(rate.ready_at(tat, t0 + Duration::from_secs(1)), t0 + Duration::from_secs(1));
    }

    #[test]
    fn replies_go_in_update_order_across_chats_and_in_order_within_one() {
        let mut q = Queue::new(rate(1000), rate(1000));
        let t0 = Instant::now();
        // Chat 1 gets replies 1 and 3; chats 2 and 3 get 2 and 4.
        for (id, chat) in [(1, 1), (2, 2), (3, 1), (4, 3)] {
            q.push(reply(id, chat), t0);
        }
        let (batch, _) = q.take(t0);
        // Reply 3 waits for reply 1: one request in flight per chat.
        assert_eq!(ids(&batch), [1, 2, 4]);
        assert_eq!(q.answered(1, Next::Done, t0), None);
        let (batch, _) = q.take(t0);
        assert_eq!(ids(&batch), [3]);
        assert_eq!(q.len(), 3);
    }

    #[test]
    fn the_bot_limit_serves_the_oldest_due_first() {
        // Two sends a second for the bot: the burst takes two, the rest follow in order.
        let mut q = Queue::new(rate(2), rate(1000));
        let t0 = Instant::now();
        for id in 1..=6 {
            q.push(reply(id, 100 + id), t0);
        }
        let (batch, wake) = q.take(t0);
        assert_eq!(ids(&batch), [1, 2]);
        let wake = wake.unwrap();
        assert_eq!(wake, t0 + Duration::from_millis(500));
        // Newer replies arrive meanwhile; they go after the older ones.
        q.push(reply(7, 200), wake);
        let mut order = Vec::new();
        let mut now = wake;
        while order.len() < 5 {
            let (batch, wake) = q.take(now);
            order.extend(ids(&batch));
            now = wake.unwrap_or(now);
        }
        assert_eq!(order, [3, 4, 5, 6, 7]);
    }

    #[test]
    fn a_chat_refused_by_its_own_limit_spends_nothing_and_keeps_its_place() {
        // One a second per chat, plenty for the bot.
        let mut q = Queue::new(rate(1), rate(1));
        let t0 = Instant::now();
        q.push(reply(1, 1), t0);
        let (batch, _) = q.take(t0);
        assert_eq!(ids(&batch), [1]);
        assert_eq!(q.answered(1, Next::Done, t0), None);
        // Chat 1's next reply is refused by chat 1's limit until t0 + 1 s;
        // chat 2's reply, queued later, must not be charged for that refusal.
        q.push(reply(2, 1), t0);
        let (batch, wake) = q.take(t0 + Duration::from_millis(10));
        assert!(batch.is_empty());
        assert_eq!(wake, Some(t0 + Duration::from_secs(1)));
        q.push(reply(3, 2), t0 + Duration::from_millis(20));
        let (batch, _) = q.take(t0 + Duration::from_secs(1));
        // The bot's one-a-second allowance went to neither refused attempt:
        // at t0 + 1 s it serves reply 2, the older one, first.
        assert_eq!(ids(&batch), [2]);
        let (batch, _) = q.take(t0 + Duration::from_secs(2));
        assert_eq!(ids(&batch), [3]);
    }

    #[test]
    fn a_refusal_by_the_bot_limit_spends_no_chat_allowance() {
        // Two a second for the bot, one a second per chat.
        let mut q = Queue::new(rate(2), rate(1));
        let t0 = Instant::now();
        for (id, chat) in [(1, 1), (2, 2), (3, 3)] {
            q.push(reply(id, chat), t0);
        }
        // The bot's burst of two goes; chat 3 is refused by the bot's limit.
        assert_eq!(ids(&q.take(t0).0), [1, 2]);
        // Had that refusal spent chat 3's allowance, it would wait until t0 + 1 s.
        assert_eq!(ids(&q.take(t0 + Duration::from_millis(500)).0), [3]);
    }

    #[test]
    fn a_retry_goes_when_its_wait_is_over_ahead_of_newer_replies() {
        let mut q = Queue::new(rate(1000), rate(1000));
        let mut now = Instant::now();
        q.push(reply(1, 1), now);
        assert_eq!(ids(&q.take(now).0), [1]);
        let wait = q.answered(1, Next::RetryWithBackoff, now).unwrap();
        assert!(wait >= Duration::from_millis(500) && wait <= Duration::from_secs(1), "{wait:?}");
        assert_eq!(q.answered(1, Next::RetryAfter(Duration::from_secs(3)), now), None, "not in flight");
        let due = now + wait;
        // Chat 1's next reply waits behind the retry; chat 2's, queued later, waits for its turn.
        q.push(reply(2, 1), now);
        now += wait / 2;
        let (batch, wake) = q.take(now);
        assert!(batch.is_empty());
        assert_eq!(wake, Some(due));
        q.push(reply(3, 2), due + Duration::from_millis(1));
        now = due + Duration::from_millis(5);
        assert_eq!(ids(&q.take(now).0), [1, 3]);
        // A 429 waits exactly what it says, and does not advance the backoff.
        assert_eq!(q.answered(1, Next::RetryAfter(Duration::from_secs(3)), now), Some(Duration::from_secs(3)));
        let (batch, wake) = q.take(now + Duration::from_secs(2));
        assert!(batch.is_empty());
        assert_eq!(wake, Some(now + Duration::from_secs(3)));
        now += Duration::from_secs(3);
        assert_eq!(ids(&q.take(now).0), [1]);
        let second = q.answered(1, Next::RetryWithBackoff, now).unwrap();
        assert!(second >= Duration::from_secs(1) && second <= Duration::from_secs(2), "{second:?}");
        now += second;
        assert_eq!(ids(&q.take(now).0), [1]);
        // Delivered: the chat's next reply goes, and its backoff starts over.
        assert_eq!(q.answered(1, Next::Done, now), None);
        assert_eq!(ids(&q.take(now).0), [2]);
        let third = q.answered(1, Next::RetryWithBackoff, now).unwrap();
        assert!(third <= Duration::from_secs(1), "{third:?}");
        assert_eq!(q.len(), 2);
    }

    #[test]
    fn a_retry_does_not_wait_behind_the_backlog_queued_after_it() {
        // Ten a second for the bot, and a hundred replies at once: ten seconds of backlog.
        let mut q = Queue::new(rate(10), rate(1000));
        let t0 = Instant::now();
        for id in 1..=100 {
            q.push(reply(id, id), t0);
        }
        let mut now = t0;
        let (batch, wake) = q.take(now);
        assert_eq!(ids(&batch), (1..=10).collect::<Vec<_>>());
        // Reply 1 fails; its backoff is over well before the backlog is.
        let wait = q.answered(1, Next::RetryWithBackoff, now).unwrap();
        now = wake.unwrap();
        let mut order = Vec::new();
        while now < t0 + wait + Duration::from_millis(200) {
            let (batch, wake) = q.take(now);
            order.extend(ids(&batch));
            now = wake.unwrap();
        }
        // After the burst the bot's limit gives a slot every 100 ms. Reply 1
        // went at the first slot after its backoff, ahead of the replies
        // queued with it but later in order.
        let position = order.iter().position(|id| *id == 1).expect("retried");
        let slot = t0 + Duration::from_millis(100) * (position as u32 + 1);
        assert!(slot >= t0 + wait && slot <= t0 + wait + Duration::from_millis(100), "{order:?}, wait {wait:?}");
    }

    #[test]
    fn the_policy_decides_only_what_may_have_arrived() {
        use Delivery::{AtLeastOnce, AtMostOnce};
        let sent: Result<serde_json::Value, ApiError> = Ok(json!({}));
        let cases: [(ApiError, Next, Next); 8] = [
            (
                ApiError::RetryAfter(2),
                Next::RetryAfter(Duration::from_secs(2)),
                Next::RetryAfter(Duration::from_secs(2)),
            ),
            (
                ApiError::Server { code: 502, description: String::new() },
                Next::RetryWithBackoff,
                Next::RetryWithBackoff,
            ),
            (ApiError::Unsent("refused".into()), Next::RetryWithBackoff, Next::RetryWithBackoff),
            (ApiError::Conflict(String::new()), Next::RetryWithBackoff, Next::RetryWithBackoff),
            (
                ApiError::Malformed { status: 502, detail: String::new() },
                Next::RetryWithBackoff,
                Next::RetryWithBackoff,
            ),
            (ApiError::BadRequest { code: 403, description: String::new() }, Next::Done, Next::Done),
            (ApiError::Network("dropped".into()), Next::RetryWithBackoff, Next::Done),
            (ApiError::Malformed { status: 200, detail: String::new() }, Next::RetryWithBackoff, Next::Done),
        ];
        assert_eq!(next_for(&sent, AtLeastOnce), Next::Done);
        assert_eq!(next_for(&sent, AtMostOnce), Next::Done);
        for (error, at_least, at_most) in cases {
            let result = Err(error.clone());
            assert_eq!(next_for(&result, AtLeastOnce), at_least, "{error:?}");
            assert_eq!(next_for(&result, AtMostOnce), at_most, "{error:?}");
        }
    }
}
