//! The HTTP side: dashboard, health, metrics and webhook intake, as one axum
//! router with timeouts and body limits on every route.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;
use subtle::ConstantTimeEq as _;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;

use crate::bot::{Bot, unix_now};
use crate::config::Mode;
use crate::metrics::Metrics;
use crate::status::State as BotState;
use crate::store::Store;
use crate::telegram::Update;

/// Largest request body: a Telegram update is a few KiB.
const MAX_BODY: usize = 256 * 1024;
/// Longest any request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Seconds between dashboard refreshes.
const REFRESH: u64 = 5;

/// What every handler can reach.
#[derive(Debug)]
pub(crate) struct AppState {
    pub(crate) env: String,
    pub(crate) bots: Vec<Arc<Bot>>,
    pub(crate) store: Arc<Store>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) poll_timeout: Duration,
    pub(crate) started: Instant,
    pub(crate) templates: minijinja::Environment<'static>,
}

/// The template set; auto-escaping is on for `.html` names.
pub(crate) fn templates() -> minijinja::Environment<'static> {
    let mut env = minijinja::Environment::new();
    env.add_template("dashboard.html", include_str!("../templates/dashboard.html"))
        .expect("the dashboard template parses");
    env
}

/// The app's routes.
pub(crate) fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/", get(dashboard))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/telegram/{bot}", post(webhook))
        .layer(RequestBodyLimitLayer::new(MAX_BODY))
        .layer(TimeoutLayer::with_status_code(StatusCode::SERVICE_UNAVAILABLE, REQUEST_TIMEOUT))
        .with_state(state)
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    let now = SystemTime::now();
    let problems: Vec<String> = state
        .bots
        .iter()
        .filter_map(|b| b.status.get().healthy(now, state.poll_timeout).err().map(|why| format!("{}: {why}", b.name)))
        .collect();
    if problems.is_empty() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, format!("not ready:\n{}\n", problems.join("\n"))).into_response()
    }
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let now = SystemTime::now();
    for bot in &state.bots {
        let up = bot.status.get().healthy(now, state.poll_timeout).is_ok();
        state.metrics.bot_up.get_or_create(&Metrics::label(&bot.name)).set(i64::from(up));
    }
    ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], state.metrics.render()).into_response()
}

#[derive(Serialize)]
struct BotRow {
    name: String,
    username: Option<String>,
    state: &'static str,
    class: &'static str,
    reason: Option<String>,
    last_poll: String,
    updates: u64,
    sent: u64,
    /// Replies queued or in flight.
    waiting: i64,
    delivery: &'static str,
}

#[derive(Serialize)]
struct MoodView {
    text: String,
    set_by: String,
    ago: String,
}

#[derive(Serialize)]
struct BoredView {
    bot: String,
    user_name: String,
    ago: String,
}

async fn dashboard(State(state): State<Arc<AppState>>) -> Response {
    let now = unix_now();
    let bots: Vec<BotRow> = state
        .bots
        .iter()
        .map(|b| {
            let s = b.status.get();
            let class = match s.state {
                BotState::Polling | BotState::Webhook => "ok",
                BotState::Failed(_) => "bad",
                _ => "warn",
            };
            let last_poll = match (b.mode, s.last_ok_poll) {
                (Mode::Webhook, _) => "webhook".to_owned(),
                (_, Some(t)) => ago(now - t.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)),
                (_, None) => "never".to_owned(),
            };
            BotRow {
                name: s.name,
                username: s.username,
                state: s.state.label(),
                class,
                reason: s.state.reason().map(ToOwned::to_owned),
                last_poll,
                updates: s.updates_handled,
                sent: s.messages_sent,
                waiting: state.metrics.replies_queued.get_or_create(&Metrics::label(&b.name)).get(),
                delivery: b.delivery.name(),
            }
        })
        .collect();
    let store = Arc::clone(&state.store);
    let read =
        tokio::task::spawn_blocking(move || Ok::<_, rusqlite::Error>((store.mood()?, store.recent_bored(20)?))).await;
    let (mood, bored) = match read {
        Ok(Ok(v)) => v,
        _ => return (StatusCode::INTERNAL_SERVER_ERROR, "cannot read the database\n").into_response(),
    };
    let mood = mood.map(|m| MoodView { text: m.text, set_by: m.set_by, ago: ago(now - m.at) });
    let bored: Vec<BoredView> =
        bored.into_iter().map(|b| BoredView { bot: b.bot, user_name: b.user_name, ago: ago(now - b.at) }).collect();
    let up = state.started.elapsed().as_secs();
    let ctx = minijinja::context! {
        env => state.env,
        refresh => REFRESH,
        uptime => format!("{}h{:02}m", up / 3600, up / 60 % 60),
        bots => bots,
        mood => mood,
        bored => bored,
    };
    match state.templates.get_template("dashboard.html").and_then(|t| t.render(ctx)) {
        Ok(html) => Html(html).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "cannot render the dashboard");
            (StatusCode::INTERNAL_SERVER_ERROR, "cannot render the dashboard\n").into_response()
        }
    }
}

fn ago(secs: i64) -> String {
    match secs.max(0) {
        s if s < 60 => format!("{s} s ago"),
        s if s < 3600 => format!("{} min ago", s / 60),
        s if s < 86_400 => format!("{} h ago", s / 3600),
        s => format!("{} d ago", s / 86_400),
    }
}

/// Telegram's webhook delivery. The secret token header is compared in
/// constant time; any non-2xx makes Telegram deliver again, so a storage
/// failure answers 500 and the update comes back.
async fn webhook(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(bot) = state.bots.iter().find(|b| b.name == name && b.mode == Mode::Webhook) else {
        return (StatusCode::NOT_FOUND, "no webhook bot of that name\n").into_response();
    };
    let expected = bot.webhook_secret.as_ref().map(|t| t.expose().as_bytes()).unwrap_or_default();
    let given = headers.get("x-telegram-bot-api-secret-token").map(|v| v.as_bytes()).unwrap_or_default();
    let matches: bool = given.ct_eq(expected).into();
    if expected.is_empty() || !matches {
        state.metrics.error(&bot.name, "webhook_unauthorized");
        tracing::warn!(bot = %bot.name, "webhook call with a missing or wrong secret token refused");
        return (StatusCode::UNAUTHORIZED, "wrong secret token\n").into_response();
    }
    let update: Update = match serde_json::from_slice(&body) {
        Ok(u) => u,
        Err(e) => {
            // Authenticated but unreadable: answering non-2xx would make
            // Telegram deliver it again forever. Count it, log it, drop it.
            state.metrics.error(&bot.name, "webhook_malformed");
            tracing::warn!(bot = %bot.name, line = e.line(), column = e.column(), "webhook update not understood; dropped");
            return (StatusCode::OK, "ignored\n").into_response();
        }
    };
    match bot.handle_updates(vec![update], false).await {
        Ok(_) => (StatusCode::OK, "ok\n").into_response(),
        Err(e) => {
            tracing::error!(bot = %bot.name, error = %e, "cannot record a webhook update");
            (StatusCode::INTERNAL_SERVER_ERROR, "try again\n").into_response()
        }
    }
}
