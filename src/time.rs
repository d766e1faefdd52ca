//! How healstore stores and prints instants: microseconds since the Unix epoch in the
//! database, RFC 3339 in UTC with microseconds in JSON and on the command line.

use chrono::{DateTime, SecondsFormat, Utc};

use crate::error::{Error, Result};

/// The database representation: microseconds since the Unix epoch, UTC.
pub fn to_micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

/// The inverse of [`to_micros`]. Out-of-range values (only possible in a damaged database) are
/// reported, never a panic.
pub fn from_micros(us: i64) -> Result<DateTime<Utc>> {
    DateTime::from_timestamp_micros(us)
        .ok_or_else(|| Error::InvalidInput(format!("timestamp {us} us is out of range")))
}

/// Parses an RFC 3339 time (any offset), normalised to UTC and truncated to the microsecond,
/// the precision the store keeps.
pub fn parse_time(s: &str) -> Result<DateTime<Utc>> {
    let t = DateTime::parse_from_rfc3339(s.trim()).map_err(|e| {
        Error::InvalidInput(format!(
            "{s:?} is not an RFC 3339 time ({e}); example: 2026-11-28T09:30:00Z"
        ))
    })?;
    truncate(t.with_timezone(&Utc))
}

/// Truncates to the microsecond, and refuses instants outside what the store can hold.
pub fn truncate(t: DateTime<Utc>) -> Result<DateTime<Utc>> {
    let us = t.timestamp_micros();
    from_micros(us)
}

/// The one textual form healstore writes: `2026-11-28T09:30:00.000000Z`.
pub fn format_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// Serde helpers for `DateTime<Utc>` fields written in healstore's textual form.
pub mod serde_rfc3339 {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_time(*t))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let s = String::deserialize(d)?;
        super::parse_time(&s).map_err(serde::de::Error::custom)
    }

    /// The same for `Option<DateTime<Utc>>`.
    pub mod option {
        use chrono::{DateTime, Utc};
        use serde::{Deserialize, Deserializer, Serializer};

        pub fn serialize<S: Serializer>(
            t: &Option<DateTime<Utc>>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            match t {
                Some(t) => s.serialize_str(&super::super::format_time(*t)),
                None => s.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Option<DateTime<Utc>>, D::Error> {
            match Option::<String>::deserialize(d)? {
                Some(s) => super::super::parse_time(&s)
                    .map(Some)
                    .map_err(serde::de::Error::custom),
                None => Ok(None),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_offsets_to_utc_and_truncates_to_microseconds() {
        let t = parse_time("2026-11-28T10:30:00.123456789+01:00").unwrap();
        assert_eq!(format_time(t), "2026-11-28T09:30:00.123456Z");
        assert_eq!(from_micros(to_micros(t)).unwrap(), t);
    }

    #[test]
    fn rejects_non_rfc3339() {
        for bad in [
            "yesterday",
            "2026-11-28",
            "2026-11-28 09:30:00",
            "",
            "1700000000",
        ] {
            assert!(parse_time(bad).is_err(), "{bad:?} should be rejected");
        }
    }
}
