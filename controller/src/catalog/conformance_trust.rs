//! Conformance checks for trust records (part of [`super::conformance::run_all`]).

use nex_backup_shared::keys::MasterKey;
use nex_backup_shared::recovery::{RecoverySecret, seal_master_key};

use super::{Catalog, CatalogError, IdentityRecord, SealedKeyRecord, TokenRecord, TokenUse};

pub(super) async fn run_all(cat: &dyn Catalog) {
    tokens_are_single_use(cat).await;
    renewal_never_undoes_revocation(cat).await;
    sealed_keys_are_append_only(cat).await;
    accounts_read_back(cat).await;
}

async fn accounts_read_back(cat: &dyn Catalog) {
    use super::trust::{AccountRecord, Role};
    assert!(cat.account("ann").await.unwrap().is_none());
    let mut a = AccountRecord {
        v: 1,
        name: "ann".into(),
        role: Role::Customer,
        sites: vec!["acme".into()],
        password_hash: "$argon2id$x".into(),
        totp_secret: None,
        created_unix_ms: 1,
        disabled_unix_ms: None,
        failed_logins: 0,
        locked_until_unix_ms: 0,
        epoch: 0,
        totp_last_step: 0,
    };
    cat.put_account(&a).await.unwrap();
    let mut b = a.clone();
    b.name = "bob".into();
    b.role = Role::Admin;
    b.sites.clear();
    cat.put_account(&b).await.unwrap();
    a.failed_logins = 3;
    a.epoch = 1;
    cat.put_account(&a).await.unwrap();
    assert_eq!(cat.account("ann").await.unwrap(), Some(a.clone()));
    assert_eq!(cat.accounts().await.unwrap(), vec![a, b]);
}

async fn tokens_are_single_use(cat: &dyn Catalog) {
    let t = TokenRecord {
        v: 1,
        hash: "ab".repeat(32),
        site: "s1".into(),
        created_unix_ms: 1000,
        expires_unix_ms: 5000,
        used_unix_ms: None,
        used_by: None,
        replace_agent: None,
    };
    cat.put_token(&t).await.unwrap();
    assert_eq!(
        cat.consume_token("cd", 2000, "a").await.unwrap(),
        TokenUse::Unknown
    );
    let mut expired = t.clone();
    expired.hash = "ef".repeat(32);
    cat.put_token(&expired).await.unwrap();
    assert!(matches!(
        cat.consume_token(&expired.hash, 5000, "a").await.unwrap(),
        TokenUse::Expired(_)
    ));
    let TokenUse::Accepted(used) = cat.consume_token(&t.hash, 2000, "a").await.unwrap() else {
        panic!("token refused");
    };
    assert_eq!(used.used_by.as_deref(), Some("a"));
    assert!(matches!(
        cat.consume_token(&t.hash, 2001, "b").await.unwrap(),
        TokenUse::AlreadyUsed(_)
    ));
}

async fn renewal_never_undoes_revocation(cat: &dyn Catalog) {
    let rec = IdentityRecord {
        v: 1,
        site: "s1".into(),
        agent_id: "a".into(),
        serial: "01".into(),
        prev_serial: None,
        prev_not_after_unix: 0,
        not_after_unix: 100,
        enrolled_unix_ms: 1,
        revoked_unix_ms: None,
        key_sha256: "k1".into(),
        prev_key_sha256: String::new(),
    };
    cat.put_identity(&rec).await.unwrap();
    let r = cat
        .renew_identity("s1", "a", "01", "02", "k2", 200)
        .await
        .unwrap()
        .unwrap();
    assert!(r.accepts("02", 50) && r.accepts("01", 50) && !r.accepts("01", 150));
    assert!(
        cat.renew_identity("s1", "a", "01", "03", "k3", 300)
            .await
            .unwrap()
            .is_none(),
        "renewal from a superseded certificate"
    );
    cat.revoke_identity("s1", "a", 7).await.unwrap().unwrap();
    assert!(
        cat.renew_identity("s1", "a", "02", "04", "k4", 300)
            .await
            .unwrap()
            .is_none()
    );
    let r = cat.identity("s1", "a").await.unwrap().unwrap();
    assert_eq!(r.revoked_unix_ms, Some(7));
    assert!(!r.accepts("02", 50));
    assert!(cat.revoke_identity("s1", "zz", 7).await.unwrap().is_none());
    assert_eq!(cat.identities().await.unwrap().len(), 1);
}

async fn sealed_keys_are_append_only(cat: &dyn Catalog) {
    let (r1, r2) = (RecoverySecret::generate(), RecoverySecret::generate());
    let (k1, k2) = (MasterKey::generate(), MasterKey::generate());
    let rec = |key: &MasterKey, to: &RecoverySecret, epoch| {
        let blob = seal_master_key("s1", epoch, key, &to.public());
        SealedKeyRecord {
            site: "s1".into(),
            epoch,
            key_id: key.derive().key_id(),
            recipient: to.public().tag(),
            blob,
        }
    };
    assert!(cat.put_sealed_key(&rec(&k1, &r1, 1)).await.unwrap());
    assert!(!cat.put_sealed_key(&rec(&k1, &r1, 1)).await.unwrap());
    assert!(cat.put_sealed_key(&rec(&k1, &r2, 1)).await.unwrap());
    let e = cat.put_sealed_key(&rec(&k2, &r1, 1)).await.unwrap_err();
    assert!(
        matches!(e, CatalogError::KeyEpochConflict { epoch: 1, .. }),
        "{e}"
    );
    assert!(cat.put_sealed_key(&rec(&k2, &r1, 2)).await.unwrap());
    let all = cat.sealed_keys("s1").await.unwrap();
    assert_eq!(all.len(), 3);
    assert!(cat.sealed_keys("s2").await.unwrap().is_empty());
}
