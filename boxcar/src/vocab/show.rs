//! Text from a committed file (a name, a path, a service's output) made safe
//! for a terminal: control characters become visible escapes, so a hostile
//! file cannot move the cursor, clear the screen or hide a line.

pub(crate) use boxcar_secrets::escape;

/// Bytes for a terminal: UTF-8 text as [`escape`] shows it; anything else
/// with every byte outside printable ASCII written `\xNN`.
pub(crate) fn escape_bytes(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(text) => escape(text).into_owned(),
        Err(_) => bytes.escape_ascii().to_string(),
    }
}

/// Problems found in one pass, each on its own indented line: what an error
/// that lists them shows after its summary.
pub(crate) fn lines(problems: &[String]) -> String {
    problems.iter().map(|p| format!("\n  {p}")).collect()
}

/// An error and its causes on one line, as `cause: cause` (what the command
/// line prints for a chain).
pub(crate) fn chain(error: &dyn std::error::Error) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        out.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_become_visible() {
        assert_eq!(escape_bytes("é\x1b".as_bytes()), "é\\u{1b}");
        assert_eq!(escape_bytes(b"a\xff\x1b"), "a\\xff\\x1b");
    }
}
