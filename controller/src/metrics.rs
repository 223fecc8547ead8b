//! Prometheus `/metrics` (OpenMetrics text, prometheus-client) on its own address
//! (`serve --metrics-listen`). Gauges are read from the controller's state at each
//! scrape; counters (jobs, notifications, garbage collection) count domain events from
//! the bus since the controller started. Labels are bounded: site, target, agent, job
//! kind and outcome, rule, channel, worker, volume role; never a snapshot or job id.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use anyhow::Context;
use axum::response::IntoResponse;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use crate::catalog::{CatalogError, JobState};
use crate::events::Event;
use crate::fleet::view::View;
use crate::state::State;

type G = Gauge<f64, AtomicU64>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TargetL {
    site: String,
    target: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateL {
    site: String,
    target: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AgentL {
    site: String,
    agent: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VolumeL {
    site: String,
    agent: String,
    volume: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobL {
    kind: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ChannelL {
    channel: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CopyL {
    copy: String,
    site: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NameL {
    name: String,
}

/// Counters fed by the event bus, and the cached store totals.
#[derive(Default, Clone)]
pub struct Counters {
    jobs: Family<JobL, Counter>,
    notifications: Family<ChannelL, Counter>,
    gc_freed: Counter,
    gc_snapshots: Counter,
    snapshots: Counter,
    /// (when read, chunk count, stored bytes): reading them walks every chunk record, so
    /// a scrape reuses a reading younger than [`TOTALS_MAX_AGE`].
    totals: Arc<std::sync::Mutex<Option<(std::time::Instant, u64, u64)>>>,
}

/// How long a reading of the store totals serves scrapes.
const TOTALS_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(60);

impl Counters {
    async fn store_totals(&self, state: &State) -> Result<(u64, u64), CatalogError> {
        let cached = *self.totals.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, n, bytes)) = cached
            && at.elapsed() < TOTALS_MAX_AGE
        {
            return Ok((n, bytes));
        }
        let (n, bytes) = state.catalog.chunk_totals().await?;
        *self.totals.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((std::time::Instant::now(), n, bytes));
        Ok((n, bytes))
    }
}

impl Counters {
    fn count(&self, e: &Event) {
        match e {
            Event::JobFinished { job, outcome, .. } => {
                self.jobs
                    .get_or_create(&JobL {
                        kind: job.kind.as_str().into(),
                        outcome: outcome.as_str().into(),
                    })
                    .inc();
            }
            Event::NotificationSent { channel, ok } => {
                let result = if *ok { "sent" } else { "failed" };
                self.notifications
                    .get_or_create(&ChannelL {
                        channel: channel.clone(),
                        result: result.into(),
                    })
                    .inc();
            }
            Event::PruneDone {
                freed_bytes,
                deleted_snapshots,
                ..
            } => {
                self.gc_freed.inc_by(*freed_bytes);
                self.gc_snapshots.inc_by(*deleted_snapshots);
            }
            Event::SnapshotCommitted { .. } => {
                self.snapshots.inc();
            }
            _ => {}
        }
    }
}

/// Start the `metrics` worker: counts events, and serves `/metrics` on `listen`.
pub async fn spawn(state: &Arc<State>, listen: SocketAddr) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("bind the metrics address {listen}"))?;
    let addr = listener.local_addr().context("metrics address")?;
    let counters = Counters::default();
    let (st, c) = (state.clone(), counters.clone());
    state.workers.spawn("metrics-events", move |ctx| async move {
        let mut rx = st.events.subscribe();
        loop {
            tokio::select! {
                _ = ctx.stop.cancelled() => return,
                e = rx.recv() => match e {
                    Ok(e) => c.count(&e),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(lost = n, "metrics fell behind the event bus; counters miss events");
                    }
                    Err(_) => return,
                },
            }
        }
    });
    let st = state.clone();
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let (st, counters) = (st.clone(), counters.clone());
            async move {
                match render(&st, &counters).await {
                    Ok(body) => (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        body,
                    )
                        .into_response(),
                    Err(e) => {
                        tracing::warn!(error = %e, "metrics scrape");
                        (
                            [(
                                axum::http::header::CONTENT_TYPE,
                                "text/plain; charset=utf-8",
                            )],
                            format!("metrics unavailable: {e}\n"),
                        )
                            .into_response()
                    }
                }
            }
        }),
    );
    let stop = state.workers.stop_token();
    state.workers.spawn("metrics-http", move |ctx| async move {
        let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
            tokio::select! { _ = ctx.stop.cancelled() => {}, _ = stop.cancelled() => {} }
        });
        if let Err(e) = serve.await {
            tracing::error!(error = %e, "metrics listener failed");
        }
    });
    tracing::info!(%addr, "metrics at http://{addr}/metrics");
    Ok(addr)
}

