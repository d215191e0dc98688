//! The compliance clock's rules: the federal window for SMS, stricter state rules (a narrower
//! window, a cap per rolling 24 h), how stale a touch may get before it is skipped, and whose
//! clock applies to a recipient. Owns the rule types, their config format and the choice of the
//! recipient's zone and state; placing touches is left to [`crate::timeline`].
//!
//! DESIGN.md, promise 5: no SMS outside the *recipient's* allowed window, with the recipient's
//! time zone and state taken from the phone's area code, else the location's.

use std::collections::BTreeMap;
use std::fmt;

use jiff::SignedDuration;
use jiff::civil::Time;
use jiff::tz::TimeZone;
use serde::Deserialize;

use crate::domain::Phone;
use crate::nanp;

/// Holds a daily window of local time, from `start` (inclusive) to `end` (exclusive).
///
/// Deserializing rejects a window whose end is not after its start; a window built in code with
/// `end <= start` is empty and allows nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(try_from = "RawWindow")]
pub struct Window {
    /// The first local time allowed.
    pub start: Time,
    /// The first local time no longer allowed.
    pub end: Time,
}

impl Window {
    /// Returns whether the local `time` is inside the window.
    pub fn contains(&self, time: Time) -> bool {
        self.start <= time && time < self.end
    }

    /// Returns whether the window allows no time at all.
    pub fn is_empty(&self) -> bool {
        self.end <= self.start
    }

    /// Returns the times both windows allow; empty (start == end) when they don't overlap.
    pub fn intersect(&self, other: &Window) -> Window {
        let start = self.start.max(other.start);
        let end = self.end.min(other.end).max(start);
        Window { start, end }
    }
}

/// Formats as "08:00-21:00".
impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.start.strftime("%H:%M"), self.end.strftime("%H:%M"))
    }
}

/// The config shape of a [`Window`], validated by `TryFrom`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWindow {
    start: Time,
    end: Time,
}

impl TryFrom<RawWindow> for Window {
    type Error = String;

    fn try_from(raw: RawWindow) -> Result<Self, Self::Error> {
        let window = Window { start: raw.start, end: raw.end };
        if window.is_empty() {
            return Err(format!("window end must be after its start, got {window}"));
        }
        Ok(window)
    }
}

/// Holds one state's rules on top of the default window.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateRule {
    /// A window that applies in this state; the effective window is its intersection with the
    /// default, so a state rule can only narrow the federal one.
    #[serde(default, rename = "window")]
    pub window_opt: Option<Window>,
    /// At most this many SMS of one plan in any rolling 24 h.
    #[serde(default, rename = "max_sms_per_24h")]
    pub max_sms_per_24h_opt: Option<u32>,
}

/// Holds the compliance rules, loaded from the `[compliance]` config table.
///
/// ```toml
/// [compliance]
/// default_window = { start = "08:00", end = "21:00" }
/// staleness = "2h"
/// [compliance.states.FL]
/// window = { start = "08:00", end = "20:00" }
/// max_sms_per_24h = 3
/// ```
///
/// A key left out keeps its value from [`ComplianceRules::default`]; a `states` table given in
/// config replaces the built-in one as a whole.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ComplianceRules {
    /// The window that applies everywhere (federal: 08:00-21:00 in the recipient's time).
    pub default_window: Window,
    /// Stricter rules keyed by two-letter state code ("FL").
    pub states: BTreeMap<String, StateRule>,
    /// How late past its scheduled time a touch may still go out; later ones are skipped.
    pub staleness: SignedDuration,
}

impl ComplianceRules {
    /// Returns the rule for a state code, matching "fl" to "FL".
    pub fn state_rule(&self, state: &str) -> Option<&StateRule> {
        self.states.get(state).or_else(|| self.states.get(&state.to_ascii_uppercase()))
    }
}

/// Returns the federal window 08:00-21:00, Florida's 08:00-20:00 with at most 3 SMS per 24 h,
/// and a staleness of 2 h.
impl Default for ComplianceRules {
    fn default() -> Self {
        let florida = StateRule {
            window_opt: Some(Window { start: Time::constant(8, 0, 0, 0), end: Time::constant(20, 0, 0, 0) }),
            max_sms_per_24h_opt: Some(3),
        };
        ComplianceRules {
            default_window: Window { start: Time::constant(8, 0, 0, 0), end: Time::constant(21, 0, 0, 0) },
            states: BTreeMap::from([("FL".to_owned(), florida)]),
            staleness: SignedDuration::from_hours(2),
        }
    }
}

