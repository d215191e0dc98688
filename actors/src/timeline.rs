//! The pure cadence engine: turns a lead's arrival, a cadence, the location's hours and zone, the
//! recipient's consent and the compliance rules into a sorted plan of touches. Owns when each
//! touch is meant to go (`intended_at`) and when the compliance clock lets it go
//! (`scheduled_at`), plus the send-time checks (staleness, the window right now). No async, no
//! IO: storing the plan, sending and re-checking consent at send time are left to the actors.
//!
//! Placement searches forward by jumping to the next window opening, the next opening of the
//! location or the end of the rolling 24 h cap, never minute by minute, and gives up after
//! [`SEARCH_HORIZON`]: such a step is left out of the plan.

use std::sync::LazyLock;

use jiff::civil::{Date, DateTime, Time};
use jiff::tz::{AmbiguousOffset, TimeZone};
use jiff::{RoundMode, SignedDuration, Timestamp, TimestampRound, Unit};

use crate::compliance::{ComplianceRules, RecipientProfile, recipient_profile};
use crate::domain::{Cadence, CadenceStep, Channel, NewTouchpoint, Phone, StepRule, WeeklyHours};

/// How far past its intended time a touch may be moved before the step is dropped.
pub const SEARCH_HORIZON: SignedDuration = SignedDuration::from_hours(14 * 24);

/// The length of the rolling window a state's SMS cap counts in.
const ROLLING_DAY: SignedDuration = SignedDuration::from_hours(24);

/// A fuse on placement rounds. Every round moves the candidate forward to a window or interval
/// opening or past a cap, so the horizon ends the search long before this many rounds.
const MAX_PLACEMENT_ROUNDS: usize = 1024;

/// Stands in for business hours when a location has none on file.
static FALLBACK_HOURS: LazyLock<WeeklyHours> =
    LazyLock::new(|| WeeklyHours::parse("mon-fri 09:00-17:00").expect("the fallback hours are a valid literal"));

/// Holds everything [`plan`] needs about one lead.
#[derive(Debug, Clone, Copy)]
pub struct PlanInput<'a> {
    /// When the lead reached us; every step's delay counts from here.
    pub arrived_at: Timestamp,
    pub cadence: &'a Cadence,
    /// The location's zone: delays in days, `at_local_time` and business hours are read in it.
    pub location_tz: &'a TimeZone,
    /// Empty hours mean none on file; business-hours steps then use mon-fri 09:00-17:00.
    pub location_hours: &'a WeeklyHours,
    /// The location's two-letter state, used when the phone's area code doesn't say.
    pub location_state_opt: Option<&'a str>,
    pub phone_opt: Option<&'a Phone>,
    /// Consent: false when the customer opted out of SMS.
    pub sms_allowed: bool,
    /// Consent: false when the customer opted out of email (or has no address).
    pub email_allowed: bool,
    pub compliance: &'a ComplianceRules,
}

/// Returns the lead's plan: one touch per step the customer can receive and the compliance clock
/// can place within [`SEARCH_HORIZON`], sorted by `scheduled_at` (then SMS before email, then
/// step index).
///
/// A touch keeps `intended_at` exactly when nothing moves it; a moved touch lands on the first
/// whole minute that satisfies every rule, and its `placement_reason_opt` names each rule that
/// moved it. SMS steps are left out without consent or a phone, email steps without consent.
pub fn plan(input: &PlanInput<'_>) -> Vec<NewTouchpoint> {
    let can_text = input.sms_allowed && input.phone_opt.is_some();
    let has_sms_step = input.cadence.steps.iter().any(|step| step.channel == Channel::Sms);
    let profile_opt = (can_text && has_sms_step)
        .then(|| recipient_profile(input.compliance, input.phone_opt, input.location_tz, input.location_state_opt));
    let business_hours = if input.location_hours.is_empty() {
        BusinessHours { hours: &FALLBACK_HOURS, tz: input.location_tz, is_fallback: true }
    } else {
        BusinessHours { hours: input.location_hours, tz: input.location_tz, is_fallback: false }
    };

    let arrived = input.arrived_at.to_zoned(input.location_tz.clone());
    let mut steps: Vec<(Timestamp, u32, &CadenceStep)> = Vec::with_capacity(input.cadence.steps.len());
    for (index, step) in input.cadence.steps.iter().enumerate() {
        let Ok(step_index) = u32::try_from(index) else { break };
        let is_allowed = match step.channel {
            Channel::Sms => can_text,
            Channel::Email => input.email_allowed,
        };
        if !is_allowed {
            continue;
        }
        // Only a delay beyond jiff's range of instants has no intended time; such a step can't go.
        let Some(intended_at) = intended_at(&arrived, step) else { continue };
        steps.push((intended_at, step_index, step));
    }
    // The SMS cap keeps the earliest touches and pushes later ones, so place in intended order.
    steps.sort_by_key(|(intended_at, step_index, _)| (*intended_at, *step_index));

    let mut sms_scheduled: Vec<Timestamp> = Vec::new();
    let mut touchpoints = Vec::with_capacity(steps.len());
    for (intended_at, step_index, step) in steps {
        let sms_profile_opt = match step.channel {
            Channel::Sms => profile_opt.as_ref(),
            Channel::Email => None,
        };
        let constraints = Constraints {
            sms_profile_opt,
            business_hours_opt: (step.rule == StepRule::BusinessHours).then_some(&business_hours),
            sms_scheduled: &sms_scheduled,
        };
        let Some(placement) = constraints.place(intended_at) else { continue };
        let placement_reason_opt = placement.moved_by.reason_opt(&constraints);
        if sms_profile_opt.is_some() {
            let position = sms_scheduled.partition_point(|at| *at <= placement.scheduled_at);
            sms_scheduled.insert(position, placement.scheduled_at);
        }
        touchpoints.push(NewTouchpoint {
            step_index,
            channel: step.channel,
            template: step.template.clone(),
            intended_at,
            scheduled_at: placement.scheduled_at,
            placement_reason_opt,
        });
    }
    touchpoints.sort_by_key(|t| (t.scheduled_at, channel_rank(t.channel), t.step_index));
    touchpoints
}

