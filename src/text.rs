//! Text for messages: user-supplied strings shown in one bounded, printable line.

/// `s` with control characters escaped (a newline shows as `\n`), cut to about `max`
/// bytes with an ellipsis: a name or path from a request can be long or hostile, and
/// an error message stays one readable line.
pub fn shorten(s: &str, max: usize) -> String {
    let mut out = String::new();
    for c in s.chars() {
        let piece: String = if c.is_control() {
            c.escape_default().collect()
        } else {
            c.to_string()
        };
        if out.len() + piece.len() > max {
            out.push('…');
            break;
        }
        out.push_str(&piece);
    }
    out
}

/// An I/O error in words, without Rust's " (os error N)" suffix.
pub fn io_words(e: &std::io::Error) -> String {
    let s = e.to_string();
    match s.rfind(" (os error ") {
        Some(i) if s.ends_with(')') => s[..i].to_owned(),
        _ => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_bounded_line() {
        assert_eq!(shorten("plain", 10), "plain");
        assert_eq!(shorten("a\nb", 10), "a\\nb");
        let long = "é".repeat(5000);
        let s = shorten(&long, 100);
        assert!(s.len() <= 100 + '…'.len_utf8() && s.ends_with('…'), "{s}");
        let e = std::io::Error::from_raw_os_error(libc::ENOENT);
        assert_eq!(io_words(&e), "No such file or directory");
    }
}