/// Says where a recipient's zone and state came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProfileSource {
    /// The phone's NANP area code is in the table.
    AreaCode,
    /// No usable phone area code; the location's zone and state stand in.
    Location,
}

/// Holds whose clock and which rules apply to one recipient's SMS.
#[derive(Debug, Clone, PartialEq)]
pub struct RecipientProfile {
    /// The zone the window is read in.
    pub time_zone: TimeZone,
    /// Two-letter state or province code, when known.
    pub state_opt: Option<String>,
    /// The effective window: the default one narrowed by the state's.
    pub window: Window,
    /// The state's cap on SMS per rolling 24 h, if it has one.
    pub max_sms_per_24h_opt: Option<u32>,
    /// Where `time_zone` and `state_opt` came from.
    pub source: ProfileSource,
}

/// Returns the recipient's zone, state and rules: from the phone's area code when the NANP table
/// knows it, else from the location.
pub fn recipient_profile(
    rules: &ComplianceRules,
    phone_opt: Option<&Phone>,
    location_tz: &TimeZone,
    location_state_opt: Option<&str>,
) -> RecipientProfile {
    let area_code_match_opt = phone_opt
        .filter(|phone| phone.is_nanp())
        .and_then(Phone::area_code)
        .and_then(nanp::area_code_region)
        // The table's zones are checked against the database by a unit test; a miss here would
        // mean a database without that zone, and the location's clock is the safe fallback.
        .and_then(|region| TimeZone::get(region.time_zone).ok().map(|tz| (region, tz)));
    let (time_zone, state_opt, source) = match area_code_match_opt {
        Some((region, tz)) => (tz, Some(region.state.to_owned()), ProfileSource::AreaCode),
        None => (location_tz.clone(), location_state_opt.map(str::to_owned), ProfileSource::Location),
    };
    let state_rule_opt = state_opt.as_deref().and_then(|state| rules.state_rule(state));
    let window = match state_rule_opt.and_then(|rule| rule.window_opt) {
        Some(state_window) => rules.default_window.intersect(&state_window),
        None => rules.default_window,
    };
    let max_sms_per_24h_opt = state_rule_opt.and_then(|rule| rule.max_sms_per_24h_opt);
    RecipientProfile { time_zone, state_opt, window, max_sms_per_24h_opt, source }
}

#[cfg(test)]
mod tests {
    use jiff::civil::time;

    use super::*;

    fn window(start: Time, end: Time) -> Window {
        Window { start, end }
    }

    fn los_angeles() -> TimeZone {
        TimeZone::get("America/Los_Angeles").unwrap()
    }

    #[test]
    fn a_window_includes_its_start_and_excludes_its_end() {
        let federal = window(time(8, 0, 0, 0), time(21, 0, 0, 0));
        assert!(!federal.contains(time(7, 59, 59, 999_999_999)));
        assert!(federal.contains(time(8, 0, 0, 0)));
        assert!(federal.contains(time(20, 59, 0, 0)));
        assert!(!federal.contains(time(21, 0, 0, 0)));
    }

    #[test]
    fn intersecting_windows_keeps_the_stricter_bounds() {
        let federal = window(time(8, 0, 0, 0), time(21, 0, 0, 0));
        let state = window(time(9, 0, 0, 0), time(20, 0, 0, 0));
        assert_eq!(federal.intersect(&state), state);
        let disjoint = window(time(21, 30, 0, 0), time(23, 0, 0, 0));
        assert!(federal.intersect(&disjoint).is_empty());
    }

    #[test]
    fn the_default_rules_are_federal_hours_and_florida_s_stricter_ones() {
        let rules = ComplianceRules::default();
        assert_eq!(rules.default_window.to_string(), "08:00-21:00");
        let florida = rules.state_rule("FL").unwrap();
        assert_eq!(florida.window_opt.unwrap().to_string(), "08:00-20:00");
        assert_eq!(florida.max_sms_per_24h_opt, Some(3));
        assert_eq!(rules.staleness, SignedDuration::from_hours(2));
    }

