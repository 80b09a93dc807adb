//! Human-readable numbers shared by the CLI tables and the studio.

/// `1234567` → `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Bytes with a binary unit: `80.2 KiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// A signed margin in bytes: `+520.0 KiB`, `-84.5 KiB`.
pub fn signed_bytes(margin: i64) -> String {
    let sign = if margin < 0 { '-' } else { '+' };
    format!("{sign}{}", bytes(margin.unsigned_abs()))
}

/// Large counts with a decimal suffix: `2.31 M`, `1.05 G`.
pub fn si(n: u64) -> String {
    let value = n as f64;
    match n {
        0..1_000 => n.to_string(),
        1_000..1_000_000 => format!("{:.2} k", value / 1e3),
        1_000_000..1_000_000_000 => format!("{:.2} M", value / 1e6),
        _ => format!("{:.2} G", value / 1e9),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(1234567), "1,234,567");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(2048), "2.0 KiB");
        assert_eq!(si(2_310_000), "2.31 M");
        assert_eq!(signed_bytes(-2048), "-2.0 KiB");
        assert_eq!(signed_bytes(0), "+0 B");
    }
}

/// `text` safe to print on a terminal: control characters (escape sequences, NUL, CR/LF,
/// DEL, C1 controls) written as `\u{1b}`-style escapes, everything else as it is.
pub fn terminal_safe(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out
}

/// How many terminal columns `text` takes (CJK characters take two, combining marks none).
pub fn display_width(text: &str) -> usize {
    unicode_width::UnicodeWidthStr::width(text)
}

/// `text` made terminal-safe and fitted to exactly `width` columns: cut on a character
/// boundary with `…` when longer, padded with spaces when shorter.
pub fn fit(text: &str, width: usize) -> String {
    let safe = terminal_safe(text);
    let mut out = String::new();
    let mut used = 0;
    if display_width(&safe) > width {
        for c in safe.chars() {
            let w = unicode_width::UnicodeWidthChar::width(c).unwrap_or(0);
            if used + w + 1 > width {
                break;
            }
            out.push(c);
            used += w;
        }
        out.push('…');
        used += 1;
    } else {
        out = safe;
        used = display_width(&out);
    }
    out.extend(std::iter::repeat_n(' ', width.saturating_sub(used)));
    out
}

#[cfg(test)]
mod terminal_tests {
    use super::*;

    #[test]
    fn names_are_escaped_cut_on_characters_and_aligned_by_display_width() {
        assert_eq!(
            terminal_safe("a\x1b[2Jb\0c\r\n"),
            "a\\u{1b}[2Jb\\u{0}c\\u{d}\\u{a}"
        );
        let long = "ü".repeat(300);
        let cut = fit(&long, 10);
        assert_eq!(display_width(&cut), 10);
        assert!(cut.ends_with('…'));
        // CJK takes two columns: padding follows the display width, not the bytes.
        let cjk = fit("日本語", 8);
        assert_eq!(cjk, "日本語  ");
        assert_eq!(display_width(&fit("日本語の層です", 7)), 7);
        assert_eq!(fit("ok", 4), "ok  ");
    }
}
