//! How every reader reads an environment file's TOML (docs/FORMAT.md,
//! "Reading a file"): CR LF as LF everywhere, TOML 1.0 only.
//!
//! Two readers that parse the same bytes differently disagree on what was
//! approved. TOML lets a parser keep or drop the CR of a line break inside a
//! multi-line string (the `toml` crate keeps it, Python's `tomllib` drops it),
//! and the `toml` crate also reads TOML 1.1 (`\e`, `\xHH`, line breaks in
//! inline tables), which a TOML 1.0 parser refuses. So line breaks are made
//! LF before parsing, and the constructs TOML 1.1 added are refused.
//!
//! The check for TOML 1.1 walks the tokens of `toml_parser`'s lexer (the one
//! the `toml` crate parses with), so strings, comments and brackets are told
//! apart by a real TOML lexer; what is checked on top is small: escapes in
//! basic strings, and what sits directly inside an inline table.

use std::borrow::Cow;

use toml_parser::lexer::TokenKind;

/// Parses `text` as an environment file's TOML, as every reader must: CR LF
/// read as LF, TOML 1.0 only. The error is one line, `line L, column C: …`.
pub fn read_toml(text: &str) -> Result<toml::Table, String> {
    // Before the pairs are made LF: in CR CR LF, the first CR is a CR alone.
    let bytes = text.as_bytes();
    if let Some(at) = (0..bytes.len()).find(|&i| bytes[i] == b'\r' && bytes.get(i + 1) != Some(&b'\n')) {
        let what = "a carriage return that is not followed by a line feed";
        return Err(crate::file::toml_message(text, what, Some(at..at)));
    }
    let text = lf_line_breaks(text);
    toml_1_0_only(&text)?;
    text.parse::<toml::Table>().map_err(|e| crate::file::toml_message(&text, e.message(), e.span()))
}

/// `text` with every CR LF pair made LF (a CR alone was refused before).
fn lf_line_breaks(text: &str) -> Cow<'_, str> {
    if text.contains("\r\n") { Cow::Owned(text.replace("\r\n", "\n")) } else { Cow::Borrowed(text) }
}

/// Refuses what TOML 1.1 added and TOML 1.0 does not read: `\e` and `\xHH`
/// escapes in basic strings; a line break, a comment or a trailing comma
/// directly inside an inline table. Text that is not TOML at all is left for
/// the parser to report.
fn toml_1_0_only(text: &str) -> Result<(), String> {
    let source = toml_parser::Source::new(text);
    // The brackets open around the current token: `{` for an inline table,
    // `[` for an array or a table header.
    let mut open: Vec<TokenKind> = Vec::new();
    // A comma directly inside an inline table, waiting to see what follows.
    let mut comma_at: Option<usize> = None;
    for token in source.lex() {
        let kind = token.kind();
        let span = token.span();
        let in_inline_table = open.last() == Some(&TokenKind::LeftCurlyBracket);
        match kind {
            TokenKind::Whitespace => continue,
            TokenKind::LeftCurlyBracket | TokenKind::LeftSquareBracket => open.push(kind),
            TokenKind::RightCurlyBracket => {
                if let Some(at) = comma_at.filter(|_| in_inline_table) {
                    return Err(refused(text, at, "a comma before the `}` that closes an inline table"));
                }
                open.pop();
            }
            TokenKind::RightSquareBracket => {
                open.pop();
            }
            TokenKind::Newline if in_inline_table => {
                return Err(refused(text, span.start(), "a line break inside an inline table"));
            }
            TokenKind::Comment if in_inline_table => {
                return Err(refused(text, span.start(), "a comment inside an inline table"));
            }
            TokenKind::BasicString | TokenKind::MlBasicString => {
                let raw = &text[span.start()..span.end()];
                if let Some((offset, escape)) = new_escape(raw) {
                    let what = match escape {
                        'e' => "the escape `\\e` (write `\\u001b`)",
                        _ => "an escape `\\xHH` (write `\\u00HH`)",
                    };
                    return Err(refused(text, span.start() + offset, what));
                }
            }
            _ => {}
        }
        comma_at = (kind == TokenKind::Comma && in_inline_table).then_some(span.start());
    }
    Ok(())
}

