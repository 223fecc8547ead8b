//! Host health as agents report it in their heartbeats: CPU load, memory, the volumes
//! that matter (PostgreSQL data directory, the agent's state dir), OS, server and agent
//! versions, and the clock offset from the controller. The controller keeps the latest
//! report of each agent and a short history in memory (a restart forgets it; the next
//! heartbeat brings it back).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use nex_backup_shared::pb;

/// Reports kept per agent (10 s heartbeats: the last 10 minutes).
pub const HISTORY: usize = 60;
/// Most volumes and PostgreSQL versions one report carries.
pub const MAX_VOLUMES: usize = 16;

/// One volume's space.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    /// What it holds: `pg_data main`, `state_dir`, ...
    pub role: String,
    pub path: String,
    pub free_bytes: u64,
    pub total_bytes: u64,
}

/// One report, checked and bounded on receipt.
#[derive(Debug, Clone, PartialEq)]
pub struct HostHealth {
    pub at_unix_ms: u64,
    pub cpu_load_1m: f64,
    pub cpus: u32,
    pub mem_total_bytes: u64,
    pub mem_used_bytes: u64,
    pub volumes: Vec<Volume>,
    pub os: String,
    /// (target, server version)
    pub pg_versions: Vec<(String, String)>,
    pub agent_version: String,
    /// The agent's clock minus the controller's, ms (positive: agent ahead).
    pub clock_offset_ms: i64,
}

impl HostHealth {
    /// From an agent's heartbeat, received at `now_ms`; every text is cleaned and bounded.
    pub fn from_pb(h: pb::HostHealth, agent_version: &str, now_ms: u64) -> Self {
        use nex_backup_shared::text::clean;
        let volumes = h
            .volumes
            .into_iter()
            .take(MAX_VOLUMES)
            .map(|v| Volume {
                role: clean(&v.role, 64),
                path: clean(&v.path, 256),
                free_bytes: v.free_bytes.min(v.total_bytes),
                total_bytes: v.total_bytes,
            })
            .collect();
        HostHealth {
            at_unix_ms: now_ms,
            cpu_load_1m: if h.cpu_load_1m.is_finite() {
                h.cpu_load_1m.clamp(0.0, 1e6)
            } else {
                0.0
            },
            cpus: h.cpus.min(4096),
            mem_total_bytes: h.mem_total_bytes,
            mem_used_bytes: h.mem_used_bytes.min(h.mem_total_bytes),
            volumes,
            os: clean(&h.os, 128),
            pg_versions: h
                .pg_versions
                .into_iter()
                .take(MAX_VOLUMES)
                .map(|p| (clean(&p.target, 64), clean(&p.version, 64)))
                .collect(),
            agent_version: clean(agent_version, 64),
            // The agent's own time, checked only against ours: an offset, never a time.
            clock_offset_ms: (h.agent_unix_ms as i64).saturating_sub(now_ms as i64),
        }
    }

    /// The volume with the least free space.
    pub fn tightest(&self) -> Option<&Volume> {
        self.volumes.iter().min_by_key(|v| v.free_bytes)
    }

    pub fn to_pb(&self) -> pb::HostHealth {
        pb::HostHealth {
            cpu_load_1m: self.cpu_load_1m,
            cpus: self.cpus,
            mem_total_bytes: self.mem_total_bytes,
            mem_used_bytes: self.mem_used_bytes,
            volumes: self
                .volumes
                .iter()
                .map(|v| pb::VolumeSpace {
                    role: v.role.clone(),
                    path: v.path.clone(),
                    free_bytes: v.free_bytes,
                    total_bytes: v.total_bytes,
                })
                .collect(),
            os: self.os.clone(),
            pg_versions: self
                .pg_versions
                .iter()
                .map(|(t, v)| pb::PgVersion {
                    target: t.clone(),
                    version: v.clone(),
                })
                .collect(),
            agent_unix_ms: 0,
            clock_offset_ms: self.clock_offset_ms,
            at_unix_ms: self.at_unix_ms,
        }
    }
}

/// Latest reports per (site, agent).
#[derive(Default)]
pub struct HealthBook {
    inner: Mutex<HashMap<(String, String), VecDeque<HostHealth>>>,
}

impl HealthBook {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), VecDeque<HostHealth>>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn record(&self, site: &str, agent: &str, h: HostHealth) {
        let mut g = self.lock();
        let q = g.entry((site.into(), agent.into())).or_default();
        if q.len() == HISTORY {
            q.pop_front();
        }
        q.push_back(h);
    }

    pub fn latest(&self, site: &str, agent: &str) -> Option<HostHealth> {
        self.lock()
            .get(&(site.to_string(), agent.to_string()))
            .and_then(|q| q.back().cloned())
    }

    /// The reports kept of an agent, oldest first.
    pub fn history(&self, site: &str, agent: &str) -> Vec<HostHealth> {
        self.lock()
            .get(&(site.to_string(), agent.to_string()))
            .map(|q| q.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Forget an agent (revoked).
    pub fn forget(&self, site: &str, agent: &str) {
        self.lock().remove(&(site.to_string(), agent.to_string()));
    }
}
