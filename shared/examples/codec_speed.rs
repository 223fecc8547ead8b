//! Throughput of the codec's building blocks on synthetic, moderately compressible data:
//! `cargo run --release -p nex-backup-shared --example codec_speed [MiB]`.

use std::time::Instant;

use nex_backup_shared::chunk::ChunkCodec;
use nex_backup_shared::keys::MasterKey;
use sha2::{Digest, Sha256};

fn data(mib: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(mib << 20);
    let mut i: u64 = 0;
    while out.len() < mib << 20 {
        i += 1;
        let h = Sha256::digest(i.to_le_bytes());
        out.extend_from_slice(
            format!(
                "{i}\t{}\tCustomer {}\t{}\tpaid\n",
                hex::encode(&h[..12]),
                i % 9000,
                i * 37 % 100_000
            )
            .as_bytes(),
        );
    }
    out.truncate(mib << 20);
    out
}

fn rate(what: &str, bytes: usize, f: impl FnOnce()) {
    let t = Instant::now();
    f();
    let s = t.elapsed().as_secs_f64();
    println!("{what:<28} {:>8.0} MiB/s", bytes as f64 / 1048576.0 / s);
}

fn main() {
    let mib: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(256);
    let d = data(mib);
    let chunks: Vec<&[u8]> = d.chunks(256 * 1024).collect();
    let codec = ChunkCodec::new(MasterKey::from_bytes([1; 32]).derive(), 3);
    rate("sha256 (stream)", d.len(), || {
        std::hint::black_box(Sha256::digest(&d));
    });
    rate("hmac-sha256 ids", d.len(), || {
        for c in &chunks {
            std::hint::black_box(codec.id(c));
        }
    });
    rate("zstd -3 bulk (new ctx)", d.len(), || {
        for c in &chunks {
            std::hint::black_box(zstd::bulk::compress(c, 3).unwrap());
        }
    });
    rate("zstd -1 bulk (new ctx)", d.len(), || {
        for c in &chunks {
            std::hint::black_box(zstd::bulk::compress(c, 1).unwrap());
        }
    });
    rate("seal (zstd + aes-gcm)", d.len(), || {
        for c in &chunks {
            std::hint::black_box(codec.seal(codec.id(c), c));
        }
    });
    let sealed: Vec<_> = chunks.iter().map(|c| codec.encode(c)).collect();
    let stored: usize = sealed.iter().map(|s| s.blob.len()).sum();
    println!(
        "compression ratio            {:>8.2}",
        d.len() as f64 / stored as f64
    );
    rate("decode (verify)", d.len(), || {
        for (s, c) in sealed.iter().zip(&chunks) {
            std::hint::black_box(codec.decode(&s.id, &s.blob, c.len()).unwrap());
        }
    });
}