    #[test]
    fn rules_load_from_the_config_shape() {
        // JSON stands in for TOML here: both go through the same `Deserialize` impl.
        let json = r#"{
            "default_window": {"start": "08:00", "end": "21:00"},
            "staleness": "2h",
            "states": {
                "FL": {"window": {"start": "08:00", "end": "20:00"}, "max_sms_per_24h": 3},
                "OK": {"window": {"start": "08:00", "end": "20:00"}}
            }
        }"#;
        let rules: ComplianceRules = serde_json::from_str(json).unwrap();
        assert_eq!(rules.staleness, SignedDuration::from_hours(2));
        assert_eq!(rules.state_rule("FL"), ComplianceRules::default().state_rule("FL"));
        assert_eq!(rules.state_rule("OK").unwrap().max_sms_per_24h_opt, None);
    }

    #[test]
    fn missing_keys_keep_their_defaults() {
        let rules: ComplianceRules = serde_json::from_str(r#"{"staleness": "PT30M"}"#).unwrap();
        assert_eq!(rules.staleness, SignedDuration::from_mins(30));
        assert_eq!(rules.default_window, ComplianceRules::default().default_window);
        assert!(rules.state_rule("FL").is_some());
    }

    #[test]
    fn unknown_keys_and_backwards_windows_are_rejected() {
        let unknown = serde_json::from_str::<ComplianceRules>(r#"{"quiet_hours": "21:00"}"#).unwrap_err();
        assert!(unknown.to_string().contains("quiet_hours"), "{unknown}");
        let unknown_state_key =
            serde_json::from_str::<ComplianceRules>(r#"{"states": {"FL": {"max_sms": 3}}}"#).unwrap_err();
        assert!(unknown_state_key.to_string().contains("max_sms"), "{unknown_state_key}");
        let backwards =
            serde_json::from_str::<ComplianceRules>(r#"{"default_window": {"start": "21:00", "end": "08:00"}}"#)
                .unwrap_err();
        assert!(backwards.to_string().contains("window end must be after its start"), "{backwards}");
    }

    #[test]
    fn a_known_area_code_sets_the_recipient_s_zone_and_state() {
        let phone = Phone::parse("(305) 555-0100").unwrap();
        let profile = recipient_profile(&ComplianceRules::default(), Some(&phone), &los_angeles(), Some("CA"));
        assert_eq!(profile.source, ProfileSource::AreaCode);
        assert_eq!(profile.time_zone.iana_name(), Some("America/New_York"));
        assert_eq!(profile.state_opt.as_deref(), Some("FL"));
        assert_eq!(profile.window.to_string(), "08:00-20:00");
        assert_eq!(profile.max_sms_per_24h_opt, Some(3));
    }

    #[test]
    fn an_unknown_area_code_falls_back_to_the_location() {
        let phone = Phone::parse("(555) 123-4567").unwrap();
        let profile = recipient_profile(&ComplianceRules::default(), Some(&phone), &los_angeles(), Some("FL"));
        assert_eq!(profile.source, ProfileSource::Location);
        assert_eq!(profile.time_zone.iana_name(), Some("America/Los_Angeles"));
        assert_eq!(profile.state_opt.as_deref(), Some("FL"));
        assert_eq!(profile.window.to_string(), "08:00-20:00");
    }

    #[test]
    fn no_phone_and_no_state_gives_the_default_window_in_the_location_zone() {
        let profile = recipient_profile(&ComplianceRules::default(), None, &los_angeles(), None);
        assert_eq!(profile.source, ProfileSource::Location);
        assert_eq!(profile.state_opt, None);
        assert_eq!(profile.window.to_string(), "08:00-21:00");
        assert_eq!(profile.max_sms_per_24h_opt, None);
    }

    #[test]
    fn a_state_window_can_only_narrow_the_default_one() {
        let mut rules = ComplianceRules::default();
        let wide = StateRule { window_opt: Some(window(time(7, 0, 0, 0), time(22, 0, 0, 0))), ..StateRule::default() };
        rules.states.insert("TX".to_owned(), wide);
        let phone = Phone::parse("(214) 555-0100").unwrap();
        let profile = recipient_profile(&rules, Some(&phone), &los_angeles(), None);
        assert_eq!(profile.window.to_string(), "08:00-21:00");
    }
}
