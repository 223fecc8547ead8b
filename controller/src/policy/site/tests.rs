use chrono::{NaiveDate, TimeZone};
use chrono_tz::Tz;
use proptest::prelude::*;

use super::*;

fn ms(tz: Tz, y: i32, mo: u32, d: u32, h: u32, mi: u32) -> u64 {
    tz.from_local_datetime(
        &NaiveDate::from_ymd_opt(y, mo, d)
            .unwrap()
            .and_hms_opt(h, mi, 0)
            .unwrap(),
    )
    .earliest()
    .unwrap()
    .timestamp_millis() as u64
}

fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> u64 {
    ms(Tz::UTC, y, mo, d, h, mi)
}

const BA: Tz = chrono_tz::Europe::Bratislava;

#[test]
fn overnight_window_opens_and_closes_on_the_local_clock() {
    let w = Window::parse("22:00-06:00", BA).unwrap();
    // 21:59 local: closed, opens at 22:00.
    let t = ms(BA, 2026, 6, 10, 21, 59);
    assert_eq!(w.open_until(t), None);
    assert_eq!(w.next_open(t), ms(BA, 2026, 6, 10, 22, 0));
    // 23:00 and 03:00 the next day: open until 06:00 of the next morning.
    let close = ms(BA, 2026, 6, 11, 6, 0);
    assert_eq!(w.open_until(ms(BA, 2026, 6, 10, 23, 0)), Some(close));
    assert_eq!(w.open_until(ms(BA, 2026, 6, 11, 3, 0)), Some(close));
    // 06:00 exactly: closed until the evening.
    assert_eq!(w.open_until(close), None);
    assert_eq!(w.next_open(close), ms(BA, 2026, 6, 11, 22, 0));
    // In UTC that is 20:00-04:00 in summer.
    assert_eq!(w.next_open(close), utc(2026, 6, 11, 20, 0));
}

#[test]
fn daytime_window() {
    let w = Window::parse("09:30-17:00", Tz::UTC).unwrap();
    assert_eq!(w.open_until(utc(2026, 1, 5, 9, 29)), None);
    assert_eq!(
        w.open_until(utc(2026, 1, 5, 9, 30)),
        Some(utc(2026, 1, 5, 17, 0))
    );
    assert_eq!(w.next_open(utc(2026, 1, 5, 18, 0)), utc(2026, 1, 6, 9, 30));
}

#[test]
fn dst_changes_follow_the_wall_clock() {
    // 2026-03-29 02:00 -> 03:00 in Bratislava: a window opening at 02:30 opens at 03:00.
    let w = Window::parse("02:30-05:00", BA).unwrap();
    let before = ms(BA, 2026, 3, 29, 1, 0);
    assert_eq!(w.next_open(before), utc(2026, 3, 29, 1, 0)); // 03:00 CEST
    assert_eq!(
        w.open_until(utc(2026, 3, 29, 1, 0)),
        Some(utc(2026, 3, 29, 3, 0))
    );
    // 2026-10-25 03:00 -> 02:00: 02:30 happens twice; the window opens at the first
    // and closes at 05:00 CET, so it is 3.5 h long that night.
    let first = utc(2026, 10, 25, 0, 30); // 02:30 CEST
    assert_eq!(w.next_open(ms(BA, 2026, 10, 25, 1, 0)), first);
    assert_eq!(w.open_until(first), Some(utc(2026, 10, 25, 4, 0)));
}

#[test]
fn bad_windows_name_the_field() {
    for bad in ["22:00", "25:00-06:00", "22:00-6", "08:00-08:00", "x-y"] {
        let e = Window::parse(bad, Tz::UTC).unwrap_err();
        assert_eq!(e.field, "window", "{bad}");
    }
    let p = SitePolicy {
        timezone: "Mars/Olympus".into(),
        ..Default::default()
    };
    assert_eq!(p.validate().unwrap_err().field, "timezone");
}

fn zone() -> impl Strategy<Value = Tz> {
    prop::sample::select(vec![
        Tz::UTC,
        BA,
        chrono_tz::America::New_York,
        chrono_tz::Australia::Lord_Howe,
        chrono_tz::Asia::Kolkata,
    ])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]
    /// For any window, zone and instant: `next_open` is open (or the instant itself is),
    /// nothing between the instant and it is open, and `open_until` is in the future.
    #[test]
    fn next_open_is_the_first_open_instant(
        tz in zone(),
        a in 0u32..1440, b in 0u32..1440,
        t in 1_700_000_000_000u64..1_900_000_000_000u64,
    ) {
        prop_assume!(a != b);
        let text = format!("{:02}:{:02}-{:02}:{:02}", a / 60, a % 60, b / 60, b % 60);
        let w = Window::parse(&text, tz).unwrap();
        let n = w.next_open(t);
        prop_assert!(n >= t);
        prop_assert!(n - t <= 2 * 86_400_000, "{} opens {} ms later", text, n - t);
        let close = w.open_until(n);
        prop_assert!(close.is_some(), "{} not open at its next_open", text);
        prop_assert!(close.unwrap() > n);
        if n > t {
            // Closed just before it opens, and at the instant asked.
            prop_assert!(w.open_until(t).is_none());
            prop_assert!(w.open_until(n - 1).is_none());
        }
    }
}

#[test]
fn drills_keep_to_the_window_and_the_drill_hours() {
    // 2026-01-01 03:00 UTC and 14:00 UTC.
    let (night, day) = (1_767_236_400_000, 1_767_276_000_000);
    let p = SitePolicy::default();
    assert_eq!(p.drill_hours.as_deref(), Some(DEFAULT_DRILL_HOURS));
    assert!(p.drills_allowed(night) && !p.drills_allowed(day));
    let any = SitePolicy {
        drill_hours: None,
        ..Default::default()
    };
    assert!(any.drills_allowed(night) && any.drills_allowed(day));
    let windowed = SitePolicy {
        window: Some("12:00-16:00".into()),
        ..Default::default()
    };
    assert!(!windowed.drills_allowed(night) && !windowed.drills_allowed(day));
    let bad = SitePolicy {
        drill_hours: Some("1-5".into()),
        ..Default::default()
    };
    assert_eq!(bad.validate().unwrap_err().field, "drill-hours");
    // A record stored before drill hours existed gets the default.
    let old: SitePolicy = serde_json::from_str(
        r#"{"v":1,"window":null,"timezone":"UTC","bandwidth_bytes_per_sec":0,"drill_agent":null}"#,
    )
    .unwrap();
    assert_eq!(old.drill_hours.as_deref(), Some(DEFAULT_DRILL_HOURS));
}
