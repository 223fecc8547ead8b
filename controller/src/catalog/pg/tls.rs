//! Connecting to the catalog's PostgreSQL server, with TLS when the URL asks for it.
//!
//! `sslmode=require` (or `verify-ca` / `verify-full`, read as the same) turns TLS on, and
//! then the server's certificate is always verified: against `sslrootcert=/path/ca.pem`
//! (PEM, for a private CA) or else the system's roots, and for the URL's host name.
//! Without `sslmode` (or with `disable` / `prefer`) the connection is plain, as before;
//! a plain connection to another host is logged as a warning, since the catalog's
//! password and records then cross the network in the clear.

use std::sync::Arc;

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use tokio_postgres::config::{Host, SslMode};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::redact;
use crate::catalog::{CatalogError, Result};

/// Remove `key=value` from the URL's query; the value if it was there.
fn take_param(url: &mut String, key: &str) -> Option<String> {
    let (base, query) = url.split_once('?')?;
    let mut value = None;
    let kept: Vec<&str> = query
        .split('&')
        .filter(|p| match p.split_once('=') {
            Some((k, v)) if k == key => {
                value = Some(v.to_string());
                false
            }
            _ => true,
        })
        .collect();
    let rebuilt = if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    *url = rebuilt;
    value
}

fn roots(ca_file: Option<&str>, shown: &str) -> Result<rustls::RootCertStore> {
    let bad = |reason: String| CatalogError::Storage(format!("--catalog {shown}: {reason}"));
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                .map_err(|e| bad(format!("sslrootcert {path}: {e}")))?
                .collect::<std::result::Result<_, _>>()
                .map_err(|e| bad(format!("sslrootcert {path}: {e}")))?;
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(bad(format!(
                    "sslrootcert {path} holds no usable certificate"
                )));
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
            if roots.is_empty() {
                return Err(bad(
                    "sslmode=require and no system root certificates were found; give sslrootcert=/path/ca.pem".into(),
                ));
            }
        }
    }
    Ok(roots)
}

/// The connection settings and TLS connector for a catalog URL.
pub fn parse(url: &str) -> Result<(tokio_postgres::Config, MakeRustlsConnect)> {
    let shown = redact(url);
    let mut url = url.to_string();
    let ca_file = take_param(&mut url, "sslrootcert");
    let mode = take_param(&mut url, "sslmode");
    let mut cfg: tokio_postgres::Config = url
        .parse()
        .map_err(|e| CatalogError::Storage(format!("--catalog {shown}: {e}")))?;
    let tls_on = match mode.as_deref() {
        None | Some("disable") | Some("prefer") => false,
        Some("require") | Some("verify-ca") | Some("verify-full") => true,
        Some(other) => {
            return Err(CatalogError::Storage(format!(
                "--catalog {shown}: sslmode={other} is not known (disable, require, verify-full)"
            )));
        }
    };
    cfg.ssl_mode(if tls_on {
        SslMode::Require
    } else {
        SslMode::Disable
    });
    let local = cfg.get_hosts().iter().all(|h| match h {
        Host::Tcp(name) => matches!(name.as_str(), "localhost" | "127.0.0.1" | "::1"),
        #[cfg(unix)]
        Host::Unix(_) => true,
    });
    if !tls_on && !local {
        tracing::warn!(catalog = %shown, "the catalog connection is not encrypted: add sslmode=require (and sslrootcert=CA.pem for a private CA)");
    }
    let client = rustls::ClientConfig::builder_with_provider(nex_backup_shared::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| CatalogError::Storage(format!("--catalog {shown}: TLS: {e}")))?
        .with_root_certificates(Arc::new(roots_or_empty(
            tls_on,
            ca_file.as_deref(),
            &shown,
        )?))
        .with_no_client_auth();
    Ok((cfg, MakeRustlsConnect::new(client)))
}

/// The roots TLS verifies against; none are needed (or read) for a plain connection.
fn roots_or_empty(
    tls_on: bool,
    ca_file: Option<&str>,
    shown: &str,
) -> Result<rustls::RootCertStore> {
    if tls_on {
        roots(ca_file, shown)
    } else {
        Ok(rustls::RootCertStore::empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_parameters_leave_the_url_and_the_mode_is_checked() {
        let mut u =
            "postgres://u:p@db:5432/nex?sslmode=require&sslrootcert=/ca.pem&application_name=x"
                .to_string();
        assert_eq!(
            take_param(&mut u, "sslrootcert").as_deref(),
            Some("/ca.pem")
        );
        assert_eq!(take_param(&mut u, "sslmode").as_deref(), Some("require"));
        assert_eq!(u, "postgres://u:p@db:5432/nex?application_name=x");
        let err = parse("postgres://u:hunter2@db/nex?sslmode=sometimes")
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("sslmode=sometimes"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
        let err = parse("postgres://u:hunter2@db/nex?sslmode=require&sslrootcert=/no/such.pem")
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("/no/such.pem"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }
}
