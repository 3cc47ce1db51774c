//! Every label and annotation boxcar puts on what it creates, defined here
//! and nowhere else (a tidy test finds the prefix anywhere else): the
//! engine's resources of a deployment, and the images it builds.

/// The prefix, written once: every name below is built from it.
macro_rules! prefix {
    () => {
        "dev.boxcar"
    };
}

/// What every boxcar label starts with.
pub const PREFIX: &str = concat!(prefix!(), ".");
/// The deployment's name, on everything a deploy creates.
pub const DEPLOYMENT: &str = concat!(prefix!(), ".deployment");
/// The environment deployed.
pub const ENV: &str = concat!(prefix!(), ".env");
/// The key id of the secret key the deployment holds.
pub const KEY_ID: &str = concat!(prefix!(), ".key-id");
/// What a resource is for (`app`, `key`, `data`, `probe`, `loader`, `check`).
pub const ROLE: &str = concat!(prefix!(), ".role");
/// Hash of the settings a deploy applied, so a second identical deploy
/// changes nothing.
pub const SPEC: &str = concat!(prefix!(), ".spec");
/// The image a Swarm service runs (tags move; IDs and digests do not).
pub const IMAGE_ID: &str = concat!(prefix!(), ".image-id");
/// On a standalone data volume: the generation of the data it holds.
pub const DATA: &str = concat!(prefix!(), ".data");
/// On an image: the build profile, when it is not a release build (a release
/// build carries none, as every image did before profiles existed).
pub const PROFILE: &str = concat!(prefix!(), ".profile");
/// On an image built from uncommitted changes.
pub const DIRTY: &str = concat!(prefix!(), ".dirty");
/// Kubernetes annotation on the pod template: the environment file's
/// checksum, so a changed file rolls the pods.
pub const ENV_CHECKSUM_ANNOTATION: &str = concat!(prefix!(), "/env-checksum");
