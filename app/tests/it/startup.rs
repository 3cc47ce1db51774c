//! Fail-closed startup: each refusal names the problem, exits with its own
//! code, and starts nothing (no port, no Bot API call).

use std::net::TcpListener;
use std::time::Duration;

use bot_api_standin::StandIn;

use crate::{BotSpec, TestEnv};

const TOKEN: &str = "1111:startup-token-AAAAAAAAAAAAAAAAAAAAAAAAAAAA";

struct Refusal {
    code: i32,
    stderr: String,
    stdout: String,
}

/// Runs the app expecting it to refuse to start; checks nothing listened.
fn refuse(mut cmd: std::process::Command) -> Refusal {
    // The port stays taken while the app runs: an app that tried to listen
    // before refusing would exit 6 (cannot bind) instead of the expected code.
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    cmd.env("APP_LISTEN", format!("127.0.0.1:{port}"));
    let out = cmd.output().unwrap();
    // Still ours: a connection to the port reaches this listener, so the app
    // left nothing listening there. Checked while the port is held, so that
    // another test's listener cannot take the freed port meanwhile.
    let probe = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    taken.set_nonblocking(true).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let accepted = loop {
        match taken.accept() {
            Ok((stream, _)) => break Some(stream),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(_) => break None,
        }
    };
    let ours = accepted.is_some_and(|s| s.peer_addr().ok() == probe.local_addr().ok());
    drop(taken);
    let r = Refusal {
        code: out.status.code().unwrap_or(-1),
        stderr: String::from_utf8(out.stderr).unwrap(),
        stdout: String::from_utf8(out.stdout).unwrap(),
    };
    assert!(!r.stdout.contains("listening"), "it listened:\n{}", r.stdout);
    assert!(!r.stderr.contains(TOKEN) && !r.stdout.contains(TOKEN), "the token was printed");
    assert!(ours, "something else listens on the app's port");
    r
}

fn env(standin: &StandIn) -> TestEnv {
    standin.add_bot(TOKEN, "startup_bot");
    TestEnv::new(&standin.base_url(), &[BotSpec { name: "one", token: TOKEN, extra: "" }], "", &[])
}

#[tokio::test(flavor = "multi_thread")]
async fn a_good_environment_starts() {
    let standin = StandIn::start().await.unwrap();
    let env = env(&standin);
    let app = env.start();
    let health = crate::http().get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    app.assert_no_secrets();
}

#[tokio::test(flavor = "multi_thread")]
async fn refusals_name_the_problem_and_start_nothing() {
    let standin = StandIn::start().await.unwrap();
    let env = env(&standin);

    // No key.
    let mut cmd = env.command();
    cmd.env_remove("SECRET_KEY_FILE");
    let r = refuse(cmd);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert_eq!(r.stderr, "error: no secret key: set SECRET_KEY_FILE (preferred) or SECRET_KEY\n");

    // Both ways at once.
    let mut cmd = env.command();
    cmd.env("SECRET_KEY", &*env.key.to_base64());
    let r = refuse(cmd);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("both SECRET_KEY and SECRET_KEY_FILE are set"), "{}", r.stderr);

    // A key of no environment.
    let other = TestEnv::new(&standin.base_url(), &[], "", &[]);
    let mut cmd = env.command();
    cmd.env("SECRET_KEY_FILE", &other.key_file);
    let r = refuse(cmd);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(
        r.stderr.contains(&format!(
            "no environment in {} uses key id {}",
            env.config.path().display(),
            other.key.key_id()
        )),
        "{}",
        r.stderr
    );

    // The wrong key for the environment named.
    let mut cmd = env.command();
    cmd.env("SECRET_KEY_FILE", &other.key_file).env("DEPLOY_ENV", "test");
    let r = refuse(cmd);
    assert_eq!(r.code, 4, "{}", r.stderr);
    assert!(
        r.stderr.contains(&format!(
            "has key id {}, but environment `test` uses key id {}",
            other.key.key_id(),
            env.key.key_id()
        )),
        "{}",
        r.stderr
    );
    assert_eq!(standin.calls(TOKEN, "getMe"), 0, "a bot started");
}

