//! Backup and verified restore through real agent, controller and PostgreSQL.

use nex_backup_tests::env::{Env, EnvOpts, SITE};
use nex_backup_tests::sample::{CHECKSUMS_SQL, FIDELITY_SQL, invoices_sql};

fn strip_dump_noise(dump: &str) -> String {
    dump.lines()
        .filter(|l| {
            !l.starts_with("-- Dumped")
                && !l.starts_with("\\restrict")
                && !l.starts_with("\\unrestrict")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn fidelity_round_trip_equals_original() {
    let env = Env::start(FIDELITY_SQL, EnvOpts::default());
    let b = env.backup_ok("main");
    let snap = b["snapshot_id"].as_str().unwrap().to_string();

    let r = env.restore("main", "restored", &[]).json();
    assert_eq!(r["ok"], true, "restore failed: {r}\n{}", env.logs());
    assert_eq!(r["stream_hash_ok"], true);
    assert_eq!(r["snapshot_id"], snap.as_str());
    let tables = r["tables"].as_array().unwrap();
    assert!(tables.len() >= 4, "row counts for every table: {r}");
    assert!(tables.iter().all(|t| t["ok"] == true));
    assert!(
        tables
            .iter()
            .any(|t| t["table"] == "\"fakturácia\".\"faktúra\"" && t["expected_rows"] == 20000)
    );

    let original = strip_dump_noise(&env.pg.dump_plain("invoices", &[]));
    let restored = strip_dump_noise(&env.pg.dump_plain("restored", &[]));
    assert!(original.contains("CREATE MATERIALIZED VIEW") && original.contains("lo_create"));
    assert_eq!(
        original, restored,
        "plain dumps of original and restored databases differ"
    );
    let sums_a = env.pg.psql("invoices", CHECKSUMS_SQL);
    let sums_b = env.pg.psql("restored", CHECKSUMS_SQL);
    assert!(sums_a.lines().count() >= 8, "{sums_a}");
    assert_eq!(sums_a, sums_b, "per-table checksums differ");
    let grants = env.pg.psql(
        "restored",
        "SELECT has_table_privilege('nexb_reader', '\"fakturácia\".\"faktúra\"', 'SELECT')",
    );
    assert_eq!(grants, "t");

    // An existing database is refused without --clean, and replaced with it.
    let again = env.restore("main", "restored", &[]);
    assert!(
        !again.ok,
        "restore over an existing database must be refused"
    );
    assert!(
        again.stdout.contains("already exists") && again.stdout.contains("--clean"),
        "{}",
        again.stdout
    );
    let clean = env
        .restore("main", "restored", &["--clean", "--globals"])
        .json();
    assert_eq!(clean["ok"], true, "{clean}");
}

#[test]
fn small_change_sends_small_fraction() {
    let env = Env::start(&invoices_sql(120_000), EnvOpts::default());
    let first = env.backup_ok("main");
    let first_new = first["new_bytes"].as_u64().unwrap();
    assert!(
        first_new > 5_000_000,
        "first backup sends the data: {first}"
    );

    env.pg.psql(
        "invoices",
        "UPDATE invoices SET status = 'paid', note = 'paid online' WHERE id % 20000 = 7",
    );
    let second = env.backup_ok("main");
    let second_new = second["new_bytes"].as_u64().unwrap();
    assert!(
        second_new * 10 < first_new,
        "second backup sent {second_new} of {first_new} bytes"
    );

    let snaps = env.snapshots("main");
    assert_eq!(snaps.len(), 2);
    assert_eq!(
        snaps[1]["new_bytes"].as_u64().unwrap(),
        second_new,
        "snapshot records the controller's count"
    );
    assert!(
        snaps[1]["stored_bytes"].as_u64().unwrap() > first_new / 2,
        "stored size counts shared chunks"
    );

    let r = env.restore("main", "after_change", &[]).json();
    assert_eq!(r["ok"], true, "{r}");
    let paid = env.pg.psql(
        "after_change",
        "SELECT count(*) FROM invoices WHERE note = 'paid online'",
    );
    assert_eq!(paid, "6");
}

#[test]
fn cli_reports_status_and_clear_errors() {
    let env = Env::start(
        "CREATE TABLE t (x int); INSERT INTO t VALUES (1)",
        EnvOpts::default(),
    );
    let st = env.status();
    let site = &st["sites"][0];
    assert_eq!(site["site"], SITE);
    assert_eq!(site["online"], true);
    assert_eq!(site["targets"][0]["target"], "main");
    assert_eq!(site["targets"][0]["newest_snapshot"], "");
    let table = env.cli(&["status"]);
    assert!(
        table.ok && table.stdout.contains("never backed up"),
        "{}",
        table.stdout
    );

    env.backup_ok("main");
    let table = env.cli(&["snapshots"]);
    assert!(
        table.ok && table.stdout.contains("SNAPSHOT") && table.stdout.contains("main"),
        "{}",
        table.stdout
    );

    let unknown_site = env.cli(&["backup", "--site", "nosuch", "--target", "main"]);
    assert!(!unknown_site.ok);
    assert_eq!(unknown_site.stderr.trim(), "error: unknown site nosuch");
    let unknown_target = env.cli(&["backup", "--site", SITE, "--target", "nosuch"]);
    assert_eq!(
        unknown_target.stderr.trim(),
        "error: unknown target nosuch at site acme"
    );
    let port = nex_backup_tests::free_port();
    let down = nex_backup_tests::procs::cli(
        &env.controller.cli_config(),
        &format!("https://127.0.0.1:{port}"),
        &["status"],
    );
    assert!(!down.ok);
    assert_eq!(down.stderr.trim().lines().count(), 1, "{}", down.stderr);
    assert!(
        down.stderr
            .contains("cannot reach controller at https://127.0.0.1"),
        "{}",
        down.stderr
    );
}

#[test]
fn trust_commands_of_the_cli_and_their_errors() {
    use nex_backup_tests::procs::cli_bare;
    let env = Env::start("CREATE TABLE t (x int)", EnvOpts::default());
    let data = env.controller.data_dir.display().to_string();
    let shown = cli_bare(&["ca", "show", "--data-dir", &data], &[]);
    assert!(shown.ok, "{}", shown.stderr);
    assert_eq!(shown.stdout.trim(), env.controller.fingerprint);

    let list = env.cli(&["agents", "list"]);
    assert!(list.ok, "{}", list.stderr);
    let row = list.stdout.lines().nth(1).unwrap_or_default().to_string();
    assert!(
        row.contains(SITE)
            && row.contains("acme-srv1")
            && row.contains("online")
            && (row.contains("(in 29d") || row.contains("(in 30d")),
        "{}",
        list.stdout
    );

    // Without the credential, or with a wrong pin, every admin command is refused clearly.
    let url = env.url();
    let no_cred = cli_bare(
        &[
            "status",
            "--controller",
            &url,
            "--ca-fingerprint",
            &env.controller.fingerprint,
        ],
        &[],
    );
    assert!(!no_cred.ok);
    assert!(
        no_cred.stderr.contains("no admin credential"),
        "{}",
        no_cred.stderr
    );
    let wrong = cli_bare(
        &[
            "status",
            "--controller",
            &url,
            "--ca-fingerprint",
            &env.controller.fingerprint,
        ],
        &[("NEX_ADMIN_TOKEN", "nexb-admin-wrong")],
    );
    assert_eq!(wrong.stderr.trim(), "error: admin credential rejected");
    let bad_pin = format!("SHA256:{}", "00".repeat(32));
    let token_file = env
        .controller
        .data_dir
        .join("admin.token")
        .display()
        .to_string();
    let pinned = cli_bare(
        &[
            "status",
            "--controller",
            &url,
            "--ca-fingerprint",
            &bad_pin,
            "--admin-token-file",
            &token_file,
        ],
        &[],
    );
    assert!(!pinned.ok);
    assert!(pinned.stderr.contains("pinned CA"), "{}", pinned.stderr);
    let ok = cli_bare(
        &[
            "status",
            "--controller",
            &url,
            "--ca-fingerprint",
            &env.controller.fingerprint,
            "--admin-token-file",
            &token_file,
        ],
        &[],
    );
    assert!(ok.ok, "{}", ok.stderr);

    let bad_site = env.cli(&["token", "create", "--site", "no/pe"]);
    assert!(
        !bad_site.ok && bad_site.stderr.contains("site"),
        "{}",
        bad_site.stderr
    );
    let too_long = env.cli(&["token", "create", "--site", SITE, "--expires", "90d"]);
    assert!(
        !too_long.ok && too_long.stderr.contains("30 days"),
        "{}",
        too_long.stderr
    );
    let unknown = env.cli(&["agents", "revoke", "nosuch"]);
    assert_eq!(unknown.stderr.trim(), "error: no enrolled agent nosuch");

    let key = env.dir.path().join("rk-again").display().to_string();
    assert!(cli_bare(&["recovery-key", "create", "--out", &key], &[]).ok);
    let again = cli_bare(&["recovery-key", "create", "--out", &key], &[]);
    assert!(
        !again.ok && again.stderr.contains("refusing to overwrite"),
        "{}",
        again.stderr
    );

    // A controller without a recovery key refuses to enroll.
    let bare = nex_backup_tests::procs::Controller::start(
        &env.dir.path().join("bare-controller"),
        0,
        &env.dir.path().join("bare.log"),
        &[],
    );
    let token = bare.cli(&["token", "create", "--site", "x"]);
    assert!(token.ok, "{}", token.stderr);
    let cfg = env.second_agent_config("x-agent");
    let enroll = nex_backup_tests::procs::agent_cmd(
        &[
            "enroll",
            "--config",
            &cfg.display().to_string(),
            "--controller",
            &bare.url(),
            "--ca-fingerprint",
            &bare.fingerprint,
        ],
        &[("NEX_ENROLL_TOKEN", token.stdout.trim())],
    );
    assert!(!enroll.ok);
    assert!(
        enroll.stderr.contains("no recovery public key"),
        "{}",
        enroll.stderr
    );
}
