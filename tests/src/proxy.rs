//! A TCP proxy for fault injection and for the benchmarks: forwards 127.0.0.1:port to
//! an upstream, counts the bytes sent upstream, and can cut every live connection (once,
//! on demand, or after a byte threshold). New connections after a cut are accepted again:
//! the network "comes back". It can also add a round-trip time and cap the upstream
//! bandwidth ([`Proxy::shape`]), as a customer's far, slow uplink would. Both sockets
//! have Nagle's algorithm off, as the agent's and the controller's have: a proxy that
//! left it on would add its own delays to every small write.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How the proxy shapes traffic.
#[derive(Debug, Clone, Copy, Default)]
pub struct Shaping {
    /// Added round-trip time (half on each direction).
    pub rtt: Duration,
    /// Upstream bytes per second (0: no cap).
    pub upstream_rate: u64,
}

#[derive(Default)]
struct Shared {
    upstream_bytes: AtomicU64,
    cut_after: AtomicU64,
    cuts: AtomicU64,
    stop: AtomicBool,
    conns: Mutex<Vec<TcpStream>>,
    shaping: Mutex<Shaping>,
}

impl Shared {
    fn cut_all(&self) {
        let mut conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        for c in conns.drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
        self.cuts.fetch_add(1, Ordering::SeqCst);
    }
}

/// See module docs.
pub struct Proxy {
    pub port: u16,
    shared: Arc<Shared>,
}

impl Proxy {
    pub fn start(upstream: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let port = listener.local_addr().expect("addr").port();
        let shared = Arc::new(Shared::default());
        let s = shared.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = conn else { continue };
                let Ok(server) = TcpStream::connect(&upstream) else {
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let mut conns = s.conns.lock().unwrap_or_else(|p| p.into_inner());
                conns.push(client.try_clone().expect("clone"));
                conns.push(server.try_clone().expect("clone"));
                drop(conns);
                pump(
                    s.clone(),
                    client.try_clone().expect("clone"),
                    server.try_clone().expect("clone"),
                    true,
                );
                pump(s.clone(), server, client, false);
            }
        });
        Proxy { port, shared }
    }

    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// Bytes forwarded towards the upstream so far.
    pub fn upstream_bytes(&self) -> u64 {
        self.shared.upstream_bytes.load(Ordering::SeqCst)
    }

    /// Cut every live connection now.
    pub fn cut(&self) {
        self.shared.cut_all();
    }

    /// Cut every connection once, when the upstream byte count passes `n`.
    pub fn cut_after_upstream_bytes(&self, n: u64) {
        self.shared.cut_after.store(n, Ordering::SeqCst);
    }

    /// Shape the traffic of every connection from now on.
    pub fn shape(&self, shaping: Shaping) {
        *self
            .shared
            .shaping
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = shaping;
    }

    pub fn cuts(&self) -> u64 {
        self.shared.cuts.load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.cut_all();
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// Forward `from` to `to`: a reader thread stamps each read with the time it may leave
/// (now + half the round trip), a writer thread sends it then, within the bandwidth cap.
fn pump(s: Arc<Shared>, mut from: TcpStream, mut to: TcpStream, upstream: bool) {
    let (tx, rx) = std::sync::mpsc::sync_channel::<(Instant, Vec<u8>)>(256);
    let reader_side = s.clone();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let shaping = *reader_side
                .shaping
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if tx
                .send((Instant::now() + shaping.rtt / 2, buf[..n].to_vec()))
                .is_err()
            {
                break;
            }
        }
        let _ = from.shutdown(Shutdown::Read);
    });
    std::thread::spawn(move || {
        // When the capped link is free again (it takes len / rate to send a write).
        let mut link_free = Instant::now();
        for (due, data) in rx {
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            let rate = s
                .shaping
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .upstream_rate;
            if upstream && rate > 0 {
                let start = link_free.max(Instant::now());
                link_free = start + Duration::from_secs_f64(data.len() as f64 / rate as f64);
                if let Some(wait) = link_free.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
            }
            if to.write_all(&data).is_err() {
                break;
            }
            if upstream {
                let n = data.len() as u64;
                let total = s.upstream_bytes.fetch_add(n, Ordering::SeqCst) + n;
                let limit = s.cut_after.load(Ordering::SeqCst);
                if limit > 0 && total >= limit && s.cut_after.swap(0, Ordering::SeqCst) > 0 {
                    s.cut_all();
                }
            }
        }
        let _ = to.shutdown(Shutdown::Both);
    });
}