#[tokio::test(flavor = "multi_thread")]
async fn tampered_missing_and_misconfigured() {
    let standin = StandIn::start().await.unwrap();
    let env = env(&standin);
    let original = std::fs::read_to_string(env.env_file()).unwrap();

    // Tampered: one base64 character of the sealed token changed.
    let line = original.lines().find(|l| l.starts_with("one_token = ")).unwrap();
    let at = line.len() - 6;
    let mut bad_line = line.to_owned();
    let c = if &line[at..=at] == "A" { "B" } else { "A" };
    bad_line.replace_range(at..=at, c);
    env.write(original.replace(line, &bad_line));
    let r = refuse(env.command());
    assert_eq!(r.code, 4, "{}", r.stderr);
    assert!(r.stderr.contains("secrets.one_token fails authentication"), "{}", r.stderr);

    // Missing: the bot names a secret that is not there.
    env.write(original.replace("token_secret = \"one_token\"", "token_secret = \"nope\""));
    let r = refuse(env.command());
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(r.stderr.contains("bots[0].token_secret: no secret `nope` in [secrets]; seal it with `cargo xtask encrypt-secret --env test nope`"), "{}", r.stderr);

    // Bad settings: every problem, one line each.
    let bad = original.replace("[app]\n", "[app]\nlisten = \"nowhere\"\npublic_url = \"ftp://x\"\n");
    env.write(bad);
    let r = refuse(env.command());
    assert_eq!(r.code, 3, "{}", r.stderr);
    // APP_LISTEN overrides app.listen: only public_url is wrong here.
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
    assert!(r.stderr.contains("app.public_url `ftp://x` must be an http or https URL"), "{}", r.stderr);

    let unknown = original.replace("[app]\n", "[app]\nlisen = \"x\"\n");
    env.write(unknown);
    let r = refuse(env.command());
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(r.stderr.contains("[app]: unknown field `lisen`"), "{}", r.stderr);

    env.write(&original);
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(standin.calls(TOKEN, "getMe"), 0, "a bot started");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_change_nobody_approved_refuses_to_start() {
    let standin = StandIn::start().await.unwrap();
    let env = env(&standin);
    let original = std::fs::read_to_string(env.env_file()).unwrap();
    // Where the tokens go, changed without the key holder's approval.
    let api_base = format!("api_base = \"{}\"", standin.base_url());
    std::fs::write(env.env_file(), original.replace(&api_base, "api_base = \"https://elsewhere.example\"")).unwrap();
    let r = refuse(env.command());
    assert_eq!(r.code, 7, "{}", r.stderr);
    let file = env.env_file().display().to_string();
    assert!(
        r.stderr.starts_with(&format!(
            "error: {file}: is not approved as it is: its content, or its environment, differs from what was \
             approved; a holder of the secret key must review the change and approve it: `cargo xtask approve \
             --env "
        )),
        "{}",
        r.stderr
    );
    assert_eq!(standin.calls(TOKEN, "getMe"), 0, "a bot started");
}

#[tokio::test(flavor = "multi_thread")]
async fn plain_http_to_another_host_refuses_to_start() {
    let standin = StandIn::start().await.unwrap();
    let env = env(&standin);
    let original = std::fs::read_to_string(env.env_file()).unwrap();
    let file = env.env_file().display().to_string();
    let api_base = format!("api_base = \"{}\"", standin.base_url());
    let advice = "use https, or set app.allow_plain_http = true if this network is trusted";

    // In the file: the tokens would go out in clear text on the first call.
    env.write(original.replace(&api_base, "api_base = \"http://api.example.org\""));
    let r = refuse(env.command());
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert_eq!(
        r.stderr,
        format!(
            "error: {file}: app.api_base is http://api.example.org: plain http sends the bot tokens unencrypted; \
             {advice}\n"
        )
    );

    // From APP_API_BASE, over a file that is fine.
    env.write(&original);
    let mut cmd = env.command();
    cmd.env("APP_API_BASE", "http://api.example.org:8081");
    let r = refuse(cmd);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert_eq!(
        r.stderr,
        format!(
            "error: {file}: APP_API_BASE (overriding app.api_base) is http://api.example.org:8081: plain http \
             sends the bot tokens unencrypted; {advice}\n"
        )
    );

    // public_url: Telegram would send the webhook secret token and every
    // update there in clear text.
    let public = original.replace("[app]\n", "[app]\npublic_url = \"http://bots.example.org\"\n");
    env.write(public);
    let r = refuse(env.command());
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert_eq!(
        r.stderr,
        format!(
            "error: {file}: app.public_url is http://bots.example.org: plain http sends the webhook secret token \
             and every update unencrypted; {advice}\n"
        )
    );

    // Not an allowance that a wrong type sneaks through.
    let typo = original
        .replace(&api_base, "api_base = \"http://api.example.org\"")
        .replace("[app]\n", "[app]\nallow_plain_http = \"true\"\n");
    env.write(typo);
    let r = refuse(env.command());
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(
        r.stderr.starts_with(&format!("error: {file}: app.allow_plain_http must be true or false")),
        "{}",
        r.stderr
    );
    assert_eq!(r.stderr.lines().count(), 2, "{}", r.stderr);

    env.write(&original);
    assert_eq!(standin.calls(TOKEN, "getMe"), 0, "a bot started");
}

#[tokio::test(flavor = "multi_thread")]
async fn allow_plain_http_lets_a_webhook_be_set_over_http() {
    let standin = StandIn::start().await.unwrap();
    standin.add_bot(TOKEN, "startup_bot");
    let bot = BotSpec { name: "one", token: TOKEN, extra: "mode = \"webhook\"\nwebhook_secret = \"one_hook\"" };
    let env = TestEnv::new(
        &standin.base_url(),
        &[bot],
        "public_url = \"http://bots.example.test/\"\nallow_plain_http = true",
        &[("one_hook", "hook_secret_0123456789")],
    );
    let app = env.start();
    assert!(app.wait_log("webhook set", Duration::from_secs(10)).await, "{}", app.logs());
    let (url, _) = standin.webhook(TOKEN).unwrap();
    assert_eq!(url, "http://bots.example.test/telegram/one");
    app.assert_no_secrets();
}

#[tokio::test(flavor = "multi_thread")]
async fn two_environments_with_one_key_are_ambiguous() {
    let standin = StandIn::start().await.unwrap();
    let env = env(&standin);
    std::fs::copy(env.env_file(), env.config.path().join("copy.toml")).unwrap();
    let r = refuse(env.command());
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(r.stderr.contains("environments copy, test all use key id"), "{}", r.stderr);
    assert!(r.stderr.contains("set DEPLOY_ENV to choose one"), "{}", r.stderr);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_healthcheck_subcommand_probes_the_running_app() {
    let standin = StandIn::start().await.unwrap();
    let env = env(&standin);
    let app = env.start();
    let check = |addr: String| {
        std::process::Command::new(env!("CARGO_BIN_EXE_app"))
            .args(["healthcheck", "--addr", &addr])
            .env_clear()
            .output()
            .unwrap()
    };
    let ok = check(app.addr.to_string());
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    drop(app);
    let down = check(env_addr_of_nothing());
    assert_eq!(down.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&down.stderr).starts_with("healthcheck: 127.0.0.1:"));
}

fn env_addr_of_nothing() -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_api_backs_off_without_printing_the_token() {
    // Nothing listens at this address: every call is a connection error,
    // whose default message quotes the full URL (and so the token).
    let nowhere = format!("http://{}", env_addr_of_nothing());
    let env = TestEnv::new(&nowhere, &[BotSpec { name: "one", token: TOKEN, extra: "" }], "", &[]);
    let app = env.start();
    assert!(app.wait_log("cannot connect", Duration::from_secs(10)).await, "{}", app.logs());
    let ready = crate::http().get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    assert!(ready.text().await.unwrap().contains("one: backing off: network error: cannot connect"));
    app.assert_no_secrets();
    assert!(!app.logs().contains("/bot"), "a Bot API URL was logged:\n{}", app.logs());
}

/// `app check-config FILE` and `app instances FILE`, run as boxcar's `check`
/// and `deploy` run them: no key, the file as the last argument.
fn subcommand(args: &[&str], file: &std::path::Path) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_app")).args(args).arg(file).env_clear().output().unwrap();
    let text = |b: Vec<u8>| String::from_utf8(b).unwrap();
    (out.status.code().unwrap_or(-1), text(out.stdout), text(out.stderr))
}

