//! `bot-api-standin`: the Bot API stand-in as a program, with its chat page, for
//! `cargo xtask demo` (which runs it in a container beside the app) and for
//! trying boxcar on a machine without a real bot token.

use std::net::SocketAddr;

use anyhow::Context as _;
use bot_api_standin::StandIn;
use clap::Parser;
use tokio::signal::unix::{SignalKind, signal};

/// A stand-in for api.telegram.org, for demos and tests. It is not Telegram.
///
/// It answers the Bot API calls boxcar's app makes (getMe, getUpdates,
/// sendMessage, setWebhook, deleteWebhook, getWebhookInfo) at
/// http://ADDR/bot<token>/<method>, and serves a chat page at http://ADDR/
/// where you write to the bots as a Telegram user would. Any well-formed token
/// (<digits>:<30 to 50 characters of A-Za-z0-9_->) registers a bot named
/// demo<digits>_bot on its first call; tokens are never printed, only bot
/// usernames. Nothing leaves this process: no message reaches Telegram.
///
/// Point the app's api_base at http://ADDR. Stop with SIGTERM or Ctrl-C.
#[derive(Debug, Parser)]
#[command(name = "bot-api-standin", version)]
struct Args {
    /// Address to listen on; `127.0.0.1:0` picks a free port. The demo
    /// passes 0.0.0.0:8081 inside its container.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8081")]
    listen: SocketAddr,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // Before listening, so a SIGTERM right after the announcement is handled:
    // as PID 1 in a container without init, a signal without a handler is ignored.
    let mut terminate = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let standin = StandIn::start_on(args.listen).await.with_context(|| {
        format!("listening on {} (is another stand-in running? `--listen 127.0.0.1:0` picks a free port)", args.listen)
    })?;
    standin.open_registration();
    println!("bot-api-standin listening on {}", standin.base_url());
    tokio::select! {
        _ = terminate.recv() => eprintln!("bot-api-standin: SIGTERM, stopping"),
        _ = interrupt.recv() => eprintln!("bot-api-standin: SIGINT, stopping"),
    }
    standin.stop();
    // Returning drops the runtime, which ends the connections still open (long polls included).
    Ok(())
}
