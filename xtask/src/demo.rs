//! `cargo xtask demo`: the whole pipeline on this machine in one command,
//! with a Bot API stand-in in place of Telegram.
//!
//! Engine (installed and started where needed), a `demo` environment with its
//! own key pair and sealed demo token, the image, then two containers on a
//! Docker network of their own: the stand-in (a chat page and the Bot API, as
//! `botapi` on that network) and the app deployed exactly as `cargo xtask
//! deploy` does, its key handed over as a file. A second run reuses all of it.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use bollard::Docker;
use bollard::models::{
    ContainerCreateBody, EndpointSettings, HostConfig, NetworkCreateRequest, NetworkingConfig, PortBinding,
    RestartPolicy, RestartPolicyNameEnum,
};
use bollard::query_parameters::{CreateContainerOptionsBuilder, RemoveContainerOptionsBuilder};
use boxcar_secrets::{EnvFile, SecretKey};
use xshell::Shell;

use boxcar::Context;
use boxcar::ops::build::{self, compile::Profile};
use boxcar::ops::deploy::{Ask, Deploy};
use boxcar::vocab::contract::{Contract, Service};
use boxcar::vocab::keys;

/// The demo's environment.
const ENV: &str = "demo";
/// The stand-in's name on the demo network, in the demo's `api_base`.
const API_ALIAS: &str = "botapi";
/// Port of the stand-in inside its container.
const STANDIN_PORT: u16 = 8081;
/// The app's service in boxcar.toml.
const APP: &str = "app";
/// The stand-in, shipped like any service; declared here rather than in
/// boxcar.toml, since only the demo runs it.
const STANDIN: &str = r#"
[[service]]
name = "bot-api-standin"
port = 8081
args = ["--listen", "0.0.0.0:8081"]
health.http = "/healthz"
description = "Telegram Bot API stand-in with a chat page, for boxcar's demo; not Telegram"
"#;
/// Label on the demo's network and stand-in container.
static LABEL_DEMO: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| format!("{}demo", boxcar::vocab::labels::PREFIX));
/// First line of the demo's environment file: how the demo knows it made it.
const HEADER: &str = "# The demo environment of `cargo xtask demo`:";
/// The stand-in's chat user (its `from.id`): an admin of the demo bot, so the
/// chat can set the mood the dashboard shows.
const CHAT_USER_ID: i64 = 1000;

/// Run the whole pipeline here, with a Bot API stand-in instead of Telegram.
///
/// Makes sure a Docker engine runs (as root on Debian: installs docker.io and
/// starts it), creates the `demo` environment (key pair, key outside the
/// repository, a sealed demo bot token) unless it exists, builds the image,
/// and starts the Bot API stand-in and the app on a Docker network of their
/// own. Prints the dashboard's and the chat page's addresses. A second run
/// reuses everything that is already there.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Stop the demo: remove its containers, the app's volumes and the network.
    /// Images and the demo environment stay, so the next demo starts quickly.
    #[arg(long)]
    down: bool,
    /// Port of the app's dashboard on 127.0.0.1 (0: any free port).
    #[arg(long, default_value_t = 8080, value_name = "PORT")]
    dashboard_port: u16,
    /// Port of the stand-in's chat page on 127.0.0.1 (0: any free port).
    #[arg(long, default_value_t = 8081, value_name = "PORT")]
    chat_port: u16,
    /// Prefix of the demo's container, network and volume names (another
    /// prefix runs a second demo beside the first).
    #[arg(long, default_value = "boxcar-demo", value_name = "NAME")]
    prefix: String,
    /// Repository of the app image's tags, as for `cargo xtask image`.
    #[arg(long, default_value = "app", value_name = "REPO")]
    repo: String,
    /// Repository of the stand-in image's tags.
    #[arg(long, default_value = "boxcar/standin", value_name = "REPO")]
    standin_repo: String,
}

struct Names {
    network: String,
    standin: String,
    app: String,
}

impl Names {
    fn new(prefix: &str) -> anyhow::Result<Names> {
        boxcar::vocab::plan::check_name(&format!("{prefix}-standin"))
            .with_context(|| format!("--prefix `{prefix}` is not usable as a name"))?;
        Ok(Names { network: prefix.to_owned(), standin: format!("{prefix}-standin"), app: format!("{prefix}-app") })
    }
}

