//! `cargo xtask dev`: the inner loop. Watches the workspace, and on every
//! change builds the service with the fast profile and replaces the running
//! local deployment through the same health-checked path `deploy` takes,
//! saying how long each step took. A build that fails or a version that does
//! not become healthy leaves the previous one running.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use notify::Watcher as _;
use xshell::Shell;

use crate::cli::args::EnvArg;
use crate::ops::build::compile::Profile;
use crate::ops::deploy::{Ask, Deploy};
use crate::vocab::project::Context;

/// How long a burst of changes (an editor saving several files) may last
/// before a build starts.
const SETTLE: Duration = Duration::from_millis(300);

/// Watch the service's sources; on each change, build (fast profile) and
/// deploy it on this engine, health-checked.
///
/// The first build and deploy start at once. Then every change to a file of
/// the workspace (outside target/ and .git/) starts the next one; changes made
/// during a build start another as soon as it ends. A build that fails, or a
/// new version that does not become healthy, leaves the running version as it
/// was. Refuses a production environment: it deploys fast builds. Stop with
/// Ctrl-C; the deployment stays (`cargo xtask undeploy` removes it).
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    at: EnvArg,
    /// File holding the environment's secret key (default: SECRET_KEY_FILE, then
    /// the key folder's file for the environment's key id).
    #[arg(long, value_name = "PATH")]
    key_file: Option<PathBuf>,
    /// Name of the container (default: <service>-<ENV>).
    #[arg(long, value_name = "NAME")]
    name: Option<String>,
    /// Where the service's port is published (default: 127.0.0.1:<its port>; 0: any free port).
    #[arg(long, value_name = "[ADDR:]PORT")]
    publish: Option<String>,
    /// Repository of the images it builds (default: <service>-dev).
    #[arg(long, value_name = "REPO")]
    repo: Option<String>,
    /// Stop after this many rounds (build and deploy), for scripts and tests.
    #[arg(long, value_name = "N")]
    rounds: Option<u32>,
}

pub(super) fn run(sh: &Shell, ctx: &mut Context, args: Args) -> anyhow::Result<()> {
    let service = ctx.service(args.at.service.name())?;
    let file = ctx.load_env(&args.at.env)?;
    if crate::vocab::plan::is_production(&file)? {
        bail!(
            "environment `{}` is production, and `dev` deploys fast builds; use another environment, \
             or `cargo xtask image` and `deploy` for this one",
            file.env()
        );
    }
    let ask = Ask {
        name: args.name.clone(),
        publish: args.publish.clone(),
        timeout: Duration::from_secs(60),
        service_arg: ctx.service_arg(),
        ..Ask::standalone(file.env())
    };
    let deploy = Deploy::new(&service, ask)?;
    let key = ctx.secret_key(&file, args.key_file.as_deref())?;
    let keyed = match deploy.with_key(file, key) {
        // What did not open says so itself; "nothing was changed" is the deploy's word.
        Err(crate::ops::deploy::Error::NotOpened { source }) => {
            return Err(anyhow::Error::new(*source).context("nothing was started"));
        }
        keyed => keyed.context("nothing was started")?,
    };
    let rt = crate::adapters::engine::runtime()?;
    let docker = rt.block_on(crate::adapters::engine::connect(None))?;

    let (tx, changes) = mpsc::channel();
    let root = ctx.root.canonicalize().with_context(|| format!("resolving {}", ctx.root.display()))?;
    let watched = root.clone();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event
            && !matches!(event.kind, notify::EventKind::Access(_))
            && event.paths.iter().any(|p| counts(&watched, p))
        {
            let _ = tx.send(Instant::now());
        }
    })
    .context("watching the workspace")?;
    watcher.watch(&root, notify::RecursiveMode::Recursive).context("watching the workspace")?;
    eprintln!("dev: watching {} for changes to `{}` (Ctrl-C stops)", root.display(), service.name);

    let options = crate::ops::build::Options {
        profile: Profile::Fast,
        repo: Some(args.repo.clone().unwrap_or_else(|| format!("{}-dev", service.name))),
        ..crate::ops::build::Options::default()
    };
    let mut edited = Instant::now();
    let mut round = 0;
    loop {
        round += 1;
        let started = Instant::now();
        eprintln!("dev: round {round}: building `{}` (fast profile)", service.name);
        match crate::ops::build::build(sh, ctx, &service, &options) {
            Err(e) => eprintln!(
                "dev: round {round}: the build failed ({e:#}); the running version stays; waiting for a change"
            ),
            Ok(image) => {
                let built = started.elapsed();
                let deployed = Instant::now();
                // Into anyhow for the report: it shows the error with its causes.
                match rt.block_on(keyed.apply(&docker, Some(&image.tags[0]))).map_err(anyhow::Error::from) {
                    Ok(()) => eprintln!(
                        "dev: round {round}: `{}` runs the change: build {:.1} s, deploy {:.1} s; edit to healthy {:.1} s",
                        keyed.name(),
                        built.as_secs_f64(),
                        deployed.elapsed().as_secs_f64(),
                        edited.elapsed().as_secs_f64()
                    ),
                    Err(e) => eprintln!(
                        "dev: round {round}: the new version was not deployed ({e:#}); the running version stays"
                    ),
                }
            }
        }
        if args.rounds.is_some_and(|n| round >= n) {
            return Ok(());
        }
        edited = next_change(&changes)?;
    }
}

/// Whether a change to `path` can change the image: anything in the
/// workspace but its build output and git's own files.
fn counts(root: &Path, path: &Path) -> bool {
    let Ok(rel) = path.strip_prefix(root) else { return false };
    let first = rel.components().next().map(|c| c.as_os_str().to_string_lossy().into_owned());
    !matches!(first.as_deref(), Some("target" | ".git") | None)
}

/// Waits for a change, then for the burst it belongs to to settle; returns
/// when the first change of the burst happened. Changes made during the
/// previous build are already waiting, so they start the next one at once.
fn next_change(changes: &mpsc::Receiver<Instant>) -> anyhow::Result<Instant> {
    let first = changes.recv().context("the workspace watcher stopped")?;
    while changes.recv_timeout(SETTLE).is_ok() {}
    Ok(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_output_and_git_do_not_count() {
        let root = Path::new("/ws");
        assert!(counts(root, Path::new("/ws/src/main.rs")));
        assert!(counts(root, Path::new("/ws/deploy-config/dev.toml")));
        assert!(counts(root, Path::new("/ws/targets.txt")));
        assert!(!counts(root, Path::new("/ws/target/debug/x")));
        assert!(!counts(root, Path::new("/ws/.git/index")));
        assert!(!counts(root, Path::new("/ws")));
        assert!(!counts(root, Path::new("/elsewhere/x")));
    }

    #[test]
    fn a_burst_of_changes_is_one() {
        let (tx, rx) = mpsc::channel();
        let first = Instant::now();
        tx.send(first).unwrap();
        tx.send(Instant::now()).unwrap();
        tx.send(Instant::now()).unwrap();
        assert_eq!(next_change(&rx).unwrap(), first);
        assert!(rx.try_recv().is_err(), "the burst was not drained");
        drop(tx);
        assert!(next_change(&rx).is_err());
    }
}
