use super::*;

const H: u64 = 3_600_000;

fn input(age_h: f64) -> RpoInput {
    let now = 1_000 * H;
    RpoInput {
        now_ms: now,
        newest_good_ms: Some(now - (age_h * H as f64) as u64),
        rpo_ms: 24 * H,
        agent_online: true,
        next_run_ms: Some(now + H),
        expected_duration_ms: H / 4,
    }
}

#[test]
fn states_follow_age_agent_and_next_run() {
    assert_eq!(evaluate(&input(2.0)).0, RpoState::Ok);
    assert_eq!(evaluate(&input(20.0)).0, RpoState::AtRisk, "past 80 %");
    let late_run = RpoInput {
        next_run_ms: Some(1_000 * H + 23 * H),
        ..input(2.0)
    };
    let (s, why) = evaluate(&late_run);
    assert_eq!(s, RpoState::AtRisk);
    assert!(why.contains("next scheduled run"), "{why}");
    let offline = RpoInput {
        agent_online: false,
        ..input(2.0)
    };
    assert_eq!(evaluate(&offline).0, RpoState::AgentOffline);
    let old_offline = RpoInput {
        agent_online: false,
        ..input(25.0)
    };
    assert_eq!(
        evaluate(&old_offline).0,
        RpoState::Violated,
        "violation wins"
    );
    let never = RpoInput {
        newest_good_ms: None,
        ..input(0.0)
    };
    assert_eq!(evaluate(&never).0, RpoState::NeverBackedUp);
}

fn ev(at_h: u64, state: RpoState) -> RpoEvent {
    RpoEvent {
        v: 1,
        site: "s".into(),
        target: "t".into(),
        at_unix_ms: at_h * H,
        state,
        reason: String::new(),
    }
}

#[test]
fn compliance_is_the_share_of_time_not_violated() {
    let events = [
        ev(0, RpoState::NeverBackedUp),
        ev(10, RpoState::Ok),
        ev(50, RpoState::Violated),
        ev(60, RpoState::Ok),
        ev(90, RpoState::AgentOffline),
    ];
    // Window [20 h, 100 h): 80 h, of which 10 h violated.
    let (pct, v) = compliance(&events, 20 * H, 100 * H);
    assert!((pct - 87.5).abs() < 1e-9, "{pct}");
    assert_eq!(
        v,
        [Violation {
            from_ms: 50 * H,
            to_ms: Some(60 * H)
        }]
    );
    // From the start: the first 10 h were never backed up.
    let (pct, v) = compliance(&events, 0, 100 * H);
    assert!((pct - 80.0).abs() < 1e-9, "{pct}");
    assert_eq!(v.len(), 2);
    // An ongoing violation has no end.
    let (_, v) = compliance(&[ev(0, RpoState::Violated)], 0, 5 * H);
    assert_eq!(v[0].to_ms, None);
}
