//! Text helpers every layer uses for its messages. A leaf: it imports nothing of the crate.

/// `text` with its control characters escaped (`\n` as the two characters `\`, `n`), so that a
/// message quoting untrusted input (a file, a peer's JSON, a request path) stays on one line and
/// reads as what it is: C0 and C1 controls (`U+009B` CSI, `U+0085` NEL), the line and paragraph
/// separators `U+2028`/`U+2029`, and the marks that reorder text on a terminal (bidi embeddings,
/// overrides and isolates, `U+202A`–`U+202E`, `U+2066`–`U+2069`, `U+200E`/`U+200F`, `U+061C`)
/// are written as `\u{…}`.
pub(crate) fn one_line(text: &str) -> String {
    escaped(text, &[])
}

/// [`one_line`] for text that a log line puts between double quotes (the access log's request
/// line): `"` and `\` are escaped too (`\"`, `\\`), so the quoted field cannot be closed early.
pub(crate) fn quoted_field(text: &str) -> String {
    escaped(text, &['"', '\\'])
}

/// True for the characters [`one_line`] escapes.
fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}'
                | '\u{2029}'
                | '\u{202A}'..='\u{202E}'
                | '\u{2066}'..='\u{2069}'
                | '\u{200E}'
                | '\u{200F}'
                | '\u{061C}'
        )
}

fn escaped(text: &str, also: &[char]) -> String {
    let mut line = String::with_capacity(text.len());
    for c in text.chars() {
        if needs_escape(c) {
            line.extend(c.escape_default());
        } else if also.contains(&c) {
            line.push('\\');
            line.push(c);
        } else {
            line.push(c);
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_escapes_controls_separators_and_bidi_marks() {
        assert_eq!(
            one_line("a\nb\u{9b}31mc\u{85}d\u{202e}e\u{2028}f\u{2066}g\u{7f}"),
            "a\\nb\\u{9b}31mc\\u{85}d\\u{202e}e\\u{2028}f\\u{2066}g\\u{7f}"
        );
        assert_eq!(one_line("é ü \"q\" \\"), "é ü \"q\" \\");
        assert_eq!(quoted_field("/a\"b\\c\u{202e}"), "/a\\\"b\\\\c\\u{202e}");
    }
}
