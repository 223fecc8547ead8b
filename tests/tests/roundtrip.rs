//! Backup and verified restore through real agent, controller and PostgreSQL.

use nex_backup_tests::env::{Env, EnvOpts, PW_ENV, SITE, target_toml};
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
    let log = env.agent_log();
    assert!(
        log.contains("table data loaded") && !log.contains("restoring with one pg_restore"),
        "large objects included, the parallel path\n{}",
        env.logs()
    );
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

/// What a restore over several connections must reproduce beyond [`FIDELITY_SQL`]
/// (without its large objects, which the fidelity test above restores): a table big
/// enough to be cut into pieces over the connections, XML content (not documents), a
/// domain with a check, a generated column, a foreign key, a partition of several pieces
/// (loaded frozen, as the big table) and row-level security.
const PARALLEL_SQL: &str = r#"
CREATE DOMAIN posint AS int CHECK (VALUE > 0);
CREATE TABLE big (id bigint PRIMARY KEY, n posint NOT NULL, t text, x xml,
  twice bigint GENERATED ALWAYS AS (id * 2) STORED);
INSERT INTO big (id, n, t, x) SELECT g, 1 + g % 1000, repeat(md5(g::text), 3) || E'\n\t\\',
  xmlconcat(xmlelement(name a, g), xmlelement(name b)) FROM generate_series(1, 40000) g;
CREATE TABLE big_child (id bigint REFERENCES big(id), note text);
INSERT INTO big_child SELECT g, 'c' || g FROM generate_series(1, 40000, 7) g;
CREATE TABLE ev (id bigint, at date, note text) PARTITION BY RANGE (at);
CREATE TABLE ev_2025 PARTITION OF ev FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
INSERT INTO ev SELECT g, date '2025-01-01' + g % 365, repeat('e', 100) FROM generate_series(1, 6000) g;
CREATE TABLE secret (id int, owner text);
INSERT INTO secret VALUES (1, 'a'), (2, 'b');
ALTER TABLE secret ENABLE ROW LEVEL SECURITY;
ALTER TABLE secret FORCE ROW LEVEL SECURITY;
CREATE POLICY nobody ON secret USING (false);
"#;

