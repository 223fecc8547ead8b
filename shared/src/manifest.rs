//! The snapshot manifest: which chunks, in which order, make each stream of a snapshot,
//! plus what the restore must check afterwards (stream digest, per-table row counts).
//!
//! Stored sealed (kind 2) both in the catalog and in the blob store, so the store plus the
//! site key alone can restore everything.

use prost::Message;
use sha2::{Digest, Sha256};

use crate::chunk::MAX_CHUNK_LEN;
use crate::error::FormatError;
use crate::ids::{ChunkId, validate_name, validate_snapshot_id};
use crate::keys::SiteKeys;
use crate::pb;
use crate::seal::{self, FLAG_ZSTD, ObjectKind};

/// Version 2: a stream's digest may be of its chunk list ([`StreamDigest`]); earlier
/// readers refuse such a manifest up front instead of failing its check after a restore.
pub const MANIFEST_VERSION: u32 = 2;
/// Largest decompressed manifest accepted (about 1.5 million chunks).
pub const MAX_MANIFEST_LEN: usize = 64 * 1024 * 1024;

/// Stream names inside a PostgreSQL snapshot.
pub const STREAM_GLOBALS: &str = "globals.sql";
pub const STREAM_DATABASE: &str = "database.dump";

mod digest;

pub use digest::{StreamDigest, chunk_list_digest};

/// One ordered byte stream of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamEntry {
    pub name: String,
    pub chunks: Vec<(ChunkId, u32)>,
    pub length: u64,
    /// The stream's digest, of the kind `digest` says.
    pub sha256: [u8; 32],
    pub digest: StreamDigest,
}

impl StreamEntry {
    /// A stream of `chunks` (in order, `length` bytes in all), its digest derived from
    /// the chunk list ([`StreamDigest::ChunkList`]).
    pub fn from_chunks(name: String, chunks: Vec<(ChunkId, u32)>, length: u64) -> Self {
        let sha256 = chunk_list_digest(&chunks, length);
        StreamEntry {
            name,
            chunks,
            length,
            sha256,
            digest: StreamDigest::ChunkList,
        }
    }
}

/// Where a snapshot came from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SourceInfo {
    pub kind: String,
    pub server_version: String,
    pub pg_dump_version: String,
    pub database: String,
    pub agent_version: String,
    pub host: String,
}

/// A validated snapshot manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    pub site: String,
    pub target: String,
    pub snapshot_id: String,
    pub created_unix_ms: u64,
    pub streams: Vec<StreamEntry>,
    pub row_counts: Vec<(String, i64)>,
    /// The counts are each table's own rows as counted in the dump (see the format's
    /// `row_counts_from_dump`); false: `count(*)` with inheritance children.
    pub row_counts_from_dump: bool,
    pub source: SourceInfo,
    pub duration_ms: u64,
    /// File and environment sets: every entry of the archive (empty for databases).
    pub files: Vec<crate::files::FileEntry>,
}

impl Manifest {
    /// The object id a manifest is sealed under: binds it to its site and snapshot.
    pub fn object_id(site: &str, snapshot_id: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(b"nex-backup manifest\0");
        h.update(site.as_bytes());
        h.update([0]);
        h.update(snapshot_id.as_bytes());
        h.finalize().into()
    }

    pub fn stream(&self, name: &str) -> Option<&StreamEntry> {
        self.streams.iter().find(|s| s.name == name)
    }

    /// Every chunk id referenced, in order (may repeat).
    pub fn chunk_ids(&self) -> impl Iterator<Item = &ChunkId> {
        self.streams
            .iter()
            .flat_map(|s| s.chunks.iter().map(|(id, _)| id))
    }

    pub fn logical_bytes(&self) -> u64 {
        self.streams.iter().map(|s| s.length).sum()
    }

    /// Serialize, compress and seal.
    pub fn seal(&self, keys: &SiteKeys) -> Vec<u8> {
        let raw = pb::Manifest::from(self).encode_to_vec();
        let compressed = zstd::bulk::compress(&raw, 3).expect("zstd of an in-memory buffer");
        seal::seal(
            keys,
            ObjectKind::Manifest,
            FLAG_ZSTD,
            &Self::object_id(&self.site, &self.snapshot_id),
            &compressed,
        )
    }

    /// Open, decompress, decode and validate a sealed manifest expected to be `snapshot_id` of `site`.
    pub fn open(
        keys: &SiteKeys,
        site: &str,
        snapshot_id: &str,
        blob: &[u8],
    ) -> Result<Manifest, FormatError> {
        let what = format!("manifest of snapshot {snapshot_id}");
        let oid = Self::object_id(site, snapshot_id);
        let (flags, body) = seal::open(keys, ObjectKind::Manifest, &oid, blob, &what)?;
        let raw = if flags & FLAG_ZSTD != 0 {
            zstd::bulk::decompress(&body, MAX_MANIFEST_LEN).map_err(|e| {
                FormatError::Decompress {
                    what: what.clone(),
                    reason: e.to_string(),
                }
            })?
        } else {
            body
        };
        let msg = pb::Manifest::decode(raw.as_slice())
            .map_err(|e| FormatError::invalid(&what, e.to_string()))?;
        let m = Manifest::try_from(msg)?;
        if m.site != site || m.snapshot_id != snapshot_id {
            return Err(FormatError::invalid(
                &what,
                "belongs to another site or snapshot",
            ));
        }
        Ok(m)
    }
}

