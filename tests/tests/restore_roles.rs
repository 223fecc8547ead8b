//! Restores onto a server without the roles the snapshot names (a new cluster after
//! the customer's server is gone): refused at once with the missing roles named and
//! what to do, then restored with `--globals`, or without owners and grants.

use nex_backup_tests::env::{Env, EnvOpts};

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
fn a_restore_without_the_snapshots_roles_says_which_and_what_to_do() {
    let env = Env::start(SQL, EnvOpts::default());
    env.backup_ok("main");
    // Another site whose agent restores with one pg_restore (the TOC is not read).
    let (_serial, _) = env.site_agent("serial", "restore_jobs = 1\n");
    let b = env.cli(&["backup", "--site", "serial", "--target", "main", "--json"]);
    assert_eq!(b.json()["ok"], true, "{}{}", b.stdout, b.stderr);
    // The roles are gone, as on a new server.
    env.pg.psql(
        "invoices",
        "DROP TABLE acct; DROP ROLE nexb_app; DROP ROLE nexb_viewer;",
    );
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

    let r = env
        .restore("main", "r3", &["--no-owner", "--no-privileges"])
        .json();
    assert_eq!(r["ok"], true, "{r}\n{}", env.logs());
    assert_eq!(r["tables"][0]["actual_rows"], 1000, "{r}");
    assert_eq!(env.pg.psql("r3", OWNER_SQL), "postgres");

    let r = env.restore("main", "r4", &["--globals"]).json();
    assert_eq!(r["ok"], true, "{r}\n{}", env.logs());
    assert_eq!(env.pg.psql("r4", OWNER_SQL), "nexb_app");
    let granted = env.pg.psql(
        "r4",
        "SELECT has_table_privilege('nexb_viewer', 'public.acct', 'SELECT')",
    );
    assert_eq!(granted, "t");

    // Through one pg_restore the server's own error comes with the same advice.
    env.pg.psql(
        "r4",
        "DROP TABLE acct; DROP ROLE nexb_app; DROP ROLE nexb_viewer;",
    );
    let r = env
        .cli(&[
            "restore",
            "--site",
            "serial",
            "--target",
            "main",
            "--to-database",
            "r5",
            "--json",
        ])
        .json_failed();
    let err = r["error"].as_str().unwrap();
    assert!(
        r["ok"] == false
            && err.contains("role \"nexb_app\" does not exist")
            && err.contains("--globals"),
        "{r}"
    );
}
