//! Appointment times a location can offer: slots on a fixed grid inside its opening hours, in
//! its own time zone, far enough ahead to prepare, and clear of the appointments it already has.
//! Pure: the caller supplies the hours, the booked intervals and "now". Also the labels the
//! customer sees ("Fri Nov 27, 10:00 AM") and the hours lines the assistant quotes.

use jiff::civil::{Date, Time, Weekday};
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp, ToSpan};

use crate::ai::OfferedSlot;
use crate::domain::WeeklyHours;

/// How slots are cut and how many are offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotPolicy {
    /// Length of one appointment.
    pub duration: SignedDuration,
    /// Distance between candidate starts, counted from opening time.
    pub step: SignedDuration,
    /// The earliest start is this far after now.
    pub lead_time: SignedDuration,
    /// Days ahead (today included) to look for slots.
    pub horizon_days: i32,
    /// Slots offered at once.
    pub offer: usize,
    /// Slots offered on one day, spread at least `spread` apart, so the customer gets a choice
    /// of days and times of day rather than three consecutive hours.
    pub per_day: usize,
    pub spread: SignedDuration,
}

impl Default for SlotPolicy {
    fn default() -> Self {
        SlotPolicy {
            duration: SignedDuration::from_mins(60),
            step: SignedDuration::from_mins(60),
            lead_time: SignedDuration::from_hours(2),
            horizon_days: 14,
            offer: 3,
            per_day: 2,
            spread: SignedDuration::from_hours(3),
        }
    }
}

/// Returns every free slot on the grid within the horizon, soonest first (not spread out).
pub fn bookable_slots(
    hours: &WeeklyHours,
    tz: &TimeZone,
    now: Timestamp,
    booked: &[(Timestamp, Timestamp)],
    policy: &SlotPolicy,
) -> Vec<OfferedSlot> {
    let mut slots = Vec::new();
    let step_mins = policy.step.as_mins().max(1);
    let duration_mins = policy.duration.as_mins().max(1);
    let earliest = now.saturating_add(policy.lead_time).unwrap_or(now);
    let today = now.to_zoned(tz.clone()).date();
    for offset in 0..policy.horizon_days.max(0) {
        let Ok(date) = today.checked_add(offset.days()) else { break };
        for interval in hours.intervals_on(date.weekday()) {
            let opens = minutes_of(interval.opens);
            let closes = if interval.closes == Time::MAX { 24 * 60 } else { minutes_of(interval.closes) };
            let mut start = opens;
            while start + duration_mins <= closes {
                if let Some(slot) = slot_at(date, start, duration_mins, tz)
                    && slot.starts_at >= earliest
                    && !booked.iter().any(|(from, to)| slot.starts_at < *to && *from < slot.ends_at)
                {
                    slots.push(slot);
                }
                start += step_mins;
            }
        }
    }
    slots.sort_by_key(|slot| slot.starts_at);
    slots.dedup_by_key(|slot| slot.starts_at);
    slots
}

/// Returns the slots to offer: the soonest free ones, at most `per_day` a day and `spread` apart.
pub fn offer_slots(
    hours: &WeeklyHours,
    tz: &TimeZone,
    now: Timestamp,
    booked: &[(Timestamp, Timestamp)],
    policy: &SlotPolicy,
) -> Vec<OfferedSlot> {
    let mut offered: Vec<OfferedSlot> = Vec::with_capacity(policy.offer);
    for slot in bookable_slots(hours, tz, now, booked, policy) {
        if offered.len() == policy.offer {
            break;
        }
        let day = slot.starts_at.to_zoned(tz.clone()).date();
        let same_day: Vec<&OfferedSlot> =
            offered.iter().filter(|o| o.starts_at.to_zoned(tz.clone()).date() == day).collect();
        if same_day.len() >= policy.per_day {
            continue;
        }
        if same_day.iter().any(|o| (slot.starts_at.duration_since(o.starts_at)).abs() < policy.spread) {
            continue;
        }
        offered.push(slot);
    }
    offered
}

