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
    strip_os_error(&e.to_string())
}

/// `s` without the " (os error N)" that Rust puts after an errno's words.
pub fn strip_os_error(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find(" (os error ") {
        let tail = &rest[i + " (os error ".len()..];
        let digits = tail.bytes().take_while(u8::is_ascii_digit).count();
        out.push_str(&rest[..i]);
        if digits > 0 && tail[digits..].starts_with(')') {
            rest = &tail[digits + 1..];
        } else {
            out.push_str(" (os error ");
            rest = tail;
        }
    }
    out.push_str(rest);
    out
}

/// Lays out rows in columns as wide as their widest cell (a long path never pushes
/// the next column out of line); columns whose `right[i]` is true are right-aligned,
/// the last column is never padded.
pub fn table(header: &[&str], rows: &[Vec<String>], right: &[bool]) -> String {
    let n = header.len();
    let width = |i: usize| {
        rows.iter()
            .map(|r| r[i].chars().count())
            .chain([header[i].chars().count()])
            .max()
            .unwrap_or(0)
    };
    let widths: Vec<usize> = (0..n).map(width).collect();
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i > 0 {
                out.push_str("  ");
            }
            let pad = widths[i].saturating_sub(c.chars().count());
            if i + 1 == n && !right[i] {
                out.push_str(c);
            } else if right[i] {
                out.push_str(&" ".repeat(pad));
                out.push_str(c);
            } else {
                out.push_str(c);
                out.push_str(&" ".repeat(pad));
            }
        }
        out.push('\n');
        out
    };
    let mut out = line(header.to_vec());
    for r in rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_line_up() {
        let rows = vec![
            vec!["/a/very/long/zone/path".to_string(), "3".into(), "x".into()],
            vec!["/b".to_string(), "12".into(), "y".into()],
        ];
        let t = table(&["ZONE", "N", "LAST"], &rows, &[false, true, false]);
        assert_eq!(
            t,
            "ZONE                     N  LAST\n/a/very/long/zone/path   3  x\n/b                      12  y\n"
        );
    }

    #[test]
    fn one_bounded_line() {
        assert_eq!(shorten("plain", 10), "plain");
        assert_eq!(shorten("a\nb", 10), "a\\nb");
        let long = "é".repeat(5000);
        let s = shorten(&long, 100);
        assert!(s.len() <= 100 + '…'.len_utf8() && s.ends_with('…'), "{s}");
        let e = std::io::Error::from_raw_os_error(libc::ENOENT);
        assert_eq!(io_words(&e), "No such file or directory");
        assert_eq!(strip_os_error("a: x (os error 2); b (os error 13)"), "a: x; b");
        assert_eq!(strip_os_error("keep (os error x)"), "keep (os error x)");
    }
}
