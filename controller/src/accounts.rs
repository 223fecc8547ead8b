//! Dashboard accounts: argon2id password hashes, generated passwords, and the login
//! rule (a lockout after failed attempts in a row), shared by the admin calls that
//! manage accounts and the dashboard that logs people in.
//!
//! A login answers the same "wrong name or password" for an unknown name, a wrong
//! password and a disabled account, and spends the same argon2 work on each, so the
//! answer and its timing do not tell which names exist.

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::catalog::trust::AccountRecord;
use crate::catalog::{Catalog, CatalogError};

/// Failed logins in a row that lock an account...
pub const LOCK_AFTER: u32 = 5;
/// ...for this long.
pub const LOCK_FOR_MS: u64 = 15 * 60 * 1000;
/// The shortest password an account may have.
pub const MIN_PASSWORD: usize = 12;
/// The longest password taken (argon2 hashes any length; this bounds the work).
pub const MAX_PASSWORD: usize = 256;

/// Why a password or a login is refused.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("the password needs at least {MIN_PASSWORD} characters")]
    TooShort,
    #[error("the password may have at most {MAX_PASSWORD} characters")]
    TooLong,
    #[error("wrong name, password or code")]
    Wrong,
    #[error(
        "the account is locked after {LOCK_AFTER} failed logins; try again in {0} minutes or ask an admin (nex-backup account unlock NAME)"
    )]
    Locked(u64),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error("password hashing: {0}")]
    Hash(String),
}

/// Check a new password against the rules.
pub fn check_password(pw: &str) -> Result<(), AccountError> {
    match pw.chars().count() {
        n if n < MIN_PASSWORD => Err(AccountError::TooShort),
        n if n > MAX_PASSWORD => Err(AccountError::TooLong),
        _ => Ok(()),
    }
}

/// A new random password (22 characters, 128 bits).
pub fn new_password() -> String {
    URL_SAFE_NO_PAD.encode(rand::random::<[u8; 16]>())
}

/// The argon2id hash (PHC string) of `pw`. CPU-heavy: call it off the async threads.
pub fn hash_password(pw: &str) -> Result<String, AccountError> {
    let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>())
        .map_err(|e| AccountError::Hash(e.to_string()))?;
    Argon2::default()
        .hash_password(pw.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| AccountError::Hash(e.to_string()))
}

/// Whether `pw` matches the PHC `hash`. CPU-heavy, like [`hash_password`].
pub fn verify_password(hash: &str, pw: &str) -> bool {
    PasswordHash::new(hash)
        .is_ok_and(|h| Argon2::default().verify_password(pw.as_bytes(), &h).is_ok())
}

/// TOTP as authenticator apps use it: SHA-1, 6 digits, 30 s steps.
fn totp(secret_b32: &str, name: &str) -> Option<totp_rs::TOTP> {
    let raw = totp_rs::Secret::Encoded(secret_b32.to_string())
        .to_bytes()
        .ok()?;
    totp_rs::TOTP::new(
        totp_rs::Algorithm::SHA1,
        6,
        1,
        30,
        raw,
        Some("NEX Backup".into()),
        name.to_string(),
    )
    .ok()
}

/// A new TOTP secret (base32, 160 bits).
pub fn new_totp_secret() -> String {
    totp_rs::Secret::Raw(rand::random::<[u8; 20]>().to_vec())
        .to_encoded()
        .to_string()
}

/// The otpauth:// URL an authenticator app scans.
pub fn totp_url(secret_b32: &str, name: &str) -> String {
    totp(secret_b32, name)
        .map(|t| t.get_url())
        .unwrap_or_default()
}

/// The code for `secret_b32` at `unix_s` (what the app shows).
pub fn totp_code(secret_b32: &str, unix_s: u64) -> String {
    totp(secret_b32, "x")
        .map(|t| t.generate(unix_s))
        .unwrap_or_default()
}

