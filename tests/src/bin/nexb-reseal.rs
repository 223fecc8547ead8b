//! Test-only tool: damage a stored chunk in a way the controller's checksum cannot see.
//! With the controller stopped, it re-seals a *different* plaintext under the same chunk
//! id with the site key (as a buggy or malicious uploader would have), stores that blob,
//! and records its checksum, as if it had been uploaded so. Only decrypting (`verify
//! --deep`) can tell.
//!
//! `nexb-reseal --data-dir DIR --keyring FILE --site SITE --chunk HEX`

use std::path::PathBuf;

use nex_backup::catalog::Catalog;
use nex_backup::catalog::integrity::IntegrityCatalog;
use nex_backup::catalog::sled_catalog::SledCatalog;
use nex_backup_shared::chunk::ChunkCodec;
use nex_backup_shared::ids::ChunkId;
use nex_backup_shared::keyring::KeyRing;
use nex_backup_shared::seal::{self, FLAG_ZSTD, Header, ObjectKind};
use sha2::{Digest, Sha256};

fn arg(name: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| panic!("missing {name}"))
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let data_dir = PathBuf::from(arg("--data-dir"));
    let site = arg("--site");
    let id = ChunkId::from_hex(&arg("--chunk")).expect("chunk id");
    let ring = KeyRing::load(&PathBuf::from(arg("--keyring")))
        .expect("read keyring")
        .expect("a keyring");
    let hex = id.to_hex();
    let path = data_dir
        .join("blobs/chunks")
        .join(&site)
        .join(&hex[..2])
        .join(&hex);
    let blob = std::fs::read(&path).expect("read the stored chunk");
    let header = Header::parse(&blob, "chunk").expect("header");
    let key = ring.by_key_id(header.key_id).expect("key of the chunk");
    let codec = ChunkCodec::new(key.derive(), 3);
    let cat = SledCatalog::open(&data_dir.join("catalog")).expect("open catalog");
    let ints = cat.integrity().expect("integrity records");
    let entry = ints
        .chunk_entry(&site, &id)
        .await
        .expect("read record")
        .expect("the chunk is recorded");
    let (flags, body) = seal::open(
        codec.keys(),
        ObjectKind::Chunk,
        id.as_bytes(),
        &blob,
        "chunk",
    )
    .expect("open the stored chunk");
    let mut plain = if flags & FLAG_ZSTD != 0 {
        zstd::bulk::decompress(&body, 16 << 20).expect("decompress")
    } else {
        body
    };
    assert!(entry.stored_len > 0 && !plain.is_empty());
    let mid = plain.len() / 2;
    plain[mid] ^= 0x01;
    let forged = codec.seal(id, &plain).blob;
    std::fs::remove_file(&path).expect("remove the stored chunk");
    std::fs::write(&path, &forged).expect("write the forged chunk");
    let sum: [u8; 32] = Sha256::digest(&forged).into();
    ints.forget_chunk(&site, &id).await.expect("forget");
    assert!(
        cat.record_chunk(&site, &id, forged.len() as u32, &sum)
            .await
            .expect("record")
    );
    cat.flush().await.expect("flush");
    println!("resealed chunk {hex}: {} bytes", forged.len());
}
