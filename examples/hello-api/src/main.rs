//! `hello-api`: the smallest service worth shipping with boxcar, and the proof
//! that boxcar ships any service, not only its Telegram bot.
//!
//! At startup it takes its key (SECRET_KEY_FILE or SECRET_KEY), opens the
//! sealed `api_key` of its environment with `boxcar-secrets`, and refuses to
//! start if anything is wrong. Then `GET /hello` answers only a request that
//! carries that key as `Authorization: Bearer <key>`; `GET /healthz` answers
//! anyone. It has no health-check subcommand: the image's generic probe asks
//! `/healthz`.
//!
//! Settings: PORT (default 9000), DEPLOY_ENV (else the environment whose
//! public key is the key's), HELLO_CONFIG_DIR (else the image's folder of
//! environment files, else ./deploy-config).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse as _, Response};
use axum::routing::get;
use subtle::ConstantTimeEq as _;
use zeroize::Zeroizing;

/// The sealed secret this service needs.
const API_KEY: &str = "api_key";

/// Exit codes, one per kind of startup failure.
mod exit {
    pub(crate) const KEY: u8 = 2;
    pub(crate) const CONFIG: u8 = 3;
    pub(crate) const SECRETS: u8 = 4;
    pub(crate) const LISTEN: u8 = 6;
    pub(crate) const UNAPPROVED: u8 = 7;
}

struct AppState {
    api_key: Zeroizing<Vec<u8>>,
    env: String,
}

fn main() -> ExitCode {
    // First, while there is one thread: take the key out of the environment.
    let intake = match boxcar_secrets::take_from_env() {
        Ok(Some(intake)) => intake,
        Ok(None) => {
            return fail(exit::KEY, &["no secret key: set SECRET_KEY_FILE (preferred) or SECRET_KEY".to_owned()]);
        }
        Err(e) => return fail(exit::KEY, &[e.to_string()]),
    };
    let dir = std::env::var_os("HELLO_CONFIG_DIR").map_or_else(boxcar_secrets::default_config_dir, Into::into);
    let env = std::env::var(boxcar_secrets::DEPLOY_ENV).ok();
    let (file, secrets) = match boxcar_secrets::open_environment(&intake.key, &dir, env.as_deref()) {
        Ok(opened) => opened,
        Err(boxcar_secrets::StartupError::Config(lines)) => return fail(exit::CONFIG, &lines),
        Err(boxcar_secrets::StartupError::Secrets(lines)) => return fail(exit::SECRETS, &lines),
        Err(boxcar_secrets::StartupError::Unapproved(lines)) => return fail(exit::UNAPPROVED, &lines),
    };
    drop(intake);
    let Some(api_key) = secrets.get(API_KEY).filter(|v| !v.is_empty()) else {
        return fail(
            exit::SECRETS,
            &[format!(
                "{}: no sealed `{API_KEY}`; seal one with `cargo xtask encrypt-secret --service hello-api --env {} {API_KEY}`",
                file.path().display(),
                file.env()
            )],
        );
    };
    let state =
        Arc::new(AppState { api_key: Zeroizing::new(api_key.expose_bytes().to_vec()), env: file.env().to_owned() });
    drop(secrets);

    let port = match std::env::var("PORT").ok().filter(|p| !p.is_empty()).map(|p| p.parse::<u16>()) {
        None => 9000,
        Some(Ok(port)) => port,
        Some(Err(_)) => return fail(exit::CONFIG, &["PORT must be a port number, like 9000".to_owned()]),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return fail(1, &[format!("cannot start the runtime: {e}")]),
    };
    runtime.block_on(serve(state, SocketAddr::from(([0, 0, 0, 0], port))))
}

fn fail(code: u8, lines: &[String]) -> ExitCode {
    for line in lines {
        eprintln!("error: {line}");
    }
    ExitCode::from(code)
}

async fn serve(state: Arc<AppState>, addr: SocketAddr) -> ExitCode {
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => return fail(exit::LISTEN, &[format!("cannot listen on {addr}: {e}; set PORT")]),
    };
    println!("hello-api: environment `{}`, listening on {}", state.env, listener.local_addr().unwrap_or(addr));
    let shutdown = async {
        use tokio::signal::unix::{SignalKind, signal};
        // As PID 1 in a container, a signal without a handler is ignored.
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => std::future::pending().await,
        }
    };
    match axum::serve(listener, router(state)).with_graceful_shutdown(shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(1, &[format!("the server failed: {e}")]),
    }
}

fn router(state: Arc<AppState>) -> Router {
    Router::new().route("/healthz", get(|| async { "ok\n" })).route("/hello", get(hello)).with_state(state)
}

/// 200 for the bearer of the sealed key, 401 for anyone else.
async fn hello(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let given =
        headers.get(header::AUTHORIZATION).and_then(|v| v.as_bytes().strip_prefix(b"Bearer ")).unwrap_or_default();
    // Constant time: how long the comparison takes says nothing of the key.
    if bool::from(given.ct_eq(&state.api_key)) {
        (StatusCode::OK, format!("hello from `{}`\n", state.env)).into_response()
    } else {
        (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, "Bearer")], "a bearer token is needed\n").into_response()
    }
}