/// Returns whether a touch scheduled at `scheduled_at` is too late to send at `now`: it would go
/// out more than the configured staleness after its slot, so it is skipped rather than sent.
pub fn is_stale(scheduled_at: Timestamp, now: Timestamp, rules: &ComplianceRules) -> bool {
    now.duration_since(scheduled_at) > rules.staleness
}

/// Returns whether an SMS to this recipient may go out at `now`, for the re-check at send time.
pub fn sms_allowed_now(profile: &RecipientProfile, now: Timestamp) -> bool {
    profile.window.contains(profile.time_zone.to_datetime(now).time())
}

/// Returns when a step is meant to go: arrival plus the delay (days as calendar days in the
/// location's zone), then the first occurrence of `at_local_time` at or after that, if set.
/// `None` only when the arithmetic leaves jiff's range.
fn intended_at(arrived: &jiff::Zoned, step: &CadenceStep) -> Option<Timestamp> {
    let after_delay = arrived.checked_add(step.delay).ok()?.timestamp();
    match step.at_local_time_opt {
        None => Some(after_delay),
        Some(local_time) => first_occurrence(arrived.time_zone(), after_delay, local_time),
    }
}

/// Orders SMS before email among touches scheduled at the same instant.
fn channel_rank(channel: Channel) -> u8 {
    match channel {
        Channel::Sms => 0,
        Channel::Email => 1,
    }
}

/// Location hours in the location's zone, with a note of whether they are the fallback.
#[derive(Debug)]
struct BusinessHours<'a> {
    hours: &'a WeeklyHours,
    tz: &'a TimeZone,
    is_fallback: bool,
}

/// The rules that apply to one step.
#[derive(Debug)]
struct Constraints<'a> {
    /// Set for SMS steps: the recipient's window and cap.
    sms_profile_opt: Option<&'a RecipientProfile>,
    /// Set for business-hours steps.
    business_hours_opt: Option<&'a BusinessHours<'a>>,
    /// The SMS of this plan placed so far, sorted; the cap counts them.
    sms_scheduled: &'a [Timestamp],
}

/// What one rule says about a candidate instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    Satisfied,
    /// Not allowed now; nothing before this instant can satisfy the rule.
    NotBefore(Timestamp),
    /// The rule can never be satisfied.
    Never,
}

/// Records which rules moved a touch.
#[derive(Debug, Clone, Copy, Default)]
struct MovedBy {
    quiet_hours: bool,
    business_hours: bool,
    sms_cap: bool,
}

/// Where a touch lands and why.
#[derive(Debug)]
struct Placement {
    scheduled_at: Timestamp,
    moved_by: MovedBy,
}

impl Constraints<'_> {
    /// Returns the earliest instant at or after `intended_at` that every rule allows, rounded up
    /// to a whole minute when moved, or `None` past the horizon or when a rule can never hold.
    fn place(&self, intended_at: Timestamp) -> Option<Placement> {
        let deadline = intended_at.checked_add(SEARCH_HORIZON).ok()?;
        let mut candidate = intended_at;
        let mut moved_by = MovedBy::default();
        for _ in 0..MAX_PLACEMENT_ROUNDS {
            let checks = [
                (self.sms_profile_opt.map(|profile| check_window(profile, candidate)), &mut moved_by.quiet_hours),
                (self.business_hours_opt.map(|hours| check_hours(hours, candidate)), &mut moved_by.business_hours),
                (self.sms_profile_opt.map(|profile| self.check_cap(profile, candidate)), &mut moved_by.sms_cap),
            ];
            // All violated rules move the candidate together, to the latest of their bounds,
            // and each of them is named in the reason.
            let mut next_opt: Option<Timestamp> = None;
            for (check_opt, moved_flag) in checks {
                match check_opt {
                    None | Some(Check::Satisfied) => {}
                    Some(Check::Never) => return None,
                    Some(Check::NotBefore(bound)) => {
                        *moved_flag = true;
                        next_opt = Some(next_opt.map_or(bound, |next| next.max(bound)));
                    }
                }
            }
            let Some(next) = next_opt else {
                return Some(Placement { scheduled_at: candidate, moved_by });
            };
            let mut next = ceil_to_minute(next);
            if next <= candidate {
                // A rule whose next opening is the candidate itself (an opening swallowed by a
                // DST gap) must still let the search move on.
                next = ceil_to_minute(candidate.checked_add(SignedDuration::from_mins(1)).ok()?);
            }
            if next > deadline {
                return None;
            }
            candidate = next;
        }
        None
    }

    /// Checks the state's cap: no more than N SMS of this plan in any rolling 24 h. A candidate
    /// breaks it when some N already placed SMS and the candidate fit in one 24 h window; it
    /// must then wait until 24 h after the first SMS of every such group.
    fn check_cap(&self, profile: &RecipientProfile, candidate: Timestamp) -> Check {
        let Some(max_sms) = profile.max_sms_per_24h_opt else { return Check::Satisfied };
        let Ok(group_len) = usize::try_from(max_sms) else { return Check::Satisfied };
        if group_len == 0 {
            return Check::Never;
        }
        let window_start = candidate.saturating_sub(ROLLING_DAY).unwrap_or(candidate);
        let window_end = candidate.saturating_add(ROLLING_DAY).unwrap_or(candidate);
        let first = self.sms_scheduled.partition_point(|at| *at <= window_start);
        let end = self.sms_scheduled.partition_point(|at| *at < window_end);
        let nearby = &self.sms_scheduled[first..end];
        let mut not_before_opt: Option<Timestamp> = None;
        for group in nearby.windows(group_len) {
            let (oldest, newest) = (group[0], group[group_len - 1]);
            let span = newest.max(candidate).duration_since(oldest.min(candidate));
            if span < ROLLING_DAY {
                let bound = oldest.saturating_add(ROLLING_DAY).unwrap_or(oldest);
                not_before_opt = Some(not_before_opt.map_or(bound, |b| b.max(bound)));
            }
        }
        not_before_opt.map_or(Check::Satisfied, Check::NotBefore)
    }
}

