//! Weekly opening hours of a location, e.g. "mon-fri 08:00-18:00, sat 09:00-14:00". Owns the
//! text format, validation (no overlaps, no overnight spans) and "is it open at this local
//! time?"; converting instants to local time is left to the location's [`super::TimeZoneName`].
//!
//! Each interval is half-open: open at `opens`, closed again at `closes`. "24:00" may be used
//! as a closing time and is stored as [`Time::MAX`].

use std::fmt;

use jiff::civil::{Time, Weekday};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Caps how much of a rejected fragment an error message repeats.
const MAX_ECHO_CHARS: usize = 64;

/// Describes why opening hours are malformed; fragments name the offending part of the input.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HoursError {
    /// The input is empty or only whitespace.
    #[error("opening hours are empty")]
    Empty,
    /// Two commas have nothing between them, or the input ends in a comma.
    #[error("opening hours have an empty entry (a stray comma?)")]
    EmptyEntry,
    /// An entry is not shaped like `DAYS HH:MM-HH:MM`.
    #[error("malformed opening hours entry {fragment:?}: expected DAYS HH:MM-HH:MM, like \"mon-fri 08:00-18:00\"")]
    Malformed {
        /// The offending entry.
        fragment: String,
    },
    /// A day name is not one of mon..sun (or the full name).
    #[error(
        "unknown day {fragment:?} in opening hours: expected mon, tue, wed, thu, fri, sat, sun or a range like mon-fri"
    )]
    UnknownDay {
        /// The unrecognised day or range.
        fragment: String,
    },
    /// A time is not `HH:MM` between 00:00 and 23:59 (or 24:00 as a closing time).
    #[error("bad time {fragment:?} in opening hours: expected HH:MM from 00:00 to 24:00")]
    BadTime {
        /// The unrecognised time.
        fragment: String,
    },
    /// An interval closes at or before it opens.
    #[error("closing time is not after opening time in {fragment:?} (split overnight hours at 24:00)")]
    ClosesNotAfterOpens {
        /// The offending entry.
        fragment: String,
    },
    /// Two intervals on the same day overlap.
    #[error("overlapping opening hours on {day}: {first} and {second}")]
    Overlap {
        /// The short day name, e.g. "mon".
        day: &'static str,
        /// The earlier interval, e.g. "mon 08:00-12:00".
        first: String,
        /// The later interval, which starts before `first` closes.
        second: String,
    },
}

/// Holds one opening interval on one weekday, from `opens` (inclusive) to `closes` (exclusive).
///
/// The fields are public for construction; [`WeeklyHours::from_days`] checks that `opens` is
/// before `closes` and that both are whole minutes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DayHours {
    /// The day the interval falls on.
    pub weekday: Weekday,
    /// The local time the location opens.
    pub opens: Time,
    /// The local time the location closes; [`Time::MAX`] means midnight at the end of the day.
    pub closes: Time,
}

impl DayHours {
    /// Returns whether the interval contains `time` on `weekday`.
    pub fn contains(&self, weekday: Weekday, time: Time) -> bool {
        self.weekday == weekday && self.opens <= time && time < self.closes
    }

    /// Orders intervals Monday first, then by opening and closing time.
    fn sort_key(&self) -> (i8, Time, Time) {
        (self.weekday.to_monday_zero_offset(), self.opens, self.closes)
    }
}

impl fmt::Display for DayHours {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}-{}", day_name(self.weekday), TimeText(self.opens), TimeText(self.closes))
    }
}

/// Holds a location's weekly opening hours as intervals sorted by day and time, with no
/// overlaps. An empty value means never open.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct WeeklyHours {
    days: Vec<DayHours>,
}

impl WeeklyHours {
    /// Parses hours like "mon-fri 08:00-18:00, sat 09:00-14:00".
    ///
    /// Entries are comma-separated, each `DAYS HH:MM-HH:MM`. `DAYS` is a day ("mon" or
    /// "monday", any case) or a range ("mon-fri", or wrapping like "fri-mon"). A day may appear
    /// in several entries for split shifts, as long as the intervals don't overlap.
    ///
    /// # Errors
    /// Returns a [`HoursError`] naming the first bad fragment.
    pub fn parse(input: &str) -> Result<Self, HoursError> {
        if input.trim().is_empty() {
            return Err(HoursError::Empty);
        }
        let mut days = Vec::new();
        for entry in input.split(',') {
            parse_entry(entry.trim(), &mut days)?;
        }
        Self::from_days(days)
    }

