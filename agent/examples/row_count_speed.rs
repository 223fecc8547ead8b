//! Throughput of the backup's row counter (it reads the custom-format archive as it
//! streams by) on a dump file, against SHA-256 of the same bytes in the same process:
//! `cargo run --release -p nex-backup-agent --example row_count_speed -- FILE [ROUNDS]`
//! (FILE from `pg_dump -Fc -Z0`). The rounds alternate; the file is read once first so
//! that both read it from the page cache.

use std::io::{BufReader, Read};
use std::time::Instant;

use nex_backup_agent::backup::rowcount::count_rows;
use sha2::Digest;

fn open(path: &str) -> BufReader<std::fs::File> {
    BufReader::with_capacity(256 << 10, std::fs::File::open(path).expect("open FILE"))
}

/// SHA-256 of the file: the baseline.
fn hash(path: &str) -> f64 {
    let t = Instant::now();
    let (mut r, mut h, mut buf) = (open(path), sha2::Sha256::new(), vec![0u8; 256 << 10]);
    loop {
        let n = r.read(&mut buf).expect("read");
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    std::hint::black_box(h.finalize());
    t.elapsed().as_secs_f64()
}

/// The row counter over the file; its time and the rows it counted.
fn count(path: &str) -> (f64, i64) {
    let t = Instant::now();
    let tables = count_rows(open(path)).expect("a custom-format archive written with -Z0");
    (
        t.elapsed().as_secs_f64(),
        tables.iter().map(|(_, n)| n).sum(),
    )
}

fn main() {
    let path = std::env::args().nth(1).expect("FILE");
    let rounds: usize = std::env::args()
        .nth(2)
        .map_or(3, |r| r.parse().expect("ROUNDS"));
    let mib = std::fs::metadata(&path).expect("stat FILE").len() as f64 / 1048576.0;
    hash(&path);
    let mut ratios = vec![];
    for round in 1..=rounds {
        let base = hash(&path);
        let (secs, rows) = count(&path);
        ratios.push(secs / base);
        println!(
            "round {round}: row counter {:.0} MiB/s ({rows} rows), SHA-256 {:.0} MiB/s, ratio {:.2}",
            mib / secs,
            mib / base,
            secs / base
        );
    }
    ratios.sort_by(f64::total_cmp);
    println!(
        "{mib:.0} MiB: row counter × SHA-256 of the same bytes, median {:.2} (min {:.2}, max {:.2})",
        ratios[ratios.len() / 2],
        ratios[0],
        ratios[ratios.len() - 1]
    );
}
