//! Units used in `pgbalancer.yml`: durations and byte sizes.
//!
//! * Durations: an integer is a number of seconds (PgBouncer style); a string is
//!   `"<n>"` (seconds) or `"<n><unit>"` with unit `us`, `ms`, `s`, `m`/`min`, `h`, `d`
//!   (e.g. `"500ms"`, `"30s"`, `"5m"`, `"1h"`, `"1d"`). `0` means "disabled" or
//!   "no limit" for the keys that document it.
//! * Byte sizes: an integer is a number of bytes; a string is `"<n>"` or `"<n><unit>"`
//!   with unit `B`, `kB`/`KB`/`KiB`, `MB`/`MiB`, `GB`/`GiB`, `TB`/`TiB` (case-insensitive,
//!   all multiples of 1024, like PostgreSQL's `work_mem`).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Forms accepted for a duration, quoted in error messages.
pub const DURATION_FORMS: &str =
    "an integer number of seconds, or a string like \"0\", \"500ms\", \"30s\", \"5m\", \"1h\", \"1d\"";

/// Forms accepted for a byte size, quoted in error messages.
pub const BYTE_SIZE_FORMS: &str =
    "an integer number of bytes, or a string like \"512\", \"512B\", \"64kB\", \"64MiB\", \"1GB\" (k/M/G = 1024^1/2/3)";

/// Splits `"  30 s "` into (`30`, `"s"`): leading ASCII digits, then the unit.
fn split_number(s: &str) -> Option<(u64, &str)> {
    let s = s.trim();
    let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    if end == 0 {
        return None;
    }
    let n = s[..end].parse::<u64>().ok()?;
    Some((n, s[end..].trim_start()))
}

/// Parses a duration string (see the module documentation).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let invalid = || format!("invalid duration '{s}': expected {DURATION_FORMS}");
    let (n, unit) = split_number(s).ok_or_else(invalid)?;
    let d = match unit.to_ascii_lowercase().as_str() {
        "" | "s" | "sec" | "secs" => Some(Duration::from_secs(n)),
        "ns" => Some(Duration::from_nanos(n)),
        "us" => Some(Duration::from_micros(n)),
        "ms" => Some(Duration::from_millis(n)),
        "m" | "min" | "mins" => n.checked_mul(60).map(Duration::from_secs),
        "h" => n.checked_mul(3600).map(Duration::from_secs),
        "d" => n.checked_mul(86400).map(Duration::from_secs),
        _ => return Err(invalid()),
    };
    d.ok_or_else(|| format!("duration '{s}' is too large"))
}

/// Formats a duration in the largest unit that represents it exactly
/// (`"0"`, `"500ms"`, `"30s"`, `"5m"`, `"1h"`, `"2d"`); [`parse_duration`] reads it back.
pub fn format_duration(d: Duration) -> String {
    if d.is_zero() {
        return "0".to_string();
    }
    if d.subsec_nanos() == 0 {
        let s = d.as_secs();
        for (unit, div) in [("d", 86400), ("h", 3600), ("m", 60)] {
            if s % div == 0 {
                return format!("{}{unit}", s / div);
            }
        }
        return format!("{s}s");
    }
    let ns = d.as_nanos();
    if ns % 1_000_000 == 0 {
        format!("{}ms", ns / 1_000_000)
    } else if ns % 1_000 == 0 {
        format!("{}us", ns / 1_000)
    } else {
        format!("{ns}ns")
    }
}

/// `#[serde(with = "crate::units::duration")]` for `std::time::Duration` fields.
pub mod duration {
    use super::*;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_duration(*d))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        d.deserialize_any(DurationVisitor)
    }

    struct DurationVisitor;

    impl Visitor<'_> for DurationVisitor {
        type Value = Duration;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            write!(f, "a duration: {DURATION_FORMS}")
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
            Ok(Duration::from_secs(v))
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
            u64::try_from(v)
                .map(Duration::from_secs)
                .map_err(|_| E::custom(format!("invalid duration {v}: must not be negative")))
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
            parse_duration(v).map_err(E::custom)
        }
    }
}

/// A size in bytes. See the module documentation for the accepted forms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub const KIB: u64 = 1024;
    pub const MIB: u64 = 1024 * 1024;
    pub const GIB: u64 = 1024 * 1024 * 1024;

    /// The size in bytes.
    pub fn bytes(&self) -> u64 {
        self.0
    }
}

impl fmt::Display for ByteSize {
    /// Largest exact binary unit: `"64MiB"`, `"1KiB"`, `"1000B"`.
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let n = self.0;
        for (unit, div) in [("TiB", 1u64 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
            if n != 0 && n % div == 0 {
                return write!(f, "{}{unit}", n / div);
            }
        }
        write!(f, "{n}B")
    }
}

impl FromStr for ByteSize {
    type Err = String;