    /// Builds hours from intervals, e.g. rows loaded from the database, sorting them.
    ///
    /// # Errors
    /// Returns [`HoursError::BadTime`] for times that aren't whole minutes,
    /// [`HoursError::ClosesNotAfterOpens`] and [`HoursError::Overlap`], as [`Self::parse`] does.
    pub fn from_days(mut days: Vec<DayHours>) -> Result<Self, HoursError> {
        for day in &days {
            for time in [day.opens, day.closes] {
                let is_end_of_day = time == Time::MAX && time == day.closes;
                if !is_end_of_day && (time.second() != 0 || time.subsec_nanosecond() != 0) {
                    return Err(HoursError::BadTime { fragment: time.to_string() });
                }
            }
            if day.closes <= day.opens {
                return Err(HoursError::ClosesNotAfterOpens { fragment: day.to_string() });
            }
        }
        days.sort_by_key(DayHours::sort_key);
        for pair in days.windows(2) {
            let (first, second) = (pair[0], pair[1]);
            if first.weekday == second.weekday && second.opens < first.closes {
                return Err(HoursError::Overlap {
                    day: day_name(first.weekday),
                    first: first.to_string(),
                    second: second.to_string(),
                });
            }
        }
        Ok(Self { days })
    }

    /// Returns the intervals, sorted Monday first and then by opening time.
    pub fn days(&self) -> &[DayHours] {
        &self.days
    }

    /// Returns the intervals on one weekday, in opening order.
    pub fn intervals_on(&self, weekday: Weekday) -> impl Iterator<Item = &DayHours> + '_ {
        self.days.iter().filter(move |d| d.weekday == weekday)
    }

    /// Returns whether the location is open at local `time` on `weekday`.
    pub fn is_open_at(&self, weekday: Weekday, time: Time) -> bool {
        self.days.iter().any(|d| d.contains(weekday, time))
    }

    /// Returns whether there are no intervals, i.e. the location is never open.
    pub fn is_empty(&self) -> bool {
        self.days.is_empty()
    }
}

/// Parses one `DAYS HH:MM-HH:MM` entry and appends an interval per day it covers.
fn parse_entry(entry: &str, out: &mut Vec<DayHours>) -> Result<(), HoursError> {
    if entry.is_empty() {
        return Err(HoursError::EmptyEntry);
    }
    let malformed = || HoursError::Malformed { fragment: echo(entry) };
    // Day names have no digits, so the times start at the first digit.
    let split = entry.find(|c: char| c.is_ascii_digit()).ok_or_else(malformed)?;
    let (days_text, times_text) = entry.split_at(split);
    let days_text: String = days_text.chars().filter(|c| !c.is_whitespace()).collect();
    if days_text.is_empty() {
        return Err(malformed());
    }
    let weekdays = parse_days(&days_text)?;

    let times_text: String = times_text.chars().filter(|c| !c.is_whitespace()).collect();
    let (opens_text, closes_text) = times_text.split_once('-').ok_or_else(malformed)?;
    let opens = parse_time(opens_text, false)?;
    let closes = parse_time(closes_text, true)?;
    if closes <= opens {
        return Err(HoursError::ClosesNotAfterOpens { fragment: echo(entry) });
    }
    out.extend(weekdays.map(|weekday| DayHours { weekday, opens, closes }));
    Ok(())
}

/// Parses "mon" or a range "mon-fri" (wrapping past Sunday if needed) into the days it covers.
fn parse_days(text: &str) -> Result<impl Iterator<Item = Weekday>, HoursError> {
    let unknown = || HoursError::UnknownDay { fragment: echo(text) };
    let (first, last) = match text.split_once('-') {
        Some((a, b)) => (parse_day(a).ok_or_else(unknown)?, parse_day(b).ok_or_else(unknown)?),
        None => {
            let day = parse_day(text).ok_or_else(unknown)?;
            (day, day)
        }
    };
    let span = (last.to_monday_zero_offset() - first.to_monday_zero_offset()).rem_euclid(7);
    Ok((0..=span).map(move |n| first.wrapping_add(n)))
}

