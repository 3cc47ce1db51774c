//! The vocabulary every layer above speaks: the service contract, the
//! deployment's names and labels, the defaults, the project a command works
//! in, the key folder, and how text from a file is shown. Nothing here talks
//! to an engine or a registry.

pub mod base;
pub mod contract;
pub mod defaults;
pub(crate) mod entries;
pub mod keys;
pub mod labels;
pub(crate) mod layout;
pub mod plan;
pub mod project;
pub(crate) mod show;