/// Returns the slot starting at `starts_at` if it is on the grid, inside the hours, far enough
/// ahead and free; `None` otherwise.
pub fn find_bookable(
    hours: &WeeklyHours,
    tz: &TimeZone,
    now: Timestamp,
    booked: &[(Timestamp, Timestamp)],
    policy: &SlotPolicy,
    starts_at: Timestamp,
) -> Option<OfferedSlot> {
    bookable_slots(hours, tz, now, booked, policy).into_iter().find(|slot| slot.starts_at == starts_at)
}

/// Formats a start for the customer: "Fri Nov 27, 10:00 AM" in the location's zone.
pub fn slot_label(starts_at: Timestamp, tz: &TimeZone) -> String {
    starts_at.to_zoned(tz.clone()).strftime("%a %b %-d, %-I:%M %p").to_string()
}

/// Formats "now" for the prompt: "Thursday, November 26, 2026 3:05 PM".
pub fn now_label(now: Timestamp, tz: &TimeZone) -> String {
    now.to_zoned(tz.clone()).strftime("%A, %B %-d, %Y %-I:%M %p").to_string()
}

/// Returns one line per weekday, Monday first: "Monday: 8:00 AM - 6:00 PM" (split shifts
/// joined with ", "), or "Sunday: closed".
pub fn hours_lines(hours: &WeeklyHours) -> Vec<String> {
    const DAYS: [(Weekday, &str); 7] = [
        (Weekday::Monday, "Monday"),
        (Weekday::Tuesday, "Tuesday"),
        (Weekday::Wednesday, "Wednesday"),
        (Weekday::Thursday, "Thursday"),
        (Weekday::Friday, "Friday"),
        (Weekday::Saturday, "Saturday"),
        (Weekday::Sunday, "Sunday"),
    ];
    DAYS.iter()
        .map(|(weekday, name)| {
            let intervals: Vec<String> = hours
                .intervals_on(*weekday)
                .map(|i| format!("{} - {}", clock_label(i.opens), clock_label(i.closes)))
                .collect();
            if intervals.is_empty() { format!("{name}: closed") } else { format!("{name}: {}", intervals.join(", ")) }
        })
        .collect()
}

fn clock_label(time: Time) -> String {
    if time == Time::MAX {
        return "midnight".to_owned();
    }
    let (hour, suffix) = match time.hour() {
        0 => (12, "AM"),
        h @ 1..=11 => (h, "AM"),
        12 => (12, "PM"),
        h => (h - 12, "PM"),
    };
    format!("{hour}:{:02} {suffix}", time.minute())
}

fn minutes_of(time: Time) -> i64 {
    i64::from(time.hour()) * 60 + i64::from(time.minute())
}

