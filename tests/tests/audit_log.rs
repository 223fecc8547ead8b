//! The audit log: every admin call leaves exactly one entry naming the admin credential
//! behind it, with its outcome and no secret; named credentials are created, used and
//! revoked.

use nex_backup_tests::env::{Env, EnvOpts, SITE};
use nex_backup_tests::sample::invoices_sql;
use serde_json::Value;

fn entries(env: &Env) -> Vec<Value> {
    let v = env.cli(&["audit", "--json", "--limit", "100000"]).json();
    v["entries"].as_array().unwrap().clone()
}

#[test]
fn every_admin_call_leaves_one_entry_naming_its_credential_and_no_secret() {
    let env = Env::start(&invoices_sql(200), EnvOpts::default());
    let alice = env.dir.path().join("alice.token");
    let out = env.cli(&["admin", "create", "alice", "--out", alice.to_str().unwrap()]);
    assert!(out.ok, "{}", out.stderr);
    let alice_token = std::fs::read_to_string(&alice).unwrap().trim().to_string();
    assert!(!out.stdout.contains(&alice_token), "written, not printed");

    let before = entries(&env).len();
    // More admin calls, one of them refused, one answering a secret (a token).
    let token = env.token(SITE);
    let calls: [&[&str]; 6] = [
        &["status"],
        &["snapshots", "--site", SITE],
        &["policy", "show", "--site", SITE, "--target", "main"],
        &["notify", "rules"],
        &["jobs"],
        &[
            "policy", "set", "--site", SITE, "--target", "nope", "--rpo", "2h",
        ],
    ];
    for c in calls {
        env.cli(c);
    }
    let by_alice = env.cli(&[
        "policy",
        "set",
        "--site",
        SITE,
        "--target",
        "main",
        "--rpo",
        "36h",
        "--admin-token-file",
        alice.to_str().unwrap(),
    ]);
    assert!(by_alice.ok, "{}", by_alice.stderr);
    let after = entries(&env);
    // The first `audit` call, the token, five reads, the refused `policy set` (its
    // GetPolicy is refused: no such target) and alice's `policy set` (GetPolicy, then
    // SetPolicy): ten calls, ten entries.
    let actions: Vec<&str> = after[before..]
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "ListAudit",
            "CreateToken",
            "Status",
            "ListSnapshots",
            "GetPolicy",
            "ListAlertRules",
            "ListJobs",
            "GetPolicy",
            "GetPolicy",
            "SetPolicy"
        ],
    );
    let new = &after[before..];
    let text = serde_json::to_string(new).unwrap();
    assert!(
        !text.contains(&token),
        "the enrollment token is not in the log"
    );
    assert!(
        !text.contains(&alice_token),
        "no admin credential in the log"
    );
    let refused = new
        .iter()
        .find(|e| e["action"] == "GetPolicy" && e["target"] == "nope")
        .expect("refused call logged");
    assert!(
        refused["outcome"].as_str().unwrap().starts_with("refused"),
        "{refused}"
    );
    let set = new
        .iter()
        .find(|e| e["target"] == "main" && e["action"] == "SetPolicy")
        .expect("alice's call");
    assert!(
        set["actor"]
            .as_str()
            .unwrap()
            .starts_with("admin alice from 127.0.0.1"),
        "{set}"
    );
    assert_eq!(set["outcome"], "ok");
    assert!(
        set["detail"].as_str().unwrap().contains("rpo"),
        "the parameters: {set}"
    );
    let status = new.iter().find(|e| e["action"] == "Status").unwrap();
    assert!(
        status["actor"]
            .as_str()
            .unwrap()
            .starts_with("admin admin from"),
        "the first credential is named admin: {status}"
    );
    // Enrollment is a trust event in the log.
    assert!(
        after
            .iter()
            .any(|e| e["action"] == "agent enrolled" && e["site"] == SITE),
        "{after:#?}"
    );

    // Revoked: refused at once. The last credential in force cannot be revoked.
    let out = env.cli(&["admin", "revoke", "alice"]);
    assert!(out.ok, "{}", out.stderr);
    let denied = env.cli(&["status", "--admin-token-file", alice.to_str().unwrap()]);
    assert!(
        !denied.ok && denied.stderr.contains("rejected"),
        "{}",
        denied.stderr
    );
    let out = env.cli(&["admin", "revoke", "admin"]);
    assert!(
        !out.ok && out.stderr.contains("last admin credential"),
        "{}",
        out.stderr
    );
    let list = env.cli(&["admin", "list", "--json"]).json();
    assert_eq!(list.as_array().unwrap().len(), 2, "{list}");
}
