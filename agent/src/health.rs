//! The host's health, sent with every heartbeat: CPU load, memory, free and total space
//! on the volumes that matter (each target's PostgreSQL data directory where the server
//! tells it, and the agent's state dir), the OS, each target's server version and the
//! agent's clock. PostgreSQL facts are asked at most every [`PG_REFRESH`], in the
//! background, so a slow server never delays a heartbeat.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nex_backup_shared::pb;
use sysinfo::{Disks, System};

use crate::ctx::Ctx;

/// How often the servers are asked for their data directory and version.
pub const PG_REFRESH: Duration = Duration::from_secs(300);

/// What one server said: (target, data directory if visible, version).
type Fact = (String, Option<PathBuf>, String);

/// What the servers said, and when they were last asked.
#[derive(Default)]
pub struct PgFacts {
    facts: Mutex<(Option<Instant>, Vec<Fact>)>,
}

impl PgFacts {
    /// Refresh in the background when stale.
    pub fn refresh_if_due(self: &Arc<Self>, ctx: &Arc<Ctx>) {
        {
            let mut g = self.facts.lock().unwrap_or_else(|p| p.into_inner());
            if g.0.is_some_and(|t| t.elapsed() < PG_REFRESH) {
                return;
            }
            g.0 = Some(Instant::now());
        }
        let (me, ctx) = (self.clone(), ctx.clone());
        tokio::spawn(async move {
            let mut out = vec![];
            for t in &ctx.cfg.targets {
                let probe = async {
                    let c = crate::pg::connect(t, &t.dbname).await.ok()?;
                    let version = crate::pg::server_version(&c).await.ok().map(|v| v.1);
                    let dir = c
                        .query_one("SELECT current_setting('data_directory')", &[])
                        .await
                        .ok()
                        .and_then(|r| r.try_get::<_, String>(0).ok())
                        .map(PathBuf::from);
                    Some((dir, version.unwrap_or_default()))
                };
                let (dir, version) = tokio::time::timeout(Duration::from_secs(10), probe)
                    .await
                    .ok()
                    .flatten()
                    .unwrap_or_default();
                out.push((t.name.clone(), dir, version));
            }
            me.facts.lock().unwrap_or_else(|p| p.into_inner()).1 = out;
        });
    }

    fn snapshot(&self) -> Vec<Fact> {
        self.facts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .1
            .clone()
    }
}

/// The volume (mount) that holds `path`: the disk with the longest mount point prefix.
fn volume_of(disks: &Disks, path: &Path) -> Option<(u64, u64)> {
    disks
        .list()
        .iter()
        .filter(|d| path.starts_with(d.mount_point()))
        .max_by_key(|d| d.mount_point().as_os_str().len())
        .map(|d| (d.available_space(), d.total_space()))
}

/// One report, now.
pub fn report(ctx: &Ctx, pg: &PgFacts) -> pb::HostHealth {
    let mut sys = System::new();
    sys.refresh_memory();
    let disks = Disks::new_with_refreshed_list();
    let mut volumes = vec![];
    let mut add = |role: String, path: &Path| {
        let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        if let Some((free, total)) = volume_of(&disks, &path) {
            volumes.push(pb::VolumeSpace {
                role,
                path: path.display().to_string(),
                free_bytes: free,
                total_bytes: total,
            });
        }
    };
    add("state_dir".into(), &ctx.cfg.state_dir);
    let facts = pg.snapshot();
    for (target, dir, _) in &facts {
        if let Some(d) = dir {
            add(format!("pg_data {target}"), d);
        }
    }
    pb::HostHealth {
        cpu_load_1m: System::load_average().one,
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
        mem_total_bytes: sys.total_memory(),
        mem_used_bytes: sys.used_memory(),
        volumes,
        os: System::long_os_version().unwrap_or_else(|| std::env::consts::OS.into()),
        pg_versions: facts
            .into_iter()
            .filter(|(_, _, v)| !v.is_empty())
            .map(|(target, _, version)| pb::PgVersion { target, version })
            .collect(),
        agent_unix_ms: nex_backup_shared::clock::now_ms(),
        clock_offset_ms: 0,
        at_unix_ms: 0,
    }
}
