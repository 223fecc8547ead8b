//! Trust records: enrollment tokens, agent identities (certificates, revocation) and the
//! sealed copies of site master keys. None of them holds a secret: tokens are stored as
//! SHA-256 hashes, and sealed keys open only with an offline recovery key.

use serde::{Deserialize, Serialize};

/// An enrollment token, by hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    pub v: u32,
    /// Hex SHA-256 of the token text.
    pub hash: String,
    pub site: String,
    pub created_unix_ms: u64,
    pub expires_unix_ms: u64,
    pub used_unix_ms: Option<u64>,
    pub used_by: Option<String>,
    /// The agent id this token may take over (re-enroll a lost host under its old id).
    #[serde(default)]
    pub replace_agent: Option<String>,
}

impl TokenRecord {
    /// A short public handle for logs (first 12 hex digits of the hash).
    pub fn handle(&self) -> &str {
        &self.hash[..12.min(self.hash.len())]
    }
}

/// Why a token could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenUse {
    Accepted(TokenRecord),
    Unknown,
    AlreadyUsed(TokenRecord),
    Expired(TokenRecord),
}

/// An enrolled agent's certificate identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityRecord {
    pub v: u32,
    pub site: String,
    pub agent_id: String,
    /// Serial (hex) of the newest certificate.
    pub serial: String,
    /// Serial of the certificate it replaced, accepted until that one expires.
    pub prev_serial: Option<String>,
    pub prev_not_after_unix: i64,
    pub not_after_unix: i64,
    pub enrolled_unix_ms: u64,
    pub revoked_unix_ms: Option<u64>,
    /// Hex SHA-256 of the public key of the newest certificate, and of the one it
    /// replaced (empty in records written before keys were recorded).
    #[serde(default)]
    pub key_sha256: String,
    #[serde(default)]
    pub prev_key_sha256: String,
}

impl IdentityRecord {
    /// Whether a certificate with `serial` carries the key recorded for that serial.
    pub fn key_matches(&self, serial: &str, key_sha256: &str) -> bool {
        let recorded = if self.serial == serial {
            &self.key_sha256
        } else if self.prev_serial.as_deref() == Some(serial) {
            &self.prev_key_sha256
        } else {
            return true; // not this agent's serial at all: `accepts` refuses it
        };
        recorded.is_empty() || recorded == key_sha256
    }

    /// Whether a certificate with `serial` is currently honoured for this agent.
    pub fn accepts(&self, serial: &str, now_unix: i64) -> bool {
        self.revoked_unix_ms.is_none()
            && (self.serial == serial
                || (self.prev_serial.as_deref() == Some(serial)
                    && now_unix < self.prev_not_after_unix))
    }
}

/// A site master key sealed to one recovery key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedKeyRecord {
    pub site: String,
    pub epoch: u32,
    pub key_id: [u8; 8],
    pub recipient: [u8; 8],
    pub blob: Vec<u8>,
}

/// A named admin credential (its SHA-256 only). The log names the person by it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminRecord {
    pub v: u32,
    pub name: String,
    /// Hex SHA-256 of the credential text.
    pub hash: String,
    pub created_unix_ms: u64,
    pub revoked_unix_ms: Option<u64>,
}

/// What a dashboard account may do ([`AccountRecord::role`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Read-only, and only the sites listed in the account.
    Customer,
    /// Read-only, every site.
    Viewer,
    /// Backups, drills, restores, incidents, policies.
    Operator,
    /// Everything, accounts included.
    Admin,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Customer => "customer",
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        [Role::Customer, Role::Viewer, Role::Operator, Role::Admin]
            .into_iter()
            .find(|r| r.name() == s)
    }
}

/// A named dashboard account. The password is kept only as an argon2 hash (PHC string).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountRecord {
    pub v: u32,
    pub name: String,
    pub role: Role,
    /// The sites a customer account sees (empty for the other roles).
    #[serde(default)]
    pub sites: Vec<String>,
    pub password_hash: String,
    /// Base32 TOTP secret, when the account has a second factor.
    #[serde(default)]
    pub totp_secret: Option<String>,
    pub created_unix_ms: u64,
    #[serde(default)]
    pub disabled_unix_ms: Option<u64>,
    /// Failed logins in a row, and until when the account is locked after too many.
    #[serde(default)]
    pub failed_logins: u32,
    #[serde(default)]
    pub locked_until_unix_ms: u64,
    /// Raised whenever the password, role, sites or state change: sessions signed under
    /// an older epoch end.
    #[serde(default)]
    pub epoch: u32,
    /// The last TOTP time step accepted: a code is good once.
    #[serde(default)]
    pub totp_last_step: u64,
}
