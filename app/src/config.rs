//! The app's settings: the plain TOML next to the sealed values in
//! `deploy-config/<env>.toml`, checked against the opened secrets.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;

use boxcar_secrets::{EnvFile, Secrets};
use serde::Deserialize;
use zeroize::Zeroizing;

/// The official Bot API.
pub(crate) const DEFAULT_API_BASE: &str = "https://api.telegram.org";

/// `[app]` as written in the file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AppSection {
    #[serde(default = "default_listen")]
    listen: String,
    #[serde(default = "default_data_dir")]
    data_dir: PathBuf,
    #[serde(default = "default_api_base")]
    api_base: String,
    /// Base URL Telegram reaches this app at, for webhook bots.
    #[serde(default)]
    public_url: Option<String>,
    /// Lets `api_base` and `public_url` be plain http to a host that is not
    /// loopback. Read as any value so a wrong type gets an error that names
    /// the field (serde's does not).
    #[serde(default)]
    allow_plain_http: Option<toml::Value>,
    #[serde(default)]
    log_format: LogFormat,
    #[serde(default)]
    unauthorized: Unauthorized,
    /// Long-poll timeout in seconds (Telegram holds getUpdates this long).
    #[serde(default = "default_poll_timeout")]
    poll_timeout: u64,
    /// Telegram's published limits: about 30 messages a second per bot, and
    /// one a second per chat. Raise them only against a stand-in.
    #[serde(default = "default_per_bot_rate")]
    messages_per_second: u32,
    #[serde(default = "default_per_chat_rate")]
    messages_per_chat_per_second: u32,
    /// Seconds a sendMessage call may take before it counts as failed (and,
    /// as the request was written, as a reply that may have arrived).
    #[serde(default = "default_send_timeout")]
    send_timeout: u64,
}

fn default_listen() -> String {
    "0.0.0.0:8080".to_owned()
}
fn default_data_dir() -> PathBuf {
    PathBuf::from("/data")
}
fn default_api_base() -> String {
    DEFAULT_API_BASE.to_owned()
}
fn default_poll_timeout() -> u64 {
    30
}
fn default_per_bot_rate() -> u32 {
    30
}
fn default_per_chat_rate() -> u32 {
    1
}
fn default_send_timeout() -> u64 {
    20
}

/// `[[bots]]` as written in the file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BotSection {
    name: String,
    /// Name of the secret (under `[secrets]`) holding the bot token.
    token_secret: String,
    #[serde(default)]
    mode: Mode,
    /// Webhook mode: name of the secret holding the `secret_token` Telegram
    /// sends back in `X-Telegram-Bot-Api-Secret-Token`.
    #[serde(default)]
    webhook_secret: Option<String>,
    /// Telegram user ids allowed to talk to the bot; empty allows everyone.
    #[serde(default)]
    allowed_users: Vec<i64>,
    /// User ids that may set the mood.
    #[serde(default)]
    admins: Vec<i64>,
    /// What to do with a reply that may or may not have arrived: read as
    /// text so a wrong value gets an error that names the field and the
    /// choices (serde's names neither).
    #[serde(default)]
    delivery: Option<String>,
}

/// How a bot receives updates.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Mode {
    /// `getUpdates` long polling.
    #[default]
    Polling,
    /// Telegram POSTs to `/telegram/{bot}`.
    Webhook,
}

/// What a bot does with a reply whose request was written but whose answer
/// never came (the connection dropped, the answer was too slow, the process
/// died): Telegram has no idempotent send, so it either risks answering
/// twice or risks not answering. Every other failure is known to have left
/// nothing behind and is always retried.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) enum Delivery {
    /// Send it again: no reply is lost; one may arrive twice.
    #[default]
    AtLeastOnce,
    /// Give it up: no reply arrives twice; one may be lost.
    AtMostOnce,
}

impl Delivery {
    /// The setting's value, as written in the environment file.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Delivery::AtLeastOnce => "at-least-once",
            Delivery::AtMostOnce => "at-most-once",
        }
    }

    fn parse(text: &str) -> Option<Delivery> {
        [Delivery::AtLeastOnce, Delivery::AtMostOnce].into_iter().find(|d| d.name() == text)
    }
}

/// Log output.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum LogFormat {
    /// JSON when stdout is not a terminal, text when it is.
    #[default]
    Auto,
    Json,
    Text,
}

/// What to do with messages from users outside a bot's allow-list.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Unauthorized {
    /// Reply politely that the bot is private.
    #[default]
    Refuse,
    /// Say nothing.
    Ignore,
}

