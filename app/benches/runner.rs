//! End-to-end figures of the app binary, measured against the Bot API stand-in on 127.0.0.1 and printed as one table with each figure's target.
//!
//! Six cases, all in one run, each against a freshly started app process:
//!
//! 1. Updates handled per second with 10 bots in one process, 100 private
//!    chats per bot (replies are ordered per chat, so many chats keep the
//!    sender busy): every `/bored` update is pushed to the stand-in at once,
//!    and the clock stops at the last reply the stand-in records. Latency
//!    (reply recorded − update pushed) of that burst is mostly queueing
//!    behind the backlog, so latency is measured again at a fixed offered
//!    rate, which is the figure the p99 target is for. Both kinds of run are
//!    also made with `/help`, which needs no database work beyond the
//!    pipeline's own, to tell the pipeline's cost from the command's (the
//!    targets apply to `/bored`; `/help` is for comparison).
//! 2. Dashboard (`GET /`, with bored entries and a mood in the database) and
//!    `/healthz` requests per second from a closed-loop load generator: 32
//!    keep-alive HTTP/1.1 connections through hyper's client.
//! 3. Resident memory (VmRSS) of an app with 10 bots, idle 3 s after
//!    start-up, and again at 12 s, once tokio's idle threads have gone.
//! 4. Time from spawning the process to its first `/healthz` 200, with 10
//!    sealed secrets to open and a fresh data directory (so the database is
//!    created and migrated too); median of 20 runs.
//! 5. The static musl build against the glibc one: the bench builds it with
//!    `cargo build --profile bench --target x86_64-unknown-linux-musl -p app`
//!    and runs every case on both binaries; the bursts of case 1 run three
//!    times each, interleaved, and their medians are compared.
//!
//! 6. Replies under the Bot API's faults at Telegram's rate limits (30 a
//!    second per bot, 1 per chat): 2,000 updates for each of two bots, one
//!    per delivery policy, with the stand-in's bad day of faults (5% 429, 5%
//!    502, 2% dropped connections, 2% slow and 1% malformed answers), and a
//!    third bot without faults whose replies show the order. Three runs: no
//!    crash (how often each update was answered, how long each retry waited
//!    beyond its backoff, how many pairs of replies went out of update
//!    order); ten `kill -9`s (replies lost or repeated at the kills against
//!    the calls the stand-in saw in flight at them); a SIGTERM with slow
//!    502s in flight, then a restart (nothing lost or repeated). The glibc
//!    build only; `--delivery-only` runs this case alone (about 4 minutes).
//!
//! Everything runs on the same two cores: the stand-in and the load generator
//! live in this process and take CPU from the app, so these are figures of
//! the whole loop, not of the app alone. The notes give the CPU each side
//! used, and the share other processes on the machine took meanwhile (a
//! build next door makes every figure worse).
//! The stand-in imposes no rate limits, so the app's own limits are raised to
//! 100,000 a second; against Telegram they are 30 a second per bot and 1 a
//! second per chat, and throughput is bounded by those, not by the app.
//!
//! ```text
//! cargo bench -p app --bench runner                 # the full run (a few minutes the first time: musl build)
//! cargo bench -p app --bench runner -- --no-musl    # skip case 5
//! cargo bench -p app --bench runner -- --quick      # small sizes, to check the bench itself
//! cargo bench -p app --bench runner -- --delivery-only   # case 6 alone
//! cargo bench -p app --bench runner -- --bursts-only --binary thin=PATH   # case 1 alone, another build beside
//! MIMALLOC_ALLOW_THP=0 cargo bench -p app --bench runner   # MIMALLOC_* settings reach the app
//! ```
//!
//! Run without `--bench` (as `cargo test --benches` does) it uses the quick
//! sizes and skips the musl build. It exits non-zero when a figure could not
//! be measured; a missed target is reported in the table, not in the exit code.

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use bot_api_standin::{Fault, FaultMix, Sent, StandIn, ledger};
use boxcar_secrets::SecretKey;
use http_body_util::{BodyExt as _, Empty};
use hyper::body::Bytes;

/// Bots in every app started here, each with its own token.
const BOTS: usize = 10;
/// Private chats each bot's updates are spread over.
const CHATS_PER_BOT: usize = 100;
/// `[app] messages_per_second` and `messages_per_chat_per_second`.
const RATE_SETTING: u32 = 100_000;
/// Concurrent keep-alive connections of the HTTP load generator.
const CONNECTIONS: usize = 32;
const MUSL_TARGET: &str = "x86_64-unknown-linux-musl";

// Targets.
const MIN_UPDATES_PER_SEC: f64 = 5_000.0;
const MAX_P99: Duration = Duration::from_millis(50);
const MIN_DASHBOARD_PER_SEC: f64 = 10_000.0;
/// 15 MB, in bytes.
const MAX_IDLE_RSS: u64 = 15_000_000;
const MAX_STARTUP: Duration = Duration::from_millis(50);
const MIN_MUSL_RATIO: f64 = 0.9;

/// How much of each case to run.
struct Scale {
    /// Smaller than the targets are set for: the run checks the bench.
    quick: bool,
    burst_updates: usize,
    /// Case 1 runs per binary (interleaved between binaries); the median counts.
    rounds: usize,
    paced_rate: u32,
    paced_updates: usize,
    load: Duration,
    idle: Duration,
    /// A second idle reading, once tokio's idle blocking threads have exited.
    idle_settled: Duration,
    startup_runs: usize,
    musl: bool,
    /// Case 6: updates per bot, the chats they are spread over, and kills.
    delivery_updates: usize,
    delivery_chats: usize,
    delivery_kills: usize,
    /// Run case 6 alone (`--delivery-only`).
    delivery_only: bool,
    /// Run case 1's bursts alone (`--bursts-only`).
    bursts_only: bool,
    /// More builds of the app to measure beside the bench's own
    /// (`--binary LABEL=PATH`, repeatable).
    extra: Vec<(String, PathBuf)>,
}

impl Scale {
    fn full() -> Scale {
        Scale {
            quick: false,
            burst_updates: 20_000,
            rounds: 3,
            paced_rate: 2_000,
            paced_updates: 10_000,
            load: Duration::from_secs(5),
            idle: Duration::from_secs(3),
            idle_settled: Duration::from_secs(12),
            startup_runs: 20,
            musl: true,
            delivery_updates: 2_000,
            delivery_chats: 100,
            delivery_kills: 10,
            delivery_only: false,
            bursts_only: false,
            extra: Vec::new(),
        }
    }

