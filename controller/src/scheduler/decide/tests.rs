use super::*;

const MIN: u64 = 60_000;
/// 2026-11-28T00:00:00Z
const T0: u64 = 1_795_824_000_000;

fn hourly() -> Schedule {
    Schedule::parse("0 * * * *", "UTC").unwrap()
}

fn live(now: u64, online: bool) -> Live {
    Live {
        now_ms: now,
        agent_online: online,
        ..Default::default()
    }
}

fn cfg() -> SchedConfig {
    SchedConfig {
        stall_limit_ms: 10 * MIN,
        max_retries: 2,
        retry_base_ms: MIN,
    }
}

/// Run the scheduler at `now`, recording a started job as `job`.
fn step(rec: ScheduleRecord, l: &Live, job: &str) -> (ScheduleRecord, Vec<Action>) {
    let (mut rec, actions) = decide(rec, &hourly(), l, &cfg());
    if actions.iter().any(|a| matches!(a, Action::Start { .. })) {
        rec.last_job = Some(job.into());
        rec.last_job_handled = false;
    }
    (rec, actions)
}

#[test]
fn fires_on_time_and_not_before() {
    let (rec, a) = step(ScheduleRecord::default(), &live(T0 + 5 * MIN, true), "j");
    assert!(a.is_empty());
    assert_eq!(rec.next_due_unix_ms, T0 + 60 * MIN);
    let (rec, a) = step(rec, &live(T0 + 59 * MIN, true), "j");
    assert!(a.is_empty());
    let (rec, a) = step(rec, &live(T0 + 60 * MIN, true), "j1");
    assert_eq!(
        a,
        [Action::Start {
            trigger: crate::catalog::Trigger::Schedule
        }]
    );
    assert_eq!(rec.next_due_unix_ms, T0 + 120 * MIN);
}

#[test]
fn an_offline_agent_gets_one_job_for_all_missed_slots() {
    let (mut rec, _) = step(ScheduleRecord::default(), &live(T0, false), "j");
    for h in 1..=5 {
        let (r, a) = step(rec, &live(T0 + h * 60 * MIN + 1, false), "j");
        assert!(a.is_empty(), "offline: nothing starts");
        rec = r;
    }
    assert_eq!(
        rec.pending_since_unix_ms,
        Some(T0 + 60 * MIN),
        "first missed slot"
    );
    let (rec, a) = step(rec, &live(T0 + 5 * 60 * MIN + 2 * MIN, true), "j1");
    assert_eq!(
        a,
        [Action::Start {
            trigger: crate::catalog::Trigger::Schedule
        }],
        "exactly one"
    );
    let (_, a) = step(rec, &live(T0 + 5 * 60 * MIN + 3 * MIN, true), "j2");
    assert!(a.is_empty(), "and not again until the next slot");
}

#[test]
fn never_two_backups_of_one_target_and_stalls_are_failed() {
    let (rec, _) = step(ScheduleRecord::default(), &live(T0, true), "j");
    let (rec, a) = step(rec, &live(T0 + 60 * MIN, true), "j1");
    assert_eq!(a.len(), 1);
    // The next slot comes while j1 still runs (busy 2 min ago): nothing starts.
    let busy = Live {
        running: Some(("j1".into(), 2 * MIN)),
        ..live(T0 + 120 * MIN, true)
    };
    let (rec, a) = step(rec, &busy, "j2");
    assert!(a.is_empty(), "{a:?}");
    assert!(rec.pending_since_unix_ms.is_some(), "the slot waits");
    let stuck = Live {
        running: Some(("j1".into(), 11 * MIN)),
        ..live(T0 + 130 * MIN, true)
    };
    let (rec, a) = step(rec, &stuck, "j2");
    assert_eq!(
        a,
        [Action::Stalled {
            job_id: "j1".into(),
            idle_ms: 11 * MIN
        }]
    );
    // Once j1 is failed, the pending slot runs.
    let done = Live {
        last_outcome: Some(false),
        ..live(T0 + 131 * MIN, true)
    };
    let (_, a) = step(rec, &done, "j2");
    assert_eq!(
        a,
        [Action::Start {
            trigger: crate::catalog::Trigger::Schedule
        }]
    );
}

