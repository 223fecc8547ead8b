//! The PostgreSQL catalog against a real cluster: the same conformance suites as the
//! embedded catalog (with the concurrency cases, which overlap for real here: each side
//! holds its own connection), migrations that replicas can run at once, and a controller
//! on PostgreSQL and S3 that backs up and restores.

use nex_backup::catalog::pg::PgCatalog;
use nex_backup_tests::pg::PgCluster;

#[test]
fn the_postgres_catalog_passes_the_conformance_suites() {
    let pg = PgCluster::start();
    let u = pg.create_catalog("nexcat");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        // Two replicas starting at once: one migrates, the other finds it done.
        let (a, b) = futures::join!(PgCatalog::connect(&u), PgCatalog::connect(&u));
        let (cat, _other) = (a.unwrap(), b.unwrap());
        nex_backup::catalog::conformance::run_all(&cat).await;
        nex_backup::catalog::conformance_areas::run_all(&cat, &cat, &cat).await;
    });
    assert_eq!(
        pg.psql("nexcat", "SELECT max(version) FROM nexb_schema"),
        nex_backup::catalog::pg::schema::MIGRATIONS
            .len()
            .to_string()
    );
}

#[test]
fn a_bad_catalog_url_names_the_server_not_the_password() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let err = rt
        .block_on(PgCatalog::connect(
            "postgres://nex:hunter2secret@127.0.0.1:1/nex",
        ))
        .err()
        .expect("nothing listens on port 1");
    let text = err.to_string();
    assert!(text.contains("127.0.0.1"), "{text}");
    assert!(!text.contains("hunter2secret"), "{text}");
}

#[test]
fn a_controller_on_postgres_and_s3_backs_up_restores_and_keeps_its_records() {
    use nex_backup_tests::env::{Env, EnvOpts};
    use nex_backup_tests::sample::invoices_sql;
    let catalog = PgCluster::start();
    let cat_url = catalog.create_catalog("nexcat");
    let s3 = nex_backup_tests::s3::S3Server::start();
    let mut env = Env::start(
        &invoices_sql(5_000),
        EnvOpts {
            controller_args: vec![
                "--catalog".into(),
                cat_url,
                "--store".into(),
                s3.url_with_file("nex"),
            ],
            ..Default::default()
        },
    );
    let first = env.backup_ok("main");
    env.pg.psql(
        "invoices",
        "UPDATE invoices SET total = total + 1 WHERE id < 100",
    );
    env.backup_ok("main");
    let data_dir = env.controller.data_dir.clone();
    assert!(!data_dir.join("catalog").exists(), "no embedded catalog");
    assert!(!data_dir.join("blobs").exists(), "no local blobs");
    assert_eq!(
        catalog.psql("nexcat", "SELECT count(*) FROM snapshots"),
        "2"
    );
    // Everything is in PostgreSQL: a restarted controller knows it all.
    env.restart_controller(false);
    env.wait_online(true);
    assert_eq!(env.snapshots("main").len(), 2);
    let r = env
        .restore(
            "main",
            "from_pg_catalog",
            &["--snapshot", first["snapshot_id"].as_str().unwrap()],
        )
        .json();
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(
        env.pg
            .psql("from_pg_catalog", "SELECT count(*) FROM invoices"),
        "5000"
    );
    let jobs = catalog.psql("nexcat", "SELECT count(*) FROM docs WHERE kind = 'job'");
    assert_eq!(jobs, "3", "two backups and a restore recorded");
}

/// A CA and a server certificate for 127.0.0.1 signed by it: (CA PEM, cert PEM, key PEM).
fn server_pki() -> (String, String, String) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_der(ca.der(), &ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    (ca.pem(), cert.pem(), key.serialize_pem())
}

#[test]
fn the_catalog_connection_uses_tls_when_asked_and_verifies_the_server() {
    let pg = PgCluster::start();
    let (ca, cert, key) = server_pki();
    pg.enable_tls(&cert, &key);
    let plain = pg.create_catalog("nextls");
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca).unwrap();
    let (other_ca, _, _) = server_pki();
    let other_file = dir.path().join("other.pem");
    std::fs::write(&other_file, other_ca).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let tls_url = format!("{plain}?sslmode=require&sslrootcert={}", ca_file.display());
    let cat = rt.block_on(PgCatalog::connect(&tls_url)).unwrap();
    rt.block_on(async {
        use nex_backup::catalog::Catalog;
        let id = nex_backup_shared::ids::ChunkId([9; 32]);
        assert!(cat.record_chunk("s-tls", &id, 1, &[0; 32]).await.unwrap());
    });
    let encrypted = pg.psql(
        "postgres",
        "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
         WHERE a.datname = 'nextls' AND s.ssl",
    );
    assert_ne!(encrypted, "0", "the catalog's connections use TLS");
    drop(cat);
    // A server whose certificate the given CA did not sign is refused.
    let wrong = format!(
        "{plain}?sslmode=require&sslrootcert={}",
        other_file.display()
    );
    let err = rt
        .block_on(PgCatalog::connect(&wrong))
        .err()
        .expect("an unverified server is refused")
        .to_string();
    assert!(err.contains("127.0.0.1"), "{err}");
    assert!(!err.contains(nex_backup_tests::pg::PASSWORD), "{err}");
    // Without sslmode the connection stays plain, as before.
    rt.block_on(PgCatalog::connect(&plain)).unwrap();
}