/// A database (here without large objects) is restored over several connections
/// (schema, then table data cut into pieces over the connections, then indexes and
/// constraints with `pg_restore -j`), and is the same database as the source: plain
/// dumps and per-table checksums equal, every row count verified.
#[test]
fn a_database_restores_over_several_connections() {
    let sql: String = FIDELITY_SQL
        .lines()
        .filter(|l| !l.contains("lo_from_bytea"))
        .map(|l| format!("{l}\n"))
        .collect::<String>()
        + PARALLEL_SQL;
    let env = Env::start(&sql, EnvOpts::default());
    env.backup_ok("main");
    let r = env.restore("main", "restored", &[]).json();
    assert_eq!(r["ok"], true, "restore failed: {r}\n{}", env.logs());
    let tables = r["tables"].as_array().unwrap();
    assert!(
        tables.len() >= 7 && tables.iter().all(|t| t["ok"] == true),
        "{r}"
    );
    let log = env.agent_log();
    let loaded = log
        .lines()
        .find(|l| l.contains("table data loaded"))
        .unwrap_or_else(|| panic!("no parallel load in the agent's log\n{}", env.logs()));
    assert!(
        field(loaded, "split") == Some(0) && field(loaded, "frozen") >= Some(2),
        "each table by one connection, the big ones (alone) loaded frozen: {loaded}"
    );
    // Frozen: its pages all-visible without a vacuum (one would only add to them).
    let visible = "ANALYZE public.big; SELECT relpages > 0 AND relallvisible = relpages \
                   FROM pg_class WHERE oid = 'public.big'::regclass";
    assert_eq!(env.pg.psql("restored", visible), "t", "big: all-visible");
    let leaf = visible.replace("public.big", "public.ev_2025");
    assert_eq!(
        env.pg.psql("restored", &leaf),
        "t",
        "a partition: all-visible"
    );
    assert!(!log.contains("restoring with one pg_restore"), "{loaded}");
    // The rows are checked as the server stored them: no second scan of the restore.
    assert!(
        log.contains("row counts as the server stored them")
            && !log.contains("counting the restored rows"),
        "{log}"
    );

    let original = strip_dump_noise(&env.pg.dump_plain("invoices", &[]));
    let restored = strip_dump_noise(&env.pg.dump_plain("restored", &[]));
    assert!(original.contains("CREATE POLICY") && original.contains("GENERATED ALWAYS"));
    assert_eq!(original, restored, "plain dumps differ");
    let sums_a = env.pg.psql("invoices", CHECKSUMS_SQL);
    let sums_b = env.pg.psql("restored", CHECKSUMS_SQL);
    assert_eq!(sums_a, sums_b, "per-table checksums differ");
    let clean = env.restore("main", "restored", &["--clean"]).json();
    assert_eq!(clean["ok"], true, "{clean}");

    // `restore_split_tables`: the big table over three connections at once; the same
    // content, schema and row counts (rows in another physical order).
    let head = "restore_jobs = 3\nrestore_split_tables = true\n";
    let (_agent, split_log) = env.site_agent("split", head);
    let b = env.cli(&["backup", "--site", "split", "--target", "main", "--json"]);
    assert!(b.ok, "{}{}", b.stdout, b.stderr);
    assert_eq!(b.json()["ok"], true, "{}", b.stdout);
    let args = [
        "restore",
        "--site",
        "split",
        "--target",
        "main",
        "--to-database",
        "split",
    ];
    let r = env.cli(&[&args[..], &["--json"]].concat()).json();
    assert_eq!(r["ok"], true, "{r}");
    let tables = r["tables"].as_array().unwrap();
    assert!(
        tables.len() >= 7 && tables.iter().all(|t| t["ok"] == true),
        "{r}"
    );
    let log = std::fs::read_to_string(&split_log).unwrap();
    let loaded = log
        .lines()
        .find(|l| l.contains("table data loaded"))
        .unwrap();
    assert!(
        field(loaded, "split") >= Some(1)
            && field(loaded, "connections") == Some(3)
            && field(loaded, "frozen") == Some(0),
        "a split table is not truncated for a frozen load: {loaded}"
    );
    assert_eq!(
        sums_a,
        env.pg.psql("split", CHECKSUMS_SQL),
        "split: checksums"
    );
    let schema = |db| strip_dump_noise(&env.pg.dump_plain(db, &["--schema-only"]));
    assert_eq!(schema("invoices"), schema("split"), "split: schema");
}

/// Files put in place for a test, removed when it ends.
struct Installed(Vec<std::path::PathBuf>);

