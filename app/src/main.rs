//! The service boxcar ships: a multi-bot Telegram runner with a web dashboard.
//!
//! Startup is fail-closed: the secret key is taken out of the environment
//! first, every sealed credential is opened and every setting checked before a
//! port is bound or a bot starts; any problem is one line on stderr and a
//! distinct exit code (see `exit`).

mod bot;
mod commands;
mod config;
mod metrics;
mod sender;
mod status;
mod store;
mod telegram;
mod web;

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use boxcar_secrets::{EnvFile, SecretKey, Secrets};
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

// musl's allocator takes a global lock on every allocation; with several
// runtime threads it is several times slower than glibc's. mimalloc keeps the
// static musl build as fast as the glibc one (measured in the app benchmark);
// its `override` feature (workspace Cargo.toml) makes it C's malloc too, for
// the bundled SQLite.
#[cfg(target_env = "musl")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit codes, one per kind of startup failure, so an orchestrator's events
/// say which without parsing logs.
mod exit {
    /// Runtime failure after startup, or the healthcheck failed.
    pub(crate) const FAILURE: u8 = 1;
    /// No secret key given, or it cannot be read.
    pub(crate) const KEY: u8 = 2;
    /// Environment files unreadable, no environment for the key, or bad settings.
    pub(crate) const CONFIG: u8 = 3;
    /// A secret cannot be opened (tampered, moved, sealed to another key).
    pub(crate) const SECRETS: u8 = 4;
    /// The data directory or database cannot be used.
    pub(crate) const STORAGE: u8 = 5;
    /// The listen address cannot be bound.
    pub(crate) const LISTEN: u8 = 6;
    /// The environment file's content is not approved by its key's holder.
    pub(crate) const UNAPPROVED: u8 = 7;
}

/// A multi-bot Telegram runner with a web dashboard.
///
/// The secret key comes from SECRET_KEY_FILE (preferred) or SECRET_KEY. The
/// environment is DEPLOY_ENV, or else the one file in APP_CONFIG_DIR
/// (default ./deploy-config) whose public key matches the key. APP_LISTEN,
/// APP_DATA_DIR and APP_API_BASE override the file's [app] settings.
///
/// Exit codes: 2 key, 3 configuration, 4 secrets, 5 storage, 6 listen address,
/// 7 environment file not approved.
#[derive(Debug, Parser)]
#[command(name = "app", version, max_term_width = 100)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the bots and the dashboard (the default).
    Serve,
    /// Exit 0 when the running app answers /healthz, for images with no shell.
    Healthcheck {
        /// Address of the app (default: APP_LISTEN, or 127.0.0.1:8080).
        #[arg(long)]
        addr: Option<String>,
    },
    /// Check an environment file's [app] and [[bots]] without the secret key:
    /// the settings parse, every bot names sealed secrets that exist, no plain
    /// setting holds a bot token. One line per problem, exit 3 if any. boxcar's
    /// `check` and `deploy` run it (the service contract names it).
    CheckConfig {
        /// The environment file, e.g. deploy-config/production.toml.
        file: PathBuf,
    },
    /// Print `many` when several instances may serve the environment file at
    /// once (every bot takes updates by webhook), else `one`. boxcar's
    /// `deploy` and `manifests` ask it before running more than one.
    Instances {
        /// The environment file, e.g. deploy-config/production.toml.
        file: PathBuf,
    },
}

fn main() -> ExitCode {
    // First, while there is one thread: take the key out of the environment.
    let intake = boxcar_secrets::take_from_env();
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Serve) {
        Command::Healthcheck { addr } => healthcheck(addr),
        Command::CheckConfig { file } => check_config(&file),
        Command::Instances { file } => instances(&file),
        Command::Serve => serve(intake),
    }
}

fn fail(code: u8, lines: &[String]) -> ExitCode {
    for line in lines {
        eprintln!("error: {line}");
    }
    ExitCode::from(code)
}

fn serve(intake: Result<Option<boxcar_secrets::Intake>, boxcar_secrets::IntakeError>) -> ExitCode {
    let started = Instant::now();
    let intake = match intake {
        Ok(Some(intake)) => intake,
        Ok(None) => {
            return fail(exit::KEY, &["no secret key: set SECRET_KEY_FILE (preferred) or SECRET_KEY".to_owned()]);
        }
        Err(err) => return fail(exit::KEY, &[err.to_string()]),
    };
    for warning in &intake.warnings {
        eprintln!("warning: {warning}");
    }
    let (file, secrets) = match open_environment(&intake.key) {
        Ok(v) => v,
        Err((code, lines)) => return fail(code, &lines),
    };
    drop(intake);
    let config = match config::load(&file, &secrets, config::Overrides::from_env()) {
        Ok(c) => c,
        Err(lines) => return fail(exit::CONFIG, &lines),
    };
    // The config holds its own copies of the credentials it uses.
    drop(secrets);
    init_logging(config.log_format);

    if let Err(e) = std::fs::create_dir_all(&config.data_dir) {
        return fail(
            exit::STORAGE,
            &[format!(
                "cannot create the data directory {}: {e}; set APP_DATA_DIR to a writable directory",
                config.data_dir.display()
            )],
        );
    }
    let store = match store::Store::open(&config.data_dir) {
        Ok(s) => Arc::new(s),
        Err(e) => return fail(exit::STORAGE, &[format!("{e:#}; set APP_DATA_DIR to a writable directory")]),
    };

    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return fail(exit::FAILURE, &[format!("cannot start the runtime: {e}")]),
    };
    runtime.block_on(run(config, store, started))
}

