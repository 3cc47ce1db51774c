//! The operations the commands share: build an image, publish it, deploy it,
//! read an environment's history and decide what it means, scan for leaked
//! keys, run a service's own commands. Each speaks the vocabulary below it
//! and the adapters below that; none knows which command called it.

#[cfg(feature = "engine")]
pub mod build;
#[cfg(feature = "engine")]
pub mod deploy;
pub(crate) mod history;
pub(crate) mod leaks;
#[cfg(feature = "engine")]
pub(crate) mod manifests;
#[cfg(feature = "engine")]
pub mod publish;
#[cfg(feature = "engine")]
pub mod resources;
pub mod service_cmd;
pub(crate) mod trust;
