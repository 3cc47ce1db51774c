//! The bottom layer: what boxcar talks to outside itself, with no word of
//! boxcar's vocabulary: the Docker engine (bollard), git (its command
//! line), and this machine (packages, the daemon, a Debian bootstrap).

#[cfg(feature = "engine")]
pub mod engine;
pub mod git;
pub mod host;