    fn from_str(s: &str) -> Result<ByteSize, String> {
        let invalid = || format!("invalid size '{s}': expected {BYTE_SIZE_FORMS}");
        let (n, unit) = split_number(s).ok_or_else(invalid)?;
        let mult: u64 = match unit.to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kb" | "kib" => 1 << 10,
            "m" | "mb" | "mib" => 1 << 20,
            "g" | "gb" | "gib" => 1 << 30,
            "t" | "tb" | "tib" => 1 << 40,
            _ => return Err(invalid()),
        };
        n.checked_mul(mult).map(ByteSize).ok_or_else(|| format!("size '{s}' is too large"))
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<ByteSize, D::Error> {
        struct ByteSizeVisitor;

        impl Visitor<'_> for ByteSizeVisitor {
            type Value = ByteSize;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                write!(f, "a size: {BYTE_SIZE_FORMS}")
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(v))
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
                u64::try_from(v).map(ByteSize).map_err(|_| E::custom(format!("invalid size {v}: must not be negative")))
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteSize, E> {
                v.parse().map_err(E::custom)
            }
        }

        d.deserialize_any(ByteSizeVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duration_forms() {
        let cases = [
            ("0", Duration::ZERO),
            ("30", Duration::from_secs(30)),
            ("500ms", Duration::from_millis(500)),
            ("30s", Duration::from_secs(30)),
            ("5m", Duration::from_secs(300)),
            ("5min", Duration::from_secs(300)),
            ("1h", Duration::from_secs(3600)),
            ("1d", Duration::from_secs(86400)),
            ("250us", Duration::from_micros(250)),
            (" 10 s ", Duration::from_secs(10)),
            ("2H", Duration::from_secs(7200)),
        ];
        for (s, want) in cases {
            assert_eq!(parse_duration(s), Ok(want), "{s}");
        }
    }

    #[test]
    fn duration_errors_list_allowed_forms() {
        for s in ["", "ms", "-1s", "1.5s", "10 parsecs", "1w"] {
            let e = parse_duration(s).unwrap_err();
            assert!(e.contains("\"500ms\"") && e.contains("integer number of seconds"), "{e}");
        }
        assert!(parse_duration("18446744073709551615d").unwrap_err().contains("too large"));
    }

    #[test]
    fn duration_format_roundtrips() {
        for d in [
            Duration::ZERO,
            Duration::from_millis(1500),
            Duration::from_secs(30),
            Duration::from_secs(90),
            Duration::from_secs(300),
            Duration::from_secs(7200),
            Duration::from_secs(86400 * 3),
            Duration::from_micros(7),
            Duration::from_nanos(3),
        ] {
            assert_eq!(parse_duration(&format_duration(d)), Ok(d));
        }
        assert_eq!(format_duration(Duration::from_secs(120)), "2m");
        assert_eq!(format_duration(Duration::from_millis(500)), "500ms");
        assert_eq!(format_duration(Duration::from_secs(3600)), "1h");
    }

    #[test]
    fn byte_size_forms() {
        let cases = [
            ("512", 512),
            ("512B", 512),
            ("64kB", 64 * 1024),
            ("64KB", 64 * 1024),
            ("64KiB", 64 * 1024),
            ("64k", 64 * 1024),
            ("8MB", 8 << 20),
            ("8MiB", 8 << 20),
            ("8 mb", 8 << 20),
            ("1GB", 1 << 30),
            ("1GiB", 1 << 30),
            ("2TiB", 2 << 40),
        ];
        for (s, want) in cases {
            assert_eq!(s.parse::<ByteSize>(), Ok(ByteSize(want)), "{s}");
        }
        for s in ["", "MB", "1.5MB", "-1", "10 bits", "99999999999999999999"] {
            assert!(s.parse::<ByteSize>().is_err(), "{s}");
        }
        assert!("20000000TB".parse::<ByteSize>().unwrap_err().contains("too large"));
        assert!("10 bits".parse::<ByteSize>().unwrap_err().contains("\"64kB\""));
    }

    #[test]
    fn byte_size_display() {
        assert_eq!(ByteSize(64 << 20).to_string(), "64MiB");
        assert_eq!(ByteSize(1024).to_string(), "1KiB");
        assert_eq!(ByteSize(1 << 30).to_string(), "1GiB");
        assert_eq!(ByteSize(1000).to_string(), "1000B");
        assert_eq!(ByteSize(0).to_string(), "0B");
        assert_eq!(ByteSize(1536).to_string(), "1536B");
        assert_eq!(ByteSize(64 << 20).bytes(), 64 << 20);
        for n in [0, 1, 1000, 1024, 1536, 64 << 20, 3 << 30] {
            assert_eq!(ByteSize(n).to_string().parse::<ByteSize>(), Ok(ByteSize(n)));
        }
    }
}
