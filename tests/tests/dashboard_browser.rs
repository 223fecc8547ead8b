//! The dashboard in a real browser (headless Chromium over WebDriver): the login form
//! with a wrong and a right password, every page rendered, a screenshot of each at
//! 1440×900 and 390×844 (in `target/screenshots/`), a phone layout without sideways
//! scrolling, axe-core finding no serious accessibility violation, and a customer's
//! pages without the other site; the fleet's order of gravity; a locked account, a
//! viewer, a cross-site form post and an idle session refused.

use nex_backup_tests::browser::Browser;
use nex_backup_tests::env::SITE;
use nex_backup_tests::wait_for;
use nex_backup_tests::web::{Web, add_account, dashboard_env, second_site};

const OTHER: &str = "globex";

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
        ("site-settings", format!("/sites/{SITE}/settings")),
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
        "document.body.innerText.includes('acknowledged by admin dashboard:ann')",
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

/// A page on another site (plain HTTP on `localhost`, where the dashboard is
/// `https://127.0.0.1`) whose form posts itself to `action` with `token`: what a
/// cross-site request forgery looks like. Its address.
fn attacker_page(action: &str, token: &str) -> String {
    use std::io::{Read, Write};
    let html = format!(
        "<!DOCTYPE html><html lang=en><title>prize</title><form id=f method=post action=\"{action}\">\
         <input type=hidden name=csrf value=\"{token}\"></form>\
         <script>document.getElementById('f').submit()</script></html>"
    );
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut c) = conn else { return };
            let mut buf = [0u8; 4096];
            let _ = c.read(&mut buf);
            let _ = write!(
                c,
                "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{html}",
                html.len()
            );
        }
    });
    format!("http://localhost:{port}/")
}

