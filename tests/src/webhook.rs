//! A webhook receiver for tests: a plain HTTP/1.1 server on a free port that records
//! every request's headers and body and answers 200 (or the status set).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

/// One request.
#[derive(Debug, Clone)]
pub struct Hook {
    pub path: String,
    /// Lower-case names.
    pub headers: HashMap<String, String>,
    pub body: String,
}

/// See module docs.
pub struct WebhookSink {
    pub port: u16,
    got: Arc<Mutex<Vec<Hook>>>,
}

impl WebhookSink {
    pub fn start() -> WebhookSink {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().unwrap().port();
        let got = Arc::new(Mutex::new(vec![]));
        let g = got.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let mut r = BufReader::new(conn.try_clone().unwrap());
                let mut line = String::new();
                if r.read_line(&mut line).is_err() {
                    continue;
                }
                let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
                let mut headers = HashMap::new();
                loop {
                    let mut h = String::new();
                    if r.read_line(&mut h).is_err() || h.trim().is_empty() {
                        break;
                    }
                    if let Some((k, v)) = h.split_once(':') {
                        headers.insert(k.trim().to_lowercase(), v.trim().to_string());
                    }
                }
                let len: usize = headers
                    .get("content-length")
                    .and_then(|l| l.parse().ok())
                    .unwrap_or(0);
                let mut body = vec![0; len];
                if r.read_exact(&mut body).is_err() {
                    continue;
                }
                g.lock().unwrap().push(Hook {
                    path,
                    headers,
                    body: String::from_utf8_lossy(&body).into(),
                });
                let _ = conn.write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-length: 8\r\nconnection: close\r\n\r\nreceived",
                );
            }
        });
        WebhookSink { port, got }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook?token=not-for-logs", self.port)
    }

    pub fn requests(&self) -> Vec<Hook> {
        self.got.lock().unwrap().clone()
    }
}
