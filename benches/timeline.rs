//! Timeline planning throughput: how many lead plans per second the pure cadence engine lays
//! out — the default seven-step cadence, location hours, the recipient's compliance window
//! from the phone's area code, Florida's per-24-hour cap. No IO: this is the CPU cost of
//! creating a lead's plan.
//!
//! `cargo bench --bench timeline`

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use jiff::{SignedDuration, Timestamp};
use leadorch_actors::compliance::ComplianceRules;
use leadorch_actors::domain::{Phone, WeeklyHours};
use leadorch_actors::timeline::{PlanInput, plan};

fn plans_per_second(c: &mut Criterion) {
    let book = leadorch::config::parse_cadences(include_str!("../config/cadences.toml")).expect("shipped cadences");
    let cadence = book.for_location(Default::default(), Default::default()).clone();
    let hours = WeeklyHours::parse("mon-fri 08:00-18:00, sat 09:00-14:00").expect("hours");
    let compliance = ComplianceRules::default();
    let zones = ["America/Los_Angeles", "America/Chicago", "America/New_York", "America/Denver"]
        .map(|z| jiff::tz::TimeZone::get(z).expect("zone"));
    let phones = ["(213) 555-0100", "(305) 555-0100", "(512) 555-0100", "(720) 555-0100"]
        .map(|p| Phone::parse(p).expect("phone"));
    let start: Timestamp = "2026-03-06T12:00:00Z".parse().expect("ts");
    let arrivals: Vec<Timestamp> = (0..1024).map(|i| start + SignedDuration::from_mins(97 * i)).collect();

    let mut group = c.benchmark_group("timeline");
    group.throughput(Throughput::Elements(1));
    group.bench_function("plan_default_cadence", |b| {
        let mut i = 0usize;
        b.iter(|| {
            i = (i + 1) % arrivals.len();
            let input = PlanInput {
                arrived_at: arrivals[i],
                cadence: &cadence,
                location_tz: &zones[i % zones.len()],
                location_hours: &hours,
                location_state_opt: None,
                phone_opt: Some(&phones[i % phones.len()]),
                sms_allowed: true,
                email_allowed: true,
                compliance: &compliance,
            };
            black_box(plan(black_box(&input)))
        });
    });
    group.finish();
}

criterion_group!(benches, plans_per_second);
criterion_main!(benches);
