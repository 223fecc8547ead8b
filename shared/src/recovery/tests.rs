use proptest::prelude::*;

use super::*;

fn setup() -> (RecoverySecret, MasterKey, Vec<u8>) {
    let secret = RecoverySecret::generate();
    let key = MasterKey::generate();
    let blob = seal_master_key("acme", 3, &key, &secret.public());
    (secret, key, blob)
}

#[test]
fn round_trip_and_clear_fields() {
    let (secret, key, blob) = setup();
    assert_eq!(blob.len(), SEALED_LEN);
    let (info, opened) = open_master_key("acme", &blob, &secret).unwrap();
    assert_eq!(opened.as_bytes(), key.as_bytes());
    assert_eq!(info.epoch, 3);
    assert_eq!(info.key_id, key.derive().key_id());
    assert_eq!(info.recipient, secret.public().tag());
}

#[test]
fn key_texts_round_trip_and_stay_redacted() {
    let secret = RecoverySecret::generate();
    let text = secret.to_file_text();
    let again = RecoverySecret::from_file_text(&text).unwrap();
    assert_eq!(again.public(), secret.public());
    let public = secret.public().to_string();
    assert_eq!(RecoveryPublicKey::parse(&public).unwrap(), secret.public());
    let private_line = text.lines().find(|l| l.starts_with("private")).unwrap();
    let private_b64 = private_line.split(':').nth(1).unwrap().trim_matches('"');
    assert!(!format!("{secret:?}").contains(private_b64));
    for bad in ["", "nexb-rk1:", "nexb-rk1:AAAA", "rk1:xyz", &public[..20]] {
        assert!(RecoveryPublicKey::parse(bad).is_err(), "{bad}");
    }
    assert!(RecoverySecret::from_file_text("public = \"x\"").is_err());
}

#[test]
fn wrong_recovery_key_is_named() {
    let (_, _, blob) = setup();
    let other = RecoverySecret::generate();
    let e = open_master_key("acme", &blob, &other).unwrap_err();
    assert!(matches!(e, RecoveryError::NotForThisKey { .. }), "{e}");
    assert!(e.to_string().contains(&other.public().fingerprint()));
}

#[test]
fn other_site_and_every_flipped_bit_are_refused() {
    let (secret, _, blob) = setup();
    assert!(matches!(
        open_master_key("other", &blob, &secret),
        Err(RecoveryError::Tampered { epoch: 3 })
    ));
    for i in 0..blob.len() * 8 {
        let mut b = blob.clone();
        b[i / 8] ^= 1 << (i % 8);
        assert!(open_master_key("acme", &b, &secret).is_err(), "bit {i}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]
    #[test]
    fn arbitrary_blobs_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let secret = RecoverySecret::generate();
        let _ = sealed_info(&bytes);
        prop_assert!(open_master_key("s", &bytes, &secret).is_err());
    }

    #[test]
    fn arbitrary_key_texts_never_panic(text in ".{0,120}") {
        let _ = RecoveryPublicKey::parse(&text);
        let _ = RecoverySecret::from_file_text(&text);
    }
}