/// The states of the fleet grid's cells, in page order.
fn states(b: &Browser) -> Vec<String> {
    let v = b.script(
        "return Array.from(document.querySelectorAll('[data-state]')).map(e => e.dataset.state);",
        vec![],
    );
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

/// How many jobs the API lists to `name` (a fresh session: the test's idle time is short).
fn job_count(base: &str, name: &str, pw: &str) -> usize {
    let mut w = Web::new(base);
    assert_eq!(w.login(name, pw).status, 303);
    let v = w.get("/api/v1/jobs?limit=1000").json();
    v.as_array().unwrap_or_else(|| panic!("{v}")).len()
}

/// In a browser: the fleet with a VIOLATED, an AGENT OFFLINE and NEVER BACKED UP
/// targets shows them worst first (the API's counts and filters agree); a locked account
/// is refused; a viewer has no buttons and its own stolen token is refused; a
/// cross-site form post is refused even with an admin's token; an idle session ends.
#[test]
fn the_fleet_in_order_and_what_a_browser_is_refused() {
    let (env, base) = dashboard_env(300, &["--http-session-idle", "8s"], true);
    env.backup_ok("main");
    env.backup_ok("second");
    let mut globex = second_site(&env, OTHER);
    // main: a 2 s RPO makes it VIOLATED; ghost: a policy, never backed up; globex: its
    // agent goes away.
    let rpo = env.set_target_policy("main", &["--rpo", "2s", "--force"]);
    assert!(rpo.ok, "{}", rpo.stderr);
    let ghost = env.cli(&[
        "policy", "set", "--site", SITE, "--target", "ghost", "--rpo", "1d", "--create",
    ]);
    assert!(ghost.ok, "{}", ghost.stderr);
    globex.kill();
    let pw = add_account(&env, "op", "operator", None);
    let b = Browser::start();
    log_in(&b, &base, "op", &pw);
    b.wait_until("the fleet page", "location.pathname === '/fleet'", 10);
    // globex's agent also declares `second`, never backed up there.
    let want = [
        "VIOLATED",
        "AGENT OFFLINE",
        "NEVER BACKED UP",
        "NEVER BACKED UP",
        "OK",
    ];
    wait_for("the fleet states in order", 60, || {
        b.goto(&format!("{base}/fleet"));
        (states(&b) == want).then_some(())
    });
    let text = b.text();
    let pos = |name: &str| text.find(name).unwrap_or_else(|| panic!("{name}: {text}"));
    assert!(pos(&format!("{SITE} / main")) < pos(&format!("{OTHER} / main")));
    assert!(pos(&format!("{OTHER} / main")) < pos(&format!("{SITE} / ghost")));
    assert!(pos(&format!("{SITE} / ghost")) < pos(&format!("{SITE} / second")));
    for shape in ["✖ VIOLATED", "◆ AGENT OFFLINE", "○ NEVER BACKED UP", "✔ OK"] {
        assert!(text.contains(shape), "state by word and shape: {shape}");
    }
    let mut web = Web::new(&base);
    assert_eq!(web.login("op", &pw).status, 303);
    let api = web.get("/api/v1/fleet").json();
    let counts: Vec<u64> = api["counts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["targets"].as_u64().unwrap())
        .collect();
    assert_eq!(counts, [1, 0, 1, 2, 1], "{api}");
    b.goto(&format!("{base}/fleet?state=never-backed-up"));
    assert_eq!(states(&b), ["NEVER BACKED UP", "NEVER BACKED UP"]);
    b.goto(&format!("{base}/fleet?q={OTHER}"));
    assert_eq!(states(&b), ["AGENT OFFLINE", "NEVER BACKED UP"]);

    // A cross-site form post, carrying even this operator's own valid token, is refused
    // (the cookie is SameSite=Strict and the browser says cross-site); nothing starts.
    b.goto(&format!("{base}/sites/{SITE}/targets/main"));
    let token = b.script(
        "return document.querySelector('input[name=csrf]').value;",
        vec![],
    );
    let jobs_before = job_count(&base, "op", &pw);
    let action = format!("{base}/sites/{SITE}/targets/main/backup");
    b.goto(&attacker_page(&action, token.as_str().unwrap()));
    b.wait_until(
        "the dashboard's refusal",
        "location.pathname.endsWith('/backup') && document.body.innerText.includes('Refused')",
        10,
    );
    std::thread::sleep(std::time::Duration::from_secs(1));
    assert_eq!(
        job_count(&base, "op", &pw),
        jobs_before,
        "the forged post started nothing"
    );

    // An idle session ends: away for longer than the idle time, the next page is the login.
    b.goto("about:blank");
    std::thread::sleep(std::time::Duration::from_secs(9));
    b.goto(&format!("{base}/fleet"));
    assert!(b.url().contains("/login"), "{}", b.url());

    // A locked account: five wrong passwords, then the right one is refused too.
    let locky = add_account(&env, "locky", "operator", None);
    for _ in 0..5 {
        log_in(&b, &base, "locky", "wrong-password");
        b.wait_until(
            "the refusal",
            "document.querySelector('p.error') !== null",
            10,
        );
    }
    log_in(&b, &base, "locky", &locky);
    b.wait_until(
        "the refusal",
        "document.querySelector('p.error') !== null",
        10,
    );
    assert!(b.text().contains("locked"), "{}", b.text());
    assert!(b.url().contains("/login"));

    // A viewer: no buttons; a POST with its own token (as a script on the page could
    // steal it) is refused, and nothing starts.
    let vic = add_account(&env, "vic", "viewer", None);
    log_in(&b, &base, "vic", &vic);
    b.wait_until("the fleet page", "location.pathname === '/fleet'", 10);
    b.goto(&format!("{base}/sites/{SITE}/targets/main"));
    assert!(
        !b.has("form.action") && !b.has("section.actions"),
        "no buttons"
    );
    b.script(
        "const t = document.querySelector('input[name=csrf]').value;\
         fetch(arguments[0], {method: 'POST', headers: {'Content-Type': 'application/x-www-form-urlencoded'},\
           body: 'csrf=' + encodeURIComponent(t)}).then(r => window.__status = r.status);",
        vec![serde_json::json!(format!("/sites/{SITE}/targets/main/backup"))],
    );
    b.wait_until("the answer", "window.__status !== undefined", 10);
    let status = b.script("return window.__status;", vec![]);
    assert_eq!(status, 403, "a viewer's POST is refused");
    assert_eq!(
        job_count(&base, "op", &pw),
        jobs_before,
        "the viewer started nothing"
    );
}
