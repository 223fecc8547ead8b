//! The dashboard over HTTPS with a real controller, agents and PostgreSQL: accounts and
//! logins (wrong password, lockout, idle expiry, logout), the security headers, CSRF,
//! roles (a viewer cannot act), a customer who sees its own site and nothing of the
//! other's, site settings, and a file set restored into a directory. The fleet's order
//! and the refusals a browser meets are in `dashboard_browser.rs`.

use nex_backup_tests::env::{Env, SITE};
use nex_backup_tests::wait_for;
use nex_backup_tests::web::{Web, add_account, dashboard_env, second_site};

const OTHER: &str = "globex";

#[test]
fn the_dashboard_logs_in_scopes_and_refuses() {
    let (env, base) = dashboard_env(500, &["--http-session-idle", "4s"], true);
    env.backup_ok("main");
    let _globex = second_site(&env, OTHER);
    let admin_pw = add_account(&env, "ann", "admin", None);
    let cust_pw = add_account(&env, "cust", "customer", Some(SITE));
    let viewer_pw = add_account(&env, "vic", "viewer", None);

    // Not logged in: pages go to the login, the API answers 401.
    let mut anon = Web::new(&base);
    let r = anon.get("/fleet");
    assert_eq!(r.status, 303);
    assert!(r.location.unwrap().starts_with("/login"));
    assert_eq!(anon.get("/api/v1/fleet").status, 401);

    // A wrong password and an unknown name read the same; five in a row lock the
    // account, and then even the right password is refused until an admin unlocks it.
    let wrong = anon.login("ann", "not-the-password");
    let unknown = anon.login("nobody", "not-the-password");
    assert_eq!((wrong.status, unknown.status), (401, 401));
    assert!(wrong.body.contains("wrong name, password or code"));
    assert!(unknown.body.contains("wrong name, password or code"));
    for _ in 0..4 {
        anon.login("ann", "still-not-it");
    }
    let locked = anon.login("ann", &admin_pw);
    assert_eq!(locked.status, 401);
    assert!(locked.body.contains("locked"), "{}", locked.body);
    assert!(anon.cookie.is_none());
    let unlock = env.cli(&["account", "unlock", "ann"]);
    assert!(unlock.ok, "{}", unlock.stderr);

    // The admin logs in: a Secure, HttpOnly, SameSite=Strict cookie; a strict CSP.
    let mut admin = Web::new(&base);
    let ok = admin.login("ann", &admin_pw);
    assert_eq!(ok.status, 303, "{}", ok.body);
    let cookie = ok.set_cookie.unwrap();
    for flag in ["HttpOnly", "Secure", "SameSite=Strict"] {
        assert!(cookie.contains(flag), "{cookie}");
    }
    let fleet = admin.get("/fleet");
    assert_eq!(fleet.status, 200);
    let csp = fleet.csp.unwrap();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert!(fleet.body.contains(SITE) && fleet.body.contains(OTHER));

    // CSRF: an action without the token, or marked cross-site by the browser, is
    // refused; with the session's token it goes through (to a missing incident: 404).
    let csrf = admin.csrf();
    assert_eq!(admin.post("/incidents/999/ack", &[], &[]).status, 403);
    let cross = admin.post(
        "/incidents/999/ack",
        &[("csrf", &csrf)],
        &[("sec-fetch-site", "cross-site")],
    );
    assert_eq!(cross.status, 403);
    assert_eq!(
        admin
            .post("/incidents/999/ack", &[("csrf", &csrf)], &[])
            .status,
        404
    );

    // The OpenAPI description lists the API, and what it promises is what the API
    // answers: every GET path answers, with every field its schema requires.
    let spec = admin.get("/api/v1/openapi.json").json();
    let paths = spec["paths"].as_object().unwrap();
    for (path, ops) in paths {
        if ops.get("get").is_none() || path.ends_with("/events") {
            continue;
        }
        let concrete = path.replace("{site}", SITE).replace("{target}", "main");
        let r = admin.get(&concrete);
        assert_eq!(r.status, 200, "{concrete}: {}", r.body);
        let schema =
            &ops["get"]["responses"]["200"]["content"]["application/json"]["schema"]["$ref"];
        if let Some(name) = schema.as_str().and_then(|r| r.rsplit('/').next()) {
            let body = r.json();
            for field in spec["components"]["schemas"][name]["required"]
                .as_array()
                .unwrap()
            {
                assert!(
                    body.get(field.as_str().unwrap()).is_some(),
                    "{concrete}: {field} missing"
                );
            }
        }
    }
    assert!(paths.contains_key("/api/v1/sites/{site}/targets/{target}/{action}"));

    // A viewer sees everything, has no buttons, and its own valid token does not let it act.
    let mut viewer = Web::new(&base);
    assert_eq!(viewer.login("vic", &viewer_pw).status, 303);
    let vt = viewer.csrf();
    assert!(viewer.get("/fleet").body.contains(OTHER));
    assert!(!viewer.get("/incidents").body.contains("Acknowledge"));
    assert_eq!(
        viewer
            .post("/incidents/1/ack", &[("csrf", &vt)], &[])
            .status,
        403
    );
    assert_eq!(
        viewer
            .post("/api/v1/incidents/1/ack", &[], &[("x-csrf-token", &vt)])
            .status,
        403
    );

    // The customer: its site only. The other site's name appears in no page and no API
    // answer, and a direct URL to it is 404, as for a site that does not exist.
    let mut cust = Web::new(&base);
    assert_eq!(cust.login("cust", &cust_pw).status, 303);
    for path in [
        "/fleet",
        "/jobs",
        "/incidents",
        &format!("/sites/{SITE}"),
        &format!("/sites/{SITE}/targets/main"),
        "/api/v1/fleet",
        "/api/v1/jobs",
        "/api/v1/incidents",
        "/api/v1/me",
        &format!("/api/v1/sites/{SITE}"),
        &format!("/api/v1/sites/{SITE}/targets/main"),
        "/audit",
        "/api/v1/audit",
        &format!("/jobs?site={OTHER}"),
        &format!("/api/v1/jobs?site={OTHER}"),
    ] {
        let r = cust.get(path);
        assert_eq!(r.status, 200, "{path}: {}", r.body);
        assert!(
            !r.body.contains(OTHER),
            "{path} shows the other site: {}",
            r.body
        );
    }
    assert!(cust.get("/fleet").body.contains(SITE));
    let api = cust.get("/api/v1/fleet").json();
    assert!(
        api["cells"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["site"] == SITE),
        "{api}"
    );
    for path in [
        format!("/sites/{OTHER}"),
        format!("/sites/{OTHER}/targets/main"),
        format!("/api/v1/sites/{OTHER}"),
        format!("/api/v1/sites/{OTHER}/targets/main"),
        "/sites/no-such-site".to_string(),
    ] {
        let r = cust.get(&path);
        assert_eq!(r.status, 404, "{path}");
        assert!(!r.body.contains(OTHER), "{path}");
    }

    // Policies: shown to all in scope, changed by operators and admins with the CLI's
    // parsing and errors; a viewer cannot change one, a customer cannot see another site's.
    let policy_path = format!("/sites/{SITE}/targets/main/policy");
    let form = |rpo: &str| {
        vec![
            ("schedule", "0 2 * * *".to_string()),
            ("timezone", "UTC".to_string()),
            ("rpo", rpo.to_string()),
            ("rto", "1h".to_string()),
            ("keep_last", "3".to_string()),
            ("keep_daily", "7".to_string()),
            ("keep_weekly", "4".to_string()),
            ("keep_monthly", "0".to_string()),
            ("keep_verified", "3".to_string()),
            ("drill_every", "0".to_string()),
        ]
    };
    let post_policy = |w: &mut Web, csrf: &str, rpo: &str| {
        let mut f: Vec<(&str, String)> = form(rpo);
        f.push(("csrf", csrf.to_string()));
        let f: Vec<(&str, &str)> = f.iter().map(|(k, v)| (*k, v.as_str())).collect();
        w.post(&policy_path, &f, &[])
    };
    let bad = post_policy(&mut admin, &csrf, "24");
    assert_eq!(bad.status, 400);
    assert!(
        bad.body
            .contains("--rpo: &quot;24&quot;: a duration needs a unit"),
        "{}",
        bad.body
    );
    assert_eq!(post_policy(&mut admin, &csrf, "30h").status, 303);
    let shown = env
        .cli(&[
            "policy", "show", "--site", SITE, "--target", "main", "--json",
        ])
        .stdout;
    assert!(shown.contains("108000"), "the RPO is 30h now: {shown}");
    assert_eq!(post_policy(&mut viewer, &vt, "2h").status, 403);
    let seen = cust.get(&policy_path);
    assert_eq!(seen.status, 200);
    let rpo = nex_backup::policy::human_secs(30 * 3600);
    assert!(
        seen.body.contains(&rpo) && seen.body.contains("RPO / RTO"),
        "{}",
        seen.body
    );
    assert!(
        !seen.body.contains("<form class=\"policy\""),
        "read-only for a customer"
    );
    assert_eq!(
        cust.get(&format!("/sites/{OTHER}/targets/main/policy"))
            .status,
        404
    );

    // Site settings: the same, through `policy set --site`'s call and flag names.
    let settings_path = format!("/sites/{SITE}/settings");
    let post_settings = |w: &mut Web, csrf: &str, bandwidth: &str| {
        let f = [
            ("csrf", csrf),
            ("window", "22:00-06:00"),
            ("timezone", "Europe/Bratislava"),
            ("bandwidth", bandwidth),
            ("drill_agent", ""),
            ("retention_lock", "7d"),
        ];
        w.post(&settings_path, &f, &[])
    };
    let bad = post_settings(&mut admin, &csrf, "fast");
    assert_eq!(bad.status, 400);
    assert!(
        bad.body
            .contains("--bandwidth: &quot;fast&quot;: expected a rate"),
        "{}",
        bad.body
    );
    assert_eq!(post_settings(&mut admin, &csrf, "2MiB").status, 303);
    let shown = env
        .cli(&["policy", "show", "--site", SITE, "--json"])
        .stdout;
    assert!(
        shown.contains("22:00-06:00") && shown.contains("2097152"),
        "the CLI shows what the page saved: {shown}"
    );
    assert_eq!(post_settings(&mut viewer, &vt, "1MiB").status, 403);
    let page = cust.get(&format!("/sites/{SITE}"));
    assert!(
        page.body.contains("22:00-06:00 (Europe/Bratislava)") && page.body.contains("2.0 MiB/s"),
        "the site page shows the window and the bandwidth: {}",
        page.body
    );
    let api = cust.get(&format!("/api/v1/sites/{SITE}")).json();
    assert_eq!(api["settings"]["window"], "22:00-06:00");
    assert_eq!(api["settings"]["bandwidth_bytes_per_sec"], 2_097_152);
    let seen = cust.get(&settings_path);
    assert!(seen.status == 200 && !seen.body.contains("<form class=\"policy\""));
    assert_eq!(cust.get(&format!("/sites/{OTHER}/settings")).status, 404);

    // An admin creates an account on the accounts page; its password is shown once and
    // works; the audit log names who did what.
    let made = admin.post(
        "/accounts",
        &[
            ("csrf", &csrf),
            ("name", "newbie"),
            ("role", "operator"),
            ("sites", ""),
        ],
        &[],
    );
    assert_eq!(made.status, 200, "{}", made.body);
    let pw = made
        .body
        .split("id=\"new-password\">")
        .nth(1)
        .and_then(|r| r.split('<').next())
        .unwrap()
        .to_string();
    let mut newbie = Web::new(&base);
    assert_eq!(newbie.login("newbie", &pw).status, 303);
    assert!(
        admin.get("/audit").body.contains("dashboard:ann"),
        "the audit page names the admin"
    );

    // Sessions end: after the idle time, and at logout (the old cookie is dead too).
    let stolen = admin.cookie.clone();
    let lt = admin.csrf();
    assert_eq!(admin.post("/logout", &[("csrf", &lt)], &[]).status, 303);
    let mut thief = Web::new(&base);
    thief.cookie = stolen;
    assert_eq!(
        thief.get("/api/v1/me").status,
        401,
        "a logged-out session is dead"
    );
    std::thread::sleep(std::time::Duration::from_secs(5));
    assert_eq!(
        cust.get("/api/v1/me").status,
        401,
        "an idle session expires"
    );
    let r = cust.get("/fleet");
    assert_eq!(r.status, 303);

    // A second factor: with TOTP on, the password alone is refused; the current code
    // works, once.
    let totp = env.cli(&["account", "totp", "vic", "--enable"]);
    assert!(totp.ok, "{}", totp.stderr);
    let url = totp.stdout.lines().last().unwrap().to_string();
    let secret = url
        .split("secret=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap()
        .to_string();
    let mut second = Web::new(&base);
    assert_eq!(
        second.login("vic", &viewer_pw).status,
        401,
        "the password alone"
    );
    let now = nex_backup_shared::clock::now_ms() / 1000;
    let code = nex_backup::accounts::totp_code(&secret, now);
    let with_code = |w: &mut Web, code: &str| {
        w.post(
            "/login",
            &[
                ("name", "vic"),
                ("password", &viewer_pw),
                ("code", code),
                ("next", "/fleet"),
            ],
            &[],
        )
        .status
    };
    assert_eq!(with_code(&mut second, &code), 303, "password and code");
    let mut replay = Web::new(&base);
    assert_eq!(with_code(&mut replay, &code), 401, "the same code twice");

    // Guessing from one address is slowed down: at most 20 logins a minute.
    let mut guesser = Web::new(&base);
    let limited = (0..25)
        .map(|_| guesser.login("nobody", "guess").status)
        .any(|s| s == 429);
    assert!(limited, "login attempts from one address are limited");

    // Every login and logout is in the audit log, with the account's name.
    let audit = env.cli(&["audit", "--json"]).stdout;
    for needle in [
        "dashboard ann",
        "dashboard login refused",
        "dashboard logout",
    ] {
        assert!(audit.contains(needle), "{needle}: {audit}");
    }
}

/// The job `job` once it ended, from the jobs API.
fn ended_job(w: &mut Web, job: &str) -> serde_json::Value {
    wait_for("the job to end", 120, || {
        let v = w.get(&format!("/api/v1/jobs?site={SITE}")).json();
        let j = v.as_array()?.iter().find(|j| j["job_id"] == job)?.clone();
        (j["state"] != "running").then_some(j)
    })
}

/// A file set is restored into a directory from its target page: the form asks for a
/// directory (not a database), a confirmation page names it, the job restores the
/// files, and a second restore into the same directory fails without replacing any.
#[test]
fn a_file_set_is_restored_into_a_directory_from_the_page() {
    let root = tempfile::Builder::new()
        .prefix("nexdash")
        .tempdir()
        .unwrap();
    let src = root.path().join("etc-app");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("app.conf"), "listen = 8080\n").unwrap();
    let set = format!(
        "\n[[file_sets]]\nname = \"conf\"\npaths = [\"{}\"]\n",
        src.display()
    );
    let env = Env::start(
        &nex_backup_tests::sample::invoices_sql(10),
        nex_backup_tests::env::EnvOpts {
            controller_args: vec!["--http-listen".into(), "127.0.0.1:0".into()],
            extra_targets: set,
            ..Default::default()
        },
    );
    let base = nex_backup_tests::web::dashboard_url(&env.controller.log);
    env.backup_ok("conf");
    let pw = add_account(&env, "ops", "operator", None);
    let mut w = Web::new(&base);
    assert_eq!(w.login("ops", &pw).status, 303);
    let csrf = w.csrf();
    let page = w.get(&format!("/sites/{SITE}/targets/conf"));
    assert!(
        page.body.contains("name=\"to_dir\"") && !page.body.contains("name=\"to_database\""),
        "a file set is restored into a directory: {}",
        page.body
    );

    let dst = root.path().join("restored");
    let d = dst.display().to_string();
    let path = format!("/sites/{SITE}/targets/conf/restore");
    let ask = [
        ("csrf", csrf.as_str()),
        ("snapshot", "latest"),
        ("to_dir", &d),
    ];
    let confirm = w.post(&path, &ask, &[]);
    assert_eq!(confirm.status, 200);
    assert!(
        confirm.body.contains(&d) && confirm.body.contains("never replaced"),
        "{}",
        confirm.body
    );
    assert!(!dst.exists(), "nothing is restored before the confirmation");
    let run = |w: &mut Web| {
        let mut form = ask.to_vec();
        form.push(("confirm", "yes"));
        let r = w.post(&path, &form, &[]);
        assert_eq!(r.status, 303, "{}", r.body);
        let to = r.location.unwrap();
        to.split("job=").nth(1).unwrap().to_string()
    };
    let job = run(&mut w);
    let done = ended_job(&mut w, &job);
    assert_eq!(done["state"], "succeeded", "{done}");
    let restored = dst.join(src.strip_prefix("/").unwrap()).join("app.conf");
    assert_eq!(
        std::fs::read_to_string(&restored).unwrap(),
        "listen = 8080\n"
    );

    // Again into the same directory: refused, the local edit stays.
    std::fs::write(&restored, "local edit\n").unwrap();
    let job = run(&mut w);
    let done = ended_job(&mut w, &job);
    assert_eq!(done["state"], "failed", "{done}");
    assert!(done["error"].as_str().unwrap().contains("exists"), "{done}");
    assert_eq!(std::fs::read_to_string(&restored).unwrap(), "local edit\n");
}
