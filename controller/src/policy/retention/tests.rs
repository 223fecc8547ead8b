use std::collections::BTreeMap;
use std::str::FromStr;

use proptest::prelude::*;

use super::*;

const ZONES: [&str; 5] = [
    "UTC",
    "Europe/Bratislava",
    "America/New_York",
    "Pacific/Chatham",
    "Asia/Kolkata",
];

/// Reference: group by period with a map, take the N latest periods, newest in each.
fn reference(snaps: &[Snap], r: &Retention, tz: &Tz) -> BTreeSet<String> {
    fn rule<K: Ord>(snaps: &[Snap], n: u32, key: impl Fn(&Snap) -> K) -> Vec<String> {
        let mut groups: BTreeMap<K, &Snap> = BTreeMap::new();
        for s in snaps {
            let e = groups.entry(key(s)).or_insert(s);
            if (s.unix_ms, &s.id) > (e.unix_ms, &e.id) {
                *e = s;
            }
        }
        groups
            .values()
            .rev()
            .take(n as usize)
            .map(|s| s.id.clone())
            .collect()
    }
    let mut keep = BTreeSet::new();
    let mut all: Vec<&Snap> = snaps.iter().collect();
    all.sort_by_key(|s| std::cmp::Reverse((s.unix_ms, s.id.clone())));
    keep.extend(all.iter().take(r.keep_last as usize).map(|s| s.id.clone()));
    keep.extend(rule(snaps, r.keep_daily, |s| periods(tz, s.unix_ms).0));
    keep.extend(rule(snaps, r.keep_weekly, |s| periods(tz, s.unix_ms).1));
    keep.extend(rule(snaps, r.keep_monthly, |s| periods(tz, s.unix_ms).2));
    if let Some(s) = all.iter().find(|s| s.good).or(all.first()) {
        keep.insert(s.id.clone());
    }
    keep
}

fn history() -> impl Strategy<Value = Vec<Snap>> {
    // Up to 120 snapshots over ~2 years, clustered enough to share days and weeks.
    proptest::collection::vec((0u64..730 * 86_400, any::<bool>()), 0..120).prop_map(|v| {
        v.into_iter()
            .enumerate()
            .map(|(i, (secs, good))| Snap {
                id: format!("s{i:03}"),
                unix_ms: 1_767_225_600_000 + secs * 1000 / 3 * 3,
                good,
            })
            .collect()
    })
}

fn retention() -> impl Strategy<Value = Retention> {
    (0u32..10, 0u32..6, 0u32..14, 0u32..4).prop_map(|(d, w, m, l)| Retention {
        keep_daily: d,
        keep_weekly: w,
        keep_monthly: m,
        keep_last: l,
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1500))]
    #[test]
    fn keeps_exactly_what_the_policy_says(
        snaps in history(),
        r in retention(),
        zone in 0usize..ZONES.len(),
    ) {
        let tz = Tz::from_str(ZONES[zone]).unwrap();
        let keep = keep_set(&snaps, &r, &tz);
        prop_assert_eq!(&keep, &reference(&snaps, &r, &tz));
        let ids: BTreeSet<String> = snaps.iter().map(|s| s.id.clone()).collect();
        prop_assert!(keep.is_subset(&ids));
        prop_assert_eq!(keep.is_empty(), snaps.is_empty(), "never empties a target");
        if let Some(g) = snaps.iter().filter(|s| s.good).max_by_key(|s| (s.unix_ms, s.id.clone())) {
            prop_assert!(keep.contains(&g.id), "newest good snapshot kept");
        }
        let bound = (r.keep_daily + r.keep_weekly + r.keep_monthly + r.keep_last + 1) as usize;
        prop_assert!(keep.len() <= bound);
    }
}

#[test]
fn days_are_counted_in_the_policy_zone() {
    // 23:30 UTC on Nov 1 and 00:30 UTC on Nov 2 are two UTC days, but 00:30 and 01:30
    // on Nov 2 in Bratislava: one local day, whose newest snapshot is kept.
    let snaps = [
        Snap {
            id: "a".into(),
            unix_ms: 1_793_575_800_000, // 2026-11-01T23:30:00Z
            good: true,
        },
        Snap {
            id: "b".into(),
            unix_ms: 1_793_579_400_000, // 2026-11-02T00:30:00Z
            good: true,
        },
    ];
    let r = Retention {
        keep_daily: 2,
        keep_weekly: 0,
        keep_monthly: 0,
        keep_last: 0,
    };
    let utc = keep_set(&snaps, &r, &Tz::UTC);
    assert_eq!(utc.len(), 2, "two UTC days");
    let local = keep_set(&snaps, &r, &Tz::from_str("Europe/Bratislava").unwrap());
    assert_eq!(
        local.into_iter().collect::<Vec<_>>(),
        ["b"],
        "one local day"
    );
}

#[test]
fn seven_daily_four_weekly_over_sixty_days() {
    let day = 86_400_000;
    let snaps: Vec<Snap> = (0..60)
        .map(|i| Snap {
            id: format!("d{i:02}"),
            unix_ms: 1_767_225_600_000 + i * day + 3_600_000,
            good: true,
        })
        .collect();
    let keep = keep_set(&snaps, &Retention::default(), &Tz::UTC);
    // d0 = Thu 2026-01-01, d59 = Sun 2026-03-01. Daily: d53..d59 (Feb 23 - Mar 1, all ISO
    // week 9). Weekly: week 9 -> d59 (already kept), weeks 8, 7, 6 -> their Sundays.
    let want: BTreeSet<String> = [
        "d38", "d45", "d52", "d53", "d54", "d55", "d56", "d57", "d58", "d59",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(keep, want);
}
