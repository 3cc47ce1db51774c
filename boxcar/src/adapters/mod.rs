//! The bottom layer: what boxcar talks to outside itself, with no word of
//! boxcar's vocabulary: the Docker engine (bollard) and git (its command line).

#[cfg(feature = "engine")]
pub mod engine;
pub mod git;
