//! Text helpers every layer uses for its messages. A leaf: it imports nothing of the crate.

/// `text` with its control characters escaped (`\n` as the two characters `\`, `n`), so that a
/// message quoting untrusted input (a file, a peer's JSON) stays on one line.
pub(crate) fn one_line(text: &str) -> String {
    let mut line = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            line.extend(c.escape_default());
        } else {
            line.push(c);
        }
    }
    line
}
