use super::*;
use crate::keys::MasterKey;
use proptest::prelude::*;
use proptest::strategy::ValueTree;

fn keys(seed: u8) -> SiteKeys {
    MasterKey::from_bytes([seed; 32]).derive()
}

fn arb_manifest() -> impl Strategy<Value = Manifest> {
    let chunk = (any::<[u8; 32]>(), 1u32..1_000_000).prop_map(|(id, len)| (ChunkId(id), len));
    let stream = (
        "[a-z.]{1,12}",
        proptest::collection::vec(chunk, 0..20),
        any::<[u8; 32]>(),
        any::<bool>(),
    )
        .prop_map(|(name, chunks, sha256, plain)| {
            let length = chunks.iter().map(|(_, l)| u64::from(*l)).sum();
            if !plain {
                return StreamEntry::from_chunks(name, chunks, length);
            }
            StreamEntry {
                name,
                chunks,
                length,
                sha256,
                digest: StreamDigest::Plain,
            }
        });
    (
        "[a-z][a-z0-9-]{0,20}",
        "[a-z][a-z0-9_]{0,20}",
        any::<u64>(),
        proptest::collection::vec(stream, 0..3),
        proptest::collection::vec(("\\PC{1,30}", any::<i64>()), 0..10),
        "\\PC{0,20}",
    )
        .prop_map(|(site, target, ts, streams, row_counts, db)| Manifest {
            site,
            target,
            snapshot_id: crate::ids::new_snapshot_id(ts % 4_000_000_000_000),
            created_unix_ms: ts,
            streams,
            row_counts,
            row_counts_from_dump: ts % 2 == 0,
            source: SourceInfo {
                database: db,
                ..Default::default()
            },
            duration_ms: ts / 7,
            files: vec![],
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]
    #[test]
    fn sealed_round_trip(m in arb_manifest()) {
        let k = keys(1);
        let blob = m.seal(&k);
        prop_assert_eq!(Manifest::open(&k, &m.site, &m.snapshot_id, &blob).unwrap(), m);
    }

    #[test]
    fn decode_of_arbitrary_bytes_never_panics(raw in proptest::collection::vec(any::<u8>(), 0..500)) {
        let _ = pb::Manifest::decode(raw.as_slice()).map(Manifest::try_from);
        prop_assert!(Manifest::open(&keys(1), "s", "20250101T000000Z-00000000", &raw).is_err());
    }
}

#[test]
fn manifest_bound_to_site_and_key() {
    let mut runner = proptest::test_runner::TestRunner::default();
    let m = arb_manifest().new_tree(&mut runner).unwrap().current();
    let blob = m.seal(&keys(1));
    let e = Manifest::open(&keys(2), &m.site, &m.snapshot_id, &blob).unwrap_err();
    assert!(matches!(e, FormatError::WrongKey { .. }), "{e}");
    let e = Manifest::open(&keys(1), "othersite", &m.snapshot_id, &blob).unwrap_err();
    assert!(matches!(e, FormatError::Swapped { .. }), "{e}");
}

#[test]
fn a_chunk_list_digest_must_match_its_list_and_unknown_kinds_are_refused() {
    let s = StreamEntry::from_chunks("database.dump".into(), vec![(ChunkId([5; 32]), 7)], 7);
    let mut raw = pb::Manifest::from(&Manifest {
        site: "s".into(),
        target: "t".into(),
        snapshot_id: "20250101T000000Z-00000000".into(),
        created_unix_ms: 1,
        streams: vec![s],
        row_counts: vec![],
        row_counts_from_dump: true,
        source: SourceInfo::default(),
        duration_ms: 0,
        files: vec![],
    });
    assert!(Manifest::try_from(raw.clone()).is_ok());
    raw.streams[0].digest = 9;
    let e = Manifest::try_from(raw.clone()).unwrap_err().to_string();
    assert!(
        e.contains("digest kind 9") && e.contains("newer version"),
        "{e}"
    );
    raw.streams[0].digest = 1;
    raw.streams[0].sha256 = vec![0; 32];
    let e = Manifest::try_from(raw).unwrap_err();
    assert!(matches!(e, FormatError::StreamHash { .. }), "{e}");
}
