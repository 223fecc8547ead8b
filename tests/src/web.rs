//! A dashboard client for tests: HTTPS to the controller's `--http-listen` (its
//! certificate is the controller's own, not checked here: the TLS tests do that),
//! redirects not followed, the session cookie kept by hand so tests can steal, replay
//! and drop it.

use std::time::Duration;

use reqwest::blocking::Client;
use reqwest::header::{COOKIE, SET_COOKIE};

use crate::wait_for;

/// The dashboard's address as the controller logged it (`dashboard at https://ADDR/`).
pub fn dashboard_url(log: &std::path::Path) -> String {
    wait_for("the dashboard to listen", 30, || {
        let text = std::fs::read_to_string(log).ok()?;
        let at = text.find("dashboard at https://")?;
        let rest = &text[at + "dashboard at ".len()..];
        let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        Some(rest[..end].trim_end_matches('/').to_string())
    })
}

/// One browser-like client with its own session.
pub struct Web {
    pub base: String,
    client: Client,
    pub cookie: Option<String>,
}

/// A response: status, the Set-Cookie and Location headers, the body.
pub struct Resp {
    pub status: u16,
    pub set_cookie: Option<String>,
    pub location: Option<String>,
    pub csp: Option<String>,
    pub body: String,
}

impl Resp {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

impl Web {
    pub fn new(base: &str) -> Web {
        Web::with_timeout(base, Duration::from_secs(30))
    }

    /// A client whose requests may take up to `timeout` (benchmarks of slow pages).
    pub fn with_timeout(base: &str, timeout: Duration) -> Web {
        Web {
            base: base.to_string(),
            client: Client::builder()
                .danger_accept_invalid_certs(true)
                .redirect(reqwest::redirect::Policy::none())
                .timeout(timeout)
                .build()
                .unwrap(),
            cookie: None,
        }
    }

    fn send(&mut self, req: reqwest::blocking::RequestBuilder) -> Resp {
        let req = match &self.cookie {
            Some(c) => req.header(COOKIE, format!("nexb_session={c}")),
            None => req,
        };
        let r = req.send().expect("dashboard request");
        let h = |n: reqwest::header::HeaderName| {
            r.headers()
                .get(n)
                .and_then(|v| v.to_str().ok())
                .map(String::from)
        };
        let set_cookie = h(SET_COOKIE);
        let location = h(reqwest::header::LOCATION);
        let csp = h(reqwest::header::CONTENT_SECURITY_POLICY);
        if let Some(v) = set_cookie
            .as_deref()
            .and_then(|c| c.strip_prefix("nexb_session="))
            .and_then(|c| c.split(';').next())
        {
            self.cookie = (!v.is_empty()).then(|| v.to_string());
        }
        Resp {
            status: r.status().as_u16(),
            set_cookie,
            location,
            csp,
            body: r.text().unwrap_or_default(),
        }
    }

    pub fn get(&mut self, path: &str) -> Resp {
        let req = self.client.get(format!("{}{path}", self.base));
        self.send(req)
    }

    /// A form POST with extra headers.
    pub fn post(&mut self, path: &str, form: &[(&str, &str)], headers: &[(&str, &str)]) -> Resp {
        let mut req = self.client.post(format!("{}{path}", self.base)).form(form);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        self.send(req)
    }

    pub fn login(&mut self, name: &str, password: &str) -> Resp {
        self.post(
            "/login",
            &[("name", name), ("password", password), ("next", "/fleet")],
            &[],
        )
    }

    /// This session's CSRF token.
    pub fn csrf(&mut self) -> String {
        let me = self.get("/api/v1/me");
        assert_eq!(me.status, 200, "{}", me.body);
        me.json()["csrf"].as_str().unwrap().to_string()
    }
}

/// `nex-backup account add NAME --role ROLE [--site S]` on the environment's controller:
/// the generated password.
pub fn add_account(env: &crate::env::Env, name: &str, role: &str, site: Option<&str>) -> String {
    let mut args = vec!["account", "add", name, "--role", role];
    if let Some(s) = site {
        args.extend(["--site", s]);
    }
    let out = env.cli(&args);
    assert!(out.ok, "{}", out.stderr);
    out.stdout.lines().last().unwrap().trim().to_string()
}

/// An environment whose controller serves the dashboard (with extra `serve` arguments),
/// its agent declaring a second target `second`; and the dashboard's address.
pub fn dashboard_env(
    rows: u32,
    extra_args: &[&str],
    second_target: bool,
) -> (crate::env::Env, String) {
    let mut args = vec!["--http-listen".to_string(), "127.0.0.1:0".to_string()];
    args.extend(extra_args.iter().map(|s| s.to_string()));
    let env = crate::env::Env::start(
        &crate::sample::invoices_sql(rows),
        crate::env::EnvOpts {
            controller_args: args,
            extra_targets: if second_target {
                crate::env::target_toml("second", "postgres", "invoices", crate::env::PW_ENV)
            } else {
                String::new()
            },
            ..Default::default()
        },
    );
    let base = dashboard_url(&env.controller.log);
    (env, base)
}

/// A second site `site` with its own agent (on the environment's cluster), online and
/// backed up once.
pub fn second_site(env: &crate::env::Env, site: &str) -> crate::procs::Agent {
    let (agent, _) = env.site_agent(site, "");
    let b = env.cli(&["backup", "--site", site, "--target", "main", "--json"]);
    assert!(b.ok, "{}{}", b.stdout, b.stderr);
    agent
}
