//! Backups, restores and drills by a role with only the documented rights
//! (`docs/operations.md`, least privilege): `pg_read_all_data` and `CREATEDB`, no
//! superuser, no membership in the owners' roles. `check-config --online` says what it
//! lacks; a restore that keeps owners fails naming the role, `--no-owner` restores and
//! verifies; a drill restores as its own role on its own.

use nex_backup_tests::env::{Env, EnvOpts, PW_ENV, SITE, target_toml};
use nex_backup_tests::pg::PASSWORD;
use nex_backup_tests::procs::agent_cmd;
use nex_backup_tests::sample::invoices_sql;

#[test]
fn a_role_with_only_the_documented_rights_backs_up_restores_and_drills() {
    let env = Env::start(
        &invoices_sql(2_000),
        EnvOpts {
            extra_targets: target_toml("limited", "nexb_backup", "invoices", PW_ENV),
            ..Default::default()
        },
    );
    env.pg.psql(
        "postgres",
        &format!(
            "CREATE ROLE nexb_backup LOGIN PASSWORD '{PASSWORD}'; GRANT pg_read_all_data TO nexb_backup"
        ),
    );
    let config = env.agent_config.display().to_string();
    let check = agent_cmd(
        &["check-config", "--config", &config, "--online"],
        &[(PW_ENV, PASSWORD)],
    );
    assert!(
        check.stdout.contains("cannot create databases")
            && check.stdout.contains("ALTER ROLE nexb_backup CREATEDB"),
        "{}",
        check.stdout
    );
    env.pg.psql("postgres", "ALTER ROLE nexb_backup CREATEDB");
    let check = agent_cmd(
        &["check-config", "--config", &config, "--online"],
        &[(PW_ENV, PASSWORD)],
    );
    assert!(check.ok, "{}\n{}", check.stdout, check.stderr);
    assert!(
        !check.stdout.contains("cannot create databases")
            && !check.stdout.contains("may not read all data")
            && check.stdout.contains("is not a superuser"),
        "{}",
        check.stdout
    );

    let snap = env.backup_ok("limited");
    assert_eq!(snap["ok"], true);

    // Keeping the owners needs membership in their roles: the error says which.
    let out = env.restore("limited", "kept_owners", &[]);
    assert!(!out.ok);
    assert!(
        out.stdout.contains("must be member of role")
            || out.stderr.contains("must be member of role"),
        "{}\n{}",
        out.stdout,
        out.stderr
    );
    let leftovers = env.pg.psql(
        "postgres",
        "SELECT count(*) FROM pg_database WHERE datname LIKE 'kept_owners%'",
    );
    assert_eq!(leftovers, "0", "a failed restore leaves nothing behind");

    // A role allowed two connections: the restore loads over what it gets, and
    // `pg_restore -j` after it over one fewer.
    env.pg
        .psql("postgres", "ALTER ROLE nexb_backup CONNECTION LIMIT 2");
    let r = env.restore("limited", "own_owner", &["--no-owner"]).json();
    assert_eq!(r["ok"], true, "{r}\n{}", env.logs());
    assert!(
        env.agent_log()
            .contains("fewer connections than restore_jobs + 1"),
        "{}",
        env.logs()
    );
    let owner = env.pg.psql(
        "own_owner",
        "SELECT tableowner FROM pg_tables WHERE tablename = 'invoices'",
    );
    assert_eq!(owner, "nexb_backup");

    let drill = env.cli(&["drill", "--site", SITE, "--target", "limited"]);
    assert!(drill.ok, "{}\n{}", drill.stdout, drill.stderr);
}
