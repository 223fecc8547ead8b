//! Offline recovery: a site master key sealed to an operator's X25519 recovery key.
//!
//! `seal_master_key` runs on the agent: an ephemeral X25519 key agreement with the
//! recovery public key, HKDF-SHA256 (salt = ephemeral public ‖ recipient public) and
//! AES-256-GCM, with the clear header and the site name as associated data. The
//! controller stores the result and cannot open it; `open_master_key` needs the private
//! key, which stays offline. Layout (120 bytes):
//!
//! | off | len | field |
//! |----:|----:|-------|
//! | 0 | 4 | magic `NXRK` |
//! | 4 | 1 | version (1) |
//! | 5 | 3 | reserved, zero |
//! | 8 | 4 | key epoch, big-endian |
//! | 12 | 8 | key id of the sealed master key |
//! | 20 | 8 | recipient: first 8 bytes of SHA-256(recovery public key) |
//! | 28 | 32 | ephemeral X25519 public key |
//! | 60 | 12 | AES-GCM nonce |
//! | 72 | 48 | ciphertext of the 32-byte master key + 16-byte tag |

use std::fmt;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hkdf::Hkdf;
use sha2::{Digest, Sha256};
use x25519_dalek::{PublicKey, StaticSecret};

use crate::keys::MasterKey;

const MAGIC: &[u8; 4] = b"NXRK";
const HEADER_LEN: usize = 72;
/// Length of a sealed master key.
pub const SEALED_LEN: usize = HEADER_LEN + 48;
const PUB_PREFIX: &str = "nexb-rk1:";
const PRIV_PREFIX: &str = "nexb-rsk1:";
const INFO: &[u8] = b"nex-backup/v1/recovery-seal";

/// Recovery sealing errors. None of them carries key material.
#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    #[error("recovery key {what}: {reason}")]
    BadKey { what: &'static str, reason: String },
    #[error("sealed key: {0}")]
    BadBlob(String),
    #[error(
        "this recovery key ({have}) is not one the sealed key was made for ({sealed_to}); use the matching recovery key"
    )]
    NotForThisKey { have: String, sealed_to: String },
    #[error(
        "sealed key of epoch {epoch} failed authentication: tampered, corrupted or for another site"
    )]
    Tampered { epoch: u32 },
    #[error("sealed key of epoch {epoch} decrypts to a key whose id is not {expected}")]
    KeyIdMismatch { epoch: u32, expected: String },
    #[error("no sealed key of site {site} is held{where_}")]
    NoneHeld { site: String, where_: String },
    #[error(
        "recovery key {have} does not open any key of site {site} (its keys are sealed to {sealed_to})"
    )]
    NoneForThisKey {
        have: String,
        site: String,
        sealed_to: String,
    },
}

/// An operator's recovery public key (`nexb-rk1:…`).
#[derive(Clone, PartialEq, Eq)]
pub struct RecoveryPublicKey(PublicKey);

/// The offline recovery private key. `Debug` is redacted.
pub struct RecoverySecret(StaticSecret);

impl RecoveryPublicKey {
    pub fn parse(text: &str) -> Result<Self, RecoveryError> {
        let b = decode_b64(text.trim(), PUB_PREFIX, "public key")?;
        Ok(RecoveryPublicKey(PublicKey::from(b)))
    }

    pub fn from_bytes(b: [u8; 32]) -> Self {
        RecoveryPublicKey(PublicKey::from(b))
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        self.0.as_bytes()
    }

    /// The 8-byte recipient tag written into sealed keys.
    pub fn tag(&self) -> [u8; 8] {
        Sha256::digest(self.0.as_bytes())[..8].try_into().unwrap()
    }

    /// Short printable fingerprint, `rk:<16 hex>`.
    pub fn fingerprint(&self) -> String {
        format!("rk:{}", hex::encode(self.tag()))
    }
}

impl fmt::Display for RecoveryPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{PUB_PREFIX}{}",
            URL_SAFE_NO_PAD.encode(self.0.as_bytes())
        )
    }
}

impl fmt::Debug for RecoveryPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RecoveryPublicKey({})", self.fingerprint())
    }
}

impl RecoverySecret {
    pub fn generate() -> Self {
        RecoverySecret(StaticSecret::from(rand::random::<[u8; 32]>()))
    }

