//! What a deploy, a status, the logs or an undeploy can end in: one enum a
//! caller can match, each variant naming the deployment, image or resource it
//! is about. Each message says what was and was not changed, and where there
//! is something to do, a `hint:` line that says it.

use std::time::Duration;

use boxcar_secrets::{ApprovalError, KeyId};

use crate::ops::{resources, service_cmd};
use crate::vocab::plan;
use crate::vocab::show::escape;

/// Why a deployment was not applied, shown, or removed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The deployment asked for breaks a rule of the plan or the contract.
    #[error(transparent)]
    Plan(#[from] plan::Error),
    /// An engine call failed, or a resource of the deployment's name is not boxcar's (`NotOurs`).
    #[error(transparent)]
    Resource(#[from] resources::Error),
    /// The service's own command could not be run in the image.
    #[error(transparent)]
    ServiceCmd(#[from] service_cmd::Error),

    // What was asked.
    #[error("--network is for a standalone engine; a Swarm service joins overlay networks through its stack")]
    NetworkOnSwarm,
    #[error("--replicas needs --swarm: a standalone engine runs one container per deployment")]
    ReplicasNeedSwarm,
    /// `--publish ADDRESS:PORT` with `--swarm`.
    #[error(
        "--publish {publish}: Swarm publishes a port on every address of its nodes and cannot keep it to one; \
         give only the port, and keep it behind a firewall or proxy"
    )]
    SwarmPublishAddress { publish: String },

    // The key and the environment file.
    /// The secret key is not the environment's.
    #[error(
        "the secret key (key id {key_id}) does not belong to environment `{env}` (key id {env_key_id}); nothing was changed\n\
         hint: pass the key `cargo xtask keygen --env {env}` or `rotate-key` wrote for this environment"
    )]
    WrongKey { key_id: KeyId, env: String, env_key_id: KeyId },
    /// The environment file is another environment's than the one asked for.
    #[error(
        "the deployment asks for environment `{}`, and the file given is environment `{}`'s; nothing was changed",
        crate::vocab::show::escape(.asked),
        crate::vocab::show::escape(.file)
    )]
    OtherEnvironment { asked: String, file: String },
    /// A value of the environment file did not open, or its content is not approved.
    #[error("nothing was changed")]
    NotOpened { source: Box<boxcar_secrets::Error> },
    /// Docker's login for the image's registry could not be read.
    #[error(transparent)]
    Login(#[from] crate::ops::publish::Error),

    // The image.
    #[error(
        "no image {} in the engine; build it with `cargo xtask image`, or pass a registry \
         reference (`image --push` prints one) (nothing was changed)",
        escape(.image)
    )]
    NoImage { image: String },
    #[error("the engine reports no image ID")]
    NoImageId,
    #[error("--image {}: not an image reference: {why}; nothing was changed", escape(.image))]
    NotAReference { image: String, why: String },
    /// The engine could not pull a registry reference; `hint` is what to do.
    #[error("the engine could not pull {}: {}; nothing was changed\nhint: {hint}", escape(.image), escape(.why))]
    Pull { image: String, why: String, hint: String },
    /// A build of another profile than `release`, for a production environment.
    #[error(
        "{} was built with the `{}` profile, and environment `{env}` is production; nothing was changed\n\
         hint: build it with `cargo xtask image` (release), or pass --allow-non-release",
        escape(.image),
        escape(.profile)
    )]
    NotRelease { image: String, profile: String, env: String },
    /// The image carries no copy of the environment file (`in_image`).
    #[error(
        "{} carries no environment file for `{env}` ({in_image}): it was built before the environment was \
         committed, or git ignores the file; {} (nothing was changed)",
        escape(.image),
        build_again(.service_arg)
    )]
    NoEnvFileInImage { image: String, env: String, in_image: String, service_arg: String },
    /// The image's copy of the environment file does not parse.
    #[error(transparent)]
    ImageEnvFile(Box<boxcar_secrets::Error>),
    /// The image's copy of the environment file is not approved by this key.
    #[error(
        "{}'s copy of the environment file is not one this key approved, so the service would not start \
         on it: {why}\nhint: if the work tree's file is approved now, the image was built before that; {} \
         (nothing was changed)",
        escape(.image),
        build_again(.service_arg)
    )]
    NotApproved { image: String, why: Box<boxcar_secrets::Error>, service_arg: String },
    /// The image's run-time contract does not parse.
    #[error(transparent)]
    ImageServiceFile(Box<ApprovalError>),
    /// The image's run-time contract is not the one the environment approved.
    #[error(
        "{} was built from a boxcar.toml whose run-time contract environment `{env}` did not approve, so \
         the service would not start: {why}\nhint: have a holder of the key review boxcar.toml's change and \
         approve it (`cargo xtask approve {service_arg}--env {env}`), then {} (nothing was changed)",
        escape(.image),
        build_again(.service_arg)
    )]
    ContractNotApproved { image: String, env: String, why: Box<ApprovalError>, service_arg: String },
    /// The service's own check (`command`) refused the environment in the image.
    #[error(
        "the service's own check of environment `{env}` in the image failed (`{command}`); nothing was changed:\n  {}",
        .lines.join("\n  ")
    )]
    CheckFailed { env: String, command: String, lines: Vec<String> },

    // One container on a standalone engine.
    #[error("`{name}` runs as a Swarm service on this engine; deploy with --swarm, or `cargo xtask undeploy` first")]
    SwarmServiceHere { name: String },
    #[error("--network {network}: no such Docker network on this engine; nothing was changed")]
    NoNetwork { network: String },
    /// The key could not be written into its volume (`source` says why).
    #[error("the key could not be put in a volume; nothing was changed")]
    KeyVolume { source: Box<Error> },
    #[error("packing the key")]
    PackKey { source: std::io::Error },
    /// The engine refused the key file's upload into `volume`.
    #[error("writing the key into the volume {volume}: {message}")]
    WriteKey { volume: String, message: String },
    /// The engine refused the data's upload into `volume`.
    #[error("copying the data into {volume}: {message}")]
    CopyData { volume: String, message: String },
    /// The probe of the new image failed; the old container kept serving.
    #[error(
        "the new image did not become healthy: {why}; `{name}` keeps running the previous image, \
         nothing was changed\nlast log lines of the new container:\n{logs}"
    )]
    ProbeUnhealthy { name: String, why: String, logs: String },
    /// The old container could not be stopped; it runs again.
    #[error("nothing was changed")]
    StopPrevious { source: resources::Error },
    /// The stopped old container could not be renamed aside; it runs again.
    #[error("the previous container runs again; nothing was changed")]
    RenamePrevious { source: resources::Error },
    /// The new container failed; the old one runs again on its own data.
    #[error(
        "the new container did not become healthy: {why}; rolled back: `{name}` runs the previous \
         container again on its own data{}\nlast log lines of the new container:\n{logs}",
        if *.moved_port { " (on a new port: `cargo xtask status` shows it)" } else { "" }
    )]
    RolledBack { name: String, why: String, moved_port: bool, logs: String },
    /// A first deploy's container failed, and was removed.
    #[error("`{name}` did not become healthy: {why}; it was removed\nlast log lines:\n{logs}")]
    Unhealthy { name: String, why: String, logs: String },

    // A Swarm service.
    #[error(
        "--swarm: this engine is not a Swarm manager; nothing was changed\n\
         hint: `docker swarm init` makes it one, or deploy without --swarm to run a single container"
    )]
    NotManager,
    /// Several nodes, and an image not pinned by a registry digest.
    #[error(
        "this Swarm has {nodes} nodes, and each must run the same bytes: --image must be a registry reference \
         pinned by digest (REGISTRY/REPO@sha256:…), not {}; nothing was changed\n\
         hint: `cargo xtask image --push REGISTRY/REPO` pushes the image and prints that reference",
        escape(.image)
    )]
    UnpinnedImage { nodes: usize, image: String },
    /// More tasks on one host-mode port than nodes ready to take them.
    #[error(
        "--publish-mode host with port {port} runs at most one task per node, and {ready} node(s) are ready \
         for --replicas {replicas}; nothing was changed\n\
         hint: --publish 0 gives each task a free port, --publish-mode ingress shares one port, \
         or ask for at most {ready} replicas"
    )]
    TooFewNodes { port: u16, ready: usize, replicas: u64 },
    #[error(
        "`{name}` runs as a standalone container on this engine; `cargo xtask undeploy --env {env}` it first \
         (the data volume stays), or deploy under another name with --name"
    )]
    StandaloneHere { name: String, env: String },
    /// A first deploy's tasks failed (`report` says where and why); the service was removed.
    #[error("the service {name} did not start: {why}; it was removed\n{report}")]
    ServiceNotStarted { name: String, why: String, report: String },
    #[error("the service has no version")]
    NoServiceVersion,
    #[error("service version out of range")]
    ServiceVersion { source: std::num::TryFromIntError },
    /// An update failed and the engine rolled it back or paused it (`rolled_back`).
    #[error(
        "the update of {name} failed after {:.1} s: {message}; {}\n{report}",
        .after.as_secs_f64(),
        if *.rolled_back {
            "the engine rolled it back: the previous version runs"
        } else {
            "the update is paused; `cargo xtask status` shows the tasks"
        }
    )]
    UpdateFailed { name: String, after: Duration, message: String, rolled_back: bool, report: String },
    /// An update still running after the deploy's timeout (`state` as the engine said it).
    #[error(
        "the update of {name} did not converge within {} (state: {state}); `cargo xtask status` shows it",
        humantime::format_duration(*.timeout)
    )]
    UpdateTimeout { name: String, timeout: Duration, state: String },
    #[error("no service `{name}`")]
    NoService { name: String },

    // Status, logs, undeploy.
    /// Nothing of that name; `env`, where known, for the command that deploys it.
    #[error(
        "nothing named `{name}` is deployed on this engine{}",
        .env.as_ref().map(|env| format!("; `cargo xtask deploy --env {env}` deploys it")).unwrap_or_default()
    )]
    NotDeployed { name: String, env: Option<String> },
    /// Writing the logs to this process's output.
    #[error(transparent)]
    Output(std::io::Error),
}

