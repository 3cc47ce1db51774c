//! The `standin` binary: open registration, the chat page and its JSON,
//! escaping, signals; and the library's strict mode.

use std::time::Duration;

use bot_api_standin::StandIn;
use serde_json::json;

use crate::{Running, api};

/// Well-formed, as BotFather's are: digits, a colon, 35 characters.
const TOKEN: &str = "4242424242:AAH-demo_token_0123456789abcdefghij";
const BOT: &str = "demo4242424242_bot";

#[test]
fn a_fresh_token_registers_and_chats_through_the_page() {
    let standin = Running::start();
    let home = standin.get("/");
    assert_eq!(home.status, 200);
    assert!(home.body.contains("No bot yet"), "{}", home.body);

    let (status, me) = standin.api(TOKEN, "getMe", &json!({}));
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["result"]["username"], BOT);
    assert_eq!(me["result"]["is_bot"], true);
    assert_eq!(me["result"]["id"], 4_242_424_242_i64);

    let home = standin.get("/");
    assert!(home.body.contains(&format!("<h1>Chat with @{BOT}</h1>")), "{}", home.body);
    assert!(home.body.contains(
        "This is a stand-in for the Telegram Bot API, for trying boxcar without a real bot token. \
         Messages go to the bot running in the demo container, not to Telegram."
    ));
    for id in ["id=\"text\" name=\"text\"", "id=\"send\"", "id=\"messages\"", "id=\"status\""] {
        assert!(home.body.contains(id), "{id} in {}", home.body);
    }

    let posted = standin.post_form(&format!("/chat/{BOT}"), &[], "text=hello+%3Cb%3Ethere%3C%2Fb%3E");
    assert_eq!(posted.status, 303, "{posted:?}");
    assert_eq!(posted.header("location"), Some(format!("/chat/{BOT}").as_str()));
    // White space only is not a message, as in Telegram, and 4096 characters is the most a message has.
    assert_eq!(standin.post_form(&format!("/chat/{BOT}"), &[], "text=+++").status, 303);
    let too_long = standin.post_form(&format!("/chat/{BOT}"), &[], &format!("text={}", "x".repeat(4097)));
    assert_eq!(too_long.status, 400, "{too_long:?}");

    let (status, updates) = standin.api(TOKEN, "getUpdates", &json!({ "timeout": 0 }));
    assert_eq!(status, 200, "{updates}");
    let updates = updates["result"].as_array().unwrap();
    assert_eq!(updates.len(), 1, "{updates:?}");
    let update = &updates[0];
    let update_id = update["update_id"].as_i64().unwrap();
    let message = &update["message"];
    assert!(message["message_id"].is_i64());
    assert!(message["date"].as_i64().unwrap() > 1_700_000_000);
    assert_eq!(message["chat"], json!({ "id": 1000, "type": "private" }));
    assert_eq!(message["from"], json!({ "id": 1000, "is_bot": false, "first_name": "You" }));
    assert_eq!(message["text"], "hello <b>there</b>");
    let (_, confirmed) = standin.api(TOKEN, "getUpdates", &json!({ "offset": update_id + 1, "timeout": 0 }));
    assert_eq!(confirmed["result"], json!([]));

    let reply = json!({
        "chat_id": 1000,
        "text": "<script>alert(1)</script>",
        "reply_parameters": { "message_id": message["message_id"] },
    });
    let (status, sent) = standin.api(TOKEN, "sendMessage", &reply);
    assert_eq!(status, 200, "{sent}");

    let chat = standin.get(&format!("/chat/{BOT}/messages.json"));
    assert_eq!(chat.status, 200);
    assert_eq!(chat.header("content-type"), Some("application/json"));
    let chat = chat.json();
    assert_eq!(chat["bot"], BOT);
    assert_eq!(chat["bots"], json!([BOT]));
    assert_eq!(chat["status"], "The bot is polling for messages.");
    let messages = chat["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 2, "{messages:?}");
    assert_eq!((&messages[0]["from"], &messages[0]["name"]), (&json!("you"), &json!("You")));
    assert_eq!(messages[0]["text"], "hello <b>there</b>");
    assert_eq!((&messages[1]["from"], &messages[1]["name"]), (&json!("bot"), &json!(format!("@{BOT}"))));
    assert_eq!(messages[1]["text"], "<script>alert(1)</script>");
    assert!(messages[0]["id"].as_u64() < messages[1]["id"].as_u64());
    assert!(messages[1]["time"].as_str().unwrap().ends_with(" UTC"), "{messages:?}");
    assert!(messages[1]["datetime"].as_str().unwrap().ends_with('Z'), "{messages:?}");

    let page = standin.get(&format!("/chat/{BOT}"));
    assert_eq!(page.status, 200);
    assert_eq!(page.header("content-type"), Some("text/html; charset=utf-8"));
    assert_eq!(page.header("x-content-type-options"), Some("nosniff"));
    let csp = page.header("content-security-policy").unwrap();
    assert!(csp.starts_with("default-src 'none'; script-src 'sha256-"), "{csp}");
    assert!(!csp.contains("unsafe"), "{csp}");
    // `no-referrer` would make Chromium send `Origin: null` with the form, which the page refuses.
    assert_eq!(page.header("referrer-policy"), Some("same-origin"));
    assert!(page.body.contains("&lt;script&gt;alert(1)&lt;/script&gt;"), "{}", page.body);
    assert!(page.body.contains("hello &lt;b&gt;there&lt;/b&gt;"), "{}", page.body);
    assert!(!page.body.contains("<script>alert"), "{}", page.body);
    assert_eq!(page.body.matches("<script").count(), 1, "only the page's own script");
    let you = page.body.find("<li class=\"msg you\" data-from=\"you\"").unwrap();
    let bot = page.body.find("<li class=\"msg bot\" data-from=\"bot\"").unwrap();
    assert!(you < bot, "oldest first");

    let health = standin.get("/healthz");
    assert_eq!((health.status, health.body.as_str()), (200, "ok"));
    assert_eq!(standin.get("/chat/nobody_bot").status, 404);
    assert_eq!(standin.get(&format!("/chat/{BOT}/other")).status, 404);

    standin.signal("TERM");
    let (status, _, stderr) = standin.wait(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(stderr.contains(&format!("bot @{BOT} registered")), "{stderr}");
    let secret = TOKEN.split_once(':').unwrap().1;
    assert!(!stderr.contains(secret), "the token leaked: {stderr}");
}

#[test]
fn sigterm_ends_it_promptly_during_a_long_poll() {
    let standin = Running::start();
    let addr = standin.addr.clone();
    assert_eq!(standin.api(TOKEN, "getMe", &json!({})).0, 200);
    let poll = std::thread::spawn(move || {
        std::panic::catch_unwind(|| api(&addr, TOKEN, "getUpdates", &json!({ "timeout": 30 }))).ok()
    });
    // The poll has started once the page says so.
    let json_path = format!("/chat/{BOT}/messages.json");
    while standin.get(&json_path).json()["status"] != "The bot is polling for messages." {
        std::thread::sleep(Duration::from_millis(20));
    }
    standin.signal("TERM");
    let (status, elapsed, stderr) = standin.wait(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(elapsed < Duration::from_secs(2), "took {elapsed:?}");
    assert!(stderr.contains("SIGTERM"), "{stderr}");
    // The long poll ended with the process (with or without an answer), not after 30 s.
    let _ = poll.join();
}

#[test]
fn sigint_ends_it_too() {
    let standin = Running::start();
    standin.signal("INT");
    let (status, elapsed, stderr) = standin.wait(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(elapsed < Duration::from_secs(2), "took {elapsed:?}");
}

#[test]
fn open_registration_still_refuses_malformed_tokens() {
    let standin = Running::start();
    for token in
        ["not-a-token", "123:short", "abc:AAH-demo_token_0123456789abcdefghij", "0:AAH-demo_token_0123456789abcdefghij"]
    {
        let (status, answer) = standin.api(token, "getMe", &json!({}));
        assert_eq!((status, &answer["ok"]), (401, &json!(false)), "{token}: {answer}");
    }
    assert_eq!(standin.get("/chats.json").json(), json!({ "bots": [] }));
}

#[test]
fn a_form_posted_from_another_site_is_refused() {
    let standin = Running::start();
    assert_eq!(standin.api(TOKEN, "getMe", &json!({})).0, 200);
    let path = format!("/chat/{BOT}");
    let elsewhere = standin.post_form(&path, &[("Origin", "http://example.invalid")], "text=hi");
    assert_eq!(elsewhere.status, 403);
    let cross_site = standin.post_form(&path, &[("Sec-Fetch-Site", "cross-site")], "text=hi");
    assert_eq!(cross_site.status, 403);
    let origin = format!("http://{}", standin.addr);
    assert_eq!(standin.post_form(&path, &[("Origin", &origin)], "text=hi").status, 303);
    let (_, updates) = standin.api(TOKEN, "getUpdates", &json!({}));
    assert_eq!(updates["result"].as_array().unwrap().len(), 1, "{updates}");
}

#[test]
fn help_says_it_is_a_stand_in() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_bot-api-standin")).arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    assert!(help.contains("A stand-in for api.telegram.org, for demos and tests. It is not Telegram."), "{help}");
    assert!(help.contains("--listen <ADDR>"), "{help}");
    assert!(help.contains("[default: 127.0.0.1:8081]"), "{help}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_library_stays_strict_unless_opened() {
    let standin = StandIn::start().await.unwrap();
    standin.add_bot("1:known", "known_bot");
    let addr = standin.addr().to_string();
    let (known, unknown) = tokio::task::spawn_blocking(move || {
        (api(&addr, "1:known", "getMe", &json!({})), api(&addr, TOKEN, "getMe", &json!({})))
    })
    .await
    .unwrap();
    assert_eq!(known.0, 200, "{}", known.1);
    assert_eq!(known.1["result"]["username"], "known_bot");
    assert_eq!(unknown.0, 401, "{}", unknown.1);
    assert_eq!(standin.calls(TOKEN, "getMe"), 0);

    standin.open_registration();
    let addr = standin.addr().to_string();
    let opened = tokio::task::spawn_blocking(move || api(&addr, TOKEN, "getMe", &json!({}))).await.unwrap();
    assert_eq!(opened.1["result"]["username"], BOT, "{}", opened.1);
    standin.stop();
}