impl MovedBy {
    /// Returns "quiet hours in America/New_York (FL 08:00-20:00); ...", or `None` when unmoved.
    fn reason_opt(&self, constraints: &Constraints<'_>) -> Option<String> {
        let mut reasons: Vec<String> = Vec::new();
        if let (true, Some(profile)) = (self.quiet_hours, constraints.sms_profile_opt) {
            let zone = profile.time_zone.iana_name().unwrap_or("the recipient's time zone");
            let window = profile.window;
            reasons.push(match &profile.state_opt {
                Some(state) => format!("quiet hours in {zone} ({state} {window})"),
                None => format!("quiet hours in {zone} ({window})"),
            });
        }
        if let (true, Some(hours)) = (self.business_hours, constraints.business_hours_opt) {
            reasons.push(if hours.is_fallback {
                "business hours of the location (none on file, so mon-fri 09:00-17:00)".to_owned()
            } else {
                "business hours of the location".to_owned()
            });
        }
        if let (true, Some(profile)) = (self.sms_cap, constraints.sms_profile_opt) {
            let max = profile.max_sms_per_24h_opt.unwrap_or_default();
            reasons.push(match &profile.state_opt {
                Some(state) => format!("at most {max} SMS per 24 h in {state}"),
                None => format!("at most {max} SMS per 24 h"),
            });
        }
        (!reasons.is_empty()).then(|| reasons.join("; "))
    }
}

/// Checks the recipient's window; when outside, points at its next opening.
fn check_window(profile: &RecipientProfile, candidate: Timestamp) -> Check {
    if profile.window.is_empty() {
        return Check::Never;
    }
    if sms_allowed_now(profile, candidate) {
        return Check::Satisfied;
    }
    match first_occurrence(&profile.time_zone, candidate, profile.window.start) {
        Some(opening) => Check::NotBefore(opening),
        None => Check::Never,
    }
}

/// Checks the location's hours; when closed, points at the next opening within a week.
fn check_hours(business: &BusinessHours<'_>, candidate: Timestamp) -> Check {
    let local = business.tz.to_datetime(candidate);
    if business.hours.is_open_at(local.weekday(), local.time()) {
        return Check::Satisfied;
    }
    let mut date = local.date();
    // Eight days: today's later intervals, six other days, and today's weekday again.
    for day_offset in 0..8 {
        for interval in business.hours.intervals_on(date.weekday()) {
            if day_offset == 0 && interval.opens <= local.time() {
                continue;
            }
            if let Some(opening) = first_instant_at_or_after(business.tz, candidate, date.to_datetime(interval.opens)) {
                return Check::NotBefore(opening);
            }
        }
        let Ok(next_date) = date.tomorrow() else { return Check::Never };
        date = next_date;
    }
    Check::Never
}

/// Returns the first instant at or after `from` whose local time in `tz` is `local_time`; on a
/// day where that time falls in a DST gap, the first instant after the gap stands in for it.
fn first_occurrence(tz: &TimeZone, from: Timestamp, local_time: Time) -> Option<Timestamp> {
    let mut date: Date = tz.to_datetime(from).date();
    // Today's occurrence may have passed; tomorrow's cannot have. A third day covers a zone
    // that skips a whole calendar day.
    for _ in 0..3 {
        if let Some(found) = first_instant_at_or_after(tz, from, date.to_datetime(local_time)) {
            return Some(found);
        }
        date = date.tomorrow().ok()?;
    }
    None
}

/// Returns the earliest instant at or after `not_before` that shows `local` in `tz`: for a time
/// repeated by a DST fold, the earlier of its two instants that qualifies; for a time skipped by
/// a gap, the instant the gap ends.
fn first_instant_at_or_after(tz: &TimeZone, not_before: Timestamp, local: DateTime) -> Option<Timestamp> {
    let candidates = match tz.to_ambiguous_timestamp(local).offset() {
        AmbiguousOffset::Unambiguous { offset } => [offset.to_timestamp(local).ok(), None],
        AmbiguousOffset::Gap { after, .. } => {
            // Read with the later offset, the skipped time lands just before the transition.
            let before_gap = after.to_timestamp(local).ok()?;
            [tz.following(before_gap).next().map(|transition| transition.timestamp()), None]
        }
        AmbiguousOffset::Fold { before, after } => [before.to_timestamp(local).ok(), after.to_timestamp(local).ok()],
    };
    candidates.into_iter().flatten().find(|instant| *instant >= not_before)
}

/// Rounds up to the next whole minute; a whole minute stays as it is.
fn ceil_to_minute(instant: Timestamp) -> Timestamp {
    let options = TimestampRound::new().smallest(Unit::Minute).mode(RoundMode::Ceil);
    // Fails only within a minute of jiff's maximum instant, far past any horizon.
    instant.round(options).unwrap_or(instant)
}