fn slot_at(date: Date, start_mins: i64, duration_mins: i64, tz: &TimeZone) -> Option<OfferedSlot> {
    let hour = i8::try_from(start_mins / 60).ok()?;
    let minute = i8::try_from(start_mins % 60).ok()?;
    let local = date.at(hour, minute, 0, 0);
    // A start in a DST gap moves forward; an ambiguous one takes the earlier instant.
    let starts_at = local.to_zoned(tz.clone()).ok()?.timestamp();
    let ends_at = starts_at.checked_add(SignedDuration::from_mins(duration_mins)).ok()?;
    Some(OfferedSlot { id: starts_at.to_string(), starts_at, ends_at, label: slot_label(starts_at, tz) })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn chicago() -> TimeZone {
        TimeZone::get("America/Chicago").expect("zone")
    }

    fn hours() -> WeeklyHours {
        WeeklyHours::parse("mon-fri 08:00-18:00, sat 09:00-14:00").expect("hours")
    }

    fn at(text: &str) -> Timestamp {
        text.parse().expect("timestamp")
    }

    #[test]
    fn slots_fall_inside_the_hours_in_the_locations_zone_after_the_lead_time() {
        // Thursday 2026-11-26 15:05 in Chicago.
        let now = at("2026-11-26T21:05:00Z");
        let slots = bookable_slots(&hours(), &chicago(), now, &[], &SlotPolicy::default());
        assert!(!slots.is_empty());
        for slot in &slots {
            let local = slot.starts_at.to_zoned(chicago());
            let end = slot.ends_at.to_zoned(chicago());
            assert!(hours().is_open_at(local.weekday(), local.time()), "{}", slot.label);
            assert!(end.time() <= Time::new(18, 0, 0, 0).expect("time"), "{}", slot.label);
            assert!(slot.starts_at >= now.checked_add(SignedDuration::from_hours(2)).expect("add"));
            assert_ne!(local.weekday(), Weekday::Sunday);
        }
        // 17:00 is the last start today (ends at closing), and it is less than 2 h away: the
        // first slot is Friday at opening.
        assert_eq!(slots[0].label, "Fri Nov 27, 8:00 AM");
        assert_eq!(slots[0].id, "2026-11-27T14:00:00Z");
    }

    #[test]
    fn booked_appointments_are_never_offered_again() {
        let now = at("2026-11-26T21:05:00Z");
        let booked = [(at("2026-11-27T14:00:00Z"), at("2026-11-27T15:00:00Z"))];
        let slots = bookable_slots(&hours(), &chicago(), now, &booked, &SlotPolicy::default());
        assert!(slots.iter().all(|s| s.starts_at != at("2026-11-27T14:00:00Z")));
        assert_eq!(slots[0].label, "Fri Nov 27, 9:00 AM");
        let taken = find_bookable(&hours(), &chicago(), now, &booked, &SlotPolicy::default(), booked[0].0);
        assert_eq!(taken, None);
    }

    #[test]
    fn the_offer_spreads_slots_over_days_and_times_of_day() {
        let now = at("2026-11-26T21:05:00Z");
        let offer = offer_slots(&hours(), &chicago(), now, &[], &SlotPolicy::default());
        let labels: Vec<&str> = offer.iter().map(|s| s.label.as_str()).collect();
        assert_eq!(labels, ["Fri Nov 27, 8:00 AM", "Fri Nov 27, 11:00 AM", "Sat Nov 28, 9:00 AM"]);
    }

    #[test]
    fn a_start_off_the_grid_or_outside_the_hours_is_not_bookable() {
        let now = at("2026-11-26T21:05:00Z");
        let policy = SlotPolicy::default();
        // 08:30 is off the hourly grid; Sunday is closed; 19:00 is after closing.
        for start in ["2026-11-27T14:30:00Z", "2026-11-29T16:00:00Z", "2026-11-28T01:00:00Z"] {
            assert_eq!(find_bookable(&hours(), &chicago(), now, &[], &policy, at(start)), None, "{start}");
        }
        assert!(find_bookable(&hours(), &chicago(), now, &[], &policy, at("2026-11-27T16:00:00Z")).is_some());
    }

    #[test]
    fn hours_lines_name_every_day_with_twelve_hour_times() {
        let lines = hours_lines(&hours());
        assert_eq!(lines[0], "Monday: 8:00 AM - 6:00 PM");
        assert_eq!(lines[5], "Saturday: 9:00 AM - 2:00 PM");
        assert_eq!(lines[6], "Sunday: closed");
    }

    #[test]
    fn never_open_hours_offer_nothing() {
        let slots =
            offer_slots(&WeeklyHours::default(), &chicago(), Timestamp::UNIX_EPOCH, &[], &SlotPolicy::default());
        assert!(slots.is_empty());
    }

    proptest! {
        #[test]
        fn offered_slots_never_overlap_a_booking_or_each_other(
            offset_mins in 0i64..(60 * 24 * 30),
            booked_offsets in proptest::collection::vec((0i64..(60 * 24 * 14), 15i64..180), 0..12),
        ) {
            let now = at("2026-11-01T00:00:00Z").checked_add(SignedDuration::from_mins(offset_mins)).expect("add");
            let booked: Vec<(Timestamp, Timestamp)> = booked_offsets
                .iter()
                .map(|(start, len)| {
                    let from = now.checked_add(SignedDuration::from_mins(*start)).expect("add");
                    (from, from.checked_add(SignedDuration::from_mins(*len)).expect("add"))
                })
                .collect();
            let slots = bookable_slots(&hours(), &chicago(), now, &booked, &SlotPolicy::default());
            for (i, slot) in slots.iter().enumerate() {
                prop_assert!(booked.iter().all(|(from, to)| !(slot.starts_at < *to && *from < slot.ends_at)));
                if let Some(next) = slots.get(i + 1) {
                    prop_assert!(slot.ends_at <= next.starts_at);
                }
                let local = slot.starts_at.to_zoned(chicago());
                prop_assert!(hours().is_open_at(local.weekday(), local.time()));
            }
        }
    }
}
