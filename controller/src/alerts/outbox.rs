//! The outbox worker: delivers queued notices, at least once. A notice leaves the
//! outbox only after its channel accepted it; a failure is retried with exponential
//! backoff (capped), across restarts, for up to [`GIVE_UP_MS`]. Each notice keeps its
//! Message-ID (and webhook idempotency key) through every retry, so receivers can drop
//! a duplicate after a crash between the send and the record of it.

use std::time::Duration;

use tracing::{error, info, warn};

use super::send::deliver;
use crate::catalog::CatalogError;
use crate::catalog::alerts::OutboxEntry;
use crate::events::Event;
use crate::state::State;

/// A notice undelivered this long is dropped (with an error in the log).
pub const GIVE_UP_MS: u64 = 7 * 24 * 3600 * 1000;
/// Notices sent per pass at most (the rest wait for the next pass).
const PER_PASS: usize = 100;

/// The delay after `attempts` failed attempts (the one retry policy, without jitter so
/// that the stored next attempt time is what a restart would compute).
pub fn backoff(attempts: u32, max: Duration) -> Duration {
    nex_backup_shared::retry::nth_delay(Duration::from_secs(1), max, attempts.saturating_sub(1))
}

/// One pass over the due notices.
pub async fn pass(state: &State, retry_max: Duration) -> Result<(), CatalogError> {
    let now = nex_backup_shared::clock::now_ms();
    let channels = state.alerts.channels().await?;
    let due: Vec<OutboxEntry> = state
        .alerts
        .outbox()
        .await?
        .into_iter()
        .filter(|e| e.next_attempt_unix_ms <= now)
        .take(PER_PASS)
        .collect();
    for mut e in due {
        let Some(ch) = channels.iter().find(|c| c.name == e.channel) else {
            warn!(notice = %e.message_id, channel = %e.channel, "channel removed; notice dropped");
            state.alerts.delivered(e.id).await?;
            continue;
        };
        match deliver(ch, &e).await {
            Ok(answer) => {
                state.alerts.delivered(e.id).await?;
                info!(notice = %e.message_id, channel = %e.channel, kind = %e.kind,
                    attempts = e.attempts + 1, %answer, "notice delivered");
                state.events.publish(Event::NotificationSent {
                    channel: e.channel.clone(),
                    ok: true,
                });
            }
            Err(err) => {
                e.attempts += 1;
                e.last_error = err.to_string();
                let now = nex_backup_shared::clock::now_ms();
                if now.saturating_sub(e.created_unix_ms) > GIVE_UP_MS {
                    error!(notice = %e.message_id, channel = %e.channel, attempts = e.attempts,
                        error = %err, "notice undeliverable for a week; dropped");
                    state.alerts.delivered(e.id).await?;
                } else {
                    let wait = backoff(e.attempts, retry_max);
                    e.next_attempt_unix_ms = now + wait.as_millis() as u64;
                    warn!(notice = %e.message_id, channel = %e.channel, attempts = e.attempts,
                        retry_in = ?wait, error = %err, "notice not delivered; will retry");
                    state.alerts.put_outbox(&e).await?;
                }
                state.events.publish(Event::NotificationSent {
                    channel: e.channel.clone(),
                    ok: false,
                });
            }
        }
    }
    Ok(())
}