pub(crate) fn run(sh: &Shell, ctx: &mut Context, args: Args) -> anyhow::Result<()> {
    let started = Instant::now();
    let names = Names::new(&args.prefix)?;
    if args.down {
        return down(&names);
    }
    boxcar::adapters::engine::ensure()?;
    let app = ctx.service(Some(APP))?;
    let key = demo_environment(sh, ctx)?;
    // Deployed the way `cargo xtask deploy` deploys, with every check it makes.
    let ask = Ask {
        name: Some(names.app.clone()),
        publish: Some(format!("127.0.0.1:{}", args.dashboard_port)),
        network: Some(names.network.clone()),
        ..Ask::standalone(ENV)
    };
    let keyed = Deploy::new(&app, ask)?.with_key(EnvFile::load(&ctx.env_path(ENV))?, key)?;

    let mut standin = Contract::parse(STANDIN)?;
    standin.resolve(&ctx.root)?;
    let standin: Service = standin.services()[0].clone();
    // The fast profile: the demo is for looking at, and a first run takes
    // half as long; `cargo xtask image` builds what production gets. The
    // stand-in compiles in the same cargo run: their shared dependencies
    // compile once, with one set of features.
    eprintln!("building the image (`cargo xtask image --profile fast`), the stand-in compiled along");
    let options = build::Options {
        profile: Profile::Fast,
        repo: Some(args.repo.clone()),
        ignored_env: Some((format!("{ENV}.toml"), "demo".to_owned())),
        compile_along: vec![(standin.package.clone(), standin.bin.clone())],
        ..build::Options::default()
    };
    let app_image = build::build(sh, ctx, &app, &options)?;

    eprintln!("building the Bot API stand-in's image");
    let options = build::Options {
        profile: Profile::Fast,
        repo: Some(args.standin_repo.clone()),
        compile_along: vec![(app.package.clone(), app.bin.clone())],
        ..build::Options::default()
    };
    let standin_image = build::build(sh, ctx, &standin, &options)?;

    let rt = boxcar::adapters::engine::runtime()?;
    let (dashboard, chat) = rt.block_on(async {
        let docker = boxcar::adapters::engine::connect(None).await?;
        ensure_network(&docker, &names.network).await?;
        let chat = ensure_standin(&docker, &names, &standin_image.id, args.chat_port).await?;
        keyed.apply(&docker, Some(&app_image.tags[0])).await?;
        let dashboard = published(&docker, &names.app, app.port).await?;
        anyhow::Ok((dashboard, chat))
    })?;
    wait_ready(&dashboard);

    println!();
    println!("The demo runs ({:.0} s):", started.elapsed().as_secs_f64());
    println!("  dashboard  http://{dashboard}/   the app, container {}", names.app);
    println!("  chat       http://{chat}/   the Bot API stand-in: talk to the bot as a Telegram user would");
    println!("  stop       cargo xtask demo --down{}", prefix_flag(&args.prefix));
    if let Ok(host) = std::env::var("DOCKER_HOST") {
        println!("(127.0.0.1 of the engine's machine: DOCKER_HOST is {host})");
    }
    println!();
    println!("The chat page is a stand-in for Telegram, not Telegram: no message leaves this machine.");
    println!("Try /help, /bored, and /mood <text> (the chat user is an admin), then look at the dashboard.");
    println!(
        "To run the bot for real, seal a token from @BotFather into your own environment (README, \"Going live\")."
    );
    Ok(())
}

fn not_ours(kind: &str, name: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "a {kind} named `{name}` exists and the demo did not create it; nothing was changed\n\
         hint: run the demo under other names with --prefix"
    )
}

fn prefix_flag(prefix: &str) -> String {
    if prefix == "boxcar-demo" { String::new() } else { format!(" --prefix {prefix}") }
}

