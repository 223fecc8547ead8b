//! Looking at and damaging a controller's stored chunks from a test: list them with their
//! write times, tell data chunks from those every dump makes anew (opened with the
//! agent's key ring, as only a test can), flip a byte.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use nex_backup_shared::keyring::KeyRing;
use nex_backup_shared::seal::{self, FLAG_ZSTD, Header, ObjectKind};

/// Every chunk file of `site` under a controller data dir, oldest write first.
pub fn chunk_files(data_dir: &Path, site: &str) -> Vec<(PathBuf, SystemTime)> {
    let mut out = vec![];
    let root = data_dir.join("blobs/chunks").join(site);
    for d in std::fs::read_dir(&root).unwrap() {
        for f in std::fs::read_dir(d.unwrap().path()).unwrap() {
            let p = f.unwrap().path();
            let t = std::fs::metadata(&p).unwrap().modified().unwrap();
            out.push((p, t));
        }
    }
    out.sort_by_key(|(_, t)| *t);
    out
}

/// Whether a stored chunk starts a pg_dump archive or the globals script: those differ
/// in every dump (pg_dump's timestamp, pg_dumpall's random `\restrict` key), so no later
/// backup stores them again. Every other chunk of unchanged data recurs.
pub fn varies_per_dump(keyring: &Path, chunk: &Path) -> bool {
    let ring = KeyRing::load(keyring).unwrap().expect("a key ring");
    let blob = std::fs::read(chunk).unwrap();
    let h = Header::parse(&blob, "chunk").unwrap();
    let keys = ring.by_key_id(h.key_id).expect("the chunk's key").derive();
    let (flags, body) = seal::open(&keys, ObjectKind::Chunk, &h.object_id, &blob, "chunk").unwrap();
    let plain = if flags & FLAG_ZSTD != 0 {
        zstd::bulk::decompress(&body, 16 << 20).unwrap()
    } else {
        body
    };
    plain.starts_with(b"PGDMP") || plain.starts_with(b"--")
}

/// Flip one byte in the middle of a stored file.
pub fn flip_byte(p: &Path) {
    let mut b = std::fs::read(p).unwrap();
    let mid = b.len() / 2;
    b[mid] ^= 0x20;
    std::fs::write(p, b).unwrap();
}
