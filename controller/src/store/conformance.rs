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
