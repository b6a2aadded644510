//! Text: user-supplied strings shown in one bounded, printable line, hex as the
//! keystore, zone markers and the key-provider protocol write bytes, and the clock
//! as they record it.

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

/// Lower-case hex of `bytes`. The string is allocated once at its final size, so that
/// the hex of a secret (which the caller wraps in `Zeroizing`) leaves no partial copy
/// behind in freed memory.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(2 * bytes.len());
    for &b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    s
}

/// Decodes `s`, which must be exactly `2 * out.len()` hex digits (either case, nothing
/// else: no sign, no space), into `out`; false if it is not. Decoding into the caller's
/// buffer lets a secret go straight into its `Zeroizing` home, with no copy in between.
/// On failure `out` may be partly written.
pub fn unhex_into(s: &str, out: &mut [u8]) -> bool {
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    }
    let s = s.as_bytes();
    if s.len() != 2 * out.len() {
        return false;
    }
    for (o, pair) in out.iter_mut().zip(s.chunks_exact(2)) {
        match (nibble(pair[0]), nibble(pair[1])) {
            (Some(high), Some(low)) => *o = (high << 4) | low,
            _ => return false,
        }
    }
    true
}

/// Decodes hex of exactly `N` bytes (ids, MACs, wrapped keys: nothing secret; decode
/// secrets with [`unhex_into`]).
pub fn unhex<const N: usize>(s: &str) -> Option<[u8; N]> {
    let mut out = [0u8; N];
    unhex_into(s, &mut out).then_some(out)
}

/// Decodes hex of any whole number of bytes (a salt, whose length the file decides).
pub fn unhex_vec(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    let mut out = vec![0u8; s.len() / 2];
    unhex_into(s, &mut out).then_some(out)
}

/// Seconds since the Unix epoch (0 for a clock set before it): the creation times the
/// keystore records.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
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

    #[test]
    fn hex_round_trips_and_refuses_anything_else() {
        let bytes: Vec<u8> = (0..=255).collect();
        let h = hex(&bytes);
        assert_eq!(&h[..8], "00010203");
        assert_eq!(&h[h.len() - 4..], "feff");
        assert_eq!(unhex_vec(&h).unwrap(), bytes);
        assert_eq!(unhex_vec(&h.to_uppercase()).unwrap(), bytes);
        assert_eq!(unhex::<2>("0aFf"), Some([0x0a, 0xff]));
        assert_eq!(unhex_vec(""), Some(Vec::new()));
        for bad in ["0", "0g", "+a", "-a", " a", "é0", "abc"] {
            assert!(unhex_vec(bad).is_none(), "{bad:?}");
        }
        assert!(unhex::<2>("0a").is_none(), "too short");
        assert!(unhex::<1>("0a0b").is_none(), "too long");
        let mut out = [0u8; 3];
        assert!(unhex_into("a1b2c3", &mut out));
        assert_eq!(out, [0xa1, 0xb2, 0xc3]);
        assert!(!unhex_into("a1b2", &mut out));
        assert!(unix_now() > 1_600_000_000);
    }
}