    pub fn public(&self) -> RecoveryPublicKey {
        RecoveryPublicKey(PublicKey::from(&self.0))
    }

    /// The key file text: the private key and, for convenience, the public key.
    pub fn to_file_text(&self) -> String {
        format!(
            "# NEX Backup recovery key. PRIVATE: whoever holds this file can decrypt every\n\
             # site sealed to it. Keep it offline (see docs/security.md, recovery-key ceremony).\n\
             private = \"{PRIV_PREFIX}{}\"\npublic = \"{}\"\n",
            URL_SAFE_NO_PAD.encode(self.0.to_bytes()),
            self.public()
        )
    }

    /// Read and parse a key file; errors name the file.
    pub fn read_file(path: &std::path::Path) -> Result<Self, RecoveryError> {
        let text = std::fs::read_to_string(path).map_err(|e| RecoveryError::BadKey {
            what: "file",
            reason: format!("read {}: {e}", path.display()),
        })?;
        Self::from_file_text(&text).map_err(|e| RecoveryError::BadKey {
            what: "file",
            reason: format!("{}: {e}", path.display()),
        })
    }

    /// Parse a key file written by [`Self::to_file_text`].
    pub fn from_file_text(text: &str) -> Result<Self, RecoveryError> {
        let value = text
            .lines()
            .filter_map(|l| l.trim().strip_prefix("private"))
            .filter_map(|r| r.trim_start().strip_prefix('='))
            .map(|v| v.trim().trim_matches('"').to_string())
            .next()
            .ok_or(RecoveryError::BadKey {
                what: "file",
                reason: "no `private = \"nexb-rsk1:…\"` line".into(),
            })?;
        let b = decode_b64(&value, PRIV_PREFIX, "private key")?;
        Ok(RecoverySecret(StaticSecret::from(b)))
    }
}

impl fmt::Debug for RecoverySecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "RecoverySecret(<redacted>, {})",
            self.public().fingerprint()
        )
    }
}

fn decode_b64(text: &str, prefix: &str, what: &'static str) -> Result<[u8; 32], RecoveryError> {
    let bad = |reason: String| RecoveryError::BadKey { what, reason };
    let body = text
        .strip_prefix(prefix)
        .ok_or_else(|| bad(format!("must start with {prefix}")))?;
    let v = URL_SAFE_NO_PAD
        .decode(body)
        .map_err(|_| bad("not base64url".into()))?;
    v.try_into()
        .map_err(|v: Vec<u8>| bad(format!("{} bytes, expected 32", v.len())))
}

fn wrap_key(shared: &[u8; 32], eph: &[u8; 32], recipient: &[u8; 32]) -> Aes256Gcm {
    let mut salt = [0u8; 64];
    salt[..32].copy_from_slice(eph);
    salt[32..].copy_from_slice(recipient);
    let hk = Hkdf::<Sha256>::new(Some(&salt), shared);
    let mut k = [0u8; 32];
    hk.expand(INFO, &mut k).expect("hkdf length");
    Aes256Gcm::new_from_slice(&k).expect("32-byte key")
}

/// Seal `key` (epoch `epoch` of `site`) to `to`.
pub fn seal_master_key(site: &str, epoch: u32, key: &MasterKey, to: &RecoveryPublicKey) -> Vec<u8> {
    let eph = StaticSecret::from(rand::random::<[u8; 32]>());
    let eph_pub = PublicKey::from(&eph);
    let shared = eph.diffie_hellman(&to.0);
    let nonce: [u8; 12] = rand::random();
    let mut out = Vec::with_capacity(SEALED_LEN);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[1, 0, 0, 0]);
    out.extend_from_slice(&epoch.to_be_bytes());
    out.extend_from_slice(&key.derive().key_id());
    out.extend_from_slice(&to.tag());
    out.extend_from_slice(eph_pub.as_bytes());
    out.extend_from_slice(&nonce);
    let aad = [&out[..HEADER_LEN], site.as_bytes()].concat();
    let ct = wrap_key(shared.as_bytes(), eph_pub.as_bytes(), to.as_bytes())
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: key.as_bytes(),
                aad: &aad,
            },
        )
        .expect("AES-GCM encryption of 32 bytes");
    out.extend_from_slice(&ct);
    out
}