impl Drop for Installed {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// An extension's configuration table (`pg_extension_config_dump`) gets the rows the
/// extension ships from `CREATE EXTENSION`, in the schema step; the dump holds only the
/// rows added after. The parallel restore's frozen load truncates the table it loads, so
/// it must do that only to an empty table: the shipped rows stay, and the added ones
/// come back beside them (every count alone would match either way).
#[test]
fn an_extensions_configuration_table_keeps_the_rows_the_extension_ships() {
    let env = Env::start("SELECT 1", EnvOpts::default());
    let share = env.pg.psql(
        "postgres",
        "SELECT setting FROM pg_config WHERE name = 'SHAREDIR'",
    );
    let ext = std::path::Path::new(&share).join("extension");
    let files = [
        (
            "nexb_cfgtest.control",
            "comment = 'NEX Backup test: a configuration table'\ndefault_version = '1.0'\n\
             relocatable = false\nschema = public\n",
        ),
        (
            "nexb_cfgtest--1.0.sql",
            "CREATE TABLE public.cfg (id int PRIMARY KEY, note text);\n\
             INSERT INTO public.cfg SELECT g, 'shipped ' || g FROM generate_series(1, 5000) g;\n\
             SELECT pg_catalog.pg_extension_config_dump('public.cfg', 'WHERE id > 5000');\n",
        ),
    ];
    let _installed = Installed(files.iter().map(|(name, _)| ext.join(name)).collect());
    for (name, text) in files {
        std::fs::write(ext.join(name), text).unwrap_or_else(|e| {
            panic!(
                "install a test extension into {} (the tests run as root, as tests/run.sh does): {e}",
                ext.display()
            )
        });
    }
    env.pg.psql(
        "invoices",
        "CREATE EXTENSION nexb_cfgtest; INSERT INTO cfg \
         SELECT g, repeat('added by the customer ', 20) FROM generate_series(5001, 25000) g",
    );
    env.backup_ok("main");
    let r = env.restore("main", "restored", &[]).json();
    assert_eq!(r["ok"], true, "restore failed: {r}\n{}", env.logs());
    let count = "SELECT count(*), count(*) FILTER (WHERE note LIKE 'shipped %') FROM cfg";
    assert_eq!(env.pg.psql("invoices", count), "25000|5000");
    assert_eq!(
        env.pg.psql("restored", count),
        "25000|5000",
        "the shipped rows and the added ones\n{}",
        env.logs()
    );
    let log = env.agent_log();
    assert!(
        log.contains("table holds rows before its data loads"),
        "the table with shipped rows was loaded without FREEZE\n{log}"
    );
}

/// The number a log line gives for `name` (`name=N`), if it gives one.
fn field(line: &str, name: &str) -> Option<usize> {
    line.split(&format!(" {name}="))
        .nth(1)
        .and_then(|v| v.split(' ').next())
        .and_then(|v| v.parse().ok())
}

/// An archive the parallel restore does not take apart (here: a LATIN1 database) goes
/// whole into one `pg_restore --single-transaction`, the TOC bytes already read first.
#[test]
fn a_latin1_database_goes_whole_to_one_pg_restore() {
    let env = Env::start(
        "SELECT 1",
        EnvOpts {
            extra_targets: target_toml("latin", "postgres", "latin", PW_ENV),
            ..Default::default()
        },
    );
    env.pg.psql(
        "postgres",
        "CREATE DATABASE latin ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0",
    );
    env.pg.psql(
        "latin",
        "CREATE TABLE t (id int PRIMARY KEY, name text); \
         INSERT INTO t SELECT g, 'M' || chr(252) || 'ller caf' || chr(233) || ' ' || g \
         FROM generate_series(1, 5000) g;",
    );
    env.backup_ok("latin");
    let r = env.restore("latin", "latin_back", &[]).json();
    assert_eq!(r["ok"], true, "{r}\n{}", env.logs());
    assert!(
        r["tables"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["ok"] == true),
        "{r}"
    );
    let log = env.agent_log();
    assert!(
        log.contains("restoring with one pg_restore") && log.contains("counting the restored rows"),
        "{}",
        env.logs()
    );
    // ü and é by code point, the same characters in LATIN1 and in UTF8.
    let q = "SELECT count(*), sum(length(name)) FROM t \
             WHERE name = 'M' || chr(252) || 'ller caf' || chr(233) || ' ' || id";
    assert_eq!(env.pg.psql("latin", q), "5000|78893");
    assert_eq!(env.pg.psql("latin_back", q), "5000|78893");
}

/// A restore whose temporary directory cannot be written fails naming it and saying
/// what to do, and leaves no database behind.
#[test]
fn a_restore_names_an_unwritable_temporary_directory() {
    let env = Env::start(
        &invoices_sql(100),
        EnvOpts {
            agent_env: vec![("TMPDIR".into(), "/nonexistent/nexb-tmp".into())],
            ..Default::default()
        },
    );
    env.backup_ok("main");
    let out = env.restore("main", "tmpless", &[]);
    assert!(!out.ok, "{}", out.stdout);
    let text = format!("{}{}", out.stdout, out.stderr);
    assert!(
        text.contains("/nonexistent/nexb-tmp") && text.contains("set TMPDIR"),
        "{text}"
    );
    let left = env.pg.psql(
        "postgres",
        "SELECT count(*) FROM pg_database WHERE datname = 'tmpless'",
    );
    assert_eq!(left, "0", "the failed restore's database is dropped");
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

/// Tables of every kind whose rows the dump carries differently.
const COUNTED_SQL: &str = r#"
CREATE TABLE plain (id int, t text, b bytea);
INSERT INTO plain SELECT g, E'line1\nline2\\back\ttab\r', decode('00ff0a0d5c2e0a', 'hex')
  FROM generate_series(1, 1000) g;
INSERT INTO plain VALUES (NULL, NULL, NULL), (0, E'\\.', E'\\x0a');
CREATE TABLE empty (id int);
CREATE TABLE parted (id int, k int) PARTITION BY RANGE (k);
CREATE TABLE parted_a PARTITION OF parted FOR VALUES FROM (0) TO (10);
CREATE TABLE parted_b PARTITION OF parted FOR VALUES FROM (10) TO (20);
INSERT INTO parted SELECT g, g % 20 FROM generate_series(1, 500) g;
CREATE TABLE parent (id int);
CREATE TABLE child () INHERITS (parent);
INSERT INTO parent SELECT generate_series(1, 7);
INSERT INTO child SELECT generate_series(1, 3);
CREATE SCHEMA "We ird";
CREATE TABLE "We ird"."Tab""le" (x text);
INSERT INTO "We ird"."Tab""le" VALUES ('a'), (E'multi\nline');
SELECT lo_from_bytea(0, decode('0a0a0a', 'hex'));
CREATE UNLOGGED TABLE unl (x int);
INSERT INTO unl VALUES (1), (2);
CREATE MATERIALIZED VIEW mv AS SELECT * FROM plain;
"#;

/// Row counts come from the dump itself (no second scan of the data: one sequential
/// scan of a table per backup, pg_dump's), equal `count(*) FROM ONLY` of every table in
/// the source, and a restore checks them against the restored database.
#[test]
fn row_counts_come_from_the_dump_without_a_second_scan() {
    let env = Env::start(COUNTED_SQL, EnvOpts::default());
    let scans = || {
        env.pg
            .psql(
                "invoices",
                "SELECT seq_scan FROM pg_stat_user_tables WHERE relname = 'plain'",
            )
            .parse::<i64>()
            .unwrap()
    };
    let before = scans();
    env.backup_ok("main");
    nex_backup_tests::wait_for("the dump's scan in the statistics", 30, || {
        (scans() > before).then_some(())
    });
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert_eq!(
        scans(),
        before + 1,
        "one scan of the table: pg_dump's, no count(*)"
    );

    let r = env.restore("main", "counted", &[]).json();
    assert_eq!(r["ok"], true, "restore failed: {r}\n{}", env.logs());
    let tables = r["tables"].as_array().unwrap();
    let expected = |table: &str| {
        tables
            .iter()
            .find(|t| t["table"] == table)
            .unwrap_or_else(|| panic!("{table} not counted: {r}"))["expected_rows"]
            .as_i64()
            .unwrap()
    };
    for (table, rows) in [
        ("\"public\".\"plain\"", 1002),
        ("\"public\".\"empty\"", 0),
        ("\"public\".\"parted_a\"", 250),
        ("\"public\".\"parted_b\"", 250),
        ("\"public\".\"parent\"", 7),
        ("\"public\".\"child\"", 3),
        ("\"We ird\".\"Tab\"\"le\"", 2),
        ("\"public\".\"unl\"", 2),
    ] {
        assert_eq!(expected(table), rows, "{table}");
        let source = env
            .pg
            .psql("invoices", &format!("SELECT count(*) FROM ONLY {table}"));
        assert_eq!(
            source,
            rows.to_string(),
            "count(*) of {table} in the source"
        );
    }
    assert!(tables.iter().all(|t| t["ok"] == true), "{r}");
    assert!(
        !tables
            .iter()
            .any(|t| t["table"] == "\"public\".\"parted\"" || t["table"] == "\"public\".\"mv\""),
        "no rows of its own: a partitioned table, a materialized view: {r}"
    );
}

/// `low_priority = true`: the agent runs at nice 10 and the lowest best-effort I/O
/// level, every thread of it, and a backup through it works as ever.
#[test]
fn a_low_priority_agent_backs_up_at_nice_10() {
    let env = Env::start(&invoices_sql(200), EnvOpts::default());
    let (agent, agent_log) = env.site_agent("calm", "low_priority = true\n");
    let b = env.cli(&["backup", "--site", "calm", "--target", "main", "--json"]);
    assert!(b.ok, "{}{}", b.stdout, b.stderr);
    assert_eq!(b.json()["ok"], true, "{}", b.stdout);
    let tasks = std::fs::read_dir(format!("/proc/{}/task", agent.pid())).unwrap();
    let mut threads = 0;
    for t in tasks {
        let stat = std::fs::read_to_string(t.unwrap().path().join("stat")).unwrap();
        // Field 19 (nice), counted after the command name's closing parenthesis.
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        let nice: i32 = after.split(' ').nth(16).unwrap().parse().unwrap();
        assert_eq!(nice, 10, "every thread at nice 10: {stat}");
        threads += 1;
    }
    assert!(threads > 1, "{threads} threads");
    // Two malloc arenas: the agent re-executed itself with the setting.
    let environ = std::fs::read(format!("/proc/{}/environ", agent.pid())).unwrap();
    assert!(
        environ
            .split(|&b| b == 0)
            .any(|v| v == b"MALLOC_ARENA_MAX=2"),
        "the agent runs with MALLOC_ARENA_MAX=2"
    );
    let io = std::process::Command::new("ionice")
        .args(["-p", &agent.pid().to_string()])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&io.stdout).trim(),
        "best-effort: prio 7"
    );