/// The `demo` environment and its key: made now unless both exist.
///
/// deploy-config/demo.toml is listed in .gitignore: its key exists on this
/// machine only, so the file is of no use to anyone else.
fn demo_environment(sh: &Shell, ctx: &Context) -> anyhow::Result<SecretKey> {
    let path = ctx.env_path(ENV);
    if path.exists() {
        let file = EnvFile::load(&path)?;
        let key_path = keys::default_key_path(ENV, file.public_key().key_id())?;
        if key_path.exists() {
            let key = boxcar_secrets::read_key_file(&key_path, "the demo's key file")?.key;
            if key.public_key() == file.public_key() && file.open_approved(&key).is_ok() {
                // The demo's own file follows boxcar.toml: approved again
                // with what it gives the app now, as a key holder would.
                if runtime_differs(ctx, &file)? {
                    let text = std::fs::read_to_string(&path)?;
                    let approved = approve_with_runtime(ctx, &path, &text, &key)?;
                    boxcar_secrets::write_atomic(&path, approved.as_bytes(), None)
                        .with_context(|| format!("writing {}", ctx.show(&path)))?;
                    eprintln!("demo environment: approved what boxcar.toml gives the app now");
                }
                eprintln!("demo environment: {} with key {}", ctx.show(&path), key_path.display());
                return Ok(key);
            }
        }
        // Replaced only when it is the demo's own file: made by this command and
        // not tracked by git (someone may have committed an environment of theirs
        // named `demo`).
        let ours = std::fs::read_to_string(&path).is_ok_and(|t| t.starts_with(HEADER));
        let tracked = xshell::cmd!(sh, "git ls-files --error-unmatch {path}")
            .quiet()
            .ignore_stderr()
            .ignore_stdout()
            .run()
            .is_ok();
        if !ours || tracked {
            bail!(
                "{} exists, but no key for it is on this machine and `cargo xtask demo` did not make it; \
                 the demo uses the environment `demo`: move that file away, or pass its key with SECRET_KEY_FILE",
                ctx.show(&path)
            );
        }
        eprintln!("demo environment: {} has no usable key on this machine; making a new one", ctx.show(&path));
        std::fs::remove_file(&path).with_context(|| format!("removing {}", ctx.show(&path)))?;
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", ctx.show(dir)))?;
    }
    let key = SecretKey::generate();
    let key_path = keys::default_key_path(ENV, key.key_id())?;
    keys::ensure_outside_work_tree(&ctx.root, &key_path)?;
    keys::write_key_file(&key_path, &key)?;
    // A made-up token of the right shape: the stand-in takes any.
    let token = zeroize::Zeroizing::new(format!(
        "{}:{}",
        fastrand::u64(1_000_000_000..10_000_000_000),
        std::iter::repeat_with(|| {
            const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-";
            char::from(CHARS[fastrand::usize(..CHARS.len())])
        })
        .take(35)
        .collect::<String>()
    ));
    let sealed = boxcar_secrets::seal(key.public_key(), ENV, "demo_token", token.as_bytes())?;
    let text = format!(
        "{HEADER} made on this machine, with a key that exists\n\
         # only here (so this file is in .gitignore). The bot token is made up: the demo's Bot API\n\
         # is a stand-in on the demo's Docker network.\n\
         public_key = \"{}\"\n\n[secrets]\ndemo_token = \"{sealed}\"\n\n\
         [app]\napi_base = \"http://{API_ALIAS}:{STANDIN_PORT}\"\n\
         # The stand-in is on the demo's own Docker network, not loopback, and serves plain http;\n\
         # the token is made up. A real environment uses https and leaves this out.\n\
         allow_plain_http = true\npoll_timeout = 20\n\n\
         [[bots]]\nname = \"demo\"\ntoken_secret = \"demo_token\"\nadmins = [{CHAT_USER_ID}]\n",
        key.public_key().to_base64()
    );
    // The key that made the file approves it, as keygen does, with what
    // boxcar.toml gives the app at run time.
    let text = approve_with_runtime(ctx, &path, &text, &key)?;
    if let Err(e) = boxcar_secrets::write_new_atomic(&path, text.as_bytes(), 0o644) {
        let _ = std::fs::remove_file(&key_path);
        return Err(e).with_context(|| format!("writing {}", ctx.show(&path)));
    }
    let file = EnvFile::load(&path)?;
    file.open_approved(&key).context("the demo environment just written does not open")?;
    eprintln!("demo environment: created {} (key {}, key file {})", ctx.show(&path), key.key_id(), key_path.display());
    Ok(key)
}