#[cfg(test)]
mod tests {
    use jiff::civil::{date, time};
    use jiff::{Span, Zoned};
    use proptest::prelude::*;

    use super::*;
    use crate::compliance::{StateRule, Window};
    use crate::nanp::area_code_region;

    const LOCATION_HOURS: &str = "mon-fri 08:00-18:00, sat 09:00-14:00";
    const FL_REASON: &str = "quiet hours in America/New_York (FL 08:00-20:00)";
    const FL_CAP_REASON: &str = "quiet hours in America/New_York (FL 08:00-20:00); at most 3 SMS per 24 h in FL";
    const LA_QUIET: &str = "quiet hours in America/Los_Angeles (CA 08:00-21:00)";
    const LA_QUIET_AND_HOURS: &str =
        "quiet hours in America/Los_Angeles (CA 08:00-21:00); business hours of the location";
    const HOURS_REASON: &str = "business hours of the location";

    fn step(channel: Channel, delay: Span, at_local_time_opt: Option<Time>, rule: StepRule) -> CadenceStep {
        let template = format!("{channel}_follow_up");
        CadenceStep { channel, template, delay, at_local_time_opt, rule }
    }

    fn cadence(steps: Vec<CadenceStep>) -> Cadence {
        Cadence { name: "test".to_owned(), version: 1, steps }
    }

    /// The product's default follow-up plan.
    fn default_cadence() -> Cadence {
        use Channel::{Email, Sms};
        use StepRule::{AnyTimeAllowed, BusinessHours};
        cadence(vec![
            step(Sms, Span::new(), None, AnyTimeAllowed),
            step(Email, Span::new(), None, AnyTimeAllowed),
            step(Sms, Span::new().minutes(10), None, AnyTimeAllowed),
            step(Email, Span::new().minutes(1), Some(time(9, 0, 0, 0)), BusinessHours),
            step(Sms, Span::new().days(2), None, BusinessHours),
            step(Sms, Span::new().days(5), None, BusinessHours),
            step(Email, Span::new().days(10), None, BusinessHours),
        ])
    }

    /// Five SMS ten minutes apart: enough to run into a cap of three per 24 h.
    fn sms_burst_cadence() -> Cadence {
        let steps =
            (0..5).map(|n| step(Channel::Sms, Span::new().minutes(10 * n), None, StepRule::AnyTimeAllowed)).collect();
        cadence(steps)
    }

    fn zone(name: &str) -> TimeZone {
        TimeZone::get(name).unwrap()
    }

    fn local(instant: Timestamp, tz: &TimeZone) -> String {
        instant.to_zoned(tz.clone()).strftime("%a %Y-%m-%d %H:%M").to_string()
    }

    /// Holds owned inputs so each test can borrow a [`PlanInput`] from them.
    #[derive(Debug)]
    struct Lead {
        arrived: Zoned,
        cadence: Cadence,
        hours: WeeklyHours,
        state_opt: Option<&'static str>,
        phone_opt: Option<Phone>,
        sms_allowed: bool,
        email_allowed: bool,
        rules: ComplianceRules,
    }

    impl Lead {
        fn new(arrived: Zoned, cadence: Cadence, phone: &str) -> Lead {
            Lead {
                arrived,
                cadence,
                hours: WeeklyHours::parse(LOCATION_HOURS).unwrap(),
                state_opt: None,
                phone_opt: Some(Phone::parse(phone).unwrap()),
                sms_allowed: true,
                email_allowed: true,
                rules: ComplianceRules::default(),
            }
        }

        fn plan(&self) -> Vec<NewTouchpoint> {
            plan(&PlanInput {
                arrived_at: self.arrived.timestamp(),
                cadence: &self.cadence,
                location_tz: self.arrived.time_zone(),
                location_hours: &self.hours,
                location_state_opt: self.state_opt,
                phone_opt: self.phone_opt.as_ref(),
                sms_allowed: self.sms_allowed,
                email_allowed: self.email_allowed,
                compliance: &self.rules,
            })
        }

        fn profile(&self) -> RecipientProfile {
            recipient_profile(&self.rules, self.phone_opt.as_ref(), self.arrived.time_zone(), self.state_opt)
        }
    }

    /// Returns (step index, channel, scheduled local time, reason) per touch, in plan order.
    fn summary(touchpoints: &[NewTouchpoint], tz: &TimeZone) -> Vec<(u32, Channel, String, Option<String>)> {
        touchpoints
            .iter()
            .map(|t| (t.step_index, t.channel, local(t.scheduled_at, tz), t.placement_reason_opt.clone()))
            .collect()
    }

    fn row(
        step_index: u32,
        channel: Channel,
        at: &str,
        reason_opt: Option<&str>,
    ) -> (u32, Channel, String, Option<String>) {
        (step_index, channel, at.to_owned(), reason_opt.map(str::to_owned))
    }

