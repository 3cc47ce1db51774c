//! boxcar's end-to-end suite: shared pieces the crates' integration tests use.
//!
//! - [`standin`]: a Telegram Bot API stand-in with fault injection, so the app
//!   is tested against the real JSON shapes without a network or a token.
//! - The `standin` binary (`src/bin/standin.rs`): the same stand-in as a
//!   program, open to any well-formed token and with a chat page, for
//!   `cargo xtask demo` on a machine without a real bot token.

pub mod standin;
