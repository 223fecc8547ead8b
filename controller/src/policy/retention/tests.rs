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
    let good: Vec<Snap> = snaps.iter().filter(|s| s.good).cloned().collect();
    let good_first: Vec<&&Snap> = all.iter().filter(|s| s.good).collect();
    keep.extend(
        good_first
            .iter()
            .take(r.keep_last as usize)
            .map(|s| s.id.clone()),
    );
    keep.extend(rule(&good, r.keep_daily, |s| periods(tz, s.unix_ms).0));
    keep.extend(rule(&good, r.keep_weekly, |s| periods(tz, s.unix_ms).1));
    keep.extend(rule(&good, r.keep_monthly, |s| periods(tz, s.unix_ms).2));
    keep.extend(
        all.iter()
            .filter(|s| s.verified)
            .take(r.keep_verified as usize)
            .map(|s| s.id.clone()),
    );
    if let Some(s) = good_first.first().map(|s| **s).or(all.first().copied()) {
        keep.insert(s.id.clone());
    }
    keep
}

fn history() -> impl Strategy<Value = Vec<Snap>> {
    // Up to 120 snapshots over ~2 years, clustered enough to share days and weeks.
    // Standing: 0 junk or suspicious (not good), 1 good, 2 verified.
    proptest::collection::vec((0u64..730 * 86_400, 0u8..3), 0..120).prop_map(|v| {
        v.into_iter()
            .enumerate()
            .map(|(i, (secs, standing))| Snap {
                id: format!("s{i:03}"),
                unix_ms: 1_767_225_600_000 + secs * 1000 / 3 * 3,
                good: standing > 0,
                verified: standing > 1,
            })
            .collect()
    })
}

fn retention() -> impl Strategy<Value = Retention> {
    (0u32..10, 0u32..6, 0u32..14, 0u32..4, 0u32..5).prop_map(|(d, w, m, l, v)| Retention {
        keep_daily: d,
        keep_weekly: w,
        keep_monthly: m,
        keep_last: l,
        keep_verified: v,
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
        let bound = (r.keep_daily + r.keep_weekly + r.keep_monthly + r.keep_last + r.keep_verified + 1) as usize;
        prop_assert!(keep.len() <= bound);
    }

    /// Whatever the mix of verified, unverified, suspicious and junk snapshots, the plan
    /// keeps the newest N verified ones, deletes nothing younger than the lock, nothing
    /// on hold, and never empties a target.
    #[test]
    fn junk_never_costs_verified_snapshots_and_the_lock_holds(
        snaps in history(),
        r in retention(),
        lock_days in 0u64..30,
        now_offset_days in 0u64..800,
        held in proptest::bool::weighted(0.2),
    ) {
        let now_ms = 1_767_225_600_000 + now_offset_days * 86_400_000;
        let g = Guards { now_ms, lock_ms: lock_days * 86_400_000, held };
        let (keep, delete, _) = plan(&snaps, &r, &Tz::UTC, g);
        prop_assert_eq!(keep.len() + delete.len(), snaps.len());
        let mut verified: Vec<&Snap> = snaps.iter().filter(|s| s.verified).collect();
        verified.sort_by_key(|s| std::cmp::Reverse((s.unix_ms, s.id.clone())));
        for v in verified.iter().take(r.keep_verified as usize) {
            prop_assert!(keep.contains(&v.id), "verified {} deleted", v.id);
        }
        for d in &delete {
            let s = snaps.iter().find(|s| &s.id == d).unwrap();
            prop_assert!(!held, "nothing is deleted on hold");
            prop_assert!(s.unix_ms + g.lock_ms <= now_ms, "{} is younger than the lock", d);
        }
        prop_assert_eq!(keep.is_empty(), snaps.is_empty());
        // Adding junk changes nothing the policy keeps of the good ones.
        let mut flooded = snaps.clone();
        for i in 0..40u64 {
            flooded.push(Snap { id: format!("junk{i:02}"), unix_ms: now_ms + i * 1000, good: false, verified: false });
        }
        let with_junk = keep_set(&flooded, &r, &Tz::UTC);
        for id in keep_set(&snaps, &r, &Tz::UTC) {
            if snaps.iter().any(|s| s.id == id && s.good) {
                prop_assert!(with_junk.contains(&id), "junk pushed out {}", id);
            }
        }
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
            verified: false,
        },
        Snap {
            id: "b".into(),
            unix_ms: 1_793_579_400_000, // 2026-11-02T00:30:00Z
            good: true,
            verified: false,
        },
    ];
    let r = Retention {
        keep_daily: 2,
        keep_weekly: 0,
        keep_monthly: 0,
        keep_last: 0,
        keep_verified: 0,
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
            verified: false,
        })
        .collect();
    let r = Retention {
        keep_last: 0,
        ..Retention::default()
    };
    let keep = keep_set(&snaps, &r, &Tz::UTC);
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