    #[test]
    fn walking_the_default_cadence_from_a_friday_night_lead_in_los_angeles() {
        let la = zone("America/Los_Angeles");
        let arrived = date(2026, 11, 20).at(22, 30, 0, 0).to_zoned(la.clone()).unwrap();
        let lead = Lead::new(arrived, default_cadence(), "(213) 555-0100");

        let touchpoints = lead.plan();

        use Channel::{Email, Sms};
        assert_eq!(
            summary(&touchpoints, &la),
            vec![
                row(1, Email, "Fri 2026-11-20 22:30", None),
                row(0, Sms, "Sat 2026-11-21 08:00", Some(LA_QUIET)),
                row(2, Sms, "Sat 2026-11-21 08:00", Some(LA_QUIET)),
                row(3, Email, "Sat 2026-11-21 09:00", None),
                row(4, Sms, "Mon 2026-11-23 08:00", Some(LA_QUIET_AND_HOURS)),
                row(5, Sms, "Thu 2026-11-26 08:00", Some(LA_QUIET_AND_HOURS)),
                row(6, Email, "Tue 2026-12-01 08:00", Some(HOURS_REASON)),
            ]
        );
        let intended: Vec<String> = touchpoints.iter().map(|t| local(t.intended_at, &la)).collect();
        assert_eq!(
            intended,
            [
                "Fri 2026-11-20 22:30",
                "Fri 2026-11-20 22:30",
                "Fri 2026-11-20 22:40",
                "Sat 2026-11-21 09:00",
                "Sun 2026-11-22 22:30",
                "Wed 2026-11-25 22:30",
                "Mon 2026-11-30 22:30",
            ]
        );
    }

    #[test]
    fn walking_the_default_cadence_across_the_spring_forward_day() {
        let la = zone("America/Los_Angeles");
        let arrived = date(2026, 3, 8).at(1, 30, 0, 0).to_zoned(la.clone()).unwrap();
        assert_eq!(arrived.offset().seconds(), -8 * 3600, "arrives in PST, before the gap");
        let lead = Lead::new(arrived, default_cadence(), "(213) 555-0100");

        let touchpoints = lead.plan();

        use Channel::{Email, Sms};
        assert_eq!(
            summary(&touchpoints, &la),
            vec![
                row(1, Email, "Sun 2026-03-08 01:30", None),
                row(0, Sms, "Sun 2026-03-08 08:00", Some(LA_QUIET)),
                row(2, Sms, "Sun 2026-03-08 08:00", Some(LA_QUIET)),
                row(3, Email, "Mon 2026-03-09 08:00", Some(HOURS_REASON)),
                row(4, Sms, "Tue 2026-03-10 08:00", Some(LA_QUIET_AND_HOURS)),
                row(5, Sms, "Fri 2026-03-13 08:00", Some(LA_QUIET_AND_HOURS)),
                row(6, Email, "Wed 2026-03-18 08:00", Some(HOURS_REASON)),
            ]
        );
        // 08:00 on the day of the change is already PDT: 15:00 UTC.
        assert_eq!(touchpoints[1].scheduled_at, "2026-03-08T15:00:00Z".parse::<Timestamp>().unwrap());
        // Two calendar days keep the local time across the change: 01:30 PDT, not 02:30.
        let two_days = touchpoints.iter().find(|t| t.step_index == 4).unwrap();
        assert_eq!(local(two_days.intended_at, &la), "Tue 2026-03-10 01:30");
        let email_at_nine = touchpoints.iter().find(|t| t.step_index == 3).unwrap();
        assert_eq!(local(email_at_nine.intended_at, &la), "Sun 2026-03-08 09:00");
    }

    #[test]
    fn walking_the_default_cadence_across_the_fall_back_day() {
        let la = zone("America/Los_Angeles");
        let arrived = date(2026, 11, 1).at(1, 30, 0, 0).to_zoned(la.clone()).unwrap();
        assert_eq!(arrived.offset().seconds(), -7 * 3600, "arrives in PDT, the first 01:30");
        let lead = Lead::new(arrived, default_cadence(), "(213) 555-0100");

        let touchpoints = lead.plan();

        use Channel::{Email, Sms};
        assert_eq!(
            summary(&touchpoints, &la),
            vec![
                row(1, Email, "Sun 2026-11-01 01:30", None),
                row(0, Sms, "Sun 2026-11-01 08:00", Some(LA_QUIET)),
                row(2, Sms, "Sun 2026-11-01 08:00", Some(LA_QUIET)),
                row(3, Email, "Mon 2026-11-02 08:00", Some(HOURS_REASON)),
                row(4, Sms, "Tue 2026-11-03 08:00", Some(LA_QUIET_AND_HOURS)),
                row(5, Sms, "Fri 2026-11-06 08:00", Some(LA_QUIET_AND_HOURS)),
                row(6, Email, "Wed 2026-11-11 08:00", Some(HOURS_REASON)),
            ]
        );
        assert_eq!(touchpoints[1].scheduled_at, "2026-11-01T16:00:00Z".parse::<Timestamp>().unwrap());
        let ten_minutes = touchpoints.iter().find(|t| t.step_index == 2).unwrap();
        assert_eq!(ten_minutes.intended_at, "2026-11-01T08:40:00Z".parse::<Timestamp>().unwrap(), "01:40 PDT");
        let two_days = touchpoints.iter().find(|t| t.step_index == 4).unwrap();
        assert_eq!(two_days.intended_at, "2026-11-03T09:30:00Z".parse::<Timestamp>().unwrap(), "01:30 PST");
    }

    #[test]
    fn a_local_time_skipped_by_the_spring_gap_resolves_to_the_end_of_the_gap() {
        let la = zone("America/Los_Angeles");
        let arrived = date(2026, 3, 8).at(1, 0, 0, 0).to_zoned(la.clone()).unwrap();
        let at_half_past_two = step(Channel::Email, Span::new(), Some(time(2, 30, 0, 0)), StepRule::AnyTimeAllowed);
        let lead = Lead::new(arrived, cadence(vec![at_half_past_two]), "(213) 555-0100");

        let touchpoints = lead.plan();

        assert_eq!(touchpoints.len(), 1);
        assert_eq!(touchpoints[0].intended_at, "2026-03-08T10:00:00Z".parse::<Timestamp>().unwrap());
        assert_eq!(local(touchpoints[0].intended_at, &la), "Sun 2026-03-08 03:00");
        assert_eq!(touchpoints[0].scheduled_at, touchpoints[0].intended_at);
    }

