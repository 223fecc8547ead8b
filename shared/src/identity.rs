//! The agent identity carried in a client certificate: one subject-alternative-name URI
//! `urn:nexb:agent:<site>:<agent id>` (site and agent id are validated names, which
//! cannot contain `:`). The controller signs it at enrollment; the TLS handshake has
//! already verified the signature before this parser ever sees the certificate.

use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;

use crate::error::FormatError;
use crate::ids::validate_name;

const URI_PREFIX: &str = "urn:nexb:agent:";

/// Who an authenticated agent is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentIdentity {
    pub site: String,
    pub agent_id: String,
    /// Certificate serial number, hex.
    pub serial: String,
    /// Hex SHA-256 of the certificate's public key (SubjectPublicKeyInfo).
    pub key_sha256: String,
    /// End of the certificate's validity, seconds since the epoch.
    pub not_after_unix: i64,
}

impl AgentIdentity {
    /// The SAN URI that names this identity.
    pub fn uri(site: &str, agent_id: &str) -> String {
        format!("{URI_PREFIX}{site}:{agent_id}")
    }

    /// Parse the identity out of a DER certificate.
    pub fn from_cert_der(der: &[u8]) -> Result<Self, FormatError> {
        let bad = |r: &str| FormatError::invalid("agent certificate", r.to_string());
        let (_, cert) = x509_parser::certificate::X509Certificate::from_der(der)
            .map_err(|e| bad(&format!("not a certificate: {e}")))?;
        let san = cert
            .subject_alternative_name()
            .map_err(|e| bad(&format!("bad subject alternative names: {e}")))?
            .ok_or_else(|| bad("no subject alternative names"))?;
        let mut found = None;
        for name in &san.value.general_names {
            if let GeneralName::URI(uri) = name
                && let Some(rest) = uri.strip_prefix(URI_PREFIX)
            {
                if found.is_some() {
                    return Err(bad("more than one agent identity"));
                }
                found = Some(rest.to_string());
            }
        }
        let rest = found.ok_or_else(|| bad("no agent identity URI"))?;
        let (site, agent_id) = rest
            .split_once(':')
            .ok_or_else(|| bad("identity URI lacks an agent id"))?;
        validate_name("site", site)?;
        validate_name("agent id", agent_id)?;
        Ok(AgentIdentity {
            site: site.into(),
            agent_id: agent_id.into(),
            serial: hex::encode(cert.raw_serial()),
            key_sha256: {
                use sha2::Digest;
                hex::encode(sha2::Sha256::digest(cert.public_key().raw))
            },
            not_after_unix: cert.validity().not_after.timestamp(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cert(uris: &[String]) -> Vec<u8> {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::default();
        p.subject_alt_names = uris
            .iter()
            .map(|u| rcgen::SanType::URI(u.clone().try_into().unwrap()))
            .collect();
        p.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn identity_round_trips_and_bad_uris_are_named() {
        let der = cert(&[AgentIdentity::uri("acme", "db1")]);
        let id = AgentIdentity::from_cert_der(&der).unwrap();
        assert_eq!((id.site.as_str(), id.agent_id.as_str()), ("acme", "db1"));
        assert!(!id.serial.is_empty() && id.not_after_unix > 0);
        for (uris, err) in [
            (vec![], "no subject alternative names"),
            (vec!["https://x".to_string()], "no agent identity"),
            (vec!["urn:nexb:agent:acme".into()], "lacks an agent id"),
            (vec!["urn:nexb:agent:a/b:c".into()], "site"),
            (
                vec![AgentIdentity::uri("a", "b"), AgentIdentity::uri("c", "d")],
                "more than one",
            ),
        ] {
            let e = AgentIdentity::from_cert_der(&cert(&uris))
                .unwrap_err()
                .to_string();
            assert!(e.contains(err), "{uris:?}: {e}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = AgentIdentity::from_cert_der(&bytes);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]
        #[test]
        fn mutated_certificates_never_panic(pos in any::<usize>(), flip in 1u8..=255, cut in any::<bool>()) {
            static DER: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
            let der = DER.get_or_init(|| cert(&[AgentIdentity::uri("acme", "db1")]));
            let mut d = der.clone();
            let i = pos % d.len();
            if cut { d.truncate(i) } else { d[i] ^= flip }
            let _ = AgentIdentity::from_cert_der(&d);
        }
    }
}
