use proptest::prelude::*;
use rcgen::{CertificateParams, KeyPair};

use super::*;

fn csr() -> (KeyPair, Vec<u8>) {
    let key = KeyPair::generate().unwrap();
    let der = CertificateParams::default()
        .serialize_request(&key)
        .unwrap()
        .der()
        .to_vec();
    (key, der)
}

fn pki(dir: &Path) -> Pki {
    let src = ServerCertSource {
        names: vec!["localhost".into(), "127.0.0.1".into()],
        ..Default::default()
    };
    Pki::load_or_create(dir, &src).unwrap()
}

#[test]
fn created_once_with_private_keys_0600_and_stable_pin() {
    let dir = tempfile::tempdir().unwrap();
    let a = pki(dir.path());
    let b = pki(dir.path());
    assert_eq!(a.pin_fingerprint, b.pin_fingerprint);
    assert_eq!(
        Pki::show(dir.path(), &ServerCertSource::default()).unwrap(),
        a.pin_fingerprint
    );
    #[cfg(unix)]
    for f in ["ca.key", "server.key"] {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("pki").join(f))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{f}");
    }
    a.server_config().unwrap();
}

#[test]
fn issued_certificates_carry_the_identity_we_chose() {
    let dir = tempfile::tempdir().unwrap();
    let p = pki(dir.path());
    let (_, der) = csr();
    let req = Pki::check_csr(&der).unwrap();
    let issued = p
        .issue(req, "acme", "db1", Duration::from_secs(3600))
        .unwrap();
    assert_eq!(issued.identity.site, "acme");
    assert_eq!(issued.identity.agent_id, "db1");
    let left = issued.identity.not_after_unix - unix_now();
    assert!((3500..=3700).contains(&left), "{left}");
    assert_eq!(
        AgentIdentity::from_cert_der(&issued.chain_der[0]).unwrap(),
        issued.identity
    );
}

#[test]
fn damaged_certificate_requests_are_refused() {
    let (_, der) = csr();
    use rcgen::PublicKeyData;
    let original = Pki::check_csr(&der)
        .unwrap()
        .public_key
        .der_bytes()
        .to_vec();
    let mut refused = 0;
    for i in 0..der.len() {
        let mut d = der.clone();
        d[i] ^= 0x20;
        // A flip the signature does not cover (an outer tag) may still parse, but never
        // into a request for another key.
        match Pki::check_csr(&d) {
            Ok(p) => assert_eq!(p.public_key.der_bytes(), original, "byte {i}"),
            Err(_) => refused += 1,
        }
    }
    assert!(refused > der.len() * 9 / 10, "{refused} of {}", der.len());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]
    #[test]
    fn arbitrary_requests_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..1024)) {
        prop_assert!(Pki::check_csr(&bytes).is_err());
    }
}