fn family<L>(reg: &mut Registry, name: &str, help: &str) -> Family<L, G>
where
    L: Clone + std::hash::Hash + Eq + EncodeLabelSet + std::fmt::Debug + Send + Sync + 'static,
{
    let f = Family::<L, G>::default();
    reg.register(name, help, f.clone());
    f
}

fn gauge(reg: &mut Registry, name: &str, help: &str, v: f64) {
    let g = G::default();
    g.set(v);
    reg.register(name, help, g);
}

/// One scrape.
async fn render(state: &State, counters: &Counters) -> Result<String, CatalogError> {
    let now = nex_backup_shared::clock::now_ms();
    let view = View::load(state).await?;
    let mut reg = Registry::with_prefix("nexb");
    target_metrics(&mut reg, state, &view, now);
    agent_metrics(&mut reg, state, &view).await?;
    let (chunks, stored) = counters.store_totals(state).await?;
    gauge(
        &mut reg,
        "store_chunks",
        "Chunks stored, every site",
        chunks as f64,
    );
    gauge(
        &mut reg,
        "store_stored_bytes",
        "Sealed bytes stored, every site",
        stored as f64,
    );
    if let Ok(Some(free)) = state.store.free_bytes().await {
        gauge(
            &mut reg,
            "store_free_bytes",
            "Free bytes where the blob store lives",
            free as f64,
        );
    }
    store_meter_metrics(&mut reg, &state.store_meter.snapshot());
    let lag = family::<CopyL>(
        &mut reg,
        "offsite_lag_seconds",
        "Seconds between the newest good snapshot and the newest in each off-site copy",
    );
    for (copy, site, secs) in state.copy_lag.readings() {
        lag.get_or_create(&CopyL { copy, site }).set(secs as f64);
    }
    let open = family::<NameL>(&mut reg, "incidents_open", "Open incidents per rule");
    for i in state
        .alerts
        .incidents()
        .await?
        .into_iter()
        .filter(|i| i.is_open())
    {
        open.get_or_create(&NameL { name: i.rule }).inc();
    }
    gauge(
        &mut reg,
        "outbox_queued",
        "Notices waiting for delivery",
        state.alerts.outbox().await?.len() as f64,
    );
    let werr = family::<NameL>(
        &mut reg,
        "worker_errors",
        "Failed runs per background worker since start",
    );
    for w in state.workers.statuses() {
        werr.get_or_create(&NameL { name: w.name })
            .set(w.errors as f64);
    }
    reg.register(
        "jobs",
        "Jobs finished, by kind and outcome",
        counters.jobs.clone(),
    );
    reg.register(
        "notifications",
        "Delivery attempts of notices, by channel and result",
        counters.notifications.clone(),
    );
    reg.register(
        "gc_freed_bytes",
        "Bytes freed by rotation and garbage collection",
        counters.gc_freed.clone(),
    );
    reg.register(
        "gc_deleted_snapshots",
        "Snapshots deleted by rotation",
        counters.gc_snapshots.clone(),
    );
    reg.register(
        "snapshots_committed",
        "Snapshots committed",
        counters.snapshots.clone(),
    );
    let mut out = String::new();
    encode(&mut out, &reg).map_err(|e| CatalogError::Storage(format!("encode metrics: {e}")))?;
    Ok(out)
}

/// The blob store's requests, errors and bytes since start (from its metering layer).
fn store_meter_metrics(reg: &mut Registry, m: &crate::store::layers::MeterReading) {
    let req = family::<NameL>(
        reg,
        "store_requests",
        "Blob store requests since start, by operation (every attempt)",
    );
    let err = family::<NameL>(
        reg,
        "store_request_errors",
        "Failed blob store requests since start, by operation",
    );
    for (op, n, e) in &m.ops {
        let l = NameL {
            name: (*op).to_string(),
        };
        req.get_or_create(&l).set(*n as f64);
        err.get_or_create(&l).set(*e as f64);
    }
    gauge(
        reg,
        "store_written_bytes",
        "Bytes written to the blob store since start",
        m.bytes_written as f64,
    );
    gauge(
        reg,
        "store_read_bytes",
        "Bytes read from the blob store since start",
        m.bytes_read as f64,
    );
}

