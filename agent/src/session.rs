//! The agent's session with the controller: dial out, say hello, heartbeat, run the
//! commands that arrive, and reconnect with jittered exponential backoff when cut.

use std::sync::Arc;
use std::time::Duration;

use nex_backup_shared::pb::{self, agent_message::Msg, command::Kind, controller_message};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tracing::{Instrument, info, info_span, warn};

use crate::ctx::Ctx;
use crate::error::AgentError;
use crate::{backup, restore, trust};

const HEARTBEAT: Duration = Duration::from_secs(10);
/// Reconnect delays: from 0.5 s, doubling, up to 30 s (with jitter).
const RECONNECT_FIRST: Duration = Duration::from_millis(500);
const RECONNECT_MAX: Duration = Duration::from_secs(30);
const RENEW_CHECK: Duration = Duration::from_secs(5);

/// Keep a session up until shutdown.
pub async fn run(ctx: Arc<Ctx>) {
    let fresh = || nex_backup_shared::retry::delays(RECONNECT_FIRST, RECONNECT_MAX);
    let mut delays = fresh();
    while !ctx.shutdown.is_cancelled() {
        match session_once(&ctx).await {
            Ok(true) => delays = fresh(),
            Ok(false) => {}
            Err(e) => match expired(&ctx) {
                // The TLS layer only says "transport error": say what is wrong.
                Some(why) => tracing::error!(error = %e, "{why}"),
                None => warn!(error = %e, "session failed"),
            },
        }
        ctx.detach();
        let wait = delays.next().unwrap_or(RECONNECT_MAX);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {},
            _ = ctx.shutdown.cancelled() => break,
        }
    }
    info!("agent stopped");
}

fn hello(ctx: &Ctx) -> pb::AgentMessage {
    pb::AgentMessage {
        msg: Some(Msg::Hello(pb::Hello {
            site: ctx.site().into(),
            agent_id: ctx.agent_id.clone(),
            version: nex_backup_shared::VERSION.into(),
            targets: ctx
                .cfg
                .declared()
                .into_iter()
                .map(|(name, kind)| pb::TargetInfo { name, kind })
                .collect(),
            known_jobs: ctx.known_jobs(),
        })),
    }
}

/// One session. Ok(true) if it was established before it ended.
async fn session_once(ctx: &Arc<Ctx>) -> Result<bool, AgentError> {
    let (tx, rx) = mpsc::channel(256);
    tx.send(hello(ctx))
        .await
        .map_err(|_| "session queue closed")?;
    let mut inbound = ctx
        .client()
        .session(ReceiverStream::new(rx))
        .await
        .map_err(|s| format!("open session: {}", s.message()))?
        .into_inner();
    info!(site = %ctx.site(), agent = %ctx.agent_id, "connected to controller");
    ctx.attach(tx.clone());
    let hctx = ctx.clone();
    let heartbeat = tokio::spawn(async move {
        let pg = Arc::new(crate::health::PgFacts::default());
        let mut first = true;
        loop {
            // The first heartbeat comes soon, so the controller knows the host at once.
            let wait = if first {
                Duration::from_secs(1)
            } else {
                HEARTBEAT
            };
            first = false;
            pg.refresh_if_due(&hctx);
            tokio::time::sleep(wait).await;
            let health = {
                let (c, p) = (hctx.clone(), pg.clone());
                tokio::task::spawn_blocking(move || crate::health::report(&c, &p))
                    .await
                    .ok()
            };
            let hb = pb::AgentMessage {
                msg: Some(Msg::Heartbeat(pb::Heartbeat {
                    unix_ms: nex_backup_shared::clock::now_ms(),
                    health,
                })),
            };
            if tx.send(hb).await.is_err() {
                break;
            }
        }
    });
    let mut renew_check = tokio::time::interval(RENEW_CHECK);
    let res = loop {
        let msg = tokio::select! {
            m = inbound.message() => m,
            _ = renew_check.tick() => {
                if renew(ctx).await {
                    break Ok(true);
                }
                continue;
            }
            _ = ctx.shutdown.cancelled() => break Ok(true),
        };
        match msg {
            Ok(Some(pb::ControllerMessage {
                msg: Some(controller_message::Msg::Welcome(custody)),
            })) => on_welcome(ctx, custody).await,
            Ok(Some(m)) => on_message(ctx, m),
            Ok(None) => break Ok(true),
            Err(s) => break Err(format!("session: {}", s.message()).into()),
        }
    };
    heartbeat.abort();
    res.or_else(|e: AgentError| {
        warn!(error = %e, "session lost");
        Ok(true)
    })
}