/// Parses a day name, short or full, in any case.
fn parse_day(text: &str) -> Option<Weekday> {
    let day = match text.to_ascii_lowercase().as_str() {
        "mon" | "monday" => Weekday::Monday,
        "tue" | "tues" | "tuesday" => Weekday::Tuesday,
        "wed" | "wednesday" => Weekday::Wednesday,
        "thu" | "thur" | "thurs" | "thursday" => Weekday::Thursday,
        "fri" | "friday" => Weekday::Friday,
        "sat" | "saturday" => Weekday::Saturday,
        "sun" | "sunday" => Weekday::Sunday,
        _ => return None,
    };
    Some(day)
}

/// Returns the canonical short name of a day.
fn day_name(weekday: Weekday) -> &'static str {
    match weekday {
        Weekday::Monday => "mon",
        Weekday::Tuesday => "tue",
        Weekday::Wednesday => "wed",
        Weekday::Thursday => "thu",
        Weekday::Friday => "fri",
        Weekday::Saturday => "sat",
        Weekday::Sunday => "sun",
    }
}

/// Parses "H:MM" or "HH:MM"; "24:00" is accepted only as a closing time.
fn parse_time(text: &str, is_closing: bool) -> Result<Time, HoursError> {
    let bad = || HoursError::BadTime { fragment: echo(text) };
    let (hour, minute) = text.split_once(':').ok_or_else(bad)?;
    let is_digits = |s: &str, lens: &[usize]| lens.contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit());
    if !is_digits(hour, &[1, 2]) || !is_digits(minute, &[2]) {
        return Err(bad());
    }
    let hour: i8 = hour.parse().map_err(|_| bad())?;
    let minute: i8 = minute.parse().map_err(|_| bad())?;
    if is_closing && hour == 24 && minute == 0 {
        return Ok(Time::MAX);
    }
    Time::new(hour, minute, 0, 0).map_err(|_| bad())
}

/// Cuts a fragment of user input to a length that is safe to put in an error message.
fn echo(text: &str) -> String {
    text.chars().take(MAX_ECHO_CHARS).collect()
}

/// Formats a time as "HH:MM", with [`Time::MAX`] as "24:00".
struct TimeText(Time);

impl fmt::Display for TimeText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == Time::MAX {
            f.write_str("24:00")
        } else {
            write!(f, "{:02}:{:02}", self.0.hour(), self.0.minute())
        }
    }
}

impl fmt::Display for WeeklyHours {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, day) in self.days.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{day}")?;
        }
        Ok(())
    }
}

impl Serialize for WeeklyHours {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// Accepts the canonical string; an empty string is never-open hours, mirroring `Display`.
impl<'de> Deserialize<'de> for WeeklyHours {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        if raw.trim().is_empty() {
            return Ok(Self::default());
        }
        WeeklyHours::parse(&raw).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use jiff::civil::time;
    use proptest::collection::{btree_set, vec};
    use proptest::prelude::*;

    use super::*;

    fn interval(weekday: Weekday, opens: Time, closes: Time) -> DayHours {
        DayHours { weekday, opens, closes }
    }

    #[test]
    fn weekday_range_and_single_day_expand_to_one_interval_per_day() {
        let hours = WeeklyHours::parse("mon-fri 08:00-18:00, sat 09:00-14:00").unwrap();
        assert_eq!(hours.days().len(), 6);
        assert_eq!(
            hours.to_string(),
            "mon 08:00-18:00, tue 08:00-18:00, wed 08:00-18:00, thu 08:00-18:00, \
             fri 08:00-18:00, sat 09:00-14:00"
        );
    }

    #[test]
    fn equivalent_spellings_parse_to_the_same_hours() {
        let canonical = WeeklyHours::parse("mon 08:00-12:00, mon 13:00-17:00, sat 09:00-14:00").unwrap();
        let variants = [
            "mon 08:00-12:00, mon 13:00-17:00, sat 09:00-14:00",
            "Saturday 9:00-14:00, MON 13:00-17:00,Monday 08:00 - 12:00",
            "  sat-sat 09:00-14:00 ,mon 8:00-12:00, mon 13:00-17:00  ",
        ];
        for input in variants {
            assert_eq!(WeeklyHours::parse(input), Ok(canonical.clone()), "{input:?}");
        }
    }

    #[test]
    fn wrapping_ranges_cover_the_weekend() {
        let hours = WeeklyHours::parse("fri-mon 10:00-16:00").unwrap();
        let weekdays: Vec<_> = hours.days().iter().map(|d| d.weekday).collect();
        assert_eq!(weekdays, [Weekday::Monday, Weekday::Friday, Weekday::Saturday, Weekday::Sunday]);
    }