fn target_metrics(reg: &mut Registry, state: &State, view: &View, now: u64) {
    let age = family::<TargetL>(
        reg,
        "target_newest_good_age_seconds",
        "Seconds since the newest good snapshot (absent: none)",
    );
    let rpo = family::<TargetL>(reg, "target_rpo_seconds", "The target's RPO");
    let rto = family::<TargetL>(reg, "target_rto_seconds", "The target's RTO");
    let st = family::<StateL>(
        reg,
        "target_rpo_state",
        "1 for the target's current RPO state (ok, at_risk, violated, agent_offline, never_backed_up)",
    );
    let dur = family::<TargetL>(
        reg,
        "target_last_backup_duration_seconds",
        "Duration of the last successful backup",
    );
    let logical = family::<TargetL>(
        reg,
        "target_last_backup_logical_bytes",
        "Logical bytes of the last successful backup",
    );
    let new = family::<TargetL>(
        reg,
        "target_last_backup_new_bytes",
        "Sealed bytes the last successful backup added",
    );
    let drill = family::<TargetL>(
        reg,
        "target_last_drill_rto_seconds",
        "Measured RTO of the last restore drill",
    );
    for t in crate::fleet::compliance::evaluate_all(state, view, now) {
        let l = TargetL {
            site: t.site.clone(),
            target: t.target.clone(),
        };
        if let Some(g) = t.newest_good_ms {
            age.get_or_create(&l)
                .set(now.saturating_sub(g) as f64 / 1000.0);
        }
        rpo.get_or_create(&l).set(t.rpo_ms as f64 / 1000.0);
        rto.get_or_create(&l).set(t.rto_ms as f64 / 1000.0);
        let state = serde_json::to_value(t.state)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default();
        st.get_or_create(&StateL {
            site: t.site.clone(),
            target: t.target.clone(),
            state,
        })
        .set(1.0);
        if let Some((took, _)) = t.last_drill {
            drill.get_or_create(&l).set(took as f64 / 1000.0);
        }
        let last = view
            .jobs
            .iter()
            .filter(|j| {
                j.site == t.site
                    && j.target == t.target
                    && j.kind == crate::catalog::JobKind::Backup
                    && j.state == JobState::Succeeded
            })
            .max_by_key(|j| j.started_unix_ms);
        if let Some(j) = last {
            let took = j
                .ended_unix_ms
                .unwrap_or(j.started_unix_ms)
                .saturating_sub(j.started_unix_ms);
            dur.get_or_create(&l).set(took as f64 / 1000.0);
            logical.get_or_create(&l).set(j.logical_bytes as f64);
            new.get_or_create(&l).set(j.new_bytes as f64);
        }
    }
}

async fn agent_metrics(reg: &mut Registry, state: &State, view: &View) -> Result<(), CatalogError> {
    let online = family::<AgentL>(reg, "agent_online", "1 when the agent's session is up");
    let seen = family::<AgentL>(
        reg,
        "agent_last_seen_timestamp_seconds",
        "When the agent was last heard from",
    );
    let cert = family::<AgentL>(
        reg,
        "agent_cert_expiry_timestamp_seconds",
        "When the agent's certificate expires",
    );
    let free = family::<VolumeL>(
        reg,
        "agent_volume_free_bytes",
        "Free bytes on a volume of the agent's host",
    );
    let total = family::<VolumeL>(
        reg,
        "agent_volume_total_bytes",
        "Size of a volume of the agent's host",
    );
    let offset = family::<AgentL>(
        reg,
        "agent_clock_offset_seconds",
        "The agent's clock minus the controller's",
    );
    for a in &view.agents {
        let l = AgentL {
            site: a.site.clone(),
            agent: a.agent_id.clone(),
        };
        online
            .get_or_create(&l)
            .set(if state.hub.online(&a.site, &a.agent_id) {
                1.0
            } else {
                0.0
            });
        seen.get_or_create(&l)
            .set(a.last_seen_unix_ms as f64 / 1000.0);
        if let Some(h) = state.health.latest(&a.site, &a.agent_id) {
            offset
                .get_or_create(&l)
                .set(h.clock_offset_ms as f64 / 1000.0);
            for v in &h.volumes {
                let vl = VolumeL {
                    site: a.site.clone(),
                    agent: a.agent_id.clone(),
                    volume: v.role.clone(),
                };
                free.get_or_create(&vl).set(v.free_bytes as f64);
                total.get_or_create(&vl).set(v.total_bytes as f64);
            }
        }
    }
    for id in state.catalog.identities().await? {
        if id.revoked_unix_ms.is_none() {
            cert.get_or_create(&AgentL {
                site: id.site,
                agent: id.agent_id,
            })
            .set(id.not_after_unix as f64);
        }
    }
    Ok(())
}