#[test]
fn check_config_finds_what_startup_would_refuse_without_a_key() {
    let bots = [BotSpec { name: "one", token: TOKEN, extra: "" }];
    let good = TestEnv::new("http://127.0.0.1:9", &bots, "", &[]);
    let (code, out, err) = subcommand(&["check-config"], &good.env_file());
    assert_eq!((code, out.as_str(), err.as_str()), (0, "", ""));

    let file = good.env_file();
    let text = std::fs::read_to_string(&file).unwrap();
    let cases = [
        // A bot that names a secret that is not sealed.
        ("\n[[bots]]\nname = \"two\"\ntoken_secret = \"two_token\"\n", "bots[1].token_secret: no secret `two_token`"),
        // A webhook bot without its secret token.
        ("\n[[bots]]\nname = \"hook\"\ntoken_secret = \"one_token\"\nmode = \"webhook\"\n", "needs `webhook_secret`"),
        // A typo in a bot's settings.
        ("\n[[bots]]\nname = \"three\"\ntoken_secrt = \"one_token\"\n", "unknown field `token_secrt`"),
        // A delivery policy that does not exist.
        (
            "\n[[bots]]\nname = \"four\"\ntoken_secret = \"one_token\"\ndelivery = \"exactly-once\"\n",
            "bots[1].delivery is not a delivery policy; use \"at-least-once\" (the default: a reply that may not \
             have arrived is sent again) or \"at-most-once\" (it is given up)",
        ),
        // A token pasted as a plain setting.
        (
            "\n[notes]\nspare = \"123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw\"\n",
            "`notes.spare` holds what looks like a plaintext",
        ),
    ];
    for (extra, expected) in cases {
        // [[bots]] and [notes] must come before [secrets], which ends the file.
        let (head, secrets) = text.split_once("\n[secrets]\n").unwrap();
        std::fs::write(&file, format!("{head}{extra}\n[secrets]\n{secrets}")).unwrap();
        let (code, _, err) = subcommand(&["check-config"], &file);
        assert_eq!(code, 3, "{extra}: {err}");
        assert!(err.contains(expected), "{extra}:\n{err}");
        assert!(!err.contains("AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"), "the token was printed:\n{err}");
    }
    // Timeouts out of range: each refused on its own line, with the range.
    std::fs::write(&file, text.replace("poll_timeout = 2\n", "poll_timeout = 60\nsend_timeout = 0\n")).unwrap();
    let (code, _, err) = subcommand(&["check-config"], &file);
    assert_eq!(code, 3, "{err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 2, "{err}");
    assert!(lines[0].ends_with("app.poll_timeout is 60; use 1 to 50 seconds (Telegram holds a poll at most 50 s; 25 to 50 keeps the requests few in production)"), "{err}");
    assert!(lines[1].ends_with("app.send_timeout is 0; use 1 to 120 seconds (default 20)"), "{err}");
    // Plain http to a host that is not this machine: refused without the key
    // too, so `check` and `deploy` catch it before an image runs.
    let plain = text.replace("http://127.0.0.1:9", "http://api.example.org");
    std::fs::write(&file, &plain).unwrap();
    let (code, _, err) = subcommand(&["check-config"], &file);
    assert_eq!(code, 3, "{err}");
    assert!(err.ends_with("app.api_base is http://api.example.org: plain http sends the bot tokens unencrypted; use https, or set app.allow_plain_http = true if this network is trusted\n"), "{err}");
    std::fs::write(&file, plain.replace("[app]\n", "[app]\nallow_plain_http = true\n")).unwrap();
    let (code, _, err) = subcommand(&["check-config"], &file);
    assert_eq!((code, err.as_str()), (0, ""));
    let (code, _, err) = subcommand(&["check-config"], &good.config.path().join("missing.toml"));
    assert_eq!(code, 3);
    assert!(err.contains("cannot read"), "{err}");
}

#[test]
fn instances_is_many_only_when_every_bot_takes_webhooks() {
    let hook = "mode = \"webhook\"\nwebhook_secret = \"hook_secret\"";
    let secret = [("hook_secret", "hook-secret-token")];
    let cases: [(&[BotSpec], &str); 3] = [
        (&[BotSpec { name: "one", token: TOKEN, extra: "" }], "one\n"),
        (&[BotSpec { name: "one", token: TOKEN, extra: hook }], "many\n"),
        (
            &[BotSpec { name: "one", token: TOKEN, extra: hook }, BotSpec { name: "two", token: TOKEN, extra: "" }],
            "one\n",
        ),
    ];
    for (bots, expected) in cases {
        let env = TestEnv::new("http://127.0.0.1:9", bots, "", &secret);
        let (code, out, err) = subcommand(&["instances"], &env.env_file());
        assert_eq!((code, out.as_str()), (0, expected), "{err}");
    }
    let none = TestEnv::new("http://127.0.0.1:9", &[], "", &[]);
    assert_eq!(subcommand(&["instances"], &none.env_file()).1, "one\n");
    std::fs::write(none.env_file(), "public_key = 3\n").unwrap();
    assert_eq!(subcommand(&["instances"], &none.env_file()).0, 3);
}
