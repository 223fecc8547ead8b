//! The conformance suite every [`BlobStore`] backend must pass.

use bytes::Bytes;

use super::BlobStore;

/// Run every check against an empty store.
pub async fn run_all(store: &dyn BlobStore) {
    assert_eq!(store.get("chunks/s1/aa/aabb").await.unwrap(), None);
    assert!(!store.exists("chunks/s1/aa/aabb").await.unwrap());
    assert!(
        store
            .put("chunks/s1/aa/aabb", Bytes::from_static(b"one"))
            .await
            .unwrap()
    );
    store
        .put("chunks/s1/aa/aacc", Bytes::from_static(b"two"))
        .await
        .unwrap();
    store
        .put("manifests/s1/snap", Bytes::from(vec![7u8; 100_000]))
        .await
        .unwrap();
    assert!(store.exists("chunks/s1/aa/aabb").await.unwrap());
    assert_eq!(
        store.get("chunks/s1/aa/aabb").await.unwrap().unwrap(),
        Bytes::from_static(b"one")
    );
    assert_eq!(
        store.get("manifests/s1/snap").await.unwrap().unwrap().len(),
        100_000
    );

    // Write-once: a second put of a key writes nothing and says so.
    assert!(
        !store
            .put("chunks/s1/aa/aabb", Bytes::from_static(b"uno"))
            .await
            .unwrap()
    );
    assert_eq!(
        store.get("chunks/s1/aa/aabb").await.unwrap().unwrap(),
        Bytes::from_static(b"one")
    );

    assert_eq!(
        super::list_keys(store, "chunks/s1/").await.unwrap(),
        vec!["chunks/s1/aa/aabb", "chunks/s1/aa/aacc"]
    );
    assert_eq!(
        super::list_keys(store, "manifests/").await.unwrap(),
        vec!["manifests/s1/snap"]
    );
    assert!(
        super::list_keys(store, "chunks/s2/")
            .await
            .unwrap()
            .is_empty()
    );

    put_many(store).await;

    store.delete("chunks/s1/aa/aabb").await.unwrap();
    store.delete("chunks/s1/aa/aabb").await.unwrap(); // idempotent
    assert_eq!(store.get("chunks/s1/aa/aabb").await.unwrap(), None);

    for bad in ["", "../escape", "/abs", "a/../../b"] {
        assert!(
            store.put(bad, Bytes::new()).await.is_err(),
            "{bad:?} must be refused"
        );
    }
}

/// A group put: new keys written, stored ones left alone, one of two items with the same
/// key written, and a group with a refused key refused.
async fn put_many(store: &dyn BlobStore) {
    let items = |list: &[(&str, &'static [u8])]| -> Vec<(String, Bytes)> {
        list.iter()
            .map(|(k, d)| (k.to_string(), Bytes::from_static(d)))
            .collect()
    };
    assert_eq!(store.put_many(vec![]).await.unwrap(), Vec::<bool>::new());
    let wrote = store
        .put_many(items(&[
            ("chunks/s3/aa/aa01", b"a1"),
            ("chunks/s1/aa/aabb", b"not one"),
            ("chunks/s3/bb/bb01", b"b1"),
            ("chunks/s3/bb/bb02", b"b2"),
            ("chunks/s3/bb/bb02", b"b2 again"),
        ]))
        .await
        .unwrap();
    assert_eq!(&wrote[..3], &[true, false, true]);
    assert!(
        wrote[3] ^ wrote[4],
        "of two items with one key, one writes: {wrote:?}"
    );
    let winner = if wrote[3] { &b"b2"[..] } else { b"b2 again" };
    assert_eq!(
        store.get("chunks/s3/bb/bb02").await.unwrap().unwrap(),
        Bytes::from(winner)
    );
    for (key, data) in [
        ("chunks/s3/aa/aa01", &b"a1"[..]),
        ("chunks/s1/aa/aabb", b"one"),
        ("chunks/s3/bb/bb01", b"b1"),
    ] {
        assert_eq!(store.get(key).await.unwrap().unwrap(), Bytes::from(data));
    }
    let again = store
        .put_many(items(&[
            ("chunks/s3/aa/aa01", b"x"),
            ("chunks/s3/cc/cc01", b"c1"),
        ]))
        .await
        .unwrap();
    assert_eq!(again, vec![false, true]);
    assert_eq!(
        super::list_keys(store, "chunks/s3/").await.unwrap(),
        vec![
            "chunks/s3/aa/aa01",
            "chunks/s3/bb/bb01",
            "chunks/s3/bb/bb02",
            "chunks/s3/cc/cc01"
        ]
    );
    assert!(
        store
            .put_many(items(&[("chunks/s3/dd/dd01", b"d1"), ("../escape", b"x")]))
            .await
            .is_err()
    );
}