    // The database's backend serving the dump (a PostgreSQL process on this host) is
    // lowered too: seen while pg_dump waits behind a lock.
    let mut locker = env.pg.hold_exclusive_lock("invoices", "invoices");
    let out = std::thread::scope(|scope| {
        let backup =
            scope.spawn(|| env.cli(&["backup", "--site", "calm", "--target", "main", "--json"]));
        let sql = "SELECT pid FROM pg_stat_activity WHERE application_name LIKE 'nex-backup job-%'";
        let pid = nex_backup_tests::wait_for("the dump's backend", 30, || {
            let pid = env.pg.psql("invoices", sql);
            (!pid.is_empty()).then_some(pid)
        });
        // Nice first, then the I/O class: wait for both (the agent sets them in turn).
        nex_backup_tests::wait_for("the backend at nice 10, I/O best-effort 7", 30, || {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let after = &stat[stat.rfind(')')? + 2..];
            let nice = after.split(' ').nth(16)?.to_string();
            let io = std::process::Command::new("ionice")
                .args(["-p", &pid])
                .output()
                .ok()?;
            let io = String::from_utf8_lossy(&io.stdout).trim().to_string();
            (nice == "10" && io == "best-effort: prio 7").then_some(())
        });
        let _ = locker.kill();
        let _ = locker.wait();
        backup.join().unwrap()
    });
    assert!(out.ok, "{}{}", out.stdout, out.stderr);
    let log = std::fs::read_to_string(&agent_log).unwrap();
    assert!(
        log.contains("the dump's database backend runs at nice 10"),
        "{log}"
    );
}