    #[test]
    fn a_local_time_repeated_by_the_fall_fold_takes_the_first_occurrence_not_yet_passed() {
        let la = zone("America/Los_Angeles");
        let arrived = date(2026, 11, 1).at(1, 30, 0, 0).to_zoned(la).unwrap();
        let at_quarter_to_two = |delay| step(Channel::Email, delay, Some(time(1, 45, 0, 0)), StepRule::AnyTimeAllowed);
        let steps = vec![at_quarter_to_two(Span::new()), at_quarter_to_two(Span::new().minutes(30))];
        let lead = Lead::new(arrived, cadence(steps), "(213) 555-0100");

        let touchpoints = lead.plan();

        let intended: Vec<(u32, Timestamp)> = touchpoints.iter().map(|t| (t.step_index, t.intended_at)).collect();
        assert_eq!(
            intended,
            [
                (0, "2026-11-01T08:45:00Z".parse().unwrap()), // 01:45 PDT
                (1, "2026-11-01T09:45:00Z".parse().unwrap()), // 01:45 PST: 02:00 PDT is 01:00 PST
            ]
        );
    }

    #[test]
    fn a_florida_phone_gets_no_sms_after_20_00_florida_time_and_at_most_3_per_24_hours() {
        let la = zone("America/Los_Angeles");
        let new_york = zone("America/New_York");
        // 16:30 in Los Angeles is 19:30 in Miami: three SMS fit before Florida's 20:00.
        let arrived = date(2026, 11, 17).at(16, 30, 0, 0).to_zoned(la).unwrap();
        let lead = Lead::new(arrived, sms_burst_cadence(), "(305) 555-0100");

        let touchpoints = lead.plan();

        use Channel::Sms;
        assert_eq!(
            summary(&touchpoints, &new_york),
            vec![
                row(0, Sms, "Tue 2026-11-17 19:30", None),
                row(1, Sms, "Tue 2026-11-17 19:40", None),
                row(2, Sms, "Tue 2026-11-17 19:50", None),
                row(3, Sms, "Wed 2026-11-18 19:30", Some(FL_CAP_REASON)),
                row(4, Sms, "Wed 2026-11-18 19:40", Some(FL_CAP_REASON)),
            ]
        );
        for touchpoint in &touchpoints {
            let florida_time = touchpoint.scheduled_at.to_zoned(new_york.clone()).time();
            assert!(florida_time >= time(8, 0, 0, 0) && florida_time < time(20, 0, 0, 0), "{florida_time}");
        }
        for group in touchpoints.windows(4) {
            assert!(group[3].scheduled_at.duration_since(group[0].scheduled_at) >= ROLLING_DAY);
        }
    }

    #[test]
    fn a_florida_phone_after_20_00_florida_time_waits_for_08_00_florida_time() {
        let la = zone("America/Los_Angeles");
        let arrived = date(2026, 11, 17).at(17, 30, 0, 0).to_zoned(la.clone()).unwrap();
        let first_sms = step(Channel::Sms, Span::new(), None, StepRule::AnyTimeAllowed);
        let lead = Lead::new(arrived, cadence(vec![first_sms]), "(305) 555-0100");

        let touchpoints = lead.plan();

        assert_eq!(summary(&touchpoints, &la), vec![row(0, Channel::Sms, "Wed 2026-11-18 05:00", Some(FL_REASON))]);
    }

    #[test]
    fn sms_steps_are_dropped_without_consent_or_a_phone() {
        let la = zone("America/Los_Angeles");
        let arrived = date(2026, 11, 17).at(10, 0, 0, 0).to_zoned(la).unwrap();
        let mut opted_out = Lead::new(arrived.clone(), default_cadence(), "(213) 555-0100");
        opted_out.sms_allowed = false;
        let mut no_phone = Lead::new(arrived, default_cadence(), "(213) 555-0100");
        no_phone.phone_opt = None;

        for lead in [opted_out, no_phone] {
            let touchpoints = lead.plan();
            let steps: Vec<u32> = touchpoints.iter().map(|t| t.step_index).collect();
            assert_eq!(steps, [1, 3, 6]);
            assert!(touchpoints.iter().all(|t| t.channel == Channel::Email));
        }
    }

    #[test]
    fn email_steps_are_dropped_without_consent() {
        let la = zone("America/Los_Angeles");
        let arrived = date(2026, 11, 17).at(10, 0, 0, 0).to_zoned(la).unwrap();
        let mut lead = Lead::new(arrived, default_cadence(), "(213) 555-0100");
        lead.email_allowed = false;

        let touchpoints = lead.plan();

        let steps: Vec<u32> = touchpoints.iter().map(|t| t.step_index).collect();
        assert_eq!(steps, [0, 2, 4, 5]);
    }

    #[test]
    fn a_location_without_hours_uses_weekday_nine_to_five_and_says_so() {
        let la = zone("America/Los_Angeles");
        let arrived = date(2026, 11, 21).at(10, 0, 0, 0).to_zoned(la.clone()).unwrap();
        let business_email = step(Channel::Email, Span::new(), None, StepRule::BusinessHours);
        let mut lead = Lead::new(arrived, cadence(vec![business_email]), "(213) 555-0100");
        lead.hours = WeeklyHours::default();

        let touchpoints = lead.plan();

        let reason = "business hours of the location (none on file, so mon-fri 09:00-17:00)";
        assert_eq!(summary(&touchpoints, &la), vec![row(0, Channel::Email, "Mon 2026-11-23 09:00", Some(reason))]);
    }

