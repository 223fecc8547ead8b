//! Throughput of the agent's chunk stage alone (CDC + stream SHA-256 + ids) on a file:
//! `cargo run --release -p nex-backup-agent --example chunk_speed -- FILE`.

use std::time::Instant;

use nex_backup_shared::chunker::{ChunkerConfig, StreamChunker};
use nex_backup_shared::keys::MasterKey;

#[tokio::main]
async fn main() {
    let keys = MasterKey::from_bytes([1; 32]).derive();
    let path = std::env::args().nth(1).expect("FILE");
    let file = tokio::fs::File::open(&path).await.expect("open");
    let mut c = StreamChunker::new("file", file, ChunkerConfig::default(), None);
    let t = Instant::now();
    let (mut n, mut cdc) = (0u64, 0f64);
    loop {
        let t0 = Instant::now();
        let Some(chunk) = c.next_chunk().await.unwrap() else {
            break;
        };
        cdc += t0.elapsed().as_secs_f64();
        std::hint::black_box(keys.chunk_id(&chunk));
        n += 1;
    }
    let total = c.bytes_done();
    let s = t.elapsed().as_secs_f64();
    println!(
        "{n} chunks, {:.0} MiB in {s:.2} s = {:.0} MiB/s (reading+CDC+sha256 {cdc:.2} s)",
        total as f64 / 1048576.0,
        total as f64 / 1048576.0 / s
    );
}