/// The first `\e` or `\x` escape in the raw text of a basic string, with its
/// byte offset. A backslash escapes the character after it, so `\\e` is a
/// backslash and an `e`.
fn new_escape(raw: &str) -> Option<(usize, char)> {
    let mut chars = raw.char_indices();
    while let Some((at, c)) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some((_, escape @ ('e' | 'x'))) => return Some((at, escape)),
                _ => continue,
            }
        }
    }
    None
}

fn refused(text: &str, at: usize, what: &str) -> String {
    crate::file::toml_message(
        text,
        &format!("{what} is TOML 1.1; environment files are TOML 1.0, so that every reader reads them alike"),
        Some(at..at),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crlf_is_lf_everywhere_and_escapes_stay() {
        let lf = read_toml("a = \"\"\"\nx\ny\"\"\"\nb = 'z'\n").unwrap();
        let crlf = read_toml("a = \"\"\"\r\nx\r\ny\"\"\"\r\nb = 'z' # note\r\n").unwrap();
        assert_eq!(lf, crlf);
        assert_eq!(crlf["a"].as_str(), Some("x\ny"));
        let literal = read_toml("a = '''\r\nx\r\ny'''\r\n").unwrap();
        assert_eq!(literal["a"].as_str(), Some("x\ny"));
        // A CR written as an escape is a character of the value.
        assert_eq!(read_toml("a = \"x\\r\\ny\"").unwrap()["a"].as_str(), Some("x\r\ny"));
        // A bare CR is no TOML at all, nor is the first CR of CR CR LF, nor a CR at the end.
        let cases = [
            ("a = '''x\ry'''", "line 1, column 9"),
            ("a = 1 # x\r\r\n", "line 1, column 10"),
            ("a = 1\r", "line 1, column 6"),
        ];
        for (text, at) in cases {
            let err = read_toml(text).unwrap_err();
            assert_eq!(err, format!("{at}: a carriage return that is not followed by a line feed"), "{text:?}");
        }
    }

    #[test]
    fn toml_1_1_is_refused_with_its_line() {
        let cases = [
            ("a = \"x\\ey\"", "line 1, column 7: the escape `\\e` (write `\\u001b`) is TOML 1.1"),
            ("b = 1\na = \"\"\"x\\x41\"\"\"", "line 2, column 9: an escape `\\xHH` (write `\\u00HH`) is TOML 1.1"),
            ("a = { b = 1,\n c = 2 }", "line 1, column 13: a line break inside an inline table is TOML 1.1"),
            ("a = {\n}", "line 1, column 6: a line break inside an inline table is TOML 1.1"),
            ("a = { b = 1 # c\n}", "line 1, column 13: a comment inside an inline table is TOML 1.1"),
            ("a = { b = 1, }", "line 1, column 12: a comma before the `}` that closes an inline table is TOML 1.1"),
            ("a = { b = { c = 1, } }", "line 1, column 18: a comma before the `}`"),
        ];
        for (text, expected) in cases {
            let err = read_toml(text).unwrap_err();
            assert!(err.starts_with(expected), "{text:?}: {err}");
            assert!(err.ends_with("so that every reader reads them alike"), "{err}");
        }
    }

    #[test]
    fn toml_1_0_reads_as_it_is() {
        let ok = [
            // An escaped backslash before `e` or `x`, and the same letters in other strings.
            "a = \"x\\\\ey\\\\x41\"",
            "a = 'x\\ey'",
            "a = '''x\\x41'''",
            "a = \"\\u001b \\u0041 \\t\"",
            // Line breaks, comments and trailing commas in arrays, also inside inline tables.
            "a = [\n 1, # one\n 2,\n]",
            "a = { b = [\n 1,\n 2,\n], c = \"\"\"\nline\n\"\"\" }",
            "a = { b = 1, c = { d = 2 } }",
            // Table headers and arrays of tables.
            "[t]\nx = 1\n[[u]]\ny = [1, 2]\n# {,\n",
            "a = \"{,\"\nb = '}'",
        ];
        for text in ok {
            assert!(read_toml(text).is_ok(), "{text:?}: {:?}", read_toml(text));
        }
        assert_eq!(new_escape(r#""\\e\x""#), Some((4, 'x')));
        assert_eq!(new_escape(r#""\\\\e""#), None);
    }
}
