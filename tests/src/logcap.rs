//! The controller's log lines in an in-process test: one global subscriber writing into
//! a buffer, so a test can assert that a refusal was logged (and what it named).

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

fn buffer() -> Arc<Mutex<Vec<u8>>> {
    static LOG: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOG.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let b = buf.clone();
        tracing_subscriber::fmt()
            .with_env_filter("info")
            .with_ansi(false)
            .with_writer(move || Sink(b.clone()))
            .init();
        buf
    })
    .clone()
}

struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Start capturing (idempotent); call before the controller starts.
pub fn install() {
    buffer();
}

/// Everything logged in this test process so far.
pub fn text() -> String {
    String::from_utf8_lossy(&buffer().lock().unwrap()).into_owned()
}

/// Panic unless `needle` was logged.
pub fn assert_logged(needle: &str) {
    assert!(text().contains(needle), "not logged: {needle:?}");
}
