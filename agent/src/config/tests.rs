use super::*;

const GOOD: &str = r#"
site = "acme"
agent_id = "acme-srv1"
controller = "https://127.0.0.1:7420"
state_dir = "/var/lib/nex"

[[targets]]
name = "main"
user = "postgres"
dbname = "invoices"
password_env = "PG_PASS"
"#;

#[test]
fn good_config_parses_with_defaults() {
    let c = AgentConfig::parse("agent.toml", GOOD).unwrap();
    assert_eq!(c.site.as_deref(), Some("acme"));
    assert_eq!(c.targets[0].port, 5432);
    assert_eq!(c.targets[0].kind, "postgres");
    assert_eq!(c.chunker(), ChunkerConfig::default());
}

#[test]
fn errors_name_file_and_key() {
    let cases = [
        (GOOD.replace("dbname = ", "dbnme = "), "targets"),
        (GOOD.replace("\"acme\"", "\"ac/me\""), "site"),
        (
            GOOD.replace("https://127.0.0.1:7420", "http://127.0.0.1:7420"),
            "controller",
        ),
        (
            GOOD.replace("name = \"main\"", "name = \"main\"\nkind = \"mysql\""),
            "targets[0].kind",
        ),
        (
            format!("{GOOD}\n[[targets]]\nname = \"main\"\nuser = \"u\"\ndbname = \"d\"\n"),
            "targets[1].name",
        ),
        (GOOD.replace("site = \"acme\"", "site = 5"), "site"),
        (
            format!("{GOOD}\n[chunking]\nmin_kib = 64\navg_kib = 32\nmax_kib = 1024\n"),
            "chunking",
        ),
    ];
    for (text, key) in cases {
        let e = AgentConfig::parse("/etc/nex/agent.toml", &text)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("/etc/nex/agent.toml") && e.contains(key),
            "{key}: {e}"
        );
    }
}

#[test]
fn missing_file_is_named() {
    let e = AgentConfig::load(Path::new("/nonexistent/agent.toml"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("/nonexistent/agent.toml"), "{e}");
}

#[test]
fn drills_use_the_drill_server_when_one_is_configured() {
    let c = AgentConfig::parse("agent.toml", GOOD).unwrap();
    let own = c.drill_target("main").unwrap();
    assert_eq!((own.dbname.as_str(), own.port), ("invoices", 5432));
    assert!(c.drill_target("other").is_none());

    let text = format!("{GOOD}\n[drill]\nhost = \"10.0.0.9\"\nport = 5433\nuser = \"drill\"\n");
    let c = AgentConfig::parse("agent.toml", &text).unwrap();
    for name in ["main", "other"] {
        let t = c.drill_target(name).unwrap();
        assert_eq!(t.name, name);
        assert_eq!(
            (t.host.as_str(), t.port, t.user.as_str(), t.dbname.as_str()),
            ("10.0.0.9", 5433, "drill", "postgres")
        );
    }
    let both = format!("{text}password_env = \"X\"\npassfile = \"/p\"\n");
    let e = AgentConfig::parse("agent.toml", &both)
        .unwrap_err()
        .to_string();
    assert!(e.contains("drill.password_env"), "{e}");
}
