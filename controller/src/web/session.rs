//! Dashboard sessions: a signed cookie (HMAC-SHA256 under a key derived from the CA key,
//! so every replica accepts it), with an idle and an absolute expiry, bound to the
//! account's epoch (a password, role or state change ends every session of it). The
//! CSRF token of a session is derived from its nonce; every POST must carry it.
//!
//! The cookie is `HttpOnly; Secure; SameSite=Strict; Path=/`: scripts cannot read it, it
//! travels only over HTTPS, and a cross-site form post arrives without it.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

pub const COOKIE: &str = "nexb_session";

/// One session as the cookie carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub account: String,
    pub epoch: u32,
    pub issued_ms: u64,
    pub seen_ms: u64,
    pub nonce: String,
}

/// How long sessions last.
#[derive(Debug, Clone, Copy)]
pub struct Lifetimes {
    /// Ended after this long without a request.
    pub idle_ms: u64,
    /// Ended this long after the login, however active.
    pub max_ms: u64,
}

fn mac(secret: &[u8; 32], what: &[u8]) -> Vec<u8> {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("any key length");
    m.update(what);
    m.finalize().into_bytes().to_vec()
}

impl Session {
    pub fn new(account: &str, epoch: u32, now_ms: u64) -> Session {
        Session {
            account: account.to_string(),
            epoch,
            issued_ms: now_ms,
            seen_ms: now_ms,
            nonce: hex::encode(rand::random::<[u8; 16]>()),
        }
    }

    /// The cookie value.
    pub fn encode(&self, secret: &[u8; 32]) -> String {
        let payload = format!(
            "{}\n{}\n{}\n{}\n{}",
            self.account, self.epoch, self.issued_ms, self.seen_ms, self.nonce
        );
        format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(&payload),
            URL_SAFE_NO_PAD.encode(mac(secret, payload.as_bytes()))
        )
    }

    /// The session a cookie value holds, if it is ours, untampered and not expired.
    pub fn decode(value: &str, secret: &[u8; 32], life: Lifetimes, now_ms: u64) -> Option<Session> {
        if value.len() > 512 {
            return None;
        }
        let (p, m) = value.split_once('.')?;
        let payload = URL_SAFE_NO_PAD.decode(p).ok()?;
        let given = URL_SAFE_NO_PAD.decode(m).ok()?;
        if !bool::from(mac(secret, &payload).ct_eq(&given)) {
            return None;
        }
        let text = String::from_utf8(payload).ok()?;
        let f: Vec<&str> = text.split('\n').collect();
        let [account, epoch, issued, seen, nonce] = f.as_slice() else {
            return None;
        };
        let s = Session {
            account: account.to_string(),
            epoch: epoch.parse().ok()?,
            issued_ms: issued.parse().ok()?,
            seen_ms: seen.parse().ok()?,
            nonce: nonce.to_string(),
        };
        let fresh = now_ms < s.seen_ms.saturating_add(life.idle_ms)
            && now_ms < s.issued_ms.saturating_add(life.max_ms);
        fresh.then_some(s)
    }

    /// This session's CSRF token.
    pub fn csrf(&self, secret: &[u8; 32]) -> String {
        hex::encode(&mac(secret, format!("csrf\n{}", self.nonce).as_bytes())[..16])
    }
}

/// The Set-Cookie value for `value` (empty: remove the cookie).
pub fn set_cookie(value: &str, life: Lifetimes) -> String {
    if value.is_empty() {
        return format!("{COOKIE}=; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age=0");
    }
    format!(
        "{COOKIE}={value}; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age={}",
        life.idle_ms / 1000
    )
}

/// The session cookie's value in a Cookie header.
pub fn cookie_value(header: &str) -> Option<&str> {
    header
        .split(';')
        .map(str::trim)
        .find_map(|c| c.strip_prefix(COOKIE)?.strip_prefix('='))
}

/// Login attempts per source address: at most [`LOGIN_BURST`] in a minute.
#[derive(Default)]
pub struct LoginLimiter {
    seen: std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, (u64, u32)>>,
}

pub const LOGIN_BURST: u32 = 20;

impl LoginLimiter {
    /// Whether one more attempt from `ip` at `now_ms` is allowed (and count it).
    pub fn allow(&self, ip: std::net::IpAddr, now_ms: u64) -> bool {
        let mut g = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if g.len() > 10_000 {
            g.retain(|_, (start, _)| now_ms < *start + 60_000);
        }
        let e = g.entry(ip).or_insert((now_ms, 0));
        if now_ms >= e.0 + 60_000 {
            *e = (now_ms, 0);
        }
        e.1 += 1;
        e.1 <= LOGIN_BURST
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIFE: Lifetimes = Lifetimes {
        idle_ms: 1000,
        max_ms: 5000,
    };

    #[test]
    fn a_cookie_reads_back_only_untampered_and_fresh() {
        let key = [7u8; 32];
        let s = Session::new("ann", 2, 10_000);
        let v = s.encode(&key);
        assert_eq!(Session::decode(&v, &key, LIFE, 10_500), Some(s.clone()));
        assert_eq!(Session::decode(&v, &key, LIFE, 11_000), None, "idle");
        assert_eq!(
            Session::decode(&v, &[8u8; 32], LIFE, 10_500),
            None,
            "other key"
        );
        let mut later = s.clone();
        later.seen_ms = 14_900;
        let v2 = later.encode(&key);
        assert!(
            Session::decode(&v2, &key, LIFE, 15_100).is_none(),
            "absolute"
        );
        let forged = format!("{}{}", &v[..v.len() - 2], "AA");
        assert_eq!(Session::decode(&forged, &key, LIFE, 10_500), None);
        assert_eq!(cookie_value("a=b; nexb_session=xyz; c=d"), Some("xyz"));
        assert_ne!(s.csrf(&key), Session::new("ann", 2, 10_000).csrf(&key));
    }

    #[test]
    fn logins_are_limited_per_address() {
        let l = LoginLimiter::default();
        let ip: std::net::IpAddr = "10.0.0.1".parse().unwrap();
        for _ in 0..LOGIN_BURST {
            assert!(l.allow(ip, 0));
        }
        assert!(!l.allow(ip, 1000));
        assert!(l.allow("10.0.0.2".parse().unwrap(), 1000));
        assert!(l.allow(ip, 61_000));
    }
}
