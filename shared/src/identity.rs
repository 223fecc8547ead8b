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
            not_after_unix: cert.validity().not_after.timestamp(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = AgentIdentity::from_cert_der(&bytes);
        }
    }
}
