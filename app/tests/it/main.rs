//! App end-to-end tests against the Bot API stand-in.