    fn quick() -> Scale {
        Scale {
            quick: true,
            burst_updates: 2_000,
            rounds: 1,
            paced_rate: 1_000,
            paced_updates: 1_000,
            load: Duration::from_secs(1),
            idle: Duration::from_secs(1),
            idle_settled: Duration::from_secs(1),
            startup_runs: 5,
            musl: false,
            delivery_updates: 150,
            delivery_chats: 20,
            delivery_kills: 2,
            delivery_only: false,
            bursts_only: false,
            extra: Vec::new(),
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let has = |flag: &str| args.iter().any(|a| a == flag);
    let mut scale = if has("--bench") && !has("--quick") { Scale::full() } else { Scale::quick() };
    if has("--no-musl") {
        scale.musl = false;
    }
    if has("--delivery-only") {
        scale.delivery_only = true;
        scale.musl = false;
    }
    if has("--bursts-only") {
        scale.bursts_only = true;
    }
    for pair in args.windows(2).filter(|w| w[0] == "--binary") {
        let Some((label, path)) = pair[1].split_once('=') else {
            eprintln!("error: --binary takes LABEL=PATH, got `{}`", pair[1]);
            return ExitCode::FAILURE;
        };
        scale.extra.push((label.to_owned(), PathBuf::from(path)));
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let report = runtime.block_on(run(&scale));
    print!("{}", report.render());
    if report.rows.iter().any(|r| matches!(r.verdict, Verdict::NotMeasured)) {
        eprintln!("error: some figures could not be measured (see the table)");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

async fn run(scale: &Scale) -> Report {
    let mut report = Report::default();
    if scale.quick && !scale.delivery_only {
        // /bored's cost grows with the bored table, so a small run flatters it.
        report.note(format!(
            "QUICK SIZES ({} updates a burst, {} s of HTTP load): the targets are for the full run",
            scale.burst_updates,
            scale.load.as_secs()
        ));
    }
    if cfg!(debug_assertions) {
        report.note(
            "UNOPTIMISED BUILD (cargo test): these figures check the bench, not the app; use cargo bench".to_owned(),
        );
    }
    report.note(format!(
        "machine: {} cores, load average before the run {}",
        std::thread::available_parallelism().map_or(0, std::num::NonZeroUsize::get),
        loadavg()
    ));
    if !scale.delivery_only {
        report.note(format!(
            "app settings: {BOTS} bots, messages_per_second = messages_per_chat_per_second = {RATE_SETTING} \
             (raised because the stand-in imposes no limits; Telegram allows 30/s per bot, 1/s per chat)"
        ));
    }
    report.note(
        "the stand-in (Bot API) and the load generator run in the bench process on the same cores as the app"
            .to_owned(),
    );
    let allocator = allocator_settings();
    if !allocator.is_empty() {
        let settings: Vec<String> = allocator.iter().map(|(k, v)| format!("{k}={v}")).collect();
        report.note(format!("passed to the app (musl build's allocator): {}", settings.join(" ")));
    }

    let mut binaries = vec![Binary { label: "glibc", path: PathBuf::from(env!("CARGO_BIN_EXE_app")) }];
    for (label, path) in &scale.extra {
        // A label lives as long as the run; the report borrows it.
        binaries.push(Binary { label: Box::leak(label.clone().into_boxed_str()), path: path.clone() });
    }
    // Build first: a build running beside the measurements would skew them.
    if scale.musl {
        eprintln!("== building the musl binary");
        match tokio::task::spawn_blocking(|| build_musl(Duration::from_secs(30 * 60))).await {
            Ok(Ok(built)) => {
                let path = built.path;
                let warmth = match built.rebuilt {
                    0 => "warm: every crate was up to date".to_owned(),
                    n => format!("{n} crates rebuilt (changed since the last musl build, or never built)"),
                };
                report.note(format!("musl build: {} in {:.1} s, {warmth}", path.display(), built.took.as_secs_f64()));
                binaries.push(Binary { label: "musl", path });
            }
            Ok(Err(e)) => report.failed("musl build", format!("{e:#}")),
            Err(e) => report.failed("musl build", format!("{e}")),
        }
    }

    if scale.delivery_only {
        if let Err(e) = delivery_case(&binaries[0], scale, &mut report).await {
            report.failed(format!("delivery ({})", binaries[0].label), format!("{e:#}"));
        }
        report.note(format!("load average after the run {}", loadavg()));
        return report;
    }

    for bin in binaries.iter().filter(|_| !scale.bursts_only) {
        eprintln!("== start-up time ({})", bin.label);
        match startup_case(bin, scale.startup_runs).await {
            Ok(times) => {
                let median = percentile(&times, 0.5);
                report.row(
                    format!("start-up to first /healthz 200, median of {} ({})", times.len(), bin.label),
                    format!("{} (min {}, max {})", ms(median), ms(times[0]), ms(times[times.len() - 1])),
                    format!("≤ {}", ms(MAX_STARTUP)),
                    Verdict::of(median <= MAX_STARTUP),
                );
            }
            Err(e) => report.failed(format!("start-up ({})", bin.label), format!("{e:#}")),
        }
    }

    for bin in binaries.iter().filter(|_| !scale.bursts_only) {
        eprintln!("== idle memory and HTTP load ({})", bin.label);
        if let Err(e) = idle_and_http_case(bin, scale, &mut report).await {
            report.failed(format!("idle memory / HTTP load ({})", bin.label), format!("{e:#}"));
        }
    }

    // Bursts, interleaved so that a noisy minute on the machine hits every
    // binary and command alike; the median of each counts. /help goes through
    // the same pipeline (record, reply, send) without /bored's own database
    // work, which tells the two costs apart; and that database work does not
    // depend on the allocator, so /help also shows what the musl build changes.
    let mut burst: HashMap<(&str, &str), Vec<UpdatesRun>> = HashMap::new();
    for round in 0..scale.rounds {
        for bin in &binaries {
            for command in [&BORED, &HELP] {
                eprintln!("== {} × {} at once ({}, round {})", scale.burst_updates, command.text, bin.label, round + 1);
                match updates_run(bin, scale.burst_updates, None, command).await {
                    Ok(r) => burst.entry((bin.label, command.text)).or_default().push(r),
                    Err(e) => report.failed(
                        format!("{} at once ({}, round {})", command.text, bin.label, round + 1),
                        format!("{e:#}"),
                    ),
                }
            }
        }
    }
    let mut medians = HashMap::new();
    for command in [&BORED, &HELP] {
        for bin in &binaries {
            let Some(runs) = burst.get_mut(&(bin.label, command.text)) else { continue };
            runs.sort_by(|a, b| a.rate().total_cmp(&b.rate()));
            let all: Vec<String> = runs.iter().map(|r| format!("{:.0}", r.rate())).collect();
            let median = &runs[runs.len() / 2];
            medians.insert((bin.label, command.text), median.rate());
            let runs = match runs.len() {
                1 => "one run".to_owned(),
                n => format!("median of {n} runs: {}", all.join(", ")),
            };
            burst_rows(&mut report, bin, median, &runs, command.targeted);
        }
        match (medians.get(&("glibc", command.text)), medians.get(&("musl", command.text))) {
            (Some(glibc), Some(musl)) if command.targeted => report.row(
                format!("musl / glibc throughput, {} (medians above)", command.text),
                format!("{:.2}×", musl / glibc),
                format!("≥ {MIN_MUSL_RATIO}×"),
                Verdict::of(musl / glibc >= MIN_MUSL_RATIO),
            ),
            (Some(glibc), Some(musl)) => report.row(
                format!("musl / glibc throughput, {} (medians above)", command.text),
                format!("{:.2}×", musl / glibc),
                "(for comparison)".to_owned(),
                Verdict::Info,
            ),
            _ if scale.musl => report.failed(
                format!("musl / glibc throughput, {}", command.text),
                "one of the two throughputs is missing".to_owned(),
            ),
            _ => {}
        }
    }
    if !scale.musl {
        report.note("musl / glibc throughput: not measured (--no-musl, --quick or no --bench)".to_owned());
    }
    if scale.bursts_only {
        report.note(format!("--bursts-only: case 1's bursts alone; load average after the run {}", loadavg()));
        return report;
    }

    for command in [&BORED, &HELP] {
        for bin in &binaries {
            eprintln!("== {} × {} paced at {}/s ({})", scale.paced_updates, command.text, scale.paced_rate, bin.label);
            match updates_run(bin, scale.paced_updates, Some(scale.paced_rate), command).await {
                Ok(r) => paced_row(&mut report, bin, &r, command.targeted),
                Err(e) => report.failed(format!("{} paced ({})", command.text, bin.label), format!("{e:#}")),
            }
        }
    }
    // The glibc build only: the allocator does not decide how replies are retried.
    if let Err(e) = delivery_case(&binaries[0], scale, &mut report).await {
        report.failed(format!("delivery ({})", binaries[0].label), format!("{e:#}"));
    }
    report.note(format!("load average after the run {}", loadavg()));
    report
}

/// Throughput of a run with everything pushed at once, and its latency, which
/// is mostly time spent queued behind the backlog.
fn burst_rows(report: &mut Report, bin: &Binary, r: &UpdatesRun, runs: &str, targeted: bool) {
    let figure = format!("updates/s, {} × {} pushed at once ({})", r.updates, r.command, bin.label);
    let value = format!("{:.0}/s ({runs})", r.rate());
    if targeted {
        let pass = r.rate() >= MIN_UPDATES_PER_SEC && r.problems.is_empty();
        report.row(figure, value, format!("≥ {MIN_UPDATES_PER_SEC:.0}/s"), Verdict::of(pass));
    } else {
        report.row(figure, value, "(for comparison)".to_owned(), Verdict::Info);
    }
    report.row(
        format!("  latency p50 / p99 of that burst: queueing behind the backlog ({})", bin.label),
        format!("{} / {}", ms(percentile(&r.latencies, 0.5)), ms(percentile(&r.latencies, 0.99))),
        "(not a latency figure)".to_owned(),
        Verdict::Info,
    );
    r.notes(bin.label, report);
}

/// Latency at a fixed offered rate: the figure the p99 target is for.
fn paced_row(report: &mut Report, bin: &Binary, r: &UpdatesRun, targeted: bool) {
    let p99 = percentile(&r.latencies, 0.99);
    let figure =
        format!("latency p50 / p99, {} × {} at {:.0}/s offered ({})", r.updates, r.command, r.offered(), bin.label);
    let value =
        format!("{} / {} (max {})", ms(percentile(&r.latencies, 0.5)), ms(p99), ms(percentile(&r.latencies, 1.0)));
    if targeted {
        report.row(
            figure,
            value,
            format!("p99 ≤ {}", ms(MAX_P99)),
            Verdict::of(p99 <= MAX_P99 && r.problems.is_empty()),
        );
    } else {
        report.row(figure, value, "(for comparison)".to_owned(), Verdict::Info);
    }
    r.notes(bin.label, report);
}

// ---------------------------------------------------------------------------
// The environment and the app process (the pieces of tests/it/main.rs a bench
// needs: benches cannot import integration-test modules).

/// A binary under test.
struct Binary {
    label: &'static str,
    path: PathBuf,
}

fn tokens() -> Vec<String> {
    (0..BOTS).map(|i| format!("{}:bench-token-{i:02}-AAAAAAAAAAAAAAAAAAAAAAAAAAAA", 3001 + i)).collect()
}

fn bot_name(i: usize) -> String {
    format!("bot{i:02}")
}

/// A stand-in that knows every bench token.
async fn standin(tokens: &[String]) -> anyhow::Result<StandIn> {
    let standin = StandIn::start().await.context("starting the stand-in")?;
    for (i, token) in tokens.iter().enumerate() {
        standin.add_bot(token, &format!("bench{i:02}_bot"));
    }
    Ok(standin)
}

/// A sealed environment `bench` on disk, with a key made now.
struct BenchEnv {
    config: tempfile::TempDir,
    key_file: PathBuf,
}

impl BenchEnv {
    /// Bots named by `bot_name`, each also given `admins = [1]` (user 1
    /// may set the mood, for the dashboard case), with the rate limits raised.
    fn new(api_base: &str, tokens: &[String]) -> anyhow::Result<BenchEnv> {
        let limits = format!("messages_per_second = {RATE_SETTING}\nmessages_per_chat_per_second = {RATE_SETTING}\n");
        let bots: Vec<(String, String)> = (0..tokens.len()).map(|i| (bot_name(i), "admins = [1]".to_owned())).collect();
        BenchEnv::with(api_base, tokens, &limits, &bots)
    }

    /// `app` is added to `[app]`; `bots` are each bot's name and settings.
    fn with(api_base: &str, tokens: &[String], app: &str, bots: &[(String, String)]) -> anyhow::Result<BenchEnv> {
        let config = tempfile::tempdir().context("creating a temporary directory")?;
        let key = SecretKey::generate();
        let key_file = config.path().join("bench.key");
        boxcar_secrets::write_key_file(&key_file, &key).with_context(|| format!("writing {}", key_file.display()))?;
        let mut text = format!(
            "public_key = \"{}\"\n\n[app]\napi_base = \"{api_base}\"\npoll_timeout = 25\nlog_format = \"json\"\n{app}",
            key.public_key().to_base64()
        );
        for (name, settings) in bots {
            text.push_str(&format!("\n[[bots]]\nname = \"{name}\"\ntoken_secret = \"{name}_token\"\n{settings}\n"));
        }
        text.push_str("\n[secrets]\n");
        for ((bot, _), token) in bots.iter().zip(tokens) {
            let name = format!("{bot}_token");
            let sealed = boxcar_secrets::seal(key.public_key(), "bench", &name, token.as_bytes())
                .with_context(|| format!("sealing {name}"))?;
            text.push_str(&format!("{name} = \"{sealed}\"\n"));
        }
        let path = config.path().join("bench.toml");
        let text = boxcar_secrets::approved_text(&path, &text, &key).context("approving the bench environment")?;
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        Ok(BenchEnv { config, key_file })
    }

    /// The app command, with nothing of this process's environment but PATH
    /// and any `MIMALLOC_*` settings (to try the musl build's allocator options).
    fn command(&self, bin: &Binary, listen: &str, data: &Path) -> Command {
        let mut cmd = Command::new(&bin.path);
        cmd.env_clear()
            .envs(allocator_settings())
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("SECRET_KEY_FILE", &self.key_file)
            .env("APP_CONFIG_DIR", self.config.path())
            .env("APP_DATA_DIR", data)
            .env("APP_LISTEN", listen)
            .stdin(Stdio::null());
        cmd
    }
}

/// `MIMALLOC_*` variables of this process, passed on to the app.
fn allocator_settings() -> Vec<(String, String)> {
    std::env::vars().filter(|(k, _)| k.starts_with("MIMALLOC_")).collect()
}

/// A running app, killed on drop; its data directory goes with it, unless
/// it was given one.
struct App {
    child: Child,
    addr: SocketAddr,
    output: Arc<Mutex<String>>,
    _data: Option<tempfile::TempDir>,
}

impl App {
    /// Starts the app with fresh data on a free port and waits for its "listening" log line.
    fn spawn(env: &BenchEnv, bin: &Binary) -> anyhow::Result<App> {
        let data = tempfile::tempdir().context("creating a temporary directory")?;
        let mut app = App::spawn_in(env, bin, data.path())?;
        app._data = Some(data);
        Ok(app)
    }

    /// Starts the app on the data in `data` (which outlives it).
    fn spawn_in(env: &BenchEnv, bin: &Binary, data: &Path) -> anyhow::Result<App> {
        let mut child = env
            .command(bin, "127.0.0.1:0", data)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", bin.path.display()))?;
        let output = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let streams: [Box<dyn std::io::Read + Send>; 2] = [
            Box::new(child.stdout.take().context("no stdout pipe")?),
            Box::new(child.stderr.take().context("no stderr pipe")?),
        ];
        for stream in streams {
            let output = Arc::clone(&output);
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if line.contains("\"message\":\"listening\"")
                        && let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
                        && let Some(Ok(addr)) = v["addr"].as_str().map(str::parse::<SocketAddr>)
                    {
                        let _ = tx.send(addr);
                    }
                    let mut out = output.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    out.push_str(&line);
                    out.push('\n');
                }
            });
        }
        let mut app = App { child, addr: SocketAddr::from(([127, 0, 0, 1], 0)), output, _data: None };
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(addr) => app.addr = addr,
            Err(_) => bail!("the app did not start listening within 20 s:\n{}", app.logs()),
        }
        Ok(app)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn logs(&self) -> String {
        self.output.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Log lines at WARN or ERROR: none are expected in a clean run.
    fn complaints(&self) -> usize {
        self.logs().lines().filter(|l| l.contains("\"level\":\"WARN\"") || l.contains("\"level\":\"ERROR\"")).count()
    }
}

impl Drop for App {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until every bot has started polling (its token checked, its loop running).
async fn wait_polling(standin: &StandIn, tokens: &[String], app: &App) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !tokens.iter().all(|t| standin.calls(t, "getUpdates") > 0) {
        if Instant::now() >= deadline {
            bail!("not every bot polled within 15 s:\n{}", app.logs());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Case 1 and 5: updates handled end to end.

/// What the users say in case 1, and how the reply starts.
struct UserCommand {
    text: &'static str,
    reply_starts: &'static str,
    /// Whether the targets apply, or the runs are for comparison.
    targeted: bool,
}

/// The measured command: it records an entry and counts today's.
const BORED: UserCommand = UserCommand { text: "/bored", reply_starts: "Noted, ", targeted: true };
/// For comparison: the same pipeline (record, reply, send) with no other
/// database work, to separate the pipeline from `/bored`'s own cost.
const HELP: UserCommand = UserCommand { text: "/help", reply_starts: "/bored – ", targeted: false };

/// One update pushed to the stand-in.
struct Pushed {
    bot: usize,
    /// The message id the reply quotes (the stand-in makes it update id × 10).
    reply_to: i64,
    at: Instant,
}

/// Pushes `n` updates saying `text`, spread over the bots and their chats:
/// all at once, or at `rate` a second. Blocking: run it off the runtime.
fn push(standin: &StandIn, tokens: &[String], n: usize, rate: Option<u32>, text: &str) -> Vec<Pushed> {
    let start = Instant::now();
    let mut pushed = Vec::with_capacity(n);
    for i in 0..n {
        if let Some(rate) = rate {
            let due = start + Duration::from_secs_f64(i as f64 / f64::from(rate));
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
        }
        let bot = i % BOTS;
        let chat = 10_000 + ((i / BOTS) % CHATS_PER_BOT) as i64;
        let at = Instant::now();
        let id = standin.chat_says(&tokens[bot], chat, chat, "private", "Bench", text);
        pushed.push(Pushed { bot, reply_to: id * 10, at });
    }
    pushed
}

/// What one run of case 1 measured.
struct UpdatesRun {
    updates: usize,
    command: &'static str,
    /// Sorted.
    latencies: Vec<Duration>,
    /// First push to the last reply recorded.
    elapsed: Duration,
    /// First push to last push.
    push_span: Duration,
    cpu: CpuUse,
    app_peak_rss: u64,
    /// Replies a second over the first and the last quarter of the replies.
    quarter_rates: (f64, f64),
    problems: Vec<String>,
}

impl UpdatesRun {
    fn rate(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64()
    }

    fn offered(&self) -> f64 {
        self.updates as f64 / self.push_span.as_secs_f64().max(1e-9)
    }

    fn notes(&self, label: &str, report: &mut Report) {
        let per_update = |d: Duration| d.as_secs_f64() * 1e6 / self.updates as f64;
        report.note(format!(
            "{label}, {} × {} ({:.0}/s offered): CPU per update: app {:.0} µs, bench process \
             (stand-in + pusher) {:.0} µs; {}; app peak RSS {}; \
             replies/s over the first quarter {:.0}, over the last quarter {:.0}",
            self.updates,
            self.command,
            self.offered(),
            per_update(self.cpu.app),
            per_update(self.cpu.bench),
            self.cpu.interference(),
            mb(self.app_peak_rss),
            self.quarter_rates.0,
            self.quarter_rates.1
        ));
        for problem in &self.problems {
            report.note(format!("{label}, {} × {}: PROBLEM: {problem}", self.updates, self.command));
        }
    }
}

/// Starts an app with fresh data, pushes `n` updates (at once, or at `rate`
/// a second), and waits for every reply.
async fn updates_run(bin: &Binary, n: usize, rate: Option<u32>, command: &UserCommand) -> anyhow::Result<UpdatesRun> {
    let tokens = tokens();
    let standin = standin(&tokens).await?;
    let env = BenchEnv::new(&standin.base_url(), &tokens)?;
    let app = App::spawn(&env, bin)?;
    wait_polling(&standin, &tokens, &app).await?;

    let clock = CpuClock::read(app.pid())?;
    let (pusher, push_tokens) = (standin.clone(), tokens.clone());
    let text = command.text;
    let pushed = tokio::task::spawn_blocking(move || push(&pusher, &push_tokens, n, rate, text)).await?;
    let mut expected = [0; BOTS];
    for p in &pushed {
        expected[p.bot] += 1;
    }

    // Counting calls is cheap; copying what was sent is not, so do that once
    // at the end. The clock is the stand-in's own record of each reply.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut problems = Vec::new();
    while !tokens.iter().zip(expected).all(|(t, e)| standin.calls(t, "sendMessage") >= e) {
        if Instant::now() >= deadline {
            problems.push("not every reply arrived within 60 s of the last push".to_owned());
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let settle = Instant::now() + Duration::from_secs(2);
    let sent: Vec<Vec<Sent>> = loop {
        let sent: Vec<Vec<Sent>> = tokens.iter().map(|t| standin.sent(t)).collect();
        if sent.iter().zip(expected).all(|(s, e)| s.len() >= e) || Instant::now() >= settle {
            break sent;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let cpu = clock.since(app.pid())?;
    let app_peak_rss = proc_status(app.pid(), "VmHWM")?;
    let complaints = app.complaints();
    if complaints > 0 {
        problems.push(format!("the app logged {complaints} warnings or errors"));
    }
    drop(app);
    standin.stop();

    let (Some(first), Some(last_push)) = (pushed.first().map(|p| p.at), pushed.last().map(|p| p.at)) else {
        bail!("nothing was pushed");
    };
    let mut due: Vec<HashMap<i64, Instant>> = vec![HashMap::new(); BOTS];
    for p in &pushed {
        due[p.bot].insert(p.reply_to, p.at);
    }
    let (mut latencies, mut arrivals) = (Vec::with_capacity(n), Vec::with_capacity(n));
    let (mut unexpected, mut wrong_text) = (0, 0);
    for (bot, replies) in sent.iter().enumerate() {
        for reply in replies {
            match reply.reply_to.and_then(|r| due[bot].remove(&r)) {
                Some(pushed_at) => {
                    latencies.push(reply.at.saturating_duration_since(pushed_at));
                    arrivals.push(reply.at);
                }
                None => unexpected += 1,
            }
            if !reply.text.starts_with(command.reply_starts) {
                wrong_text += 1;
            }
        }
    }
    let missing: usize = due.iter().map(HashMap::len).sum();
    for (count, what) in [
        (missing, "updates got no reply"),
        (unexpected, "replies answered no pending update (a second reply?)"),
        (wrong_text, "replies were not the expected answer"),
    ] {
        if count > 0 {
            problems.push(format!("{count} {what}"));
        }
    }
    if latencies.is_empty() {
        bail!("no update was answered; {}", problems.join("; "));
    }
    latencies.sort_unstable();
    arrivals.sort_unstable();
    let last = arrivals[arrivals.len() - 1];
    let quarter = (arrivals.len() / 4).max(1);
    let rate_over =
        |from: Instant, to: Instant| quarter as f64 / to.saturating_duration_since(from).as_secs_f64().max(1e-9);
    let quarter_rates =
        (rate_over(first, arrivals[quarter - 1]), rate_over(arrivals[arrivals.len() - quarter - 1..][0], last));
    Ok(UpdatesRun {
        updates: n,
        command: command.text,
        latencies,
        elapsed: last.saturating_duration_since(first),
        push_span: last_push.saturating_duration_since(first),
        cpu,
        app_peak_rss,
        quarter_rates,
        problems,
    })
}

// ---------------------------------------------------------------------------
// Cases 2 and 3: idle memory, then the dashboard under load.

async fn idle_and_http_case(bin: &Binary, scale: &Scale, report: &mut Report) -> anyhow::Result<()> {
    let tokens = tokens();
    let standin = standin(&tokens).await?;
    let env = BenchEnv::new(&standin.base_url(), &tokens)?;
    let app = App::spawn(&env, bin)?;
    wait_polling(&standin, &tokens, &app).await?;
    tokio::time::sleep(scale.idle).await;
    let rss = proc_status(app.pid(), "VmRSS")?;
    let threads = proc_status_raw(app.pid(), "Threads")?;
    report.row(
        format!("idle RSS, {BOTS} bots, {} s after start-up ({})", scale.idle.as_secs(), bin.label),
        format!("{} ({threads} threads)", mb(rss)),
        format!("≤ {}", mb(MAX_IDLE_RSS)),
        Verdict::of(rss <= MAX_IDLE_RSS),
    );
    // Tokio keeps idle blocking threads (the start-up's database calls) for
    // 10 s; with a per-thread allocator they hold memory until they exit.
    tokio::time::sleep(scale.idle_settled.saturating_sub(scale.idle)).await;
    report.note(format!(
        "{}: idle RSS {} s after start-up: {} ({} threads)",
        bin.label,
        scale.idle_settled.as_secs(),
        mb(proc_status(app.pid(), "VmRSS")?),
        proc_status_raw(app.pid(), "Threads")?
    ));

    // Something on the dashboard: three bored users per bot and a mood.
    for (b, token) in tokens.iter().enumerate() {
        for u in 0..3 {
            let user = 500 + (b * 3 + u) as i64;
            standin.chat_says(token, user, user, "private", &format!("Bench user {user}"), "/bored");
        }
    }
    standin.chat_says(&tokens[0], 1, 1, "private", "Admin", "/mood calm and steady");
    let deadline = Instant::now() + Duration::from_secs(15);
    while tokens.iter().map(|t| standin.sent(t).len()).sum::<usize>() < BOTS * 3 + 1 {
        if Instant::now() >= deadline {
            bail!("the dashboard's data was not answered within 15 s:\n{}", app.logs());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (status, page) = get_once(app.addr, "/").await?;
    let page = String::from_utf8_lossy(&page);
    if status != 200 || !page.contains("calm and steady") || !page.contains("Bench user") {
        bail!("the dashboard does not show the mood and bored users (HTTP {status}):\n{page}");
    }

    for (path, target) in [("/", Some(MIN_DASHBOARD_PER_SEC)), ("/healthz", None)] {
        // A short warm-up first, so connection set-up is not in the figure.
        load(&app, path, CONNECTIONS, Duration::from_millis(500)).await?;
        let r = load(&app, path, CONNECTIONS, scale.load).await?;
        let value = format!(
            "{:.0}/s (p50 {}, p99 {}, {} B a response)",
            r.rate(),
            ms(percentile(&r.latencies, 0.5)),
            ms(percentile(&r.latencies, 0.99)),
            r.body_bytes
        );
        let figure =
            format!("GET {path} requests/s, {CONNECTIONS} keep-alive connections, closed loop ({})", bin.label);
        match target {
            Some(min) => report.row(figure, value, format!("≥ {min:.0}/s"), Verdict::of(r.rate() >= min)),
            None => report.row(figure, value, "(for comparison)".to_owned(), Verdict::Info),
        }
        report.note(format!(
            "GET {path} ({}): CPU per request: app {:.1} µs, load generator {:.1} µs; {}",
            bin.label,
            r.per_request(r.cpu.app),
            r.per_request(r.cpu.bench),
            r.cpu.interference()
        ));
    }
    let complaints = app.complaints();
    if complaints > 0 {
        report.note(format!("{}: the app logged {complaints} warnings or errors during the HTTP load", bin.label));
    }
    drop(app);
    standin.stop();
    Ok(())
}

/// One GET on a new connection: status and body.
async fn get_once(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, Bytes)> {
    let stream = tokio::net::TcpStream::connect(addr).await.with_context(|| format!("connecting to {addr}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    let driver = tokio::spawn(conn);
    let response = tokio::time::timeout(Duration::from_secs(10), sender.send_request(request(path)?))
        .await
        .with_context(|| format!("GET {path}: no answer within 10 s"))??;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await?.to_bytes();
    driver.abort();
    Ok((status, body))
}

fn request(path: &str) -> anyhow::Result<hyper::Request<Empty<Bytes>>> {
    Ok(hyper::Request::get(path).header(hyper::header::HOST, "127.0.0.1").body(Empty::new())?)
}

/// What a load run measured.
struct Load {
    /// Sorted, one per request.
    latencies: Vec<Duration>,
    elapsed: Duration,
    body_bytes: usize,
    cpu: CpuUse,
}

impl Load {
    fn rate(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64()
    }

    /// CPU time per request, in µs.
    fn per_request(&self, cpu: Duration) -> f64 {
        cpu.as_secs_f64() * 1e6 / self.latencies.len().max(1) as f64
    }
}

/// `connections` clients, each sending the next request as soon as the last
/// answer is read, for `duration`.
async fn load(app: &App, path: &'static str, connections: usize, duration: Duration) -> anyhow::Result<Load> {
    let addr = app.addr;
    let clock = CpuClock::read(app.pid())?;
    let start = Instant::now();
    let deadline = start + duration;
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..connections {
        clients.spawn(async move {
            let stream = tokio::net::TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
            let driver = tokio::spawn(conn);
            let mut latencies = Vec::new();
            let mut body_bytes = 0;
            while Instant::now() < deadline {
                let sent = Instant::now();
                let exchange = async {
                    sender.ready().await?;
                    let response = sender.send_request(request(path)?).await?;
                    let status = response.status();
                    let body = response.into_body().collect().await?.to_bytes();
                    anyhow::ensure!(status == 200, "GET {path} answered {status}");
                    anyhow::Ok(body.len())
                };
                body_bytes = tokio::time::timeout(Duration::from_secs(10), exchange)
                    .await
                    .with_context(|| format!("GET {path}: no answer within 10 s"))??;
                latencies.push(sent.elapsed());
            }
            driver.abort();
            anyhow::Ok((latencies, body_bytes))
        });
    }
    let mut latencies = Vec::new();
    let mut body_bytes = 0;
    while let Some(joined) = clients.join_next().await {
        let (l, b) = joined??;
        latencies.extend(l);
        body_bytes = b;
    }
    let elapsed = start.elapsed();
    let cpu = clock.since(app.pid())?;
    if latencies.is_empty() {
        bail!("GET {path}: no request completed");
    }
    latencies.sort_unstable();
    Ok(Load { latencies, elapsed, body_bytes, cpu })
}

// ---------------------------------------------------------------------------
// Case 4: start-up time.

async fn startup_case(bin: &Binary, runs: usize) -> anyhow::Result<Vec<Duration>> {
    let tokens = tokens();
    // The bots call getMe as they start: give them someone to talk to.
    let standin = standin(&tokens).await?;
    let env = BenchEnv::new(&standin.base_url(), &tokens)?;
    let path = bin.path.clone();
    let label = bin.label;
    let times = tokio::task::spawn_blocking(move || {
        let bin = Binary { label, path };
        let mut times = Vec::with_capacity(runs);
        for _ in 0..runs {
            times.push(startup_once(&env, &bin)?);
        }
        anyhow::Ok(times)
    })
    .await??;
    standin.stop();
    let mut times = times;
    times.sort_unstable();
    Ok(times)
}

/// Spawns the app on a fixed free port and tries to connect every
/// millisecond until `/healthz` answers 200. Blocking.
fn startup_once(env: &BenchEnv, bin: &Binary) -> anyhow::Result<Duration> {
    let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).context("finding a free port")?.port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let data = tempfile::tempdir().context("creating a temporary directory")?;
    let mut cmd = env.command(bin, &addr.to_string(), data.path());
    cmd.stdout(Stdio::null()).stderr(Stdio::piped());
    let start = Instant::now();
    let child = cmd.spawn().with_context(|| format!("starting {}", bin.path.display()))?;
    let mut child = KillOnDrop(child);
    loop {
        if let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(1))
            && healthz_ok(&mut stream)
        {
            return Ok(start.elapsed());
        }
        if let Some(status) = child.0.try_wait()? {
            let mut stderr = String::new();
            if let Some(mut e) = child.0.stderr.take() {
                let _ = e.read_to_string(&mut stderr);
            }
            bail!("the app exited ({status}) before answering /healthz:\n{stderr}");
        }
        if start.elapsed() > Duration::from_secs(10) {
            bail!("no /healthz 200 within 10 s of spawning");
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn healthz_ok(stream: &mut TcpStream) -> bool {
    let mut exchange = || -> std::io::Result<bool> {
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")?;
        let mut head = [0u8; 12];
        stream.read_exact(&mut head)?;
        Ok(head.starts_with(b"HTTP/1.") && &head[8..12] == b" 200")
    };
    exchange().unwrap_or(false)
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

// ---------------------------------------------------------------------------
// Case 5: the musl build.

/// What the musl build made.
struct Built {
    path: PathBuf,
    took: Duration,
    /// Crates compiled rather than taken from cargo's cache.
    rebuilt: usize,
}

/// Builds the app for musl with the bench profile. Blocking.
fn build_musl(timeout: Duration) -> anyhow::Result<Built> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| env!("CARGO").into());
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().context("the app crate has no parent folder")?;
    let start = Instant::now();
    let mut child = Command::new(cargo)
        .current_dir(root)
        .args(["build", "--profile", "bench", "--target", MUSL_TARGET, "-p", "app"])
        .args(["--message-format", "json-render-diagnostics"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting cargo")?;
    let stdout = child.stdout.take().context("no stdout pipe")?;
    let stderr = child.stderr.take().context("no stderr pipe")?;
    let artifacts = std::thread::spawn(move || {
        let (mut exe, mut rebuilt) = (None, 0);
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else { continue };
            if v["reason"] == "compiler-artifact" && v["fresh"] == false {
                rebuilt += 1;
            }
            let is_app_bin = v["reason"] == "compiler-artifact"
                && v["target"]["name"] == "app"
                && v["target"]["kind"].as_array().is_some_and(|k| k.iter().any(|k| k == "bin"));
            if is_app_bin && let Some(path) = v["executable"].as_str() {
                exe = Some(PathBuf::from(path));
            }
        }
        (exe, rebuilt)
    });
    // Cargo's progress goes on to ours (a cold build takes minutes); the tail is kept for the error.
    let tail = std::thread::spawn(move || {
        let mut tail = VecDeque::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("   musl build: {line}");
            tail.push_back(line);
            if tail.len() > 30 {
                tail.pop_front();
            }
        }
        tail.into_iter().collect::<Vec<_>>().join("\n")
    });
    let status = loop {
        if let Some(status) = child.try_wait().context("waiting for cargo")? {
            break status;
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            bail!("cargo build for {MUSL_TARGET} took longer than {} s; stopped it", timeout.as_secs());
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let (exe, rebuilt) = artifacts.join().unwrap_or((None, 0));
    let tail = tail.join().unwrap_or_default();
    if !status.success() {
        bail!("cargo build --target {MUSL_TARGET} failed ({status}):\n{tail}");
    }
    let path = exe.context("cargo built for musl but named no `app` executable")?;
    Ok(Built { path, took: start.elapsed(), rebuilt })
}

// ---------------------------------------------------------------------------
// Case 6: replies under the Bot API's faults, at Telegram's rate limits.

/// The bots of case 6: one per delivery policy, under the same faults, and
/// one without faults, whose replies show the order the queue keeps.
const DELIVERY_BOTS: [(&str, &str); 3] =
    [("once", "delivery = \"at-most-once\""), ("again", "delivery = \"at-least-once\""), ("ordered", "")];
/// Telegram's limits, and a send timeout that keeps each answer slower than
/// it to seconds (the default is 20 s).
const DELIVERY_SETTINGS: &str = "messages_per_second = 30\nmessages_per_chat_per_second = 1\nsend_timeout = 5\n";
/// The issue's target: a retry goes within its backoff plus this.
const MAX_RETRY_LATENESS: Duration = Duration::from_secs(1);

/// A reply's key in the stand-in's ledger: its chat and the message it answers.
type Key = (i64, Option<i64>);

/// One run of case 6: the stand-in, the app (restarted on the same data as
/// the run asks) and the replies each bot owes, in update order.
struct DeliveryRun {
    standin: StandIn,
    tokens: Vec<String>,
    env: BenchEnv,
    data: tempfile::TempDir,
    app: App,
    expected: Vec<Vec<Key>>,
}

impl DeliveryRun {
    /// Starts an app with the three bots, sets each bot's sendMessage
    /// faults (`faults(seed)` for the first two, none for `ordered`) and the
    /// bad day for every getUpdates, and pushes `updates` `/bored` per bot
    /// over `chats` chats.
    async fn start(
        bin: &Binary,
        updates: usize,
        chats: usize,
        faults: impl Fn(u64) -> FaultMix,
    ) -> anyhow::Result<DeliveryRun> {
        let tokens: Vec<String> = (0..DELIVERY_BOTS.len())
            .map(|i| format!("{}:bench-delivery-{i}-AAAAAAAAAAAAAAAAAAAAAAAAAA", 3101 + i))
            .collect();
        let standin = standin(&tokens).await?;
        let bots: Vec<(String, String)> =
            DELIVERY_BOTS.iter().map(|(n, s)| ((*n).to_owned(), (*s).to_owned())).collect();
        let env = BenchEnv::with(&standin.base_url(), &tokens, DELIVERY_SETTINGS, &bots)?;
        for (i, token) in tokens.iter().enumerate().take(2) {
            standin.set_fault_mix(token, "sendMessage", faults(i as u64 + 1));
        }
        for (i, token) in tokens.iter().enumerate() {
            standin.set_fault_mix(token, "getUpdates", FaultMix::bad_day_for_polls(i as u64 + 11));
        }
        let data = tempfile::tempdir().context("creating a temporary directory")?;
        let app = App::spawn_in(&env, bin, data.path())?;
        wait_polling(&standin, &tokens, &app).await?;
        let mut expected = vec![Vec::new(); tokens.len()];
        for i in 0..updates {
            for (bot, token) in tokens.iter().enumerate() {
                let chat = 20_000 + (i % chats) as i64;
                let update = standin.chat_says(token, chat, chat, "private", "Bench", "/bored");
                expected[bot].push((chat, Some(update * 10)));
            }
        }
        Ok(DeliveryRun { standin, tokens, env, data, app, expected })
    }

    fn restart(&mut self, bin: &Binary) -> anyhow::Result<()> {
        self.app = App::spawn_in(&self.env, bin, self.data.path())?;
        Ok(())
    }

    fn recorded(&self) -> usize {
        self.tokens.iter().map(|t| self.standin.sent(t).len()).sum()
    }

    fn attempts(&self, bot: usize) -> Vec<ledger::Attempt> {
        self.standin.attempts(&self.tokens[bot])
    }

    /// Waits until nothing is left to do: no unconfirmed update, no call in
    /// progress, no reply queued in the app, twice in a row.
    async fn settle(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        let mut quiet = 0;
        while quiet < 2 {
            let (_, metrics) = get_once(self.app.addr, "/metrics").await?;
            let metrics = String::from_utf8_lossy(&metrics);
            let idle = self.tokens.iter().zip(DELIVERY_BOTS).all(|(token, (name, _))| {
                self.standin.unconfirmed(token) == 0
                    && self.standin.attempts(token).iter().all(|a| a.answer != ledger::Answer::Pending)
                    && metrics.lines().any(|l| l == format!("app_replies_queued{{bot=\"{name}\"}} 0"))
            });
            quiet = if idle { quiet + 1 } else { 0 };
            if Instant::now() >= deadline {
                bail!("the replies did not settle within {} s", timeout.as_secs());
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        Ok(())
    }
}

/// How the replies of a run came out, as a table cell: once / twice or more / never.
fn tally_cell(t: &ledger::Tally) -> String {
    format!("{} / {} / {} ({} calls in doubt)", t.once, t.twice_or_more, t.never, t.ambiguous_calls)
}

async fn delivery_case(bin: &Binary, scale: &Scale, report: &mut Report) -> anyhow::Result<()> {
    let (updates, chats) = (scale.delivery_updates, scale.delivery_chats);
    report.note(format!(
        "delivery ({}): {updates} /bored per bot over {chats} chats; bots `once` (at-most-once) and `again` \
         (at-least-once) meet the same faults on sendMessage (5% 429, 5% 502, 1% dropped before and 1% after the \
         message is recorded, 1% 300 ms late, 1% answered after the app's 5 s send timeout, 1% malformed), \
         `ordered` (at-least-once) meets none; every getUpdates has 5% 429, 5% 502, 2% dropped, 2% late, 1% \
         malformed; 30 messages/s per bot, 1 per chat",
        bin.label
    ));

    eprintln!("== delivery without crashes ({})", bin.label);
    let run = DeliveryRun::start(bin, updates, chats, FaultMix::bad_day_for_sends).await?;
    let started = Instant::now();
    run.settle(Duration::from_secs(600)).await?;
    report.note(format!("delivery without crashes: every reply settled in {:.0} s", started.elapsed().as_secs_f64()));
    let once = ledger::tally(&run.attempts(0), &run.expected[0]);
    let again = ledger::tally(&run.attempts(1), &run.expected[1]);
    report.row(
        "no crash, at-most-once: updates answered once / twice / never".to_owned(),
        tally_cell(&once),
        "0 twice".to_owned(),
        Verdict::of(once.twice_or_more == 0),
    );
    report.row(
        "no crash, at-least-once: updates answered once / twice / never".to_owned(),
        tally_cell(&again),
        "0 never".to_owned(),
        Verdict::of(again.never == 0),
    );
    let mut retries = ledger::retries(&run.attempts(0));
    retries.extend(ledger::retries(&run.attempts(1)));
    // The app's backoff: 0.5 to 1 s, doubling up to 60 s (or a 429's retry_after).
    let late: Vec<Duration> =
        retries.iter().map(|r| r.beyond(Duration::from_secs(1), Duration::from_secs(60))).collect();
    let mut delays: Vec<Duration> = retries.iter().map(|r| r.delay).collect();
    let (mut late, p) = (late, |v: &[Duration], q| ms(percentile(v, q)));
    late.sort_unstable();
    delays.sort_unstable();
    report.row(
        format!("retry delay after a failed send, p50 / p90 / p99 / max ({} retries)", delays.len()),
        format!("{} / {} / {} / {}", p(&delays, 0.5), p(&delays, 0.9), p(&delays, 0.99), p(&delays, 1.0)),
        "(backoff: 429 retry_after, else ≤ 1 s, doubling)".to_owned(),
        Verdict::Info,
    );
    report.row(
        "  how much later than its backoff, p50 / p90 / p99 / max".to_owned(),
        format!("{} / {} / {} / {}", p(&late, 0.5), p(&late, 0.9), p(&late, 0.99), p(&late, 1.0)),
        format!("p99 ≤ {}", ms(MAX_RETRY_LATENESS)),
        Verdict::of(!late.is_empty() && percentile(&late, 0.99) <= MAX_RETRY_LATENESS),
    );
    let inverted = ledger::out_of_order(&run.attempts(2), &run.expected[2]);
    report.row(
        "pairs of replies sent out of update order (`ordered`, no faults)".to_owned(),
        format!("{:.2}%", inverted * 100.0),
        "(46% before the queue kept due order)".to_owned(),
        Verdict::Info,
    );
    drop(run);

    eprintln!("== delivery across {} kill -9s ({})", scale.delivery_kills, bin.label);
    let mut run = DeliveryRun::start(bin, updates, chats, FaultMix::bad_day_for_sends).await?;
    let total = updates * DELIVERY_BOTS.len();
    let mut kills = Vec::new();
    for k in 0..scale.delivery_kills {
        let due = total * (k + 1) / (scale.delivery_kills + 2);
        let deadline = Instant::now() + Duration::from_secs(300);
        while run.recorded() < due {
            if Instant::now() >= deadline {
                bail!("kill {}: replies stopped flowing:\n{}", k + 1, run.app.logs());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_millis((k as u64 * 137) % 500)).await;
        let before = Instant::now();
        run.app.child.kill().context("killing the app")?;
        run.app.child.wait().context("waiting for the killed app")?;
        // Time for the stand-in to read what the dead process had written:
        // a call it receives before the restart was in flight at the kill.
        tokio::time::sleep(Duration::from_millis(200)).await;
        kills.push((before, Instant::now()));
        run.restart(bin)?;
    }
    run.settle(Duration::from_secs(600)).await?;
    let caught =
        |a: &ledger::Attempt| kills.iter().any(|(b, r)| a.received < *r && a.settled().is_none_or(|s| s >= *b));
    let read_before_a_kill = |a: &ledger::Attempt| {
        a.settled().is_some_and(|s| kills.iter().any(|(b, _)| *b >= s && *b <= s + Duration::from_secs(2)))
    };
    for (bot, (name, _)) in DELIVERY_BOTS.iter().enumerate() {
        let attempts = run.attempts(bot);
        let t = ledger::tally(&attempts, &run.expected[bot]);
        let in_flight: usize = kills
            .iter()
            .map(|(b, e)| attempts.iter().filter(|a| a.received <= *e && a.settled().is_none_or(|s| s >= *b)).count())
            .sum();
        let calls = ledger::by_reply(&attempts);
        let (mut at_kills, mut for_faults, mut unexplained) = (0, 0, 0);
        for key in &run.expected[bot] {
            let c = calls.get(key).map(Vec::as_slice).unwrap_or_default();
            if c.iter().all(|a| !a.recorded) {
                match c.last() {
                    None => at_kills += 1,
                    Some(a) if caught(a) => at_kills += 1,
                    Some(a) if a.ambiguous() => for_faults += 1,
                    Some(_) => unexplained += 1,
                }
            }
            // A recorded call followed by another: a repeat.
            for a in c.iter().take(c.len().saturating_sub(1)).filter(|a| a.recorded) {
                if caught(a) || (a.succeeded() && read_before_a_kill(a)) {
                    at_kills += 1;
                } else if a.ambiguous() {
                    for_faults += 1;
                } else {
                    unexplained += 1;
                }
            }
        }
        let (what, good) = if bot == 0 {
            ("lost", t.twice_or_more == 0 && at_kills <= in_flight)
        } else {
            ("repeated", t.never == 0 && at_kills <= in_flight)
        };
        report.row(
            format!("{} × kill -9, {name}: answered once / twice / never", kills.len()),
            tally_cell(&t),
            if bot == 0 { "0 twice".to_owned() } else { "0 never".to_owned() },
            Verdict::of(if bot == 0 { t.twice_or_more == 0 } else { t.never == 0 }),
        );
        report.row(
            format!("  {name}: replies {what} at the kills / calls in flight at them (stand-in)"),
            format!("{at_kills} / {in_flight} ({for_faults} more {what} for faults while running)"),
            format!("{what} ≤ in flight"),
            Verdict::of(good && unexplained == 0),
        );
        if unexplained > 0 {
            report.note(format!(
                "kill -9, {name}: PROBLEM: {unexplained} replies lost or repeated with no kill or fault to explain it"
            ));
        }
    }
    drop(run);

    eprintln!("== delivery across a SIGTERM with slow 502s ({})", bin.label);
    let slow_502s = |seed| {
        FaultMix::new(seed)
            .with(0.05, Fault::RetryAfter(1))
            .with(0.05, Fault::Status(502))
            .with(0.15, Fault::SlowStatus(502, Duration::from_millis(1500)))
    };
    let mut run = DeliveryRun::start(bin, updates / 2, chats, slow_502s).await?;
    let deadline = Instant::now() + Duration::from_secs(300);
    let slow_in_flight = |run: &DeliveryRun, at: Instant| -> usize {
        (0..2)
            .flat_map(|b| run.attempts(b))
            .filter(|a| matches!(a.fault, Some(Fault::SlowStatus(..))) && a.in_flight_at(at))
            .count()
    };
    while run.recorded() < total / 6 || slow_in_flight(&run, Instant::now()) < 3 {
        if Instant::now() >= deadline {
            bail!("SIGTERM: replies did not get going:\n{}", run.app.logs());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let signalled = Instant::now();
    let in_flight = slow_in_flight(&run, signalled);
    let status = Command::new("kill").args(["-TERM", &run.app.pid().to_string()]).status().context("running kill")?;
    anyhow::ensure!(status.success(), "kill -TERM failed");
    let exit = loop {
        if let Some(exit) = run.app.child.try_wait()? {
            break exit;
        }
        if signalled.elapsed() > Duration::from_secs(15) {
            bail!("SIGTERM: still running after 15 s");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let stopped = signalled.elapsed();
    run.restart(bin)?;
    run.settle(Duration::from_secs(600)).await?;
    for (bot, (name, _)) in DELIVERY_BOTS.iter().enumerate().take(2) {
        let t = ledger::tally(&run.attempts(bot), &run.expected[bot]);
        report.row(
            format!("SIGTERM with slow 502s in flight, then a restart, {name}: answered once / twice / never"),
            tally_cell(&t),
            "0 twice, 0 never".to_owned(),
            Verdict::of(t.twice_or_more == 0 && t.never == 0),
        );
    }
    report.note(format!(
        "SIGTERM: {in_flight} slow 502s in flight at the signal; {exit} after {:.1} s",
        stopped.as_secs_f64()
    ));
    Ok(())
}

// ---------------------------------------------------------------------------
// /proc readings and small helpers.

/// CPU time used so far by the app, by this process (stand-in, pusher, load
/// generator) and by the whole machine.
#[derive(Clone, Copy)]
struct CpuClock {
    app: Duration,
    bench: Duration,
    machine: Duration,
    io_stall: Option<Duration>,
    at: Instant,
}

/// CPU time used between two readings.
struct CpuUse {
    app: Duration,
    bench: Duration,
    /// Everything else on the machine (someone's build, other tests): noise in the figures.
    others: Duration,
    /// Time every runnable task on the machine waited for I/O (the app's
    /// own fsyncs count too), when the kernel reports pressure stall information.
    io_stall: Option<Duration>,
    wall: Duration,
}

impl CpuClock {
    fn read(app_pid: u32) -> anyhow::Result<CpuClock> {
        Ok(CpuClock {
            app: cpu_time(&format!("/proc/{app_pid}/stat"))?,
            bench: cpu_time("/proc/self/stat")?,
            machine: machine_busy()?,
            io_stall: io_stall(),
            at: Instant::now(),
        })
    }

    fn since(self, app_pid: u32) -> anyhow::Result<CpuUse> {
        let now = CpuClock::read(app_pid)?;
        let app = now.app.saturating_sub(self.app);
        let bench = now.bench.saturating_sub(self.bench);
        let others = now.machine.saturating_sub(self.machine).saturating_sub(app + bench);
        let io_stall = now.io_stall.zip(self.io_stall).map(|(b, a)| b.saturating_sub(a));
        Ok(CpuUse { app, bench, others, io_stall, wall: now.at - self.at })
    }
}

impl CpuUse {
    /// The share of the machine's capacity other processes used.
    fn others_share(&self) -> f64 {
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        self.others.as_secs_f64() / (self.wall.as_secs_f64() * cores as f64).max(1e-9)
    }

    /// "other processes took N% of the machine, everything stalled on I/O M% of the time".
    fn interference(&self) -> String {
        let mut text = format!("other processes took {:.0}% of the machine", self.others_share() * 100.0);
        if let Some(stall) = self.io_stall {
            let share = stall.as_secs_f64() / self.wall.as_secs_f64().max(1e-9);
            text.push_str(&format!(", all tasks stalled on I/O {:.0}% of the time", share * 100.0));
        }
        text
    }
}

/// Total time all non-idle tasks were stalled on I/O (`full` in
/// `/proc/pressure/io`), or `None` without pressure stall information.
fn io_stall() -> Option<Duration> {
    let text = std::fs::read_to_string("/proc/pressure/io").ok()?;
    let full = text.lines().find(|l| l.starts_with("full "))?;
    let total = full.split_whitespace().find_map(|f| f.strip_prefix("total="))?;
    total.parse().ok().map(Duration::from_micros)
}

/// Busy CPU time of the whole machine, from the `cpu` line of `/proc/stat`.
fn machine_busy() -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
    let line = stat.lines().find(|l| l.starts_with("cpu ")).context("no cpu line in /proc/stat")?;
    let ticks: Vec<u64> = line.split_whitespace().skip(1).map(|t| t.parse().unwrap_or(0)).collect();
    // user nice system idle iowait irq softirq steal: all but idle and iowait are busy.
    let busy: u64 = [0, 1, 2, 5, 6, 7].iter().filter_map(|&i| ticks.get(i)).sum();
    Ok(Duration::from_millis(busy * 10))
}

/// User + system CPU time of a process, from `/proc/<pid>/stat`.
fn cpu_time(stat_path: &str) -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string(stat_path).with_context(|| format!("reading {stat_path}"))?;
    // Fields after the command name (which may hold spaces) start at the state, field 3.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).context("unexpected /proc stat format")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| -> anyhow::Result<u64> {
        fields.get(n - 3).and_then(|f| f.parse().ok()).with_context(|| format!("no field {n} in {stat_path}"))
    };
    // utime and stime, in USER_HZ ticks, which Linux fixes at 100 a second.
    Ok(Duration::from_millis((field(14)? + field(15)?) * 10))
}

/// A `kB` field of `/proc/<pid>/status`, in bytes.
fn proc_status(pid: u32, field: &str) -> anyhow::Result<u64> {
    let raw = proc_status_raw(pid, field)?;
    let kb: u64 = raw.trim_end_matches("kB").trim().parse().with_context(|| format!("{field}: `{raw}`"))?;
    Ok(kb * 1024)
}

fn proc_status_raw(pid: u32, field: &str) -> anyhow::Result<String> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field).and_then(|r| r.strip_prefix(':')).map(|v| v.trim().to_owned()))
        .with_context(|| format!("no {field} in {path}"))
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".to_owned())
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

// ---------------------------------------------------------------------------
// The report.

enum Verdict {
    Pass,
    Miss,
    Info,
    NotMeasured,
}

impl Verdict {
    fn of(pass: bool) -> Verdict {
        if pass { Verdict::Pass } else { Verdict::Miss }
    }

    fn label(&self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Miss => "MISS",
            Verdict::Info => "",
            Verdict::NotMeasured => "NOT MEASURED",
        }
    }
}

struct Row {
    figure: String,
    value: String,
    target: String,
    verdict: Verdict,
}

#[derive(Default)]
struct Report {
    rows: Vec<Row>,
    notes: Vec<String>,
}

impl Report {
    fn row(&mut self, figure: String, value: String, target: String, verdict: Verdict) {
        self.rows.push(Row { figure, value, target, verdict });
    }

    fn failed(&mut self, what: impl Into<String>, why: String) {
        let what = what.into();
        eprintln!("error: {what}: {why}");
        let first_line = why.lines().next().unwrap_or_default().to_owned();
        self.rows.push(Row {
            figure: what.clone(),
            value: first_line,
            target: String::new(),
            verdict: Verdict::NotMeasured,
        });
        self.notes.push(format!("{what}: {why}"));
    }

    fn note(&mut self, note: String) {
        self.notes.push(note);
    }

    fn render(&self) -> String {
        let headers = ["figure", "value", "target", "result"];
        let cells: Vec<[&str; 4]> = self
            .rows
            .iter()
            .map(|r| [r.figure.as_str(), r.value.as_str(), r.target.as_str(), r.verdict.label()])
            .collect();
        let mut widths = headers.map(|h| h.chars().count());
        for row in &cells {
            for (w, c) in widths.iter_mut().zip(row) {
                *w = (*w).max(c.chars().count());
            }
        }
        let line = |cols: [&str; 4]| {
            let padded: Vec<String> =
                cols.iter().zip(widths).map(|(c, w)| format!("{c}{}", " ".repeat(w - c.chars().count()))).collect();
            format!("{}\n", padded.join("  ").trim_end())
        };
        let mut out = String::from("\napp end-to-end benchmark (all on 127.0.0.1)\n\n");
        out.push_str(&line(headers));
        out.push_str(&line(widths.map(|w| "─".repeat(w)).each_ref().map(String::as_str)));
        for row in cells {
            out.push_str(&line(row));
        }
        out.push_str("\nnotes:\n");
        for note in &self.notes {
            out.push_str(&format!("- {note}\n"));
        }
        out
    }
}
