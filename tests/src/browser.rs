//! Headless Chromium driven over WebDriver (Debian's chromium and chromium-driver, with
//! fantoccini as the client), for the dashboard's browser tests. Screenshots go to
//! `target/screenshots/` (the CI artifacts); axe-core (npm, installed into `.ci/` by
//! `deploy/prereqs.sh`) checks accessibility in the page.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

/// A running chromedriver with one browser session.
pub struct Browser {
    driver: Child,
    client: Option<Client>,
    rt: tokio::runtime::Runtime,
    _profile: tempfile::TempDir,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Where screenshots are written.
pub fn screenshot_dir() -> PathBuf {
    let d = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/screenshots");
    std::fs::create_dir_all(&d).unwrap();
    d
}

impl Browser {
    /// Start chromedriver and a headless Chromium that accepts the controller's own
    /// certificate.
    pub fn start() -> Browser {
        for bin in ["/usr/bin/chromium", "/usr/bin/chromedriver"] {
            assert!(
                Path::new(bin).exists(),
                "{bin} not found: run `bash tests/run.sh` (deploy/prereqs.sh installs chromium and chromium-driver)"
            );
        }
        // fantoccini's client takes the process's default rustls provider.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let port = free_port();
        let driver = Command::new("/usr/bin/chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let profile = tempfile::Builder::new()
            .prefix("nexchrome")
            .tempdir()
            .unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let args = json!([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--ignore-certificate-errors",
            "--window-size=1440,900",
            format!("--user-data-dir={}", profile.path().display()),
        ]);
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({"binary": "/usr/bin/chromium", "args": args}),
        );
        caps.insert("acceptInsecureCerts".into(), json!(true));
        let url = format!("http://127.0.0.1:{port}");
        let client = rt.block_on(async {
            let mut last = None;
            for _ in 0..100 {
                match ClientBuilder::rustls()
                    .unwrap()
                    .capabilities(caps.clone())
                    .connect(&url)
                    .await
                {
                    Ok(c) => return c,
                    Err(e) => last = Some(e),
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            panic!("no WebDriver session from chromedriver: {last:?}");
        });
        Browser {
            driver,
            client: Some(client),
            rt,
            _profile: profile,
        }
    }

    fn c(&self) -> &Client {
        self.client.as_ref().unwrap()
    }

    pub fn goto(&self, url: &str) {
        self.rt
            .block_on(self.c().goto(url))
            .unwrap_or_else(|e| panic!("goto {url}: {e}"));
    }

    pub fn url(&self) -> String {
        self.rt
            .block_on(self.c().current_url())
            .unwrap()
            .to_string()
    }

    /// The page's HTML as the browser holds it now.
    pub fn source(&self) -> String {
        self.rt.block_on(self.c().source()).unwrap()
    }

    /// The visible text of the page.
    pub fn text(&self) -> String {
        self.script("return document.body.innerText;", vec![])
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// The element `css` names, waiting for it up to 10 s.
    async fn element(
        &self,
        css: &str,
    ) -> Result<fantoccini::elements::Element, fantoccini::error::CmdError> {
        self.c()
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::Css(css))
            .await
    }

    pub fn fill(&self, css: &str, text: &str) {
        self.rt
            .block_on(async {
                let e = self.element(css).await?;
                e.clear().await?;
                e.send_keys(text).await
            })
            .unwrap_or_else(|e| panic!("fill {css}: {e}"));
    }

    pub fn click(&self, css: &str) {
        self.rt
            .block_on(async { self.element(css).await?.click().await })
            .unwrap_or_else(|e| panic!("click {css}: {e}"));
    }

    /// Whether an element matches `css` now.
    pub fn has(&self, css: &str) -> bool {
        self.rt
            .block_on(self.c().find_all(Locator::Css(css)))
            .map(|v| !v.is_empty())
            .unwrap_or(false)
    }

    pub fn script(&self, js: &str, args: Vec<Value>) -> Value {
        self.rt
            .block_on(self.c().execute(js, args))
            .unwrap_or_else(|e| panic!("script: {e}"))
    }

    /// Wait until the script `cond` (an expression) is true in the page.
    pub fn wait_until(&self, what: &str, cond: &str, secs: u64) {
        let js = format!("return !!({cond});");
        crate::wait_for(what, secs, || {
            self.script(&js, vec![])
                .as_bool()
                .unwrap_or(false)
                .then_some(())
        });
    }

    pub fn resize(&self, w: u32, h: u32) {
        self.rt.block_on(self.c().set_window_size(w, h)).unwrap();
    }

    /// Set the window to `w`×`h` and save a screenshot as `name.png`.
    pub fn screenshot(&self, name: &str, w: u32, h: u32) -> PathBuf {
        self.resize(w, h);
        let png = self.rt.block_on(self.c().screenshot()).unwrap();
        let path = screenshot_dir().join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        path
    }

    /// Whether the page fits the window's width (no sideways scrolling).
    pub fn fits_width(&self) -> bool {
        self.script(
            "return document.documentElement.scrollWidth <= window.innerWidth + 1;",
            vec![],
        )
        .as_bool()
        .unwrap_or(false)
    }

    /// axe-core's serious and critical violations on the current page (rule ids).
    pub fn axe_violations(&self) -> Vec<String> {
        let src = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../.ci/node_modules/axe-core/axe.min.js");
        let axe = std::fs::read_to_string(&src).unwrap_or_else(|e| {
            panic!(
                "{}: {e}: run `bash tests/run.sh` (deploy/prereqs.sh installs axe-core)",
                src.display()
            )
        });
        self.script(&format!("{axe}\nreturn true;"), vec![]);
        let r = self
            .rt
            .block_on(self.c().execute_async(
                "const done = arguments[arguments.length - 1];
                 axe.run(document, {resultTypes: ['violations']}).then(r => done(r.violations
                   .filter(v => v.impact === 'serious' || v.impact === 'critical')
                   .map(v => v.id + ': ' + v.nodes.map(n => n.target.join(' ')).join(', '))));",
                vec![],
            ))
            .unwrap_or_else(|e| panic!("axe: {e}"));
        r.as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap_or_default().to_string())
            .collect()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(c) = self.client.take() {
            let _ = self.rt.block_on(c.close());
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