impl From<&Manifest> for pb::Manifest {
    fn from(m: &Manifest) -> Self {
        pb::Manifest {
            format_version: MANIFEST_VERSION,
            site: m.site.clone(),
            target: m.target.clone(),
            snapshot_id: m.snapshot_id.clone(),
            created_unix_ms: m.created_unix_ms,
            streams: m
                .streams
                .iter()
                .map(|s| pb::StreamEntry {
                    name: s.name.clone(),
                    chunks: s
                        .chunks
                        .iter()
                        .map(|(id, len)| pb::ChunkRef {
                            id: id.0.to_vec(),
                            length: *len,
                        })
                        .collect(),
                    length: s.length,
                    sha256: s.sha256.to_vec(),
                    digest: s.digest as u32,
                })
                .collect(),
            row_counts: m
                .row_counts
                .iter()
                .map(|(t, n)| pb::TableRowCount {
                    table: t.clone(),
                    rows: *n,
                })
                .collect(),
            source: Some(pb::SourceInfo {
                kind: m.source.kind.clone(),
                server_version: m.source.server_version.clone(),
                pg_dump_version: m.source.pg_dump_version.clone(),
                database: m.source.database.clone(),
                agent_version: m.source.agent_version.clone(),
                host: m.source.host.clone(),
            }),
            duration_ms: m.duration_ms,
            files: m.files.iter().map(pb::FileEntry::from).collect(),
            row_counts_from_dump: m.row_counts_from_dump,
        }
    }
}

impl TryFrom<pb::Manifest> for Manifest {
    type Error = FormatError;
    fn try_from(p: pb::Manifest) -> Result<Self, FormatError> {
        let what = "manifest";
        if !(1..=MANIFEST_VERSION).contains(&p.format_version) {
            return Err(FormatError::invalid(
                what,
                format!(
                    "format version {} (this version of NEX Backup reads 1 to {MANIFEST_VERSION}; upgrade it)",
                    p.format_version
                ),
            ));
        }
        if p.format_version == 1 && p.streams.iter().any(|s| s.digest != 0) {
            return Err(FormatError::invalid(
                what,
                "format version 1 with a digest kind",
            ));
        }
        validate_name("site", &p.site)?;
        validate_name("target", &p.target)?;
        validate_snapshot_id(&p.snapshot_id)?;
        let streams = p
            .streams
            .into_iter()
            .map(stream_from_pb)
            .collect::<Result<Vec<_>, _>>()?;
        let src = p.source.unwrap_or_default();
        Ok(Manifest {
            site: p.site,
            target: p.target,
            snapshot_id: p.snapshot_id,
            created_unix_ms: p.created_unix_ms,
            streams,
            row_counts: p
                .row_counts
                .into_iter()
                .map(|r| (r.table, r.rows))
                .collect(),
            row_counts_from_dump: p.row_counts_from_dump,
            source: SourceInfo {
                kind: src.kind,
                server_version: src.server_version,
                pg_dump_version: src.pg_dump_version,
                database: src.database,
                agent_version: src.agent_version,
                host: src.host,
            },
            duration_ms: p.duration_ms,
            files: p
                .files
                .into_iter()
                .map(crate::files::FileEntry::try_from)
                .collect::<Result<Vec<_>, _>>()?,
        })
    }
}

fn stream_from_pb(s: pb::StreamEntry) -> Result<StreamEntry, FormatError> {
    let what = format!("manifest stream {:?}", s.name);
    let sha256: [u8; 32] = s
        .sha256
        .as_slice()
        .try_into()
        .map_err(|_| FormatError::invalid(&what, "sha256 is not 32 bytes"))?;
    let mut total = 0u64;
    let mut chunks = Vec::with_capacity(s.chunks.len());
    for c in s.chunks {
        if c.length == 0 || c.length as usize > MAX_CHUNK_LEN {
            return Err(FormatError::invalid(
                &what,
                format!("chunk length {}", c.length),
            ));
        }
        total += u64::from(c.length);
        chunks.push((ChunkId::try_from(c.id.as_slice())?, c.length));
    }
    if total != s.length {
        return Err(FormatError::invalid(
            &what,
            format!("chunks sum to {total}, stream length {}", s.length),
        ));
    }
    let digest = StreamDigest::try_from(s.digest).map_err(|n| {
        FormatError::invalid(
            &what,
            format!("digest kind {n} is from a newer version of NEX Backup; upgrade to read it"),
        )
    })?;
    if digest == StreamDigest::ChunkList {
        let actual = chunk_list_digest(&chunks, s.length);
        if actual != sha256 {
            return Err(FormatError::StreamHash {
                stream: s.name,
                expected: hex::encode(sha256),
                actual: hex::encode(actual),
            });
        }
    }
    Ok(StreamEntry {
        name: s.name,
        chunks,
        length: s.length,
        sha256,
        digest,
    })
}

#[cfg(test)]
mod tests;