/// A bot token or a webhook secret token. Never printed: `Debug` shows a
/// placeholder only.
pub(crate) struct Token(Zeroizing<String>);

impl Token {
    pub(crate) fn new(token: String) -> Token {
        Token(Zeroizing::new(token))
    }

    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// One bot, with its credentials opened.
#[derive(Debug)]
pub(crate) struct BotConfig {
    pub(crate) name: String,
    pub(crate) token: Token,
    pub(crate) mode: Mode,
    pub(crate) webhook_secret: Option<Token>,
    pub(crate) allowed_users: BTreeSet<i64>,
    pub(crate) admins: BTreeSet<i64>,
    pub(crate) delivery: Delivery,
}

/// Everything the app runs with.
#[derive(Debug)]
pub(crate) struct Config {
    pub(crate) env: String,
    pub(crate) listen: SocketAddr,
    pub(crate) data_dir: PathBuf,
    pub(crate) api_base: reqwest::Url,
    pub(crate) public_url: Option<reqwest::Url>,
    pub(crate) log_format: LogFormat,
    pub(crate) unauthorized: Unauthorized,
    pub(crate) poll_timeout: u64,
    pub(crate) messages_per_second: u32,
    pub(crate) messages_per_chat_per_second: u32,
    pub(crate) send_timeout: u64,
    pub(crate) bots: Vec<BotConfig>,
}

/// Environment variables that override `[app]`, so one image runs anywhere.
pub(crate) struct Overrides {
    pub(crate) listen: Option<String>,
    pub(crate) data_dir: Option<PathBuf>,
    pub(crate) api_base: Option<String>,
}

impl Overrides {
    pub(crate) fn from_env() -> Overrides {
        let var = |name| std::env::var(name).ok().filter(|v: &String| !v.is_empty());
        Overrides {
            listen: var("APP_LISTEN"),
            data_dir: var("APP_DATA_DIR").map(PathBuf::from),
            api_base: var("APP_API_BASE"),
        }
    }
}

/// Where a bot's credentials come from while its settings are checked: the
/// opened secrets (startup), or only the names under `[secrets]` (`app
/// check-config`, which runs without a key).
enum Credentials<'a> {
    Opened(&'a Secrets),
    Names(&'a EnvFile),
}

/// Reads `[app]` and `[[bots]]` from `file` and takes each bot's credentials
/// from `secrets`. Returns every problem found, one line each.
pub(crate) fn load(file: &EnvFile, secrets: &Secrets, overrides: Overrides) -> Result<Config, Vec<String>> {
    walk(file, &Credentials::Opened(secrets), overrides)
}

/// `app check-config`: every problem `load` would find that can be found
/// without the secret key, plus plain settings that hold what looks like a
/// bot token (a credential pasted outside `[secrets]`). One line each; none
/// quotes a setting's value.
pub(crate) fn check(file: &EnvFile) -> Vec<String> {
    let path = file.path().display().to_string();
    let none = Overrides { listen: None, data_dir: None, api_base: None };
    let mut problems = walk(file, &Credentials::Names(file), none).err().unwrap_or_default();
    problems.extend(plaintext_tokens(file.table(), "").into_iter().map(|field| {
        format!(
            "{path}: `{field}` holds what looks like a plaintext Telegram bot token; seal it under [secrets] instead"
        )
    }));
    problems
}

/// Whether several instances may run at once: only when every bot takes its
/// updates by webhook. Two pollers of one bot get 409 Conflict from
/// Telegram, and an environment with no bot decides nothing, so: one.
pub(crate) fn instances(file: &EnvFile) -> Result<&'static str, Vec<String>> {
    let (_, bots) = sections(file)?;
    let all_webhook = !bots.is_empty() && bots.iter().all(|b| b.mode == Mode::Webhook);
    Ok(if all_webhook { "many" } else { "one" })
}

fn sections(file: &EnvFile) -> Result<(AppSection, Vec<BotSection>), Vec<String>> {
    let path = file.path().display().to_string();
    let table = file.table();
    let app: AppSection = match table.get("app").cloned() {
        None => toml::from_str("").expect("defaults parse"),
        Some(value) => match value.try_into() {
            Ok(app) => app,
            Err(e) => return Err(vec![format!("{path}: [app]: {}", one_line(&e))]),
        },
    };
    let bots: Vec<BotSection> = match table.get("bots").cloned() {
        None => Vec::new(),
        Some(value) => match value.try_into() {
            Ok(bots) => bots,
            Err(e) => return Err(vec![format!("{path}: [[bots]]: {}", one_line(&e))]),
        },
    };
    Ok((app, bots))
}

fn walk(file: &EnvFile, credentials: &Credentials<'_>, overrides: Overrides) -> Result<Config, Vec<String>> {
    let path = file.path().display().to_string();
    let mut problems = Vec::new();
    let (app, bots) = sections(file)?;
    if bots.is_empty() {
        problems.push(format!("{path}: no [[bots]] configured; add one with `name` and `token_secret`"));
    }

    let listen_text = overrides.listen.unwrap_or(app.listen);
    let listen = listen_text
        .parse::<SocketAddr>()
        .map_err(|_| format!("{path}: app.listen (or APP_LISTEN) `{listen_text}` is not an address like 0.0.0.0:8080"));
    let allow_plain_http = match app.allow_plain_http {
        None => false,
        Some(toml::Value::Boolean(allow)) => allow,
        Some(_) => {
            // The value is not quoted: it could be anything, a pasted token included.
            problems.push(format!("{path}: app.allow_plain_http must be true or false (default false)"));
            false
        }
    };
    let (api_field, api_text) = match overrides.api_base {
        Some(text) => ("APP_API_BASE (overriding app.api_base)", text),
        None => ("app.api_base", app.api_base),
    };
    let api_base = parse_base_url(&api_text, allow_plain_http, "the bot tokens")
        .map_err(|why| format!("{path}: {api_field} {why}"));
    let public_url = app
        .public_url
        .filter(|u| !u.is_empty())
        .map(|u| {
            parse_base_url(&u, allow_plain_http, "the webhook secret token and every update")
                .map_err(|why| format!("{path}: app.public_url {why}"))
        })
        .transpose();
    if !(1..=50).contains(&app.poll_timeout) {
        problems.push(format!(
            "{path}: app.poll_timeout is {}; use 1 to 50 seconds (Telegram holds a poll at most 50 s; \
             25 to 50 keeps the requests few in production)",
            app.poll_timeout
        ));
    }
    if !(1..=120).contains(&app.send_timeout) {
        problems.push(format!("{path}: app.send_timeout is {}; use 1 to 120 seconds (default 20)", app.send_timeout));
    }
    if app.messages_per_second == 0 || app.messages_per_chat_per_second == 0 {
        problems.push(format!("{path}: app.messages_per_second and messages_per_chat_per_second must be at least 1"));
    }

    let mut names = BTreeMap::new();
    let mut configs = Vec::new();
    for (i, bot) in bots.into_iter().enumerate() {
        let at = format!("{path}: bots[{i}]");
        if let Err(p) = boxcar_secrets::check_secret_name(&bot.name) {
            problems.push(format!("{at}.name `{}` {p}", bot.name));
        }
        if names.insert(bot.name.clone(), i).is_some() {
            problems.push(format!("{at}.name `{}` is used by another bot; names must be unique", bot.name));
        }
        let secret = |field: &str, name: &str, problems: &mut Vec<String>| -> Option<Token> {
            let found = match credentials {
                Credentials::Opened(secrets) => secrets.get(name).map(Some),
                Credentials::Names(file) => file.secret_names().any(|n| n == name).then_some(None),
            };
            match found {
                None => {
                    problems.push(format!(
                        "{at}.{field}: no secret `{name}` in [secrets]; seal it with \
                         `cargo xtask encrypt-secret --env {} {name}`",
                        file.env()
                    ));
                    None
                }
                // Named, not opened: nothing more to check without the key.
                Some(None) => None,
                Some(Some(value)) => match value.expose_str() {
                    Some(text) if !text.is_empty() => Some(Token::new(text.to_owned())),
                    _ => {
                        problems.push(format!("{at}.{field}: secret `{name}` is empty or not UTF-8 text"));
                        None
                    }
                },
            }
        };
        let delivery = match bot.delivery.as_deref() {
            None => Delivery::default(),
            Some(text) => Delivery::parse(text).unwrap_or_else(|| {
                problems.push(format!(
                    // The value is not quoted: it could be anything, a pasted token included.
                    "{at}.delivery is not a delivery policy; use \"at-least-once\" (the default: \
                     a reply that may not have arrived is sent again) or \"at-most-once\" (it is given up)"
                ));
                Delivery::default()
            }),
        };
        let token = secret("token_secret", &bot.token_secret, &mut problems);
        if let Some(t) = &token
            && !looks_like_token(t.expose())
        {
            problems.push(format!(
                "{at}.token_secret: secret `{}` does not look like a bot token (`<digits>:<letters>`)",
                bot.token_secret
            ));
        }
        let webhook_secret = match (&bot.mode, &bot.webhook_secret) {
            (Mode::Webhook, None) => {
                problems.push(format!(
                    "{at}: mode = \"webhook\" needs `webhook_secret`, the name of a sealed secret token"
                ));
                None
            }
            (_, Some(name)) => {
                let value = secret("webhook_secret", name, &mut problems);
                if let Some(v) = &value
                    && !valid_secret_token(v.expose())
                {
                    problems.push(format!(
                        "{at}.webhook_secret: secret `{name}` must be 1 to 256 characters of A-Z a-z 0-9 _ - \
                             (Telegram's rule for secret_token)"
                    ));
                }
                value
            }
            (Mode::Polling, None) => None,
        };
        if let Some(token) = token {
            configs.push(BotConfig {
                name: bot.name,
                token,
                mode: bot.mode,
                webhook_secret,
                allowed_users: bot.allowed_users.into_iter().collect(),
                admins: bot.admins.into_iter().collect(),
                delivery,
            });
        }
    }

    let (listen, api_base, public_url) = match (listen, api_base, public_url) {
        (Ok(l), Ok(a), Ok(p)) => (l, a, p),
        (l, a, p) => {
            problems.extend([l.err(), a.err(), p.err()].into_iter().flatten());
            return Err(problems);
        }
    };
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(Config {
        env: file.env().to_owned(),
        listen,
        data_dir: overrides.data_dir.unwrap_or(app.data_dir),
        api_base,
        public_url,
        log_format: app.log_format,
        unauthorized: app.unauthorized,
        poll_timeout: app.poll_timeout,
        messages_per_second: app.messages_per_second,
        messages_per_chat_per_second: app.messages_per_chat_per_second,
        send_timeout: app.send_timeout,
        bots: configs,
    })
}

/// A base URL the app sends credentials to (`api_base`: the bot tokens, in
/// every request's path) or has Telegram send them to (`public_url`: the
/// webhook secret token and every update). A plain setting decides where
/// opened secrets go, so it must not send them in clear text by accident:
/// https, or plain http to a loopback address (a stand-in on this machine),
/// or plain http anywhere when the file says `allow_plain_http = true`.
/// `carries` names what plain http would expose, for the error.
fn parse_base_url(text: &str, allow_plain_http: bool, carries: &str) -> Result<reqwest::Url, String> {
    let url = reqwest::Url::parse(text).map_err(|e| format!("`{text}` is not a URL: {e}"))?;
    // Checked first, so no later error quotes a password. A credential in a
    // plain setting is not sealed, and sent wherever the URL points.
    if !url.username().is_empty() || url.password().is_some() {
        return Err("has a user name or password in it (not shown); remove it: \
                    a credential in a plain setting is not sealed"
            .to_owned());
    }
    match url.scheme() {
        "https" => Ok(url),
        "http" if allow_plain_http || is_loopback(&url) => Ok(url),
        "http" => Err(format!(
            "is {text}: plain http sends {carries} unencrypted; use https, \
             or set app.allow_plain_http = true if this network is trusted"
        )),
        _ => Err(format!("`{text}` must be an http or https URL")),
    }
}

/// Whether `url`'s host is this machine: an IPv4 address in 127.0.0.0/8,
/// `::1`, or the name `localhost`. Other names are not resolved: what a
/// name points at can change after the check.
fn is_loopback(url: &reqwest::Url) -> bool {
    let Some(host) = url.host_str() else { return false };
    if host == "localhost" {
        return true;
    }
    // `host_str` writes an IPv6 address in brackets; for http and https the
    // URL parser has already turned every IPv4 form (`127.1`, `0x7f.0.0.1`)
    // into dotted decimal, so a name never parses as an address here.
    let bare = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    bare.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn one_line(e: &toml::de::Error) -> String {
    e.message().trim_end().replace('\n', "; ")
}

fn looks_like_token(s: &str) -> bool {
    let Some((id, rest)) = s.split_once(':') else { return false };
    !id.is_empty()
        && id.bytes().all(|b| b.is_ascii_digit())
        && !rest.is_empty()
        && rest.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'))
}

/// Dotted paths of string values outside `[secrets]` shaped like a Telegram
/// bot token (`<digits>:<35 characters>`).
fn plaintext_tokens(table: &toml::Table, prefix: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (key, value) in table {
        let path = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
        if path == "secrets" {
            continue;
        }
        collect_tokens(value, &path, &mut out);
    }
    out
}

fn collect_tokens(value: &toml::Value, path: &str, out: &mut Vec<String>) {
    match value {
        toml::Value::String(s) if looks_like_bot_token(s) => out.push(path.to_owned()),
        toml::Value::Table(t) => out.extend(plaintext_tokens(t, path)),
        toml::Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                collect_tokens(item, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

/// The shape @BotFather hands out: a numeric bot id, `:`, and at least 30
/// characters of `A-Za-z0-9_-`. Stricter than `looks_like_token`, which only
/// guards against a swapped secret at startup.
fn looks_like_bot_token(s: &str) -> bool {
    let Some((id, secret)) = s.split_once(':') else { return false };
    (5..=16).contains(&id.len())
        && id.bytes().all(|b| b.is_ascii_digit())
        && secret.len() >= 30
        && secret.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'))
}

fn valid_secret_token(s: &str) -> bool {
    (1..=256).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_debug_hides_the_secret_part() {
        let t = Token::new("123456:ABCdef-secret".to_owned());
        assert_eq!(format!("{t:?}"), "Token(<redacted>)");
        assert_eq!(format!("{:?}", Token::new("webhook_secret_value".to_owned())), "Token(<redacted>)");
        assert!(looks_like_token("123456:ABCdef-secret"));
        assert!(!looks_like_token("hunter2"));
        assert!(valid_secret_token("abc_DEF-1"));
        assert!(!valid_secret_token("a b"));
    }

    #[test]
    fn bot_token_shape() {
        assert!(looks_like_bot_token("123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"));
        assert!(!looks_like_bot_token("sealed:v1:0011223344556677:AAAA"));
        assert!(!looks_like_bot_token("0.0.0.0:8080"));
        let t: toml::Table = "a = 1\n[x]\ny = [\"123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw\"]\n".parse().unwrap();
        assert_eq!(plaintext_tokens(&t, ""), ["x.y[0]"]);
    }

    /// The problems `check` finds in an environment with one polling bot and
    /// `app` as its `[app]` section.
    fn app_problems(app: &str) -> Vec<String> {
        walk_with(app, None).err().unwrap_or_default()
    }

    /// `walk` over such an environment, with `api_base` as APP_API_BASE.
    fn walk_with(app: &str, api_base: Option<&str>) -> Result<Config, Vec<String>> {
        let public_key = boxcar_secrets::SecretKey::generate().public_key().to_base64();
        let text = format!(
            "public_key = \"{public_key}\"\n[app]\n{app}\n[[bots]]\nname = \"one\"\ntoken_secret = \"one_token\"\n\
             [secrets]\none_token = \"sealed:v1:x\"\n"
        );
        let file = EnvFile::parse(std::path::Path::new("deploy-config/production.toml"), &text).unwrap();
        let overrides = Overrides { listen: None, data_dir: None, api_base: api_base.map(str::to_owned) };
        walk(&file, &Credentials::Names(&file), overrides)
    }

    const PLAIN_API: &str = "deploy-config/production.toml: app.api_base is http://api.example.org: plain http \
                             sends the bot tokens unencrypted; use https, or set app.allow_plain_http = true if \
                             this network is trusted";

    #[test]
    fn https_is_accepted_anywhere() {
        let config =
            walk_with("api_base = \"https://api.example.org\"\npublic_url = \"https://bots.example.org/\"", None)
                .unwrap();
        assert_eq!(config.api_base.as_str(), "https://api.example.org/");
        assert_eq!(config.public_url.unwrap().as_str(), "https://bots.example.org/");
        // The default too.
        assert_eq!(walk_with("", None).unwrap().api_base.as_str(), "https://api.telegram.org/");
    }

    #[test]
    fn plain_http_to_another_host_is_refused_naming_the_field() {
        assert_eq!(app_problems("api_base = \"http://api.example.org\""), [PLAIN_API]);
        assert_eq!(
            app_problems("public_url = \"http://bots.example.org\""),
            ["deploy-config/production.toml: app.public_url is http://bots.example.org: plain http sends \
                 the webhook secret token and every update unencrypted; use https, or set \
                 app.allow_plain_http = true if this network is trusted"]
        );
        // Near misses of loopback are other hosts.
        for host in ["128.0.0.1", "10.0.0.1", "[::2]", "[::ffff:127.0.0.1]", "localhost.example.org", "botapi"] {
            let problems = app_problems(&format!("api_base = \"http://{host}:8081\""));
            assert_eq!(problems.len(), 1, "{host}: {problems:?}");
            assert!(problems[0].contains(": app.api_base is http://"), "{host}: {problems:?}");
            assert!(problems[0].contains("plain http sends the bot tokens unencrypted"), "{host}: {problems:?}");
        }
        // Explicitly false is the default.
        assert_eq!(app_problems("api_base = \"http://api.example.org\"\nallow_plain_http = false"), [PLAIN_API]);
    }

    #[test]
    fn plain_http_to_loopback_is_accepted() {
        for host in ["127.0.0.1:9", "127.5.6.7", "[::1]:8081", "localhost:8081", "LOCALHOST", "127.1"] {
            let app = format!("api_base = \"http://{host}\"\npublic_url = \"http://{host}/\"");
            let config = walk_with(&app, None).unwrap_or_else(|p| panic!("{host}: {p:?}"));
            assert_eq!(config.api_base.scheme(), "http");
            assert_eq!(config.public_url.map(|u| u.scheme().to_owned()).as_deref(), Some("http"));
        }
    }

    #[test]
    fn allow_plain_http_lets_http_through_to_any_host() {
        let app = "allow_plain_http = true\napi_base = \"http://botapi:8081\"\npublic_url = \"http://bots.lan/\"";
        let config = walk_with(app, None).unwrap();
        assert_eq!(config.api_base.as_str(), "http://botapi:8081/");
        assert_eq!(config.public_url.unwrap().as_str(), "http://bots.lan/");
    }

    #[test]
    fn allow_plain_http_must_be_a_boolean() {
        let expected = "deploy-config/production.toml: app.allow_plain_http must be true or false (default false)";
        for value in ["\"true\"", "1", "[true]", "{ x = true }"] {
            assert_eq!(app_problems(&format!("allow_plain_http = {value}")), [expected], "{value}");
        }
        // And a wrong type allows nothing.
        assert_eq!(
            app_problems("allow_plain_http = \"yes\"\napi_base = \"http://api.example.org\""),
            [expected, PLAIN_API]
        );
    }

    #[test]
    fn other_schemes_are_refused_even_with_allow_plain_http() {
        for url in ["ftp://api.example.org", "file:///etc/passwd", "ws://127.0.0.1:9", "data:text/plain,x"] {
            for allow in ["", "allow_plain_http = true\n"] {
                for field in ["api_base", "public_url"] {
                    assert_eq!(
                        app_problems(&format!("{allow}{field} = \"{url}\"")),
                        [format!("deploy-config/production.toml: app.{field} `{url}` must be an http or https URL")],
                        "{allow}{field}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_user_name_or_password_is_refused_and_not_shown() {
        for url in
            ["https://user:hunter2@api.example.org", "https://user@api.example.org", "https://:hunter2@api.example.org"]
        {
            for field in ["api_base", "public_url"] {
                let problems = app_problems(&format!("allow_plain_http = true\n{field} = \"{url}\""));
                assert_eq!(
                    problems,
                    [format!(
                        "deploy-config/production.toml: app.{field} has a user name or password in it (not shown); \
                         remove it: a credential in a plain setting is not sealed"
                    )],
                    "{url}"
                );
            }
        }
    }

    #[test]
    fn the_api_base_override_follows_the_same_rule() {
        let https = walk_with("api_base = \"http://api.example.org\"", Some("https://api.example.org")).unwrap();
        assert_eq!(https.api_base.as_str(), "https://api.example.org/");
        assert_eq!(walk_with("", Some("http://127.0.0.1:9")).unwrap().api_base.as_str(), "http://127.0.0.1:9/");
        assert_eq!(
            walk_with("", Some("http://api.example.org")).unwrap_err(),
            ["deploy-config/production.toml: APP_API_BASE (overriding app.api_base) is http://api.example.org: \
                 plain http sends the bot tokens unencrypted; use https, or set app.allow_plain_http = true if \
                 this network is trusted"]
        );
        let allowed = walk_with("allow_plain_http = true", Some("http://api.example.org")).unwrap();
        assert_eq!(allowed.api_base.as_str(), "http://api.example.org/");
        assert_eq!(
            walk_with("allow_plain_http = true", Some("ftp://api.example.org")).unwrap_err(),
            ["deploy-config/production.toml: APP_API_BASE (overriding app.api_base) `ftp://api.example.org` \
              must be an http or https URL"]
        );
    }
}
