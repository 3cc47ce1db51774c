//! Text from a file made safe for a terminal or a log: control characters
//! become visible escapes, so a hostile file cannot move the cursor, clear
//! the screen or forge a log line.

use std::borrow::Cow;

/// `text` with every control character (C0, DEL, C1) and the Unicode line and
/// paragraph separators written as `\u{…}` escapes; other text unchanged.
pub fn escape(text: &str) -> Cow<'_, str> {
    let bad = |c: char| c.is_control() || matches!(c, '\u{2028}' | '\u{2029}');
    if !text.chars().any(bad) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if bad(c) {
            out.push_str(&c.escape_unicode().to_string());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_become_visible() {
        assert!(matches!(escape("plain text/é"), Cow::Borrowed(_)));
        assert_eq!(escape("a\x1b[2Jb"), "a\\u{1b}[2Jb");
        assert_eq!(escape("x\ry\u{85}z\u{2028}\u{2029}\n"), "x\\u{d}y\\u{85}z\\u{2028}\\u{2029}\\u{a}");
    }
}