/// `text`, the demo environment's file, approved by `key` with what
/// boxcar.toml gives the services of its folder at run time.
fn approve_with_runtime(ctx: &Context, path: &std::path::Path, text: &str, key: &SecretKey) -> anyhow::Result<String> {
    let mut doc = boxcar_secrets::EnvDocument::parse(path, text)?;
    doc.set_runtime(&ctx.runtimes_in(&ctx.config_dir())?);
    doc.approve(key)?;
    Ok(doc.render())
}

/// Whether `file` approves another run-time contract than boxcar.toml gives now.
fn runtime_differs(ctx: &Context, file: &EnvFile) -> anyhow::Result<bool> {
    Ok(ctx
        .runtimes_in(&ctx.config_dir())?
        .iter()
        .any(|(name, now)| boxcar_secrets::runtime::approved_runtime(file.table(), name) != Some(now)))
}

async fn ensure_network(docker: &Docker, name: &str) -> anyhow::Result<()> {
    match docker.inspect_network(name, None::<bollard::query_parameters::InspectNetworkOptions>).await {
        Ok(n) if n.labels.as_ref().and_then(|l| l.get(LABEL_DEMO.as_str())).map(String::as_str) == Some(name) => Ok(()),
        Ok(_) => Err(not_ours("network", name)),
        Err(e) if boxcar::adapters::engine::is_not_found(&e) => {
            let request = NetworkCreateRequest {
                name: name.to_owned(),
                driver: Some("bridge".to_owned()),
                labels: Some([(LABEL_DEMO.clone(), name.to_owned())].into()),
                ..NetworkCreateRequest::default()
            };
            docker.create_network(request).await.with_context(|| format!("creating the network {name}"))?;
            eprintln!("created the Docker network {name}");
            Ok(())
        }
        Err(e) => Err(anyhow::Error::new(e).context(format!("inspecting the network {name}"))),
    }
}

/// Starts the stand-in unless it already runs this image; returns the chat
/// page's `127.0.0.1:<port>`.
async fn ensure_standin(docker: &Docker, names: &Names, image: &str, port: u16) -> anyhow::Result<String> {
    let name = &names.standin;
    match docker.inspect_container(name, None::<bollard::query_parameters::InspectContainerOptions>).await {
        Ok(info) => {
            let labels = info.config.as_ref().and_then(|c| c.labels.clone()).unwrap_or_default();
            if labels.get(LABEL_DEMO.as_str()) != Some(&names.network) {
                return Err(not_ours("container", name));
            }
            let same_image = info.config.as_ref().and_then(|c| c.image.as_deref()) == Some(image);
            let running = info.state.as_ref().and_then(|s| s.running).unwrap_or(false);
            let wanted_port = port == 0
                || published(docker, name, STANDIN_PORT).await.ok().is_some_and(|p| p.ends_with(&format!(":{port}")));
            if same_image && running && wanted_port {
                eprintln!("the stand-in {name} already runs {image}");
                return published(docker, name, STANDIN_PORT).await;
            }
            let options = RemoveContainerOptionsBuilder::default().force(true).v(true).build();
            docker.remove_container(name, Some(options)).await.with_context(|| format!("removing {name}"))?;
        }
        Err(e) if boxcar::adapters::engine::is_not_found(&e) => {}
        Err(e) => return Err(anyhow::Error::new(e).context(format!("inspecting {name}"))),
    }
    let binding = PortBinding {
        host_ip: Some("127.0.0.1".to_owned()),
        host_port: Some(if port == 0 { String::new() } else { port.to_string() }),
    };
    let body = ContainerCreateBody {
        image: Some(image.to_owned()),
        user: Some("65532:65532".to_owned()),
        labels: Some([(LABEL_DEMO.clone(), names.network.clone())].into()),
        host_config: Some(boxcar::ops::resources::hardened(HostConfig {
            network_mode: Some(names.network.clone()),
            port_bindings: Some([(format!("{STANDIN_PORT}/tcp"), Some(vec![binding]))].into()),
            restart_policy: Some(RestartPolicy {
                name: Some(RestartPolicyNameEnum::UNLESS_STOPPED),
                maximum_retry_count: None,
            }),
            memory: Some(64 * 1024 * 1024),
            pids_limit: Some(64),
            ..HostConfig::default()
        })),
        networking_config: Some(NetworkingConfig {
            endpoints_config: Some(
                [(
                    names.network.clone(),
                    EndpointSettings { aliases: Some(vec![API_ALIAS.to_owned()]), ..EndpointSettings::default() },
                )]
                .into(),
            ),
        }),
        ..ContainerCreateBody::default()
    };
    docker
        .create_container(Some(CreateContainerOptionsBuilder::default().name(name).build()), body)
        .await
        .with_context(|| format!("creating the stand-in {name}"))?;
    docker
        .start_container(name, None::<bollard::query_parameters::StartContainerOptions>)
        .await
        .with_context(|| format!("starting the stand-in {name} (is port {port} taken? pass --chat-port)"))?;
    let addr = published(docker, name, STANDIN_PORT).await?;
    eprintln!("started the Bot API stand-in {name} on {addr}");
    Ok(addr)
}