/// The time step `code` is good for at `unix_s` (one step of skew either way), if it
/// is later than `last_step`: a code is accepted once.
pub fn totp_step(secret_b32: &str, code: &str, unix_s: u64, last_step: u64) -> Option<u64> {
    let t = totp(secret_b32, "x")?;
    let now = unix_s / 30;
    (now.saturating_sub(1)..=now + 1).find(|s| {
        *s > last_step
            && bool::from(subtle::ConstantTimeEq::ct_eq(
                t.generate(s * 30).as_bytes(),
                code.trim().as_bytes(),
            ))
    })
}

/// A fixed hash that no password matches, verified for unknown names so that they
/// cost the same time as known ones.
fn decoy_hash() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| hash_password(&new_password()).unwrap_or_default())
}

/// Check a login at `now_ms`: the account on success. Failed attempts are counted in
/// the catalog (so every replica sees them) and lock the account after [`LOCK_AFTER`].
pub async fn login(
    cat: &dyn Catalog,
    name: &str,
    pw: &str,
    code: &str,
    now_ms: u64,
) -> Result<AccountRecord, AccountError> {
    if pw.len() > MAX_PASSWORD * 4 || name.len() > 64 {
        return Err(AccountError::Wrong);
    }
    let rec = cat.account(name).await?;
    let hash = rec
        .as_ref()
        .map_or_else(|| decoy_hash().to_string(), |r| r.password_hash.clone());
    let pw_owned = pw.to_string();
    let matches = tokio::task::spawn_blocking(move || verify_password(&hash, &pw_owned))
        .await
        .unwrap_or(false);
    let Some(mut rec) = rec else {
        return Err(AccountError::Wrong);
    };
    if rec.locked_until_unix_ms > now_ms {
        let mins = (rec.locked_until_unix_ms - now_ms).div_ceil(60_000);
        return Err(AccountError::Locked(mins));
    }
    if rec.disabled_unix_ms.is_some() {
        return Err(AccountError::Wrong);
    }
    // With a second factor, the code must be good too (and not used before).
    let step = match &rec.totp_secret {
        Some(secret) => totp_step(secret, code, now_ms / 1000, rec.totp_last_step),
        None => Some(0),
    };
    if !matches || step.is_none() {
        rec.failed_logins = rec.failed_logins.saturating_add(1);
        if rec.failed_logins >= LOCK_AFTER {
            rec.locked_until_unix_ms = now_ms + LOCK_FOR_MS;
            rec.failed_logins = 0;
            tracing::warn!(account = %rec.name, "dashboard account locked after {LOCK_AFTER} failed logins");
        }
        cat.put_account(&rec).await?;
        return Err(AccountError::Wrong);
    }
    let step = step.unwrap_or(0);
    if rec.failed_logins > 0 || rec.locked_until_unix_ms > 0 || step > rec.totp_last_step {
        rec.failed_logins = 0;
        rec.locked_until_unix_ms = 0;
        rec.totp_last_step = rec.totp_last_step.max(step);
        cat.put_account(&rec).await?;
    }
    Ok(rec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_checks_its_password_only() {
        let h = hash_password("correct horse battery").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password(&h, "correct horse battery"));
        assert!(!verify_password(&h, "correct horse batterx"));
        assert!(!verify_password("not a hash", "x"));
        assert!(check_password("short").is_err());
        assert!(check_password(&new_password()).is_ok());
    }

    #[test]
    fn a_totp_code_is_good_once_and_only_near_its_time() {
        let secret = new_totp_secret();
        let t = 1_800_000_000;
        let code = totp_code(&secret, t);
        let step = totp_step(&secret, &code, t, 0).expect("the current code");
        assert_eq!(totp_step(&secret, &code, t, step), None, "not twice");
        assert!(
            totp_step(&secret, &code, t + 31, 0).is_some(),
            "one step late is fine"
        );
        assert_eq!(
            totp_step(&secret, &code, t + 300, 0),
            None,
            "ten minutes late is not"
        );
        assert!(totp_url(&secret, "ann").starts_with("otpauth://totp/"));
    }
}