    #[test]
    fn midnight_closing_is_written_as_24_00() {
        let hours = WeeklyHours::parse("mon-sun 00:00-24:00").unwrap();
        assert_eq!(hours.days().len(), 7);
        assert!(hours.is_open_at(Weekday::Sunday, time(23, 59, 0, 0)));
        assert!(hours.is_open_at(Weekday::Monday, time(0, 0, 0, 0)));
        assert!(hours.to_string().starts_with("mon 00:00-24:00, tue 00:00-24:00"));
    }

    #[test]
    fn is_open_at_includes_opening_and_excludes_closing_time() {
        let hours = WeeklyHours::parse("mon 08:00-12:00, mon 13:00-17:00").unwrap();
        let cases = [
            (Weekday::Monday, time(7, 59, 59, 0), false),
            (Weekday::Monday, time(8, 0, 0, 0), true),
            (Weekday::Monday, time(11, 59, 0, 0), true),
            (Weekday::Monday, time(12, 0, 0, 0), false),
            (Weekday::Monday, time(12, 30, 0, 0), false),
            (Weekday::Monday, time(13, 0, 0, 0), true),
            (Weekday::Monday, time(17, 0, 0, 0), false),
            (Weekday::Tuesday, time(9, 0, 0, 0), false),
        ];
        for (weekday, at, expected) in cases {
            assert_eq!(hours.is_open_at(weekday, at), expected, "{weekday:?} {at}");
        }
    }

    #[test]
    fn bad_input_is_rejected_with_an_error_naming_the_fragment() {
        let malformed = |s: &str| HoursError::Malformed { fragment: s.to_owned() };
        let unknown_day = |s: &str| HoursError::UnknownDay { fragment: s.to_owned() };
        let bad_time = |s: &str| HoursError::BadTime { fragment: s.to_owned() };
        let not_after = |s: &str| HoursError::ClosesNotAfterOpens { fragment: s.to_owned() };
        let cases = [
            ("", HoursError::Empty),
            ("   ", HoursError::Empty),
            ("mon 08:00-12:00,", HoursError::EmptyEntry),
            ("mon 08:00-12:00,, tue 08:00-12:00", HoursError::EmptyEntry),
            ("mon", malformed("mon")),
            ("08:00-12:00", malformed("08:00-12:00")),
            ("mon 08:00", malformed("mon 08:00")),
            ("funday 08:00-12:00", unknown_day("funday")),
            ("mon-funday 08:00-12:00", unknown_day("mon-funday")),
            ("mon-tue-wed 08:00-12:00", unknown_day("mon-tue-wed")),
            ("mon 8-12", bad_time("8")),
            ("mon 08:00-25:00", bad_time("25:00")),
            ("mon 08:60-12:00", bad_time("08:60")),
            ("mon 24:00-24:00", bad_time("24:00")),
            ("mon 08:00-24:01", bad_time("24:01")),
            ("mon 008:00-12:00", bad_time("008:00")),
            ("mon 08:00-12:00-13:00", bad_time("12:00-13:00")),
            ("mon 12:00-08:00", not_after("mon 12:00-08:00")),
            ("fri 22:00-02:00", not_after("fri 22:00-02:00")),
            ("mon 08:00-08:00", not_after("mon 08:00-08:00")),
        ];
        for (input, expected) in cases {
            assert_eq!(WeeklyHours::parse(input), Err(expected), "{input:?}");
        }
    }

    #[test]
    fn overlapping_intervals_on_the_same_day_are_rejected_naming_the_day() {
        let err = WeeklyHours::parse("mon-fri 08:00-18:00, wed 17:00-20:00").unwrap_err();
        assert_eq!(
            err,
            HoursError::Overlap {
                day: "wed",
                first: "wed 08:00-18:00".to_owned(),
                second: "wed 17:00-20:00".to_owned(),
            }
        );
        assert!(err.to_string().contains("on wed"), "{err}");

        let duplicate = WeeklyHours::parse("sat 09:00-14:00, sat 09:00-14:00");
        assert!(matches!(duplicate, Err(HoursError::Overlap { day: "sat", .. })));
    }

    #[test]
    fn back_to_back_intervals_do_not_overlap() {
        let hours = WeeklyHours::parse("mon 08:00-12:00, mon 12:00-17:00").unwrap();
        assert!(hours.is_open_at(Weekday::Monday, time(12, 0, 0, 0)));
    }

