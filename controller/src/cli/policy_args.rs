//! The flags of `policy set`, shared by the target policy and the site settings commands.

use std::time::Duration;

use clap::Args;

use super::ClientOpts;
use super::trust::parse_duration;

#[derive(Debug, Args)]
pub struct PolicySetArgs {
    /// The customer site, e.g. acme.
    #[arg(long)]
    pub site: String,
    /// The target; without it the command sets the site's own settings.
    #[arg(long)]
    pub target: Option<String>,
    /// Cron expression, five fields, e.g. "30 1 * * *".
    #[arg(long)]
    pub schedule: Option<String>,
    /// IANA time zone, e.g. Europe/Bratislava: of the schedule and retention days (with
    /// --target), or of the backup window (without).
    #[arg(long)]
    pub timezone: Option<String>,
    /// Site: daily backup window in its time zone, e.g. 22:00-06:00; "none" removes it.
    #[arg(long)]
    pub window: Option<String>,
    /// Site: the agent that runs its restore drills; "none" = each target's own agent.
    #[arg(long)]
    pub drill_agent: Option<String>,
    /// Site: when scheduled restore drills may start, in its time zone, e.g. 01:00-05:00
    /// (the default); "any" = whenever the backup window is open.
    #[arg(long)]
    pub drill_hours: Option<String>,
    /// Site: upload bandwidth limit, e.g. 512KiB, 2MiB (per second); 0 = none.
    #[arg(long, value_parser = parse_rate)]
    pub bandwidth: Option<u64>,
    /// Recovery point objective: the newest good snapshot must be younger, e.g. 24h.
    #[arg(long, value_parser = parse_duration)]
    pub rpo: Option<Duration>,
    /// Recovery time objective: a restore drill must finish within it, e.g. 1h.
    #[arg(long, value_parser = parse_duration)]
    pub rto: Option<Duration>,
    /// Keep the newest good snapshot of each of the last N days.
    #[arg(long)]
    pub keep_daily: Option<u32>,
    /// Keep the newest good snapshot of each of the last N weeks.
    #[arg(long)]
    pub keep_weekly: Option<u32>,
    /// Keep the newest good snapshot of each of the last N months.
    #[arg(long)]
    pub keep_monthly: Option<u32>,
    /// Keep the newest N good snapshots.
    #[arg(long)]
    pub keep_last: Option<u32>,
    /// Rehearse a restore this often (e.g. 7d); 0 disables drills.
    #[arg(long, value_parser = parse_drill)]
    pub drill_every: Option<Duration>,
    /// Always keep this many of the newest drill-verified snapshots (default 3).
    #[arg(long)]
    pub keep_verified: Option<u32>,
    /// Site: retention lock, e.g. 7d: no snapshot is deleted before this age, whatever a
    /// policy says. Every change is audited (`nex-backup audit`).
    #[arg(long, value_parser = parse_lock)]
    pub retention_lock: Option<Duration>,
    /// Accept an RPO shorter than the schedule's interval.
    #[arg(long)]
    pub force: bool,
    /// Create settings for a site or target that no agent declares yet (without it, an
    /// unknown name is refused as a probable typo).
    #[arg(long)]
    pub create: bool,
    #[command(flatten)]
    pub client: ClientOpts,
}

/// A lock may be 0 (no lock).
fn parse_lock(s: &str) -> Result<Duration, super::trust::BadValue> {
    super::trust::parse_duration_or_zero(s)
}

/// The flags of `pairs` that were given.
fn given(pairs: &[(&'static str, bool)]) -> Vec<&'static str> {
    pairs.iter().filter(|(_, g)| *g).map(|(f, _)| *f).collect()
}

impl PolicySetArgs {
    /// Site settings given (they need no --target).
    pub fn site_flags(&self) -> Vec<&'static str> {
        given(&[
            ("--window", self.window.is_some()),
            ("--bandwidth", self.bandwidth.is_some()),
            ("--drill-agent", self.drill_agent.is_some()),
            ("--drill-hours", self.drill_hours.is_some()),
            ("--retention-lock", self.retention_lock.is_some()),
        ])
    }

    /// Target settings given (they need --target).
    pub fn target_flags(&self) -> Vec<&'static str> {
        given(&[
            ("--schedule", self.schedule.is_some()),
            ("--rpo", self.rpo.is_some()),
            ("--rto", self.rto.is_some()),
            ("--keep-daily", self.keep_daily.is_some()),
            ("--keep-weekly", self.keep_weekly.is_some()),
            ("--keep-monthly", self.keep_monthly.is_some()),
            ("--keep-last", self.keep_last.is_some()),
            ("--keep-verified", self.keep_verified.is_some()),
            ("--drill-every", self.drill_every.is_some()),
            ("--force", self.force),
        ])
    }
}

pub(super) use crate::policy::durations::parse_rate;

fn parse_drill(s: &str) -> Result<Duration, super::trust::BadValue> {
    if s.trim() == "0" {
        Ok(Duration::ZERO)
    } else {
        parse_duration(s)
    }
}
