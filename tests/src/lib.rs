//! boxcar's end-to-end suite: shared pieces the crates' integration tests use.
//!
//! - [`standin`]: a Telegram Bot API stand-in with fault injection, so the app
//!   is tested against the real JSON shapes without a network or a token.

pub mod standin;