/// Picks the environment file (`DEPLOY_ENV`, or the one in APP_CONFIG_DIR
/// whose public key is the key's) and opens every secret in it.
fn open_environment(key: &SecretKey) -> Result<(EnvFile, Secrets), (u8, Vec<String>)> {
    let dir = std::env::var_os("APP_CONFIG_DIR").map_or_else(|| PathBuf::from("deploy-config"), PathBuf::from);
    let env = std::env::var(boxcar_secrets::DEPLOY_ENV).ok();
    boxcar_secrets::open_environment(key, &dir, env.as_deref()).map_err(|err| match err {
        boxcar_secrets::StartupError::Config(lines) => (exit::CONFIG, lines),
        boxcar_secrets::StartupError::Secrets(lines) => (exit::SECRETS, lines),
        boxcar_secrets::StartupError::Unapproved(lines) => (exit::UNAPPROVED, lines),
    })
}

/// `app check-config FILE`.
fn check_config(path: &std::path::Path) -> ExitCode {
    let file = match EnvFile::load(path) {
        Ok(file) => file,
        Err(e) => return fail(exit::CONFIG, &[e.to_string()]),
    };
    let problems = config::check(&file);
    if !problems.is_empty() {
        return fail(exit::CONFIG, &problems);
    }
    ExitCode::SUCCESS
}

/// `app instances FILE`.
fn instances(path: &std::path::Path) -> ExitCode {
    let answer = EnvFile::load(path).map_err(|e| vec![e.to_string()]).and_then(|file| config::instances(&file));
    match answer {
        Ok(answer) => {
            println!("{answer}");
            ExitCode::SUCCESS
        }
        Err(problems) => fail(exit::CONFIG, &problems),
    }
}

fn init_logging(format: config::LogFormat) {
    use std::io::IsTerminal as _;
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = match format {
        config::LogFormat::Json => true,
        config::LogFormat::Text => false,
        config::LogFormat::Auto => !std::io::stdout().is_terminal(),
    };
    // With internal-error logging on, a write to a closed stdout falls back to
    // eprintln!, which panics on a closed stderr: a detached app would then die
    // in whichever task logged, shutdown included.
    let builder =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stdout).log_internal_errors(false);
    if json {
        builder.json().flatten_event(true).with_current_span(false).init();
    } else {
        builder.init();
    }
}

