//! Memory sizes as written in configs and on command lines: `512M`, `2G`, `65536`.

use alloc::format;
use alloc::string::String;
use core::fmt;

/// Why a size could not be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SizeError {
    /// Nothing was written.
    Empty,
    /// The text is not `<digits>[K|M|G|T]`.
    Malformed {
        /// The text as written.
        text: String,
    },
    /// The value does not fit in 64 bits.
    Overflow {
        /// The text as written.
        text: String,
    },
    /// A negative number.
    Negative {
        /// The value as written.
        value: i64,
    },
}

impl fmt::Display for SizeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SizeError::Empty => f.write_str(
                "the size is empty; write a number with an optional K, M or G suffix, e.g. \"512M\"",
            ),
            SizeError::Malformed { text } => write!(
                f,
                "\"{text}\" is not a size; write a number with an optional K, M, G or T suffix \
                 (powers of 1024), e.g. \"512M\" or 536870912"
            ),
            SizeError::Overflow { text } => write!(
                f,
                "\"{text}\" overflows 64 bits; write a size below 16E, e.g. \"4G\""
            ),
            SizeError::Negative { value } => {
                write!(f, "{value} is negative; a size is a positive number of bytes")
            }
        }
    }
}

/// Parses `<digits>[K|M|G|T][i][B]` (case-insensitive suffix, powers of 1024), e.g. `512M`,
/// `2G`, `64KiB`, `4096`. Underscores between digits are allowed (`1_048_576`).
pub fn parse_size(text: &str) -> Result<u64, SizeError> {
    let t = text.trim();
    if t.is_empty() {
        return Err(SizeError::Empty);
    }
    let digits_end = t
        .char_indices()
        .find(|&(_, c)| !(c.is_ascii_digit() || c == '_'))
        .map_or(t.len(), |(i, _)| i);
    let (num, suffix) = t.split_at(digits_end);
    let malformed = || SizeError::Malformed { text: t.into() };
    if num.is_empty() || num.starts_with('_') || num.ends_with('_') {
        return Err(malformed());
    }
    let mut value: u64 = 0;
    for c in num.chars().filter(|&c| c != '_') {
        let d = u64::from(c as u8 - b'0');
        value = value
            .checked_mul(10)
            .and_then(|v| v.checked_add(d))
            .ok_or_else(|| SizeError::Overflow { text: t.into() })?;
    }
    let suffix = suffix.trim_start();
    let unit = match suffix.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => return Err(malformed()),
    };
    value
        .checked_mul(1u64 << unit)
        .ok_or_else(|| SizeError::Overflow { text: t.into() })
}

/// Formats a size the way a person writes it: `512M`, `2G`, `64K`, or `1234 bytes`.
pub fn format_size(bytes: u64) -> String {
    const UNITS: [(u32, &str); 4] = [(40, "T"), (30, "G"), (20, "M"), (10, "K")];
    for (shift, unit) in UNITS {
        let one = 1u64 << shift;
        if bytes >= one && bytes.is_multiple_of(one) {
            return format!("{}{unit}", bytes >> shift);
        }
    }
    format!("{bytes} bytes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("2G"), Ok(2 << 30));
        assert_eq!(parse_size("2g"), Ok(2 << 30));
        assert_eq!(parse_size("64KiB"), Ok(64 << 10));
        assert_eq!(parse_size("1T"), Ok(1 << 40));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("1_048_576"), Ok(1 << 20));
        assert_eq!(parse_size(" 16 M "), Ok(16 << 20));
    }

    #[test]
    fn bad_sizes() {
        assert_eq!(parse_size(""), Err(SizeError::Empty));
        assert!(matches!(parse_size("M"), Err(SizeError::Malformed { .. })));
        assert!(matches!(
            parse_size("12Q"),
            Err(SizeError::Malformed { .. })
        ));
        assert!(matches!(
            parse_size("-1G"),
            Err(SizeError::Malformed { .. })
        ));
        assert!(matches!(
            parse_size("1.5G"),
            Err(SizeError::Malformed { .. })
        ));
        assert!(matches!(
            parse_size("99999999999999999999"),
            Err(SizeError::Overflow { .. })
        ));
        assert!(matches!(
            parse_size("16777216T"),
            Err(SizeError::Overflow { .. })
        ));
        assert_eq!(parse_size("16777215T"), Ok(16_777_215u64 << 40));
    }

    #[test]
    fn format() {
        assert_eq!(format_size(512 << 20), "512M");
        assert_eq!(format_size(2 << 30), "2G");
        assert_eq!(format_size(3 << 19), "1536K");
        assert_eq!(format_size(1000), "1000 bytes");
        assert_eq!(format_size(0), "0 bytes");
    }
}