#[test]
fn failures_retry_with_backoff_up_to_the_limit() {
    let (rec, _) = step(ScheduleRecord::default(), &live(T0, true), "j");
    let (mut rec, _) = step(rec, &live(T0 + 60 * MIN, true), "j1");
    let mut t = T0 + 61 * MIN;
    let mut delays = vec![];
    for attempt in 2..=4 {
        let failed = Live {
            last_outcome: Some(false),
            ..live(t, true)
        };
        let (r, a) = step(rec, &failed, "x");
        assert!(a.is_empty(), "no immediate retry");
        rec = r;
        match rec.retry_at_unix_ms {
            Some(at) => {
                delays.push((at - t) / MIN);
                let (r, a) = step(rec, &live(at, true), &format!("j{attempt}"));
                assert_eq!(
                    a,
                    [Action::Start {
                        trigger: crate::catalog::Trigger::Retry
                    }]
                );
                rec = r;
                t = at + MIN;
            }
            None => break,
        }
    }
    assert_eq!(delays, [1, 2], "doubling, then giving up after max_retries");
    assert_eq!(rec.failures, 3);
    let (rec, a) = step(rec, &live(T0 + 120 * MIN, true), "j9");
    assert_eq!(
        a,
        [Action::Start {
            trigger: crate::catalog::Trigger::Schedule
        }],
        "the next slot starts afresh"
    );
    assert_eq!(rec.failures, 0);
}

/// A window 02:00-04:00 UTC on an hourly schedule: slots outside it coalesce into one run
/// at the opening, and nothing starts once it has closed.
#[test]
fn runs_wait_for_the_backup_window() {
    let w = crate::policy::site::Window::parse("02:00-04:00", chrono_tz::Tz::UTC).unwrap();
    let at = |now: u64, rec: ScheduleRecord, job: &str| {
        let l = Live {
            outside_window: w.open_until(now).is_none(),
            ..live(now, true)
        };
        step(rec, &l, job)
    };
    let mut rec = ScheduleRecord::default();
    let mut starts = vec![];
    // Every minute from 00:00 to 06:00; each started job succeeds a minute later.
    for m in 0..=360 {
        let now = T0 + m * MIN;
        rec.last_job_handled = false;
        let l = Live {
            outside_window: w.open_until(now).is_none(),
            last_outcome: rec.last_job.as_ref().map(|_| true),
            ..live(now, true)
        };
        let (r, a) = step(rec, &l, &format!("j{m}"));
        rec = r;
        if !a.is_empty() {
            starts.push(m);
        }
    }
    // 01:00 and 02:00 slots: one run at 02:00 (01:00 waited); 03:00 in the window; the
    // 04:00 and 05:00 slots fall outside it and wait (pending) for tomorrow.
    assert_eq!(starts, [120, 180]);
    assert!(rec.pending_since_unix_ms.is_some());
    let (_, a) = at(T0 + 26 * 60 * MIN, rec, "next-day");
    assert_eq!(
        a,
        [Action::Start {
            trigger: crate::catalog::Trigger::Schedule
        }]
    );
}

/// A policy change takes effect at once: the next slot comes from the new schedule, not
/// the one the record was computed with.
#[test]
fn a_changed_schedule_recomputes_the_next_slot() {
    let daily = Schedule::parse("0 1 * * *", "UTC").unwrap();
    let (rec, _) = decide(
        ScheduleRecord::default(),
        &daily,
        &live(T0 + 2 * 3_600_000, true),
        &cfg(),
    );
    assert_eq!(rec.next_due_unix_ms, T0 + 25 * 3_600_000);
    let (rec, a) = step(rec, &live(T0 + 2 * 3_600_000 + MIN, true), "j");
    assert!(a.is_empty());
    assert_eq!(rec.next_due_unix_ms, T0 + 3 * 3_600_000, "hourly now");
    let (_, a) = step(rec, &live(T0 + 3 * 3_600_000, true), "j1");
    assert_eq!(
        a,
        [Action::Start {
            trigger: crate::catalog::Trigger::Schedule
        }]
    );
}

/// Slots fall on whole seconds, strictly after the instant asked, whatever its
/// milliseconds (a slot carrying them would let a tick land just before it).
#[test]
fn slots_are_whole_seconds_strictly_later() {
    let s = Schedule::parse("*/6 * * * * *", "UTC").unwrap();
    let base = T0; // a whole minute
    for off in 0..12_000u64 {
        let t = base + off;
        let n = s.next_after(t).unwrap();
        assert!(n > t && n <= t + 6000, "{t} -> {n}");
        assert_eq!(n % 6000, 0, "{t} -> {n}");
    }
}
