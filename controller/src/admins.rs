//! The admin credentials in force, by name: loaded from the catalog at start and kept in
//! step by the calls that create and revoke them. The admin interceptor asks it who a
//! presented credential belongs to.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Prefix of admin credentials, so a leaked one is recognisable in a secret scan.
pub const ADMIN_TOKEN_PREFIX: &str = "nexb-admin-";

/// The admin credentials in force (not revoked), by name; kept in step with the catalog
/// by the calls that create and revoke them.
#[derive(Default)]
pub struct AdminBook {
    creds: std::sync::RwLock<Vec<(String, [u8; 32])>>,
}

impl AdminBook {
    /// Replace the book with the catalog's records.
    pub fn load(&self, records: &[crate::catalog::trust::AdminRecord]) {
        let creds = records
            .iter()
            .filter(|r| r.revoked_unix_ms.is_none())
            .filter_map(|r| {
                let h: [u8; 32] = hex::decode(&r.hash).ok()?.try_into().ok()?;
                Some((r.name.clone(), h))
            })
            .collect();
        *self.creds.write().unwrap_or_else(|p| p.into_inner()) = creds;
    }

    /// The name of the credential whose hash is `h`. Every entry is compared in
    /// constant time, so the answer's timing says nothing about the others.
    pub fn who(&self, h: &[u8]) -> Option<String> {
        let creds = self.creds.read().unwrap_or_else(|p| p.into_inner());
        let mut found = None;
        for (name, hash) in creds.iter() {
            if bool::from(h.ct_eq(hash)) {
                found = Some(name.clone());
            }
        }
        found
    }
}

/// A new admin credential's text.
pub fn new_admin_token() -> String {
    format!(
        "{ADMIN_TOKEN_PREFIX}{}",
        URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
    )
}

/// Hex SHA-256 of a credential's text.
pub fn token_hash_hex(token: &str) -> String {
    hex::encode(Sha256::digest(token.trim().as_bytes()))
}
