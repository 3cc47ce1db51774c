//! The operations the commands share: build an image, publish it, deploy it,
//! read an environment's history and decide what it means, scan for leaked
//! keys, run a service's own commands. Each speaks the vocabulary below it
//! and the adapters below that; none knows which command called it.

pub mod build;
pub mod deploy;
pub(crate) mod history;
pub(crate) mod leaks;
pub(crate) mod manifests;
pub mod publish;
pub mod resources;
pub mod service_cmd;
pub(crate) mod trust;