/// What to do about an image built before the environment or contract it
/// needs: build it again (`--service NAME ` in `service_arg` where needed).
pub(super) fn build_again(service_arg: &str) -> String {
    format!("build the image again with `cargo xtask image {}` and deploy that", service_arg.trim_end())
        .replace(" ` and", "` and")
}

pub(crate) use crate::vocab::show::chain;

#[cfg(test)]
mod tests {
    use super::*;

    /// The messages are the ones the command line printed before the enum:
    /// a few whose text is put together from parts, written out whole.
    #[test]
    fn messages_read_as_before() {
        let deployed = |env: Option<&str>| Error::NotDeployed { name: "svc-prod".into(), env: env.map(str::to_owned) };
        assert_eq!(deployed(None).to_string(), "nothing named `svc-prod` is deployed on this engine");
        assert_eq!(
            deployed(Some("prod")).to_string(),
            "nothing named `svc-prod` is deployed on this engine; `cargo xtask deploy --env prod` deploys it"
        );
        let rolled =
            |moved_port| Error::RolledBack { name: "s".into(), why: "w".into(), moved_port, logs: "  | l".into() };
        assert_eq!(
            rolled(true).to_string(),
            "the new container did not become healthy: w; rolled back: `s` runs the previous container again on its \
             own data (on a new port: `cargo xtask status` shows it)\nlast log lines of the new container:\n  | l"
        );
        assert!(rolled(false).to_string().contains("on its own data\nlast log lines"));
        let update = |rolled_back| Error::UpdateFailed {
            name: "s".into(),
            after: Duration::from_millis(1250),
            message: "m".into(),
            rolled_back,
            report: "r".into(),
        };
        assert_eq!(
            update(true).to_string(),
            "the update of s failed after 1.2 s: m; the engine rolled it back: the previous version runs\nr"
        );
        assert_eq!(
            update(false).to_string(),
            "the update of s failed after 1.2 s: m; the update is paused; `cargo xtask status` shows the tasks\nr"
        );
        let timeout = Error::UpdateTimeout { name: "s".into(), timeout: Duration::from_secs(120), state: "x".into() };
        assert_eq!(
            timeout.to_string(),
            "the update of s did not converge within 2m (state: x); `cargo xtask status` shows it"
        );
        let missing = |service_arg: &str| Error::NoEnvFileInImage {
            image: "svc:latest".into(),
            env: "prod".into(),
            in_image: "/etc/boxcar/prod.toml".into(),
            service_arg: service_arg.into(),
        };
        assert!(
            missing("")
                .to_string()
                .ends_with("build the image again with `cargo xtask image` and deploy that (nothing was changed)")
        );
        assert!(missing("--service svc ").to_string().contains("`cargo xtask image --service svc` and deploy that"));
        let pull = Error::Pull { image: "r/\u{1b}x".into(), why: "no\u{1b}".into(), hint: "h".into() };
        assert!(!pull.to_string().contains('\u{1b}') && pull.to_string().ends_with("; nothing was changed\nhint: h"));
    }

    /// A cause is shown after its context, as the command line shows it.
    #[test]
    fn a_chain_reads_like_the_command_line() {
        let refused = || bollard::errors::Error::DockerResponseServerError { status_code: 500, message: "boom".into() };
        let api = resources::Error::Api { doing: "stopping svc".into(), source: refused() };
        let stop = Error::StopPrevious { source: api };
        assert_eq!(chain(&stop), format!("nothing was changed: stopping svc: {}", refused()));
        let key = Error::KeyVolume { source: Box::new(Error::PackKey { source: std::io::Error::other("full") }) };
        assert_eq!(chain(&key), "the key could not be put in a volume; nothing was changed: packing the key: full");
    }
}
