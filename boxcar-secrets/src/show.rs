//! Text from a file made safe for a terminal or a log: control characters,
//! and every code point that is invisible or reorders what is around it,
//! become visible escapes, so a hostile file cannot move the cursor, clear
//! the screen, forge a log line, or show a reviewer something else than what
//! it holds (a right-to-left override that reverses a URL, a zero-width
//! character between two lookalike names, a blank that is not a space).

use std::borrow::Cow;

use unicode_properties::{GeneralCategory, UnicodeGeneralCategory as _};

/// `text` with every code point that [`hidden`] names written as a `\u{…}`
/// escape; other text unchanged.
pub fn escape(text: &str) -> Cow<'_, str> {
    if !text.chars().any(hidden) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if hidden(c) {
            out.push_str(&c.escape_unicode().to_string());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Whether `c` must be shown escaped: controls (C0, DEL, C1), format
/// characters (the bidirectional controls U+202A–U+202E and U+2066–U+2069,
/// zero-width spaces and joiners, the byte-order mark, soft hyphen, tags),
/// line and paragraph separators, spaces other than U+0020, private-use and
/// unassigned code points, and the letters and marks that draw nothing
/// (Hangul fillers, the combining grapheme joiner, variation selectors).
pub(crate) fn hidden(c: char) -> bool {
    use GeneralCategory as G;
    if c == ' ' {
        return false;
    }
    matches!(
        c.general_category(),
        G::Control
            | G::Format
            | G::LineSeparator
            | G::ParagraphSeparator
            | G::SpaceSeparator
            | G::PrivateUse
            | G::Surrogate
            | G::Unassigned
    ) || matches!(
        c,
        '\u{115f}' | '\u{1160}' | '\u{3164}' | '\u{ffa0}' | '\u{2800}' | '\u{034f}' | '\u{fe00}'..='\u{fe0f}'
            | '\u{e0100}'..='\u{e01ef}'
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_become_visible() {
        assert!(matches!(escape("plain text/é, ключ, 鍵, emoji 🔑"), Cow::Borrowed(_)));
        assert_eq!(escape("a\x1b[2Jb"), "a\\u{1b}[2Jb");
        assert_eq!(escape("x\ry\u{85}z\u{2028}\u{2029}\n\t"), "x\\u{d}y\\u{85}z\\u{2028}\\u{2029}\\u{a}\\u{9}");
    }

    #[test]
    fn what_reorders_or_hides_text_becomes_visible() {
        // A right-to-left override makes "https://evil.example/moc.elgoog" read
        // as something else; every bidirectional control is escaped.
        for c in ['\u{202a}', '\u{202b}', '\u{202c}', '\u{202d}', '\u{202e}', '\u{2066}', '\u{2067}', '\u{2068}'] {
            assert!(hidden(c), "{:?}", c);
        }
        assert_eq!(escape("admins = [1, 2\u{2069}]"), "admins = [1, 2\\u{2069}]");
        // Zero-width and other invisible code points.
        for c in [
            '\u{200b}',
            '\u{200c}',
            '\u{200d}',
            '\u{2060}',
            '\u{feff}',
            '\u{ad}',
            '\u{180e}',
            '\u{e0041}',
            '\u{a0}',
            '\u{3000}',
            '\u{2007}',
            '\u{115f}',
            '\u{3164}',
            '\u{ffa0}',
            '\u{2800}',
            '\u{34f}',
            '\u{fe0f}',
            '\u{e0100}',
            '\u{e000}',
            '\u{10ffff}',
        ] {
            assert!(hidden(c), "{:?}", c);
            assert_eq!(escape(&format!("a{c}b")), format!("a{}b", c.escape_unicode()));
        }
        // Letters, marks that draw, symbols and the plain space stay.
        for c in [' ', 'a', 'é', '\u{301}', 'ж', '鍵', '€', '🔑', '_', '-'] {
            assert!(!hidden(c), "{:?}", c);
        }
    }
}