async fn run(config: config::Config, store: Arc<store::Store>, started: Instant) -> ExitCode {
    let listener = match tokio::net::TcpListener::bind(config.listen).await {
        Ok(l) => l,
        Err(e) => {
            return fail(
                exit::LISTEN,
                &[format!("cannot listen on {}: {e}; set APP_LISTEN or app.listen", config.listen)],
            );
        }
    };
    // rustls needs one process-wide crypto provider; ring builds for musl
    // with no C toolchain beyond cc.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = match reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .pool_idle_timeout(Duration::from_secs(90))
        .user_agent(concat!("boxcar-app/", env!("CARGO_PKG_VERSION")))
        .build()
    {
        Ok(c) => c,
        Err(e) => return fail(exit::FAILURE, &[format!("cannot build the HTTP client: {e}")]),
    };

    let metrics = Arc::new(metrics::Metrics::new());
    let shared = bot::Shared {
        store: Arc::clone(&store),
        metrics: Arc::clone(&metrics),
        poll_timeout: Duration::from_secs(config.poll_timeout),
        public_url: config.public_url.clone(),
        per_bot_rate: std::num::NonZeroU32::new(config.messages_per_second).unwrap_or(std::num::NonZeroU32::MIN),
        per_chat_rate: std::num::NonZeroU32::new(config.messages_per_chat_per_second)
            .unwrap_or(std::num::NonZeroU32::MIN),
        send_timeout: Duration::from_secs(config.send_timeout),
        started,
    };
    let cancel = CancellationToken::new();
    let mut tasks = tokio::task::JoinSet::new();
    let mut bots = Vec::new();
    for bot_config in config.bots {
        let api = telegram::BotApi::new(http.clone(), &config.api_base, &bot_config.token);
        let (bot, outbox) = bot::Bot::new(bot_config, config.unauthorized, api, shared.clone());
        tasks.spawn(Arc::clone(&bot).run(cancel.child_token()));
        tasks.spawn(sender::send_loop(Arc::clone(&bot), outbox, cancel.child_token()));
        bots.push(bot);
    }
    tasks.spawn(prune_loop(Arc::clone(&store), cancel.child_token()));

    let state = Arc::new(web::AppState {
        env: config.env.clone(),
        bots,
        store,
        metrics,
        poll_timeout: shared.poll_timeout,
        started,
        templates: web::templates(),
    });
    let addr = listener.local_addr().unwrap_or(config.listen);
    tracing::info!(
        env = %config.env,
        %addr,
        bots = state.bots.len(),
        startup_ms = started.elapsed().as_millis() as u64,
        "listening"
    );

    let shutdown = cancel.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        shutdown.cancel();
        tracing::info!("shutting down: stopping polls, finishing replies in flight");
    });
    let server = axum::serve(listener, web::router(state)).with_graceful_shutdown(cancel.clone().cancelled_owned());
    // Once shutdown starts, requests in flight get 4 s; meanwhile the bots
    // stop and the senders wait up to `sender::DRAIN` (6 s) for the answers
    // of replies in flight. The process is gone within 10 s of SIGTERM
    // whatever is pending.
    let mut stopping_since = None;
    let server = async {
        let mut server = std::pin::pin!(server.into_future());
        tokio::select! {
            result = &mut server => result,
            () = cancel.cancelled() => {
                stopping_since = Some(Instant::now());
                tokio::time::timeout(Duration::from_secs(4), server).await.unwrap_or(Ok(()))
            }
        }
    };
    let code = match server.await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "the web server failed");
            cancel.cancel();
            ExitCode::from(exit::FAILURE)
        }
    };
    // Bots stop at once (an in-flight poll is simply dropped); senders end by
    // themselves once their drain is over: one second of slack for that.
    let deadline = stopping_since.unwrap_or_else(Instant::now) + sender::DRAIN + Duration::from_secs(1);
    let _ = tokio::time::timeout_at(deadline.into(), async { while tasks.join_next().await.is_some() {} }).await;
    tracing::info!("stopped");
    code
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        // Without signal handlers the process still dies on SIGTERM, just not gracefully.
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// Checkpoints the database every 10 s and forgets handled update ids older
/// than two days every hour.
async fn prune_loop(store: Arc<store::Store>, cancel: CancellationToken) {
    let mut last_prune: Option<Instant> = None;
    loop {
        let s = Arc::clone(&store);
        if let Ok(Err(e)) = tokio::task::spawn_blocking(move || s.checkpoint()).await {
            tracing::warn!(error = %e, "cannot checkpoint the database");
        }
        if last_prune.is_none_or(|t| t.elapsed() > Duration::from_secs(3600)) {
            let s = Arc::clone(&store);
            let before = bot::unix_now() - 2 * 86_400;
            if let Ok(Err(e)) = tokio::task::spawn_blocking(move || s.prune(before)).await {
                tracing::warn!(error = %e, "cannot prune old update ids");
            }
            last_prune = Some(Instant::now());
        }
        tokio::select! {
            () = cancel.cancelled() => {
                let _ = tokio::task::spawn_blocking(move || store.checkpoint()).await;
                return;
            }
            () = tokio::time::sleep(Duration::from_secs(10)) => {}
        }
    }
}

/// `app healthcheck`: GET /healthz on the local app.
///
/// A dozen lines of HTTP/1.0 over a blocking socket rather than the HTTP
/// client: this runs as a separate process every few seconds, should start
/// no runtime, and only ever talks to loopback.
fn healthcheck(addr: Option<String>) -> ExitCode {
    let text = addr.or_else(|| std::env::var("APP_LISTEN").ok()).unwrap_or_else(|| "127.0.0.1:8080".to_owned());
    let Ok(mut addr) = text.parse::<SocketAddr>() else {
        eprintln!("healthcheck: `{text}` is not an address like 127.0.0.1:8080");
        return ExitCode::from(exit::FAILURE);
    };
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let probe = || -> std::io::Result<bool> {
        let timeout = Duration::from_secs(3);
        let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        stream.write_all(b"GET /healthz HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
        let mut head = [0u8; 12];
        stream.read_exact(&mut head)?;
        Ok(head.starts_with(b"HTTP/1.") && &head[8..12] == b" 200")
    };
    match probe() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("healthcheck: {addr}/healthz did not answer 200");
            ExitCode::from(exit::FAILURE)
        }
        Err(e) => {
            eprintln!("healthcheck: {addr}: {e}");
            ExitCode::from(exit::FAILURE)
        }
    }
}
