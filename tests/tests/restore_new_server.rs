//! Restores onto a server without the roles and tablespaces the snapshot names (a new
//! cluster after the customer's server is gone): refused at once with what is missing
//! named and what to do, then restored with `--globals`, or without owners, grants and
//! tablespaces.

use nex_backup_tests::env::{Env, EnvOpts, PW_ENV, SITE, target_toml};

const SQL: &str = r#"
CREATE ROLE nexb_app;
CREATE ROLE nexb_viewer;
CREATE TABLE acct (id int PRIMARY KEY, name text);
INSERT INTO acct SELECT g, 'n' || g FROM generate_series(1, 1000) g;
ALTER TABLE acct OWNER TO nexb_app;
GRANT SELECT ON acct TO nexb_viewer;
"#;

const OWNER_SQL: &str = "SELECT tableowner FROM pg_tables WHERE tablename = 'acct'";

#[test]
fn a_restore_without_the_snapshots_roles_or_tablespaces_says_which_and_what_to_do() {
    let env = Env::start(SQL, EnvOpts::default());
    // A tablespace in the server's own directory (no other directory is the server's).
    for sql in [
        "ALTER SYSTEM SET allow_in_place_tablespaces = on",
        "SELECT pg_reload_conf()",
        "CREATE TABLESPACE nexb_fast LOCATION ''",
        "ALTER SYSTEM RESET allow_in_place_tablespaces",
        "SELECT pg_reload_conf()",
    ] {
        env.pg.psql("postgres", sql);
    }
    env.pg.psql(
        "invoices",
        "CREATE TABLE hot (id int) TABLESPACE nexb_fast; \
         INSERT INTO hot SELECT generate_series(1, 10);",
    );
    env.backup_ok("main");
    // Another site whose agent restores with one pg_restore (restore_jobs = 1).
    let (_serial, _) = env.site_agent("serial", "restore_jobs = 1\n");
    let b = env.cli(&["backup", "--site", "serial", "--target", "main", "--json"]);
    assert_eq!(b.json()["ok"], true, "{}{}", b.stdout, b.stderr);
    // The roles are gone, as on a new server.
    env.pg.psql(
        "invoices",
        "DROP TABLE acct, hot; DROP ROLE nexb_app; DROP ROLE nexb_viewer;",
    );
    env.pg.psql("postgres", "DROP TABLESPACE nexb_fast");
    let databases = || {
        env.pg.psql(
            "postgres",
            "SELECT string_agg(datname, ',' ORDER BY datname) FROM pg_database",
        )
    };
    let before = databases();

    let r = env.restore("main", "r1", &[]).json_failed();
    assert_eq!(r["ok"], false, "{r}");
    let err = r["error"].as_str().unwrap();
    assert!(
        err.contains("owners \"nexb_app\"")
            && err.contains("grantees \"nexb_viewer\"")
            && err.contains("tablespaces \"nexb_fast\"")
            && err.contains("--globals")
            && err.contains("--no-privileges"),
        "{err}"
    );
    // Refused before any data was loaded, and nothing is left behind.
    assert!(
        !env.agent_log().contains("table data loaded"),
        "{}",
        env.agent_log()
    );
    assert_eq!(databases(), before);

    let r = env.restore("main", "r2", &["--no-owner"]).json_failed();
    let err = r["error"].as_str().unwrap();
    assert!(
        r["ok"] == false && err.contains("grantees \"nexb_viewer\"") && !err.contains("nexb_app"),
        "{r}"
    );

    // A drill checks the data: it leaves out what the server lacks, and says so.
    let d = env.cli(&["drill", "--site", SITE, "--target", "main", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&d.stdout).expect("drill JSON");
    assert_eq!(v["ok"], true, "{v}\n{}", env.logs());
    let note = v["note"].as_str().unwrap_or_default();
    assert!(
        note.contains("left out") && note.contains("nexb_viewer") && note.contains("nexb_fast"),
        "{v}"
    );
    assert_eq!(databases(), before, "the drill database is gone");

    let r = env
        .restore(
            "main",
            "r3",
            &["--no-owner", "--no-privileges", "--no-tablespaces"],
        )
        .json();
    assert_eq!(r["ok"], true, "{r}\n{}", env.logs());
    let rows = |r: &serde_json::Value| {
        let mut rows: Vec<(String, i64)> = (r["tables"].as_array().unwrap().iter())
            .map(|t| {
                (
                    t["table"].as_str().unwrap().into(),
                    t["actual_rows"].as_i64().unwrap(),
                )
            })
            .collect();
        rows.sort();
        rows
    };
    let want = vec![
        ("\"public\".\"acct\"".to_string(), 1000),
        ("\"public\".\"hot\"".to_string(), 10),
    ];
    assert_eq!(rows(&r), want, "{r}");
    assert_eq!(env.pg.psql("r3", OWNER_SQL), "postgres");

    // (The snapshot's tablespace was in place, in the old server's data directory: it
    // cannot be created here, and is left out.)
    let r = env
        .restore("main", "r4", &["--globals", "--no-tablespaces"])
        .json();
    assert_eq!(r["ok"], true, "{r}\n{}", env.logs());
    assert_eq!(rows(&r), want, "{r}");
    assert_eq!(env.pg.psql("r4", OWNER_SQL), "nexb_app");
    let granted = env.pg.psql(
        "r4",
        "SELECT has_table_privilege('nexb_viewer', 'public.acct', 'SELECT')",
    );
    assert_eq!(granted, "t");

    // Through one pg_restore the same check refuses at once.
    env.pg.psql(
        "r4",
        "DROP TABLE acct, hot; DROP ROLE nexb_app; DROP ROLE nexb_viewer;",
    );
    let serial = |db: &str, extra: &[&str]| {
        let args = ["restore", "--site", "serial", "--target", "main", "--json"];
        env.cli(&[&args[..], &["--to-database", db], extra].concat())
            .json_failed()
    };
    let r = serial("r6", &["--no-owner", "--no-privileges"]);
    let err = r["error"].as_str().unwrap();
    assert!(
        r["ok"] == false && err.contains("nexb_fast") && err.contains("--no-tablespaces"),
        "{r}"
    );
    let r = serial("r5", &[]);
    let err = r["error"].as_str().unwrap();
    assert!(
        r["ok"] == false && err.contains("owners \"nexb_app\"") && err.contains("--globals"),
        "{r}"
    );
}

/// `pg_restore` into a database of another name skips the archive's database entry:
/// the restored database is created as the source was (encoding, locale) and gets its
/// owner, settings, comment and grants once its content is in.
#[test]
fn the_database_comes_back_with_its_locale_settings_comment_and_grants() {
    let opts = EnvOpts {
        extra_targets: target_toml("app", "postgres", "app", PW_ENV),
        ..Default::default()
    };
    let env = Env::start(SQL, opts);
    for sql in [
        "CREATE DATABASE app TEMPLATE template0 ENCODING 'UTF8' LOCALE 'C'",
        "ALTER DATABASE app SET search_path = ledger, public",
        "COMMENT ON DATABASE app IS 'Účtovníctvo'",
        "ALTER DATABASE app OWNER TO nexb_app",
        "GRANT CONNECT ON DATABASE app TO nexb_viewer",
    ] {
        env.pg.psql("postgres", sql);
    }
    env.pg.psql(
        "app",
        "CREATE SCHEMA ledger; CREATE TABLE ledger.entry (id int); \
         INSERT INTO ledger.entry SELECT generate_series(1, 100);",
    );
    env.backup_ok("app");
    let r = env.restore("app", "app2", &[]).json();
    assert_eq!(r["ok"], true, "{r}\n{}", env.logs());
    assert_eq!(r["note"], "", "{r}");

    let props = |db: &str| {
        env.pg.psql(
            "postgres",
            &format!(
                "SELECT concat_ws('|', pg_encoding_to_char(encoding), datcollate, datctype, \
                 pg_get_userbyid(datdba), shobj_description(oid, 'pg_database'), datacl, \
                 (SELECT array_to_string(setconfig, ',') FROM pg_db_role_setting \
                  WHERE setdatabase = d.oid AND setrole = 0)) \
                 FROM pg_database d WHERE datname = '{db}'"
            ),
        )
    };
    let source = props("app");
    assert!(
        source.starts_with("UTF8|C|C|nexb_app|Účtovníctvo|") && source.contains("search_path"),
        "{source}"
    );
    assert_eq!(props("app2"), source);
    // The application's unqualified names resolve as they did.
    assert_eq!(env.pg.psql("app2", "SELECT count(*) FROM entry"), "100");

    // A replacement (--clean) keeps them through the swap.
    let r = env
        .restore("app", "app2", &["--clean", "--drop-old"])
        .json();
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(props("app2"), source);
}