fn on_message(ctx: &Arc<Ctx>, m: pb::ControllerMessage) {
    match m.msg {
        Some(controller_message::Msg::AckJob(job_id)) => ctx.ack(&job_id),
        Some(controller_message::Msg::Command(cmd)) => start(ctx, cmd),
        Some(controller_message::Msg::Welcome(_)) => warn!("repeated welcome ignored"),
        Some(controller_message::Msg::CancelJob(c)) => {
            if ctx.cancel(&c.job_id, &c.reason) {
                warn!(job = %c.job_id, reason = %c.reason, "job cancelled by the controller");
            }
        }
        None => warn!("empty message from controller"),
    }
}

/// Make sure every key epoch we hold is sealed to every recovery key before any command
/// of this session runs (commands wait in the stream meanwhile).
async fn on_welcome(ctx: &Arc<Ctx>, custody: pb::KeyCustody) {
    crate::custody::seal_keys(ctx, custody).await;
}

/// Why the session cannot work, if the agent's certificate has expired.
fn expired(ctx: &Ctx) -> Option<String> {
    let e = ctx
        .enrollment
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let (left, _) = e.remaining(nex_backup_shared::clock::unix_now());
    (left <= 0).then(|| {
        let when = jiff::Timestamp::from_second(e.not_after_unix)
            .map(|t| t.strftime("%Y-%m-%d %H:%M:%SZ").to_string())
            .unwrap_or_default();
        format!(
            "this agent's certificate expired at {when}: the controller refuses it. Re-enroll: an operator runs `nex-backup token create --site {site} --replace-agent {agent}`, then here `nex-backup-agent enroll --config <this config> --token <token> --ca-fingerprint <fingerprint>`",
            site = e.site,
            agent = ctx.agent_id
        )
    })
}

/// Renew the certificate if due. True when the session must reconnect with it.
async fn renew(ctx: &Arc<Ctx>) -> bool {
    let current = ctx
        .enrollment
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    match trust::renew_if_due(&ctx.cfg.state_dir, &current, &mut ctx.client()).await {
        Ok(Some((next, ch))) => {
            ctx.set_channel(ch);
            *ctx.enrollment.lock().unwrap_or_else(|p| p.into_inner()) = next;
            true
        }
        Ok(None) => false,
        Err(e) => {
            warn!(error = %format!("{e:#}"), "certificate renewal failed; will retry");
            false
        }
    }
}

fn start(ctx: &Arc<Ctx>, cmd: pb::Command) {
    if !ctx.start_job(&cmd.job_id) {
        info!(job = %cmd.job_id, "job already running or finished; ignoring repeated command");
        return;
    }
    let owner = ctx.clone();
    let abort_with = |id: &str, task: tokio::task::JoinHandle<()>| {
        owner.set_abort(id, task.abort_handle());
    };
    let ctx = ctx.clone();
    let job_id = cmd.job_id.clone();
    match cmd.kind {
        Some(Kind::Backup(b)) => {
            let span = info_span!("backup", site = %ctx.site(), target = %b.target, snapshot = %b.snapshot_id, job = %job_id);
            let task = tokio::spawn(
                async move {
                    info!("backup started");
                    let r = backup::run(ctx.clone(), job_id.clone(), b).await;
                    log_result("backup", &r);
                    ctx.finish(&job_id, r);
                }
                .instrument(span),
            );
            abort_with(&cmd.job_id, task);
        }
        Some(Kind::Restore(r)) => {
            let span = info_span!("restore", site = %ctx.site(), target = %r.target, snapshot = %r.snapshot_id, job = %job_id);
            let task = tokio::spawn(
                async move {
                    info!(database = %r.to_database, "restore started");
                    let res = restore::run(ctx.clone(), job_id.clone(), r).await;
                    log_result("restore", &res);
                    ctx.finish(&job_id, res);
                }
                .instrument(span),
            );
            abort_with(&cmd.job_id, task);
        }
        None => ctx.finish(
            &job_id,
            pb::JobResult {
                error: "command not understood by this agent version".into(),
                ..Default::default()
            },
        ),
    }
}

fn log_result(kind: &str, r: &pb::JobResult) {
    if r.ok {
        info!(
            bytes = r.logical_bytes,
            ms = r.duration_ms,
            "{kind} succeeded"
        );
    } else {
        warn!(error = %r.error, "{kind} failed");
    }
}