/// `127.0.0.1:<host port>` a container publishes `port` on.
async fn published(docker: &Docker, name: &str, port: u16) -> anyhow::Result<String> {
    let info = docker
        .inspect_container(name, None::<bollard::query_parameters::InspectContainerOptions>)
        .await
        .with_context(|| format!("inspecting {name}"))?;
    let host_port = info
        .network_settings
        .and_then(|n| n.ports)
        .and_then(|p| p.get(&format!("{port}/tcp")).cloned().flatten())
        .and_then(|b| b.first().and_then(|b| b.host_port.clone()))
        .with_context(|| format!("{name} publishes no port {port}"))?;
    Ok(format!("127.0.0.1:{host_port}"))
}

/// Waits (briefly) until the bot has polled the stand-in: /readyz answers 200.
fn wait_ready(dashboard: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if http_status(dashboard, "/readyz") == Some(200) {
            eprintln!("the bot polls the stand-in");
            return;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    eprintln!("warning: the bot has not polled the stand-in yet; the dashboard says why");
}

/// The status code of `GET path` on `addr`, over a plain socket: one request
/// to 127.0.0.1 is not worth an HTTP client in xtask.
fn http_status(addr: &str, path: &str) -> Option<u16> {
    use std::io::{Read as _, Write as _};
    let mut stream = std::net::TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes()).ok()?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

fn down(names: &Names) -> anyhow::Result<()> {
    let rt = boxcar::adapters::engine::runtime()?;
    rt.block_on(async {
        let docker = boxcar::adapters::engine::connect(None).await?;
        let mut removed = boxcar::ops::deploy::standalone::undeploy(&docker, &names.app, true).await?;
        match docker.inspect_container(&names.standin, None::<bollard::query_parameters::InspectContainerOptions>).await
        {
            Ok(info) => {
                let labels = info.config.and_then(|c| c.labels).unwrap_or_default();
                if labels.get(LABEL_DEMO.as_str()) != Some(&names.network) {
                    return Err(not_ours("container", &names.standin));
                }
                let options = RemoveContainerOptionsBuilder::default().force(true).v(true).build();
                docker.remove_container(&names.standin, Some(options)).await?;
                println!("removed    container {}", names.standin);
                removed += 1;
            }
            Err(e) if boxcar::adapters::engine::is_not_found(&e) => {}
            Err(e) => return Err(e.into()),
        }
        match docker.inspect_network(&names.network, None::<bollard::query_parameters::InspectNetworkOptions>).await {
            Ok(n) if n.labels.as_ref().and_then(|l| l.get(LABEL_DEMO.as_str())) == Some(&names.network) => {
                docker.remove_network(&names.network).await?;
                println!("removed    network {}", names.network);
                removed += 1;
            }
            Ok(_) => return Err(not_ours("network", &names.network)),
            Err(_) => {}
        }
        if removed == 0 {
            println!("no demo runs on this engine");
        } else {
            println!("kept       the images and deploy-config/{ENV}.toml with its key: the next demo starts quickly");
        }
        Ok(())
    })
}
