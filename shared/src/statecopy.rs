//! The controller's sealed state copy: its own state (CA and server keys, admin
//! credentials, policies, ...) written into the blob store, readable only with an offline
//! recovery key. Layout:
//!
//! | off | len | field |
//! |----:|----:|-------|
//! | 0 | 4 | magic `NXCS` |
//! | 4 | 1 | version (1) |
//! | 5 | 1 | number of sealed keys n (1..=16) |
//! | 6 | 2 | reserved, zero |
//! | 8 | 120·n | a fresh 32-byte key sealed to each recovery key ([`crate::recovery`], site `nex-backup/controller`, epoch 1) |
//! | … | rest | a sealed object of kind 3 (`docs/format.md`) named SHA-256("nex-backup controller state\0" name), body zstd |

use sha2::{Digest, Sha256};

use crate::error::FormatError;
use crate::keys::MasterKey;
use crate::recovery::{
    RecoveryError, RecoveryPublicKey, RecoverySecret, SEALED_LEN, open_master_key, seal_master_key,
    sealed_info,
};
use crate::seal::{self, FLAG_ZSTD, ObjectKind};

const MAGIC: &[u8; 4] = b"NXCS";
/// The pseudo-site the state key is sealed for (bound into the sealed key).
pub const STATE_SITE: &str = "nex-backup/controller";
/// Most recovery keys one copy is sealed to.
pub const MAX_RECIPIENTS: usize = 16;
/// Largest state a copy may hold once decompressed.
pub const MAX_STATE_LEN: usize = 512 << 20;

/// Why a state copy did not open.
#[derive(Debug, thiserror::Error)]
pub enum StateCopyError {
    #[error("state copy {name}: {reason}")]
    Malformed { name: String, reason: String },
    #[error("state copy {name}: {source}")]
    Key {
        name: String,
        #[source]
        source: RecoveryError,
    },
    #[error("state copy {name}: {source}")]
    Format {
        name: String,
        #[source]
        source: FormatError,
    },
}

fn object_id(name: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"nex-backup controller state\0");
    h.update(name.as_bytes());
    h.finalize().into()
}

/// Seal `state` (any bytes) as the copy called `name`, to every recovery key.
pub fn seal_state(name: &str, state: &[u8], to: &[RecoveryPublicKey]) -> Vec<u8> {
    assert!(
        !to.is_empty() && to.len() <= MAX_RECIPIENTS,
        "1 to {MAX_RECIPIENTS} recovery keys"
    );
    let key = MasterKey::generate();
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(&[1, to.len() as u8, 0, 0]);
    for r in to {
        out.extend(seal_master_key(STATE_SITE, 1, &key, r));
    }
    let body = zstd::bulk::compress(state, 3).expect("zstd of an in-memory buffer");
    out.extend(seal::seal(
        &key.derive(),
        ObjectKind::ControllerState,
        FLAG_ZSTD,
        &object_id(name),
        &body,
    ));
    out
}

/// Open the copy called `name` with `secret`.
pub fn open_state(
    name: &str,
    blob: &[u8],
    secret: &RecoverySecret,
) -> Result<Vec<u8>, StateCopyError> {
    let bad = |reason: &str| StateCopyError::Malformed {
        name: name.into(),
        reason: reason.into(),
    };
    if blob.len() < 8 || &blob[..4] != MAGIC {
        return Err(bad("not a controller state copy (bad magic)"));
    }
    if blob[4] != 1 {
        return Err(bad(&format!("unsupported version {}", blob[4])));
    }
    let n = blob[5] as usize;
    let keys_end = 8 + n * SEALED_LEN;
    if n == 0 || n > MAX_RECIPIENTS || blob.len() < keys_end {
        return Err(bad("truncated"));
    }
    let tag = secret.public().tag();
    let mut sealed_to = vec![];
    let mut key = None;
    for i in 0..n {
        let s = &blob[8 + i * SEALED_LEN..8 + (i + 1) * SEALED_LEN];
        let key_err = |source| StateCopyError::Key {
            name: name.into(),
            source,
        };
        let info = sealed_info(s).map_err(key_err)?;
        sealed_to.push(format!("rk:{}", hex::encode(info.recipient)));
        if info.recipient == tag {
            key = Some(open_master_key(STATE_SITE, s, secret).map_err(key_err)?.1);
        }
    }
    let key = key.ok_or_else(|| StateCopyError::Key {
        name: name.into(),
        source: RecoveryError::NoneForThisKey {
            have: secret.public().fingerprint(),
            site: "the controller".into(),
            sealed_to: sealed_to.join(", "),
        },
    })?;
    let fmt = |source| StateCopyError::Format {
        name: name.into(),
        source,
    };
    let (flags, body) = seal::open(
        &key.derive(),
        ObjectKind::ControllerState,
        &object_id(name),
        &blob[keys_end..],
        name,
    )
    .map_err(fmt)?;
    if flags & FLAG_ZSTD == 0 {
        return Ok(body);
    }
    zstd::bulk::decompress(&body, MAX_STATE_LEN).map_err(|e| {
        fmt(FormatError::Decompress {
            what: name.into(),
            reason: e.to_string(),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_opens_with_any_of_its_recovery_keys_only() {
        let (a, b, c) = (
            RecoverySecret::generate(),
            RecoverySecret::generate(),
            RecoverySecret::generate(),
        );
        let blob = seal_state("s1", b"state bytes", &[a.public(), b.public()]);
        assert_eq!(open_state("s1", &blob, &a).unwrap(), b"state bytes");
        assert_eq!(open_state("s1", &blob, &b).unwrap(), b"state bytes");
        let e = open_state("s1", &blob, &c).unwrap_err().to_string();
        assert!(e.contains("does not open"), "{e}");
        // Bound to its name: a copy cannot pass for another.
        assert!(open_state("s2", &blob, &a).is_err());
        let mut bad = blob.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(open_state("s1", &bad, &a).is_err());
    }
}
