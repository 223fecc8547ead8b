use super::*;

fn ms(rfc3339: &str) -> u64 {
    DateTime::parse_from_rfc3339(rfc3339)
        .unwrap()
        .timestamp_millis() as u64
}

fn runs(s: &Schedule, from: &str, n: usize) -> Vec<String> {
    let mut t = ms(from);
    (0..n)
        .map(|_| {
            t = s.next_after(t).unwrap();
            Utc.timestamp_millis_opt(t as i64)
                .unwrap()
                .with_timezone(&s.tz)
                .to_rfc3339()
        })
        .collect()
}

#[test]
fn bad_fields_are_named() {
    let now = ms("2026-11-28T12:00:00Z");
    let cases = [
        (
            Policy {
                schedule: "61 * * * *".into(),
                ..Default::default()
            },
            "schedule",
        ),
        (
            Policy {
                schedule: "* * *".into(),
                ..Default::default()
            },
            "schedule",
        ),
        (
            Policy {
                timezone: "Europe/Atlantis".into(),
                ..Default::default()
            },
            "timezone",
        ),
        (
            Policy {
                retention: Retention {
                    keep_daily: 0,
                    keep_weekly: 0,
                    keep_monthly: 0,
                    keep_last: 0,
                    keep_verified: 0,
                },
                ..Default::default()
            },
            "retention",
        ),
        (
            Policy {
                rpo_secs: 3600,
                ..Default::default()
            },
            "rpo",
        ),
    ];
    for (p, field) in cases {
        let e = p.validate(now, false).unwrap_err();
        assert_eq!(e.field, field, "{e}");
    }
    let short_rpo = Policy {
        rpo_secs: 3600,
        ..Default::default()
    };
    assert!(short_rpo.validate(now, true).is_ok(), "forced");
    assert!(Policy::default().validate(now, false).is_ok());
}

#[test]
fn dst_gap_runs_once_after_the_gap_and_overlap_runs_once() {
    let s = Schedule::parse("30 2 * * *", "Europe/Bratislava").unwrap();
    // 2026-03-29: clocks jump from 02:00 to 03:00, so 02:30 does not exist that day.
    assert_eq!(
        runs(&s, "2026-03-27T12:00:00Z", 3),
        [
            "2026-03-28T02:30:00+01:00",
            "2026-03-29T03:00:00+02:00",
            "2026-03-30T02:30:00+02:00"
        ]
    );
    // 2026-10-25: 02:30 happens twice; the job runs once, at the first.
    assert_eq!(
        runs(&s, "2026-10-23T12:00:00Z", 3),
        [
            "2026-10-24T02:30:00+02:00",
            "2026-10-25T02:30:00+02:00",
            "2026-10-26T02:30:00+01:00"
        ]
    );
}

#[test]
fn interval_of_a_daily_schedule_is_a_day_give_or_take_dst() {
    let s = Schedule::parse("0 1 * * *", "Europe/Bratislava").unwrap();
    let max = s.max_interval_ms(ms("2026-10-01T00:00:00Z")).unwrap();
    assert_eq!(
        max,
        24 * 3_600_000,
        "wall clock: the 25 h fall-back day counts as a day"
    );
    let p = Policy {
        timezone: "Europe/Bratislava".into(),
        ..Default::default()
    };
    assert!(p.validate(ms("2026-10-01T00:00:00Z"), false).is_ok());
    let s = Schedule::parse("*/5 * * * *", "UTC").unwrap();
    assert_eq!(s.max_interval_ms(0).unwrap(), 300_000);
    assert_eq!(human_secs(90_061), "1d1h1m1s");
}