/// The clear fields of a sealed key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SealedInfo {
    pub epoch: u32,
    pub key_id: [u8; 8],
    pub recipient: [u8; 8],
}

/// Parse the clear header of a sealed key without opening it.
pub fn sealed_info(blob: &[u8]) -> Result<SealedInfo, RecoveryError> {
    if blob.len() != SEALED_LEN {
        return Err(RecoveryError::BadBlob(format!(
            "{} bytes, expected {SEALED_LEN}",
            blob.len()
        )));
    }
    if &blob[..4] != MAGIC {
        return Err(RecoveryError::BadBlob("bad magic".into()));
    }
    if blob[4] != 1 || blob[5..8] != [0, 0, 0] {
        return Err(RecoveryError::BadBlob(format!(
            "unsupported version {}",
            blob[4]
        )));
    }
    Ok(SealedInfo {
        epoch: u32::from_be_bytes(blob[8..12].try_into().unwrap()),
        key_id: blob[12..20].try_into().unwrap(),
        recipient: blob[20..28].try_into().unwrap(),
    })
}

/// Open a sealed key of `site` with the offline `secret`; checks the key id it names.
pub fn open_master_key(
    site: &str,
    blob: &[u8],
    secret: &RecoverySecret,
) -> Result<(SealedInfo, MasterKey), RecoveryError> {
    let info = sealed_info(blob)?;
    let public = secret.public();
    if info.recipient != public.tag() {
        return Err(RecoveryError::NotForThisKey {
            have: public.fingerprint(),
            sealed_to: format!("rk:{}", hex::encode(info.recipient)),
        });
    }
    let eph: [u8; 32] = blob[28..60].try_into().unwrap();
    let shared = secret.0.diffie_hellman(&PublicKey::from(eph));
    if !shared.was_contributory() {
        return Err(RecoveryError::Tampered { epoch: info.epoch });
    }
    let aad = [&blob[..HEADER_LEN], site.as_bytes()].concat();
    let pt = wrap_key(shared.as_bytes(), &eph, public.as_bytes())
        .decrypt(
            Nonce::from_slice(&blob[60..72]),
            Payload {
                msg: &blob[HEADER_LEN..],
                aad: &aad,
            },
        )
        .map_err(|_| RecoveryError::Tampered { epoch: info.epoch })?;
    let key = MasterKey::from_bytes(pt.try_into().expect("32-byte plaintext"));
    if key.derive().key_id() != info.key_id {
        return Err(RecoveryError::KeyIdMismatch {
            epoch: info.epoch,
            expected: hex::encode(info.key_id),
        });
    }
    Ok((info, key))
}

/// Open every sealed key of `site` in `blobs` that was sealed to `secret` and add it to
/// `ring`. Returns the epochs opened, sorted; none is an error naming the recovery keys
/// the site's keys are sealed to. `held_at` says where the sealed keys came from.
pub fn open_into_ring<'a>(
    site: &str,
    blobs: impl IntoIterator<Item = &'a [u8]>,
    secret: &RecoverySecret,
    ring: &mut crate::keyring::KeyRing,
    held_at: &str,
) -> Result<Vec<u32>, RecoveryError> {
    let tag = secret.public().tag();
    let mut recipients = std::collections::BTreeSet::new();
    let mut opened = vec![];
    for blob in blobs {
        let info = sealed_info(blob)?;
        recipients.insert(format!("rk:{}", hex::encode(info.recipient)));
        if info.recipient == tag {
            let (info, key) = open_master_key(site, blob, secret)?;
            ring.insert(info.epoch, key);
            opened.push(info.epoch);
        }
    }
    if recipients.is_empty() {
        return Err(RecoveryError::NoneHeld {
            site: site.into(),
            where_: held_at.into(),
        });
    }
    if opened.is_empty() {
        return Err(RecoveryError::NoneForThisKey {
            have: secret.public().fingerprint(),
            site: site.into(),
            sealed_to: recipients.into_iter().collect::<Vec<_>>().join(", "),
        });
    }
    opened.sort_unstable();
    opened.dedup();
    Ok(opened)
}

#[cfg(test)]
mod tests;
