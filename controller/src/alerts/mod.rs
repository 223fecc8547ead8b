//! Alerts: rules that watch the fleet, durable incidents, and notices delivered by
//! e-mail and webhook through a durable outbox.
//!
//! - [`rules`]: the rules, their defaults and overrides, and the conditions that hold.
//! - [`engine`]: incidents from conditions (open, remind, resolve), written atomically
//!   with their notices.
//! - [`notice`]: what a notice says (subject, text, HTML, webhook JSON).
//! - [`send`]: delivery to one channel (SMTP, signed webhook).
//! - [`outbox`]: the delivery worker, with retries and backoff.
//! - [`summary`]: the daily summary and weekly report by e-mail.

pub mod engine;
pub mod notice;
pub mod outbox;
pub mod rules;
pub mod send;
pub mod summary;

use std::sync::Arc;
use std::time::Duration;

use crate::state::State;

/// The alerting tunables.
#[derive(Debug, Clone)]
pub struct AlertConfig {
    /// How often the rules are evaluated (also after every domain event, at most once a second).
    pub every: Duration,
    /// The longest wait between two delivery attempts of a notice.
    pub retry_max: Duration,
}

impl Default for AlertConfig {
    fn default() -> Self {
        AlertConfig {
            every: Duration::from_secs(10),
            retry_max: Duration::from_secs(300),
        }
    }
}

/// Start the `alerts` (rule evaluation) and `notifier` (outbox delivery) workers. The
/// rules are re-evaluated after domain events (a failed job, an agent gone, a new RPO
/// state) as well as on their interval.
pub fn spawn(state: &Arc<State>, cfg: AlertConfig) {
    let wake = Arc::new(tokio::sync::Notify::new());
    let (st, w) = (state.clone(), wake.clone());
    state.workers.spawn("alert-events", move |ctx| async move {
        let mut rx = st.events.subscribe();
        loop {
            tokio::select! {
                _ = ctx.stop.cancelled() => return,
                e = rx.recv() => match e {
                    Ok(e) if !matches!(*e, crate::events::Event::NotificationSent { .. } | crate::events::Event::HostHealth { .. }) => w.notify_one(),
                    Ok(_) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => w.notify_one(),
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                },
            }
        }
    });
    let engine = Arc::new(engine::Engine::default());
    let st = state.clone();
    state
        .workers
        .periodic("alerts", cfg.every, Some(wake), move || {
            let (st, engine) = (st.clone(), engine.clone());
            async move {
                let r = engine.run(&st, nex_backup_shared::clock::now_ms()).await;
                // At most one evaluation a second, however many events arrive.
                tokio::time::sleep(Duration::from_secs(1)).await;
                r
            }
        });
    let st = state.clone();
    state
        .workers
        .periodic("summary", Duration::from_secs(30), None, move || {
            let st = st.clone();
            async move { summary::tick(&st).await }
        });
    let st = state.clone();
    let retry_max = cfg.retry_max;
    state.workers.periodic(
        "notifier",
        Duration::from_secs(1),
        Some(state.outbox_wake.clone()),
        move || {
            let st = st.clone();
            async move { outbox::pass(&st, retry_max).await }
        },
    );
}
