//! The dashboard in a real browser (headless Chromium over WebDriver): the login form
//! with a wrong and a right password, every page rendered, a screenshot of each at
//! 1440×900 and 390×844 (in `target/screenshots/`), a phone layout without sideways
//! scrolling, axe-core finding no serious accessibility violation, and a customer's
//! pages without the other site.

use nex_backup_tests::browser::Browser;
use nex_backup_tests::env::SITE;
use nex_backup_tests::web::{add_account, dashboard_env};

fn log_in(b: &Browser, base: &str, name: &str, pw: &str) {
    b.goto(&format!("{base}/login"));
    b.fill("input[name=name]", name);
    b.fill("input[name=password]", pw);
    b.click("form.login button");
}

#[test]
fn every_page_renders_fits_a_phone_and_passes_axe() {
    let (env, base) = dashboard_env(300, &[], false);
    env.backup_ok("main");
    let ghost = env.cli(&[
        "policy", "set", "--site", SITE, "--target", "ghost", "--rpo", "1d", "--create",
    ]);
    assert!(ghost.ok, "{}", ghost.stderr);
    let pw = add_account(&env, "ann", "admin", None);
    let b = Browser::start();

    // A wrong password: the form again, with the reason.
    log_in(&b, &base, "ann", "not-the-password");
    b.wait_until(
        "the refusal",
        "document.querySelector('p.error') !== null",
        10,
    );
    assert!(b.url().contains("/login"), "{}", b.url());
    assert!(
        b.text().contains("wrong name, password or code"),
        "{}",
        b.text()
    );
    log_in(&b, &base, "ann", &pw);
    b.wait_until("the fleet page", "location.pathname === '/fleet'", 10);
    let text = b.text();
    assert!(
        text.contains("NEVER BACKED UP") && text.contains("OK"),
        "{text}"
    );
    assert!(
        text.find("ghost").unwrap() < text.find(&format!("{SITE} / main")).unwrap(),
        "the never-backed-up target comes before the OK one: {text}"
    );

    let pages = [
        ("login", "/login".to_string()),
        ("fleet", "/fleet".to_string()),
        ("site", format!("/sites/{SITE}")),
        ("target", format!("/sites/{SITE}/targets/main")),
        ("policy", format!("/sites/{SITE}/targets/main/policy")),
        ("jobs", "/jobs".to_string()),
        ("incidents", "/incidents".to_string()),
        ("audit", "/audit".to_string()),
        ("accounts", "/accounts".to_string()),
    ];
    for (name, path) in &pages {
        b.resize(1440, 900);
        b.goto(&format!("{base}{path}"));
        assert!(!b.text().contains("Not found"), "{path}: {}", b.text());
        let wide = b.screenshot(&format!("{name}-1440x900"), 1440, 900);
        let phone = b.screenshot(&format!("{name}-390x844"), 390, 844);
        for p in [&wide, &phone] {
            assert!(
                std::fs::metadata(p).unwrap().len() > 1000,
                "{}",
                p.display()
            );
        }
        assert!(b.fits_width(), "{path} scrolls sideways on a phone");
        let violations = b.axe_violations();
        assert!(violations.is_empty(), "{path}: axe: {violations:?}");
    }
    let snaps = env.snapshots("main");
    b.goto(&format!("{base}/sites/{SITE}/targets/main"));
    let id = snaps[0]["snapshot_id"].as_str().unwrap();
    assert!(
        b.has(&format!("tr[data-snapshot='{id}']")),
        "the snapshot is listed"
    );

    // Back up now: live progress, then the new snapshot listed without a reload.
    b.goto(&format!("{base}/sites/{SITE}/targets/main"));
    b.script("window.__noReload = true; return true;", vec![]);
    b.click("form[data-action=backup] button");
    b.wait_until(
        "the backup to finish live",
        "document.getElementById('live').dataset.state === 'succeeded'",
        60,
    );
    b.wait_until(
        "the new snapshot listed",
        "document.querySelectorAll('#snapshots tbody tr').length === 2",
        10,
    );
    assert_eq!(
        b.script("return window.__noReload === true;", vec![]),
        serde_json::json!(true),
        "the page was not reloaded"
    );
    assert_eq!(env.snapshots("main").len(), 2);

    // A drill reports its RTO.
    b.script(
        "document.getElementById('live').dataset.state = 'clicked'; return true;",
        vec![],
    );
    b.click("form[data-action=drill] button");
    b.wait_until(
        "the drill to finish",
        "document.getElementById('live').dataset.state === 'succeeded'",
        90,
    );
    let live = b.script(
        "return document.getElementById('live').textContent;",
        vec![],
    );
    let live = live.as_str().unwrap_or_default();
    assert!(
        live.contains("Drill passed") && live.contains("RTO"),
        "{live}"
    );
    assert!(b.has("#snapshots tbody tr"), "{}", b.source());

    // Restore into a new database, after a confirmation page.
    b.fill(
        "form[data-action=restore] input[name=to_database]",
        "from_dashboard",
    );
    b.click("form[data-action=restore] button");
    b.wait_until(
        "the confirmation page",
        "document.body.innerText.includes('Confirm the restore')",
        10,
    );
    assert!(b.text().contains("Confirm the restore"), "{}", b.text());
    assert!(b.text().contains("from_dashboard"));
    b.click("form.confirm button");
    b.wait_until("the restore to finish", "document.getElementById('live') && document.getElementById('live').dataset.state === 'succeeded'", 90);
    assert_eq!(
        env.pg
            .psql("from_dashboard", "SELECT count(*) FROM invoices"),
        env.pg.psql("invoices", "SELECT count(*) FROM invoices"),
    );

    // Acknowledge an incident (the never-backed-up target opened one).
    b.goto(&format!("{base}/incidents"));
    b.wait_until(
        "an open incident",
        "document.querySelector('form.inline button') !== null",
        30,
    );
    b.click("form.inline button");
    b.wait_until(
        "the incident acknowledged by name",
        "document.body.innerText.includes('acknowledged by dashboard ann')",
        15,
    );

    // The jobs page follows the event bus: a backup started elsewhere (the CLI) appears
    // and ends in the table without a reload.
    b.goto(&format!("{base}/jobs"));
    let before = b.script(
        "window.__noReload = true; return document.querySelectorAll('#jobs tbody tr').length;",
        vec![],
    );
    let before = before.as_u64().unwrap();
    env.backup_ok("main");
    b.wait_until(
        "the new job in the live table, succeeded",
        &format!("document.querySelectorAll('#jobs tbody tr').length === {} && document.querySelector('#jobs tbody tr').classList.contains('job-succeeded')", before + 1),
        30,
    );
    assert_eq!(
        b.script("return window.__noReload === true;", vec![]),
        serde_json::json!(true)
    );

    // A customer of another site sees nothing of this one.
    let cust_pw = add_account(&env, "cust", "customer", Some("globex"));
    let c = Browser::start();
    log_in(&c, &base, "cust", &cust_pw);
    c.wait_until("the fleet page", "location.pathname === '/fleet'", 10);
    for (_, path) in &pages[1..pages.len() - 1] {
        c.goto(&format!("{base}{path}"));
        assert!(
            !c.source().contains(SITE),
            "{path} shows {SITE} to another site's customer"
        );
    }
}