    #[test]
    fn from_days_sorts_and_validates_like_parse() {
        let hours = WeeklyHours::from_days(vec![
            interval(Weekday::Tuesday, time(9, 0, 0, 0), time(17, 0, 0, 0)),
            interval(Weekday::Monday, time(13, 0, 0, 0), time(17, 0, 0, 0)),
            interval(Weekday::Monday, time(8, 0, 0, 0), time(12, 0, 0, 0)),
        ])
        .unwrap();
        assert_eq!(hours.to_string(), "mon 08:00-12:00, mon 13:00-17:00, tue 09:00-17:00");
        assert_eq!(hours.intervals_on(Weekday::Monday).count(), 2);

        let backwards = interval(Weekday::Sunday, time(17, 0, 0, 0), time(9, 0, 0, 0));
        assert_eq!(
            WeeklyHours::from_days(vec![backwards]),
            Err(HoursError::ClosesNotAfterOpens { fragment: "sun 17:00-09:00".to_owned() })
        );

        let with_seconds = interval(Weekday::Sunday, time(9, 0, 30, 0), time(17, 0, 0, 0));
        assert_eq!(
            WeeklyHours::from_days(vec![with_seconds]),
            Err(HoursError::BadTime { fragment: "09:00:30".to_owned() })
        );
    }

    #[test]
    fn no_intervals_means_never_open() {
        let hours = WeeklyHours::from_days(Vec::new()).unwrap();
        assert!(hours.is_empty());
        assert!(!hours.is_open_at(Weekday::Monday, time(12, 0, 0, 0)));
        assert_eq!(hours.to_string(), "");
    }

    #[test]
    fn serde_uses_the_canonical_string() {
        let hours = WeeklyHours::parse("sat 09:00-14:00, mon 08:00-12:00").unwrap();
        let json = serde_json::to_string(&hours).unwrap();
        assert_eq!(json, "\"mon 08:00-12:00, sat 09:00-14:00\"");
        assert_eq!(serde_json::from_str::<WeeklyHours>(&json).unwrap(), hours);

        let never = serde_json::to_string(&WeeklyHours::default()).unwrap();
        assert_eq!(serde_json::from_str::<WeeklyHours>(&never).unwrap(), WeeklyHours::default());

        let err = serde_json::from_str::<WeeklyHours>("\"funday 08:00-12:00\"").unwrap_err();
        assert!(err.to_string().contains("funday"), "{err}");
    }

    /// Turns minutes since midnight (0..=1440) into a time, 1440 being end of day.
    fn minute_to_time(minute: u16) -> Time {
        if minute >= 1440 {
            return Time::MAX;
        }
        let hour = i8::try_from(minute / 60).unwrap();
        let minute = i8::try_from(minute % 60).unwrap();
        time(hour, minute, 0, 0)
    }

    /// Generates non-overlapping intervals: sorted distinct minutes per day, paired up.
    fn arb_days() -> impl Strategy<Value = Vec<DayHours>> {
        vec(btree_set(0u16..=1440, 0..=6), 7).prop_map(|per_day| {
            let mut days = Vec::new();
            for (offset, minutes) in (0i8..).zip(per_day) {
                let weekday = Weekday::from_monday_zero_offset(offset).unwrap();
                let minutes: Vec<u16> = minutes.into_iter().collect();
                for pair in minutes.chunks_exact(2) {
                    days.push(interval(weekday, minute_to_time(pair[0]), minute_to_time(pair[1])));
                }
            }
            days
        })
    }

    proptest! {
        #[test]
        fn display_then_parse_round_trips(days in arb_days()) {
            let hours = WeeklyHours::from_days(days.clone()).unwrap();
            prop_assert_eq!(hours.days().len(), days.len());
            if hours.is_empty() {
                prop_assert_eq!(hours.to_string(), "");
            } else {
                prop_assert_eq!(WeeklyHours::parse(&hours.to_string()), Ok(hours));
            }
        }

        #[test]
        fn from_days_does_not_depend_on_input_order(days in arb_days()) {
            let mut reversed = days.clone();
            reversed.reverse();
            prop_assert_eq!(WeeklyHours::from_days(reversed), WeeklyHours::from_days(days));
        }

        #[test]
        fn parse_never_panics(input in "[a-zA-Z0-9:, \\-]{0,40}") {
            let _ = WeeklyHours::parse(&input);
        }
    }
}
