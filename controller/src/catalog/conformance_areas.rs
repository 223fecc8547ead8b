//! Conformance of the alert and integrity areas, run against every catalog engine next
//! to [`super::conformance::run_all`].

use nex_backup_shared::ids::ChunkId;

use super::Catalog;
use super::alerts::{AlertCatalog, IncidentChange, IncidentRecord, OutboxEntry, RuleRecord};
use super::integrity::{BadObject, DamageRecord, DamageSource, IntegrityCatalog};

/// Run the area checks against an empty catalog.
pub async fn run_all(cat: &dyn Catalog, alerts: &dyn AlertCatalog, ints: &dyn IntegrityCatalog) {
    integrity(cat, ints).await;
    incidents_open_once(alerts).await;
}

async fn integrity(cat: &dyn Catalog, ints: &dyn IntegrityCatalog) {
    let ids: Vec<ChunkId> = (0..10u8).map(|i| ChunkId([i; 32])).collect();
    for id in &ids {
        cat.record_chunk("a1", id, 5, &[id.0[0]; 32]).await.unwrap();
        cat.record_chunk("a10", id, 5, &[0; 32]).await.unwrap();
    }
    let first = ints.chunk_page("a1", None, 4).await.unwrap();
    assert_eq!(first.len(), 4);
    assert_eq!(first[0].id, ids[0]);
    assert_eq!(first[3].sha256, Some([3; 32]));
    let rest = ints
        .chunk_page("a1", Some(&first[3].id), 100)
        .await
        .unwrap();
    assert_eq!(rest.len(), 6, "only a1's chunks, after the cursor");
    assert_eq!(rest[0].id, ids[4]);
    ints.forget_chunk("a1", &ids[4]).await.unwrap();
    assert_eq!(cat.chunk_len("a1", &ids[4]).await.unwrap(), None);
    assert_eq!(cat.chunk_len("a10", &ids[4]).await.unwrap(), Some(5));
    let d = DamageRecord {
        v: 1,
        site: "a1".into(),
        target: "db".into(),
        snapshot_id: "snap".into(),
        found_unix_ms: 1,
        source: DamageSource::Store,
        objects: vec![BadObject {
            key: "chunks/a1/00/00".into(),
            problem: "missing".into(),
            chunk: None,
        }],
    };
    ints.put_damage(&d).await.unwrap();
    assert_eq!(ints.damages(Some("a1")).await.unwrap(), vec![d.clone()]);
    assert!(ints.damages(Some("a")).await.unwrap().is_empty());
    assert!(ints.clear_damage("a1", "snap").await.unwrap());
    assert!(!ints.clear_damage("a1", "snap").await.unwrap());
    let mut st = ints.verify_state().await.unwrap();
    st.objects = 3;
    ints.put_verify_state(&st).await.unwrap();
    assert_eq!(ints.verify_state().await.unwrap().objects, 3);
}

fn incident(id: u64) -> IncidentRecord {
    IncidentRecord {
        v: 1,
        id,
        rule: "rpo-violated".into(),
        site: "a1".into(),
        subject: "db".into(),
        opened_unix_ms: 1,
        resolved_unix_ms: None,
        summary: "late".into(),
        last_notice_unix_ms: 0,
        reminders: 0,
        acked_by: None,
        acked_unix_ms: None,
    }
}

fn notice(id: u64, incident_id: u64) -> OutboxEntry {
    OutboxEntry {
        v: 1,
        id,
        channel: "ops".into(),
        incident_id,
        kind: "opened".into(),
        message_id: format!("m{id}"),
        subject: "s".into(),
        text: "t".into(),
        html: String::new(),
        json: String::new(),
        created_unix_ms: 1,
        attempts: 0,
        next_attempt_unix_ms: 0,
        last_error: String::new(),
    }
}

/// One open incident per key, its notices written with it; ids never repeat.
async fn incidents_open_once(alerts: &dyn AlertCatalog) {
    let (a, b) = (
        alerts.next_id().await.unwrap(),
        alerts.next_id().await.unwrap(),
    );
    assert!(b > a && a > 0);
    let (n1, n2) = (
        alerts.next_id().await.unwrap(),
        alerts.next_id().await.unwrap(),
    );
    let (x, y) = futures::join!(
        alerts.apply_incident(IncidentChange {
            incident: incident(a),
            notices: vec![notice(n1, a)],
        }),
        alerts.apply_incident(IncidentChange {
            incident: incident(b),
            notices: vec![notice(n2, b)],
        })
    );
    let (x, y) = (x.unwrap(), y.unwrap());
    assert!(x ^ y, "one incident per key is open: {x} {y}");
    let open = alerts.incidents().await.unwrap();
    assert_eq!(open.len(), 1);
    assert_eq!(
        alerts.outbox().await.unwrap().len(),
        1,
        "the loser's notice is not queued"
    );
    let mut resolved = open[0].clone();
    resolved.resolved_unix_ms = Some(2);
    assert!(
        alerts
            .apply_incident(IncidentChange {
                incident: resolved,
                notices: vec![],
            })
            .await
            .unwrap()
    );
    let again = alerts.next_id().await.unwrap();
    assert!(
        alerts
            .apply_incident(IncidentChange {
                incident: incident(again),
                notices: vec![],
            })
            .await
            .unwrap(),
        "after resolving, the key can open again"
    );
    let q = alerts.outbox().await.unwrap();
    let mut retried = q[0].clone();
    retried.attempts = 1;
    alerts.put_outbox(&retried).await.unwrap();
    assert_eq!(alerts.outbox().await.unwrap()[0].attempts, 1);
    alerts.delivered(retried.id).await.unwrap();
    alerts.put_outbox(&retried).await.unwrap();
    assert!(
        alerts.outbox().await.unwrap().is_empty(),
        "a delivered notice is not brought back by a late update"
    );
    alerts
        .put_rule(&RuleRecord {
            v: 1,
            rule: "rpo-violated".into(),
            site: "a1".into(),
            enabled: Some(false),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(alerts.rules().await.unwrap().len(), 1);
}
