//! IANA time zone names for locations, checked against jiff's time zone database. Converting
//! instants into local time is left to jiff via [`TimeZoneName::to_time_zone`].

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};

use jiff::tz::TimeZone;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Caps how much of a rejected value an error message repeats.
const MAX_ECHO_CHARS: usize = 64;

/// Describes why a string is not a known IANA time zone name.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TimeZoneError {
    /// The input is empty or only whitespace.
    #[error("time zone is empty")]
    Empty,
    /// The input is not a name in the time zone database.
    #[error("unknown time zone {name:?}: expected an IANA name like \"America/New_York\"")]
    Unknown {
        /// The rejected name, trimmed and cut to 64 characters.
        name: String,
    },
}

/// Holds a validated IANA time zone name such as "America/Chicago", with its resolved zone.
///
/// Equality, ordering and hashing look at the name only.
#[derive(Clone)]
pub struct TimeZoneName {
    name: String,
    /// Resolved once at parse time, so later conversions can't fail or see a different database.
    tz: TimeZone,
}

impl TimeZoneName {
    /// Parses an IANA time zone name, looking it up in jiff's database.
    ///
    /// Lookup ignores case; the stored name uses the database's spelling ("america/denver"
    /// becomes "America/Denver").
    ///
    /// # Errors
    /// Returns [`TimeZoneError::Empty`] for blank input and [`TimeZoneError::Unknown`], naming
    /// the value, for anything the database doesn't know, such as "UTC+5" or "EST-ish".
    pub fn parse(input: &str) -> Result<Self, TimeZoneError> {
        let input = input.trim();
        if input.is_empty() {
            return Err(TimeZoneError::Empty);
        }
        let tz = TimeZone::get(input)
            .map_err(|_| TimeZoneError::Unknown { name: input.chars().take(MAX_ECHO_CHARS).collect() })?;
        let name = tz.iana_name().unwrap_or(input).to_owned();
        Ok(Self { name, tz })
    }

    /// Returns the IANA name, e.g. "America/New_York".
    pub fn as_str(&self) -> &str {
        &self.name
    }

    /// Returns the jiff time zone for converting instants to local time.
    pub fn to_time_zone(&self) -> TimeZone {
        self.tz.clone()
    }
}

impl fmt::Debug for TimeZoneName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("TimeZoneName").field(&self.name).finish()
    }
}

impl fmt::Display for TimeZoneName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

impl PartialEq for TimeZoneName {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Eq for TimeZoneName {}

impl PartialOrd for TimeZoneName {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for TimeZoneName {
    fn cmp(&self, other: &Self) -> Ordering {
        self.name.cmp(&other.name)
    }
}

impl Hash for TimeZoneName {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.name.hash(state);
    }
}

impl AsRef<str> for TimeZoneName {
    fn as_ref(&self) -> &str {
        &self.name
    }
}

impl Serialize for TimeZoneName {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.name)
    }
}

impl<'de> Deserialize<'de> for TimeZoneName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        TimeZoneName::parse(&raw).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use jiff::civil::date;

    use super::*;

    #[test]
    fn known_iana_names_are_accepted() {
        for name in ["America/New_York", "America/Chicago", "America/Los_Angeles", "Europe/London", "UTC"] {
            let tz = TimeZoneName::parse(name).unwrap_or_else(|e| panic!("{name:?}: {e}"));
            assert_eq!(tz.as_str(), name);
            assert_eq!(tz.to_string(), name);
        }
    }

    #[test]
    fn lookup_ignores_case_and_stores_the_database_spelling() {
        assert_eq!(TimeZoneName::parse("america/new_york").unwrap().as_str(), "America/New_York");
    }

    #[test]
    fn surrounding_whitespace_is_trimmed() {
        assert_eq!(TimeZoneName::parse("  America/Denver\n").unwrap().as_str(), "America/Denver");
    }

    #[test]
    fn garbage_is_rejected_with_an_error_naming_the_value() {
        for input in ["UTC+5", "EST-ish", "America/Springfield", "New York", "+05:00"] {
            let err = TimeZoneName::parse(input).unwrap_err();
            assert_eq!(err, TimeZoneError::Unknown { name: input.to_owned() });
            assert!(err.to_string().contains(input), "{err}");
        }
    }

    #[test]
    fn blank_input_is_empty() {
        assert_eq!(TimeZoneName::parse(""), Err(TimeZoneError::Empty));
        assert_eq!(TimeZoneName::parse("  "), Err(TimeZoneError::Empty));
    }

    #[test]
    fn long_rejected_values_are_cut_in_the_error() {
        let input = "x".repeat(500);
        let TimeZoneError::Unknown { name } = TimeZoneName::parse(&input).unwrap_err() else {
            panic!("expected Unknown");
        };
        assert_eq!(name.len(), MAX_ECHO_CHARS);
    }

    #[test]
    fn to_time_zone_converts_to_local_time() {
        let tz = TimeZoneName::parse("America/New_York").unwrap().to_time_zone();
        let zoned = date(2024, 7, 1).at(12, 0, 0, 0).to_zoned(tz).unwrap();
        assert_eq!(zoned.offset().seconds(), -4 * 3600);
    }

    #[test]
    fn serde_uses_the_name_and_validates_on_the_way_in() {
        let tz = TimeZoneName::parse("America/Phoenix").unwrap();
        assert_eq!(serde_json::to_string(&tz).unwrap(), "\"America/Phoenix\"");
        let back: TimeZoneName = serde_json::from_str("\"America/Phoenix\"").unwrap();
        assert_eq!(back, tz);
        let err = serde_json::from_str::<TimeZoneName>("\"UTC+5\"").unwrap_err();
        assert!(err.to_string().contains("UTC+5"), "{err}");
    }
}
