//! The runner at work: replies, restarts, faults, several bots, webhooks, the
//! dashboard and shutdown.

use std::collections::BTreeMap;
use std::time::Duration;

use bot_api_standin::{Fault, StandIn};

use crate::{BotSpec, TestEnv, http, metrics, sample};

const A: &str = "2001:runner-token-a-AAAAAAAAAAAAAAAAAAAAAAAAA";
const B: &str = "2002:runner-token-b-BBBBBBBBBBBBBBBBBBBBBBBBB";

fn one_bot(standin: &StandIn, extra_app: &str) -> TestEnv {
    standin.add_bot(A, "a_bot");
    TestEnv::new(&standin.base_url(), &[BotSpec { name: "alpha", token: A, extra: "" }], extra_app, &[])
}

/// Replies per update (keyed by the message replied to).
fn replies_per_message(sent: &[bot_api_standin::Sent]) -> BTreeMap<i64, usize> {
    let mut out = BTreeMap::new();
    for s in sent {
        *out.entry(s.reply_to.expect("every reply quotes its message")).or_default() += 1;
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn answers_commands_in_order_per_chat() {
    let standin = StandIn::start().await.unwrap();
    let env = one_bot(&standin, "");
    let app = env.start();
    for i in 0..5 {
        standin.user_says(A, 42, "Ann", if i % 2 == 0 { "/bored" } else { "/mood" });
    }
    let sent = standin.wait_sent(A, 5, Duration::from_secs(10)).await;
    let texts: Vec<&str> = sent.iter().map(|s| s.text.as_str()).collect();
    assert_eq!(
        texts,
        [
            "Noted, Ann: you're bored. 1 bored so far today.",
            "No mood set yet.",
            "Noted, Ann: you're bored. 2 bored so far today.",
            "No mood set yet.",
            "Noted, Ann: you're bored. 3 bored so far today.",
        ]
    );
    app.assert_no_secrets();
}

#[tokio::test(flavor = "multi_thread")]
async fn every_update_is_answered_at_most_once_across_kill_9() {
    let standin = StandIn::start().await.unwrap();
    // One reply per chat per second at most would make this slow; many chats
    // keep the sender busy, so the kill lands while replies are on the wire.
    standin.add_bot(A, "a_bot");
    let bot = BotSpec { name: "alpha", token: A, extra: "delivery = \"at-most-once\"" };
    let env = TestEnv::new(&standin.base_url(), &[bot], "", &[]);
    let total = 300;
    let mut app = env.start();
    for i in 0..total {
        standin.chat_says(A, 1000 + (i % 50), 7, "private", "Kim", "/bored");
    }
    standin.wait_sent(A, 40, Duration::from_secs(20)).await;
    app.kill9();
    let before = standin.sent(A).len();
    assert!(before < total as usize, "everything was sent before the kill; the test proves nothing");

    let app = env.start();
    crate::settle(&standin, &app, &[("alpha", A)], Duration::from_secs(30)).await;
    // Replies that were in flight at the kill are dropped, not resent: the log says how many.
    let (sent, dropped) = (standin.sent(A).len(), uncertain(&app.logs()));
    let (_, scrape) = metrics(&app).await;
    let counted = sample(&scrape, "app_replies_uncertain_total", "alpha", Some(("action", "dropped")));
    assert_eq!(counted.cloned(), (dropped > 0).then_some(prometheus_parse::Value::Counter(dropped as f64)));
    let per_message = replies_per_message(&standin.sent(A));
    assert!(per_message.values().all(|n| *n == 1), "an update was answered twice: {per_message:?}");
    // Every update got its reply, except some of those that were on the wire
    // at the kill (most of which had in fact arrived).
    assert!(sent <= total as usize && sent + dropped >= total as usize, "sent {sent}, dropped as uncertain {dropped}");
    assert_eq!(per_message.len(), sent);
    assert!(dropped <= 50, "more replies dropped ({dropped}) than chats that can be in flight");
    app.assert_no_secrets();
}

fn uncertain(logs: &str) -> usize {
    logs.lines()
        .filter(|l| l.contains("not sending them again"))
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["uncertain"].as_u64())
        .sum::<u64>() as usize
}

/// The first poll returns at once: /readyz says ready a round trip after the
/// start, not when a long poll (50 s here) would have ended; the long polls
/// that follow still deliver at once.
#[tokio::test(flavor = "multi_thread")]
async fn ready_without_waiting_out_a_long_poll() {
    let standin = StandIn::start().await.unwrap();
    standin.add_bot(A, "a_bot");
    let env = TestEnv::new(&standin.base_url(), &[BotSpec { name: "alpha", token: A, extra: "" }], "", &[]);
    let text = std::fs::read_to_string(env.env_file()).unwrap();
    env.write(text.replace("poll_timeout = 2\n", "poll_timeout = 50\n"));
    let app = env.start();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let ready = http().get(app.url("/readyz")).send().await.unwrap();
        if ready.status() == 200 {
            break;
        }
        let body = ready.text().await.unwrap();
        assert!(std::time::Instant::now() < deadline, "not ready 20 s after the start, polls of 50 s: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    standin.user_says(A, 1, "Ann", "/help");
    assert_eq!(standin.wait_sent(A, 1, Duration::from_secs(10)).await.len(), 1);
    app.assert_no_secrets();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rejected_token_fails_one_bot_while_the_other_answers() {
    let standin = StandIn::start().await.unwrap();
    standin.add_bot(A, "a_bot");
    // B is unknown to the stand-in: 401, as a revoked token gets.
    let env = TestEnv::new(
        &standin.base_url(),
        &[BotSpec { name: "alpha", token: A, extra: "" }, BotSpec { name: "beta", token: B, extra: "" }],
        "",
        &[],
    );
    let app = env.start();
    standin.user_says(A, 1, "Ann", "/help");
    assert_eq!(standin.wait_sent(A, 1, Duration::from_secs(10)).await.len(), 1);
    assert!(app.wait_log("token rejected", Duration::from_secs(10)).await);

    let ready = http().get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    let body = ready.text().await.unwrap();
    assert!(body.contains("beta: failed: token rejected (401): Unauthorized"), "{body}");
    assert!(!body.contains("alpha"), "{body}");
    let page = http().get(app.url("/")).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("failed") && page.contains("token rejected"), "{page}");
    // Still answering after beta failed.
    standin.user_says(A, 1, "Ann", "/mood");
    assert_eq!(standin.wait_sent(A, 2, Duration::from_secs(10)).await.len(), 2);
    app.assert_no_secrets();
}

#[tokio::test(flavor = "multi_thread")]
async fn recovers_from_every_kind_of_fault() {
    let standin = StandIn::start().await.unwrap();
    let env = one_bot(&standin, "");
    standin.inject(
        A,
        "getUpdates",
        [
            Fault::Status(502),
            Fault::Drop,
            Fault::Malformed,
            Fault::RetryAfter(1),
            Fault::Delay(Duration::from_millis(500)),
        ],
    );
    standin.inject(A, "sendMessage", [Fault::RetryAfter(1), Fault::Status(502)]);
    let app = env.start();
    standin.user_says(A, 5, "Bo", "/start");
    let sent = standin.wait_sent(A, 1, Duration::from_secs(30)).await;
    assert_eq!(sent.len(), 1, "{}", app.logs());
    assert!(sent[0].text.starts_with("Hi Bo!"));
    let (_, scrape) = metrics(&app).await;
    for kind in ["server", "network", "malformed", "rate_limited"] {
        let errors = sample(&scrape, "app_api_errors_total", "alpha", Some(("kind", kind)));
        assert!(
            matches!(errors, Some(prometheus_parse::Value::Counter(n)) if *n >= 1.0),
            "no {kind} errors counted: {errors:?}"
        );
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(standin.sent(A).len(), 1, "a reply was sent twice");
    app.assert_no_secrets();
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_read_as_their_content_type_says() {
    use prometheus_parse::Value;
    let standin = StandIn::start().await.unwrap();
    let env = one_bot(&standin, "");
    let app = env.start();
    for _ in 0..3 {
        standin.user_says(A, 5, "Bo", "/help");
    }
    assert_eq!(standin.wait_sent(A, 3, Duration::from_secs(10)).await.len(), 3);
    // The sender counts a reply once its commit is done: give it that moment.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let scrape = loop {
        let (content_type, scrape) = metrics(&app).await;
        assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
        if sample(&scrape, "app_replies_queued", "alpha", None) == Some(&Value::Gauge(0.0)) {
            break scrape;
        }
        assert!(std::time::Instant::now() < deadline, "replies still queued: {:?}", scrape.samples);
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // A 0.0.4 reader types a sample by the TYPE line of its own name: an
    // OpenMetrics body (`# TYPE x counter`, samples `x_total`) reads as untyped.
    assert_eq!(sample(&scrape, "app_updates_handled_total", "alpha", None), Some(&Value::Counter(3.0)));
    assert_eq!(sample(&scrape, "app_messages_sent_total", "alpha", None), Some(&Value::Counter(3.0)));
    assert_eq!(sample(&scrape, "app_bot_healthy", "alpha", None), Some(&Value::Gauge(1.0)));
    assert!(matches!(
        sample(&scrape, "app_poll_duration_seconds", "alpha", None),
        Some(Value::Histogram(buckets)) if buckets.len() == 13
    ));
    assert!(scrape.docs["app_updates_handled_total"].starts_with("Updates handled"), "{:?}", scrape.docs);
    // Nothing is left untyped but a histogram's _sum and _count, which this
    // parser does not attach to their histogram.
    let untyped: Vec<&str> = scrape
        .samples
        .iter()
        .filter(|s| matches!(s.value, Value::Untyped(_)))
        .map(|s| s.metric.as_str())
        .filter(|m| !m.ends_with("_sum") && !m.ends_with("_count"))
        .collect();
    assert!(untyped.is_empty(), "untyped samples: {untyped:?}");
    app.assert_no_secrets();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_webhook_elsewhere_is_a_conflict_that_clears_itself() {
    let standin = StandIn::start().await.unwrap();
    let env = one_bot(&standin, "");
    standin.set_webhook(A, "https://someone-else.example/hook");
    let app = env.start();
    assert!(app.wait_log("Conflict", Duration::from_secs(10)).await, "{}", app.logs());
    let ready = http().get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    assert!(ready.text().await.unwrap().contains("alpha: conflict"));
    standin.set_webhook(A, "");
    standin.user_says(A, 9, "Cy", "/help");
    assert_eq!(standin.wait_sent(A, 1, Duration::from_secs(30)).await.len(), 1);
    let ready = http().get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    app.assert_no_secrets();
}

#[tokio::test(flavor = "multi_thread")]
async fn webhook_needs_the_secret_token_and_going_back_to_polling_deletes_it() {
    let standin = StandIn::start().await.unwrap();
    standin.add_bot(A, "a_bot");
    let secret = "hook_secret_0123456789";
    let bot = BotSpec { name: "alpha", token: A, extra: "mode = \"webhook\"\nwebhook_secret = \"alpha_hook\"" };
    let env = TestEnv::new(
        &standin.base_url(),
        &[bot],
        "public_url = \"https://bots.example.test/\"",
        &[("alpha_hook", secret)],
    );
    let app = env.start();
    assert!(app.wait_log("webhook set", Duration::from_secs(10)).await, "{}", app.logs());
    assert_eq!(standin.webhook(A), Some(("https://bots.example.test/telegram/alpha".to_owned(), secret.to_owned())));

    let update = serde_json::json!({
        "update_id": 77,
        "message": { "message_id": 770, "chat": { "id": 3, "type": "private" }, "from": { "id": 3, "first_name": "Di" }, "text": "/help" }
    });
    let post = |token: Option<&str>| {
        let mut req = http().post(app.url("/telegram/alpha")).json(&update);
        if let Some(t) = token {
            req = req.header("X-Telegram-Bot-Api-Secret-Token", t);
        }
        req.send()
    };
    assert_eq!(post(None).await.unwrap().status(), 401);
    assert_eq!(post(Some("hook_secret_0123456788")).await.unwrap().status(), 401);
    assert_eq!(post(Some(secret)).await.unwrap().status(), 200);
    assert_eq!(standin.wait_sent(A, 1, Duration::from_secs(10)).await.len(), 1);
    // Telegram redelivers when unsure: the same update is not answered twice.
    assert_eq!(post(Some(secret)).await.unwrap().status(), 200);
    let oversized = http()
        .post(app.url("/telegram/alpha"))
        .header("X-Telegram-Bot-Api-Secret-Token", secret)
        .body(vec![b' '; 300 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(oversized.status(), 413);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(standin.sent(A).len(), 1);
    app.assert_no_secrets();
    drop(app);

    // Same data, now polling: the webhook is deleted so getUpdates works.
    let polling = std::fs::read_to_string(env.env_file()).unwrap().replace("mode = \"webhook\"\n", "");
    env.write(polling);
    let app = env.start();
    standin.user_says(A, 3, "Di", "/help");
    assert_eq!(standin.wait_sent(A, 2, Duration::from_secs(10)).await.len(), 2, "{}", app.logs());
    assert_eq!(standin.calls(A, "deleteWebhook"), 1);
    assert_eq!(standin.webhook(A), None);
    app.assert_no_secrets();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_escapes_what_users_write() {
    let standin = StandIn::start().await.unwrap();
    standin.add_bot(A, "a_bot");
    let env = TestEnv::new(&standin.base_url(), &[BotSpec { name: "alpha", token: A, extra: "admins = [1]" }], "", &[]);
    let app = env.start();
    standin.user_says(A, 2, "<script>alert('bored')</script>", "/bored");
    standin.user_says(A, 1, "Admin", "/mood <img src=x onerror=alert(1)>");
    assert_eq!(standin.wait_sent(A, 2, Duration::from_secs(10)).await.len(), 2);
    let page = http().get(app.url("/")).send().await.unwrap();
    assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
    let page = page.text().await.unwrap();
    assert!(page.contains("&lt;script&gt;alert(&#x27;bored&#x27;)&lt;&#x2f;script&gt;"), "{page}");
    assert!(page.contains("&lt;img src=x onerror=alert(1)&gt;"), "{page}");
    assert!(!page.contains("<script>") && !page.contains("<img"), "{page}");
    assert!(page.contains("http-equiv=\"refresh\""));
    assert!(page.contains("replies at-least-once"), "the bot's delivery policy is not shown: {page}");
    app.assert_no_secrets();
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_stops_cleanly_and_quickly() {
    let standin = StandIn::start().await.unwrap();
    let env = one_bot(&standin, "");
    let mut app = env.start();
    standin.user_says(A, 1, "Ann", "/help");
    assert_eq!(standin.wait_sent(A, 1, Duration::from_secs(10)).await.len(), 1);
    let (code, took) = app.terminate();
    assert_eq!(code, Some(0), "{}", app.logs());
    assert!(took < Duration::from_secs(10), "took {took:?}");
    assert!(app.logs().contains("\"message\":\"stopped\""), "{}", app.logs());
    app.assert_no_secrets();
}