    #[test]
    fn an_unmoved_touch_keeps_its_intended_instant_to_the_second() {
        let la = zone("America/Los_Angeles");
        let arrived = date(2026, 11, 17).at(10, 15, 42, 123).to_zoned(la).unwrap();
        let lead = Lead::new(arrived.clone(), default_cadence(), "(213) 555-0100");

        let touchpoints = lead.plan();

        let first_sms = touchpoints.iter().find(|t| t.step_index == 0).unwrap();
        assert_eq!(first_sms.scheduled_at, arrived.timestamp());
        assert_eq!(first_sms.placement_reason_opt, None);
    }

    #[test]
    fn a_moved_touch_is_rounded_up_to_the_next_whole_minute() {
        let new_york = zone("America/New_York");
        let arrived = date(2026, 11, 17).at(10, 0, 30, 0).to_zoned(new_york.clone()).unwrap();
        let at_once = || step(Channel::Sms, Span::new(), None, StepRule::AnyTimeAllowed);
        let lead = Lead::new(arrived, cadence(vec![at_once(), at_once(), at_once(), at_once()]), "(305) 555-0100");

        let touchpoints = lead.plan();

        let fourth = &touchpoints[3];
        assert_eq!(fourth.step_index, 3);
        // 24 h after the oldest of the three is 10:00:30; the next whole minute is 10:01.
        assert_eq!(fourth.scheduled_at, date(2026, 11, 18).at(10, 1, 0, 0).to_zoned(new_york).unwrap().timestamp());
        assert_eq!(fourth.placement_reason_opt.as_deref(), Some("at most 3 SMS per 24 h in FL"));
    }

    #[test]
    fn a_touch_moved_to_a_window_opening_lands_exactly_on_the_opening() {
        let la = zone("America/Los_Angeles");
        let arrived = date(2026, 11, 17).at(7, 59, 30, 0).to_zoned(la.clone()).unwrap();
        let first_sms = step(Channel::Sms, Span::new(), None, StepRule::AnyTimeAllowed);
        let lead = Lead::new(arrived, cadence(vec![first_sms]), "(213) 555-0100");

        let touchpoints = lead.plan();

        let opening = date(2026, 11, 17).at(8, 0, 0, 0).to_zoned(la).unwrap().timestamp();
        assert_eq!(touchpoints[0].scheduled_at, opening);
    }

    #[test]
    fn a_step_that_cannot_be_placed_within_14_days_is_dropped() {
        let la = zone("America/Los_Angeles");
        let arrived = date(2026, 11, 17).at(10, 0, 0, 0).to_zoned(la.clone()).unwrap();
        let steps = vec![
            step(Channel::Sms, Span::new(), None, StepRule::BusinessHours),
            step(Channel::Email, Span::new(), None, StepRule::BusinessHours),
        ];
        let mut lead = Lead::new(arrived, cadence(steps), "(213) 555-0100");
        // Open only in the middle of the night: never inside the SMS window.
        lead.hours = WeeklyHours::parse("sun 01:00-02:00").unwrap();

        let touchpoints = lead.plan();

        assert_eq!(
            summary(&touchpoints, &la),
            vec![row(1, Channel::Email, "Sun 2026-11-22 01:00", Some(HOURS_REASON))]
        );
    }

    #[test]
    fn an_sms_is_dropped_when_the_state_window_does_not_overlap_the_default_one() {
        let la = zone("America/Los_Angeles");
        let arrived = date(2026, 11, 17).at(10, 0, 0, 0).to_zoned(la).unwrap();
        let mut lead = Lead::new(arrived, sms_burst_cadence(), "(213) 555-0100");
        let late_only = Window { start: time(22, 0, 0, 0), end: time(23, 0, 0, 0) };
        lead.rules.states.insert("CA".to_owned(), StateRule { window_opt: Some(late_only), max_sms_per_24h_opt: None });

        assert!(lead.plan().is_empty());
    }

    #[test]
    fn touches_at_the_same_instant_put_sms_before_email_then_step_order() {
        let la = zone("America/Los_Angeles");
        let arrived = date(2026, 11, 17).at(10, 0, 0, 0).to_zoned(la).unwrap();
        let at_once = |channel| step(channel, Span::new(), None, StepRule::AnyTimeAllowed);
        let steps =
            vec![at_once(Channel::Email), at_once(Channel::Sms), at_once(Channel::Email), at_once(Channel::Sms)];
        let lead = Lead::new(arrived, cadence(steps), "(213) 555-0100");

        let order: Vec<(u32, Channel)> = lead.plan().iter().map(|t| (t.step_index, t.channel)).collect();

        assert_eq!(order, [(1, Channel::Sms), (3, Channel::Sms), (0, Channel::Email), (2, Channel::Email)]);
    }

    #[test]
    fn a_touch_is_stale_only_past_the_configured_staleness() {
        let rules = ComplianceRules::default();
        let scheduled_at: Timestamp = "2026-11-17T15:00:00Z".parse().unwrap();
        let at = |offset: SignedDuration| scheduled_at.checked_add(offset).unwrap();
        assert!(!is_stale(scheduled_at, at(SignedDuration::from_mins(-5)), &rules));
        assert!(!is_stale(scheduled_at, at(SignedDuration::from_hours(2)), &rules));
        assert!(is_stale(scheduled_at, at(SignedDuration::from_hours(2) + SignedDuration::from_secs(1)), &rules));
    }

