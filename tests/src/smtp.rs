//! A real SMTP server for tests: aiosmtpd (PyPI) in a Python venv that `tests/run.sh`
//! prepares (`.ci/.venv`, or `NEXB_PYTHON`). Each message lands in a Maildir; Python's
//! own `email` package parses them (headers, the plain-text and HTML parts) for asserts.
//! A missing aiosmtpd fails the test loudly.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use serde::Deserialize;

/// The Python that has aiosmtpd.
pub fn python() -> PathBuf {
    if let Ok(p) = std::env::var("NEXB_PYTHON") {
        return p.into();
    }
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.ci/.venv/bin/python");
    assert!(
        p.exists(),
        "{} not found: run tests/run.sh (it creates the venv with aiosmtpd) or set NEXB_PYTHON",
        p.display()
    );
    p
}

/// One received message.
#[derive(Debug, Clone, Deserialize)]
pub struct Mail {
    pub subject: String,
    pub message_id: String,
    pub from: String,
    pub to: String,
    pub text: String,
    pub html: String,
    pub multipart: String,
}

const PARSE: &str = r#"
import sys, json, os, email, email.policy
d = os.path.join(sys.argv[1], "new")
files = sorted(os.listdir(d), key=lambda f: os.stat(os.path.join(d, f)).st_mtime_ns) if os.path.isdir(d) else []
out = []
for f in files:
    with open(os.path.join(d, f), "rb") as fh:
        m = email.message_from_binary_file(fh, policy=email.policy.default)
    t, h = m.get_body(("plain",)), m.get_body(("html",))
    out.append(dict(subject=str(m["subject"]), message_id=str(m["message-id"]), to=str(m["to"]),
                    **{"from": str(m["from"])}, text=t.get_content() if t else "",
                    html=h.get_content() if h else "", multipart=m.get_content_type()))
print(json.dumps(out))
"#;

const AUTH_SERVER: &str = r#"
import sys, time, asyncio
from aiosmtpd.controller import Controller
from aiosmtpd.handlers import Mailbox
from aiosmtpd.smtp import AuthResult
user, password = sys.argv[3].encode(), sys.argv[4].encode()
def check(server, session, envelope, mechanism, auth_data):
    return AuthResult(success=auth_data.login == user and auth_data.password == password, handled=False)
c = Controller(Mailbox(sys.argv[1]), hostname="127.0.0.1", port=int(sys.argv[2]),
               authenticator=check, auth_require_tls=False, auth_required=True)
c.start()
while True:
    time.sleep(3600)
"#;

/// See module docs. Dropping it stops the server.
pub struct SmtpSink {
    child: Option<Child>,
    pub port: u16,
    pub dir: tempfile::TempDir,
    auth: Option<(String, String)>,
}

impl SmtpSink {
    /// A sink without authentication, on a free port.
    pub fn start() -> SmtpSink {
        Self::start_on(crate::free_port(), None)
    }

    /// A sink that requires AUTH with `user`/`password`.
    pub fn start_with_auth(user: &str, password: &str) -> SmtpSink {
        Self::start_on(crate::free_port(), Some((user.into(), password.into())))
    }

    fn start_on(port: u16, auth: Option<(String, String)>) -> SmtpSink {
        let dir = tempfile::Builder::new()
            .prefix("nexsmtp")
            .tempdir()
            .expect("temp dir");
        let mut s = SmtpSink {
            child: None,
            port,
            dir,
            auth,
        };
        s.resume();
        s
    }

    /// Stop the server (messages so far stay readable).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start it again on the same port and Maildir.
    pub fn resume(&mut self) {
        let maildir = self.dir.path().join("mail");
        let mut cmd = Command::new(python());
        match &self.auth {
            None => cmd
                .args(["-m", "aiosmtpd", "-n", "-l"])
                .arg(format!("127.0.0.1:{}", self.port))
                .args(["-c", "aiosmtpd.handlers.Mailbox"])
                .arg(&maildir),
            Some((u, p)) => cmd
                .args(["-c", AUTH_SERVER])
                .arg(&maildir)
                .arg(self.port.to_string())
                .args([u, p]),
        };
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start aiosmtpd");
        self.child = Some(child);
        let port = self.port;
        crate::wait_for("the SMTP sink to listen", 20, || {
            std::net::TcpStream::connect(("127.0.0.1", port)).ok()
        });
    }

    /// Every message received so far, oldest first.
    pub fn messages(&self) -> Vec<Mail> {
        let out = Command::new(python())
            .args(["-c", PARSE])
            .arg(self.dir.path().join("mail"))
            .output()
            .expect("run the mail parser");
        assert!(
            out.status.success(),
            "parse mail: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("parser output")
    }

    /// Messages whose subject contains `needle`.
    pub fn with_subject(&self, needle: &str) -> Vec<Mail> {
        self.messages()
            .into_iter()
            .filter(|m| m.subject.contains(needle))
            .collect()
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.stop();
    }
}