    #[test]
    fn sms_allowed_now_reads_the_window_in_the_recipients_zone() {
        let la = zone("America/Los_Angeles");
        let phone = Phone::parse("(305) 555-0100").unwrap();
        let profile = recipient_profile(&ComplianceRules::default(), Some(&phone), &la, None);
        let at_miami = |h, m| date(2026, 11, 17).at(h, m, 0, 0).to_zoned(zone("America/New_York")).unwrap().timestamp();
        assert!(!sms_allowed_now(&profile, at_miami(7, 59)));
        assert!(sms_allowed_now(&profile, at_miami(8, 0)));
        assert!(sms_allowed_now(&profile, at_miami(19, 59)));
        assert!(!sms_allowed_now(&profile, at_miami(20, 0)));
    }

    const US_ZONES: [&str; 11] = [
        "America/New_York",
        "America/Chicago",
        "America/Denver",
        "America/Phoenix",
        "America/Los_Angeles",
        "America/Anchorage",
        "Pacific/Honolulu",
        "America/Puerto_Rico",
        "America/Indiana/Indianapolis",
        "America/Detroit",
        "America/Boise",
    ];

    const HOURS_CHOICES: [&str; 4] = [
        LOCATION_HOURS,
        "",
        "sun 10:00-11:00",
        "mon 07:00-09:00, mon 17:00-24:00, thu 00:00-02:00, sat-sun 02:00-03:30",
    ];

    /// 2025-01-01T00:00:00Z and 2028-01-01T00:00:00Z.
    const ARRIVALS: std::ops::Range<i64> = 1_735_689_600..1_830_297_600;

    fn table_area_codes() -> Vec<u16> {
        (200..1000).filter(|code| area_code_region(*code).is_some()).collect()
    }

    prop_compose! {
        fn arbitrary_lead()(
            arrival_second in ARRIVALS,
            arrival_nanosecond in 0..1_000_000_000i32,
            zone_name in prop::sample::select(US_ZONES.as_slice()),
            area_code_opt in prop::option::weighted(0.9, prop::sample::select(table_area_codes())),
            state_opt in prop::option::of(prop::sample::select(["FL", "CA", "NY", "TX"].as_slice())),
            sms_allowed in prop::bool::weighted(0.8),
            email_allowed in prop::bool::weighted(0.8),
            hours_text in prop::sample::select(HOURS_CHOICES.as_slice()),
            is_burst in any::<bool>(),
        ) -> Lead {
            let arrived = Timestamp::new(arrival_second, arrival_nanosecond).unwrap().to_zoned(zone(zone_name));
            let phone_opt = area_code_opt.map(|code| Phone::parse(&format!("({code}) 555-0100")).unwrap());
            Lead {
                arrived,
                cadence: if is_burst { sms_burst_cadence() } else { default_cadence() },
                hours: WeeklyHours::parse(hours_text).unwrap_or_default(),
                state_opt,
                phone_opt,
                sms_allowed,
                email_allowed,
                rules: ComplianceRules::default(),
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn no_sms_is_scheduled_outside_the_recipients_window(lead in arbitrary_lead()) {
            let profile = lead.profile();
            for touchpoint in lead.plan().iter().filter(|t| t.channel == Channel::Sms) {
                let local_time = profile.time_zone.to_datetime(touchpoint.scheduled_at);
                prop_assert!(profile.window.contains(local_time.time()), "sms at {local_time} outside {}", profile.window);
            }
        }

        #[test]
        fn the_schedule_is_non_decreasing(lead in arbitrary_lead()) {
            let touchpoints = lead.plan();
            for pair in touchpoints.windows(2) {
                prop_assert!(pair[0].scheduled_at <= pair[1].scheduled_at);
            }
        }

        #[test]
        fn no_touch_is_scheduled_before_its_intended_time(lead in arbitrary_lead()) {
            for touchpoint in lead.plan() {
                prop_assert!(touchpoint.scheduled_at >= touchpoint.intended_at);
                prop_assert!(touchpoint.scheduled_at.duration_since(touchpoint.intended_at) <= SEARCH_HORIZON);
                if touchpoint.scheduled_at != touchpoint.intended_at {
                    prop_assert_eq!(touchpoint.scheduled_at.subsec_nanosecond(), 0);
                    prop_assert_eq!(touchpoint.scheduled_at.as_second() % 60, 0);
                    prop_assert!(touchpoint.placement_reason_opt.is_some());
                }
            }
        }

        #[test]
        fn no_touch_goes_to_a_channel_that_is_not_allowed(lead in arbitrary_lead()) {
            let can_text = lead.sms_allowed && lead.phone_opt.is_some();
            for touchpoint in lead.plan() {
                match touchpoint.channel {
                    Channel::Sms => prop_assert!(can_text),
                    Channel::Email => prop_assert!(lead.email_allowed),
                }
            }
        }

        #[test]
        fn business_hours_steps_fall_inside_location_hours(lead in arbitrary_lead()) {
            let hours = if lead.hours.is_empty() { &*FALLBACK_HOURS } else { &lead.hours };
            for touchpoint in lead.plan() {
                if lead.cadence.steps[touchpoint.step_index as usize].rule == StepRule::BusinessHours {
                    let local_time = lead.arrived.time_zone().to_datetime(touchpoint.scheduled_at);
                    prop_assert!(hours.is_open_at(local_time.weekday(), local_time.time()), "{local_time} outside {hours}");
                }
            }
        }

        #[test]
        fn no_more_sms_than_the_state_cap_go_out_in_any_24_hours(lead in arbitrary_lead()) {
            let Some(max_sms) = lead.profile().max_sms_per_24h_opt else { return Ok(()) };
            let sms: Vec<Timestamp> =
                lead.plan().iter().filter(|t| t.channel == Channel::Sms).map(|t| t.scheduled_at).collect();
            for group in sms.windows(max_sms as usize + 1) {
                prop_assert!(group[group.len() - 1].duration_since(group[0]) >= ROLLING_DAY);
            }
        }
    }
}
