//! What belongs to a site rather than to one of its targets: when its uplink may be used
//! (the backup window), how much of it (the upload bandwidth limit), and which agent
//! rehearses its restores.
//!
//! A [`Window`] is a daily wall-clock range in the site's time zone, such as
//! `22:00-06:00` (it may cross midnight). Scheduled backups and drills start only inside
//! it, and an agent stops a backup still running when it closes. On a DST change the
//! window follows the wall clock: a start time skipped by the change opens the window at
//! the first valid minute after the gap; a repeated one opens it at the first occurrence.

use std::str::FromStr;

use chrono::{Duration, LocalResult, NaiveDate, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use super::{PolicyError, err};

/// A site's settings (see module docs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SitePolicy {
    pub v: u32,
    /// `HH:MM-HH:MM`, or none: backups may run at any time.
    pub window: Option<String>,
    /// IANA time zone the window is read in.
    pub timezone: String,
    /// Upload bandwidth limit of each of the site's agents, bytes per second; 0 = none.
    pub bandwidth_bytes_per_sec: u64,
    /// The agent that runs the site's restore drills; none = the agent of the target.
    pub drill_agent: Option<String>,
    /// Retention lock: no snapshot of the site is deleted before it is this old, whatever
    /// a policy says. Only an operator changes it, and every change is audited.
    #[serde(default = "default_lock")]
    pub retention_lock_secs: u64,
    /// `HH:MM-HH:MM` in `timezone`: when scheduled restore drills may start (a drill is
    /// a full restore on the customer's server); none = at any time (within the
    /// window). Sites without a setting get [`DEFAULT_DRILL_HOURS`].
    #[serde(default = "default_drill_hours")]
    pub drill_hours: Option<String>,
}

/// When scheduled drills start by default: the small hours, site time.
pub const DEFAULT_DRILL_HOURS: &str = "01:00-05:00";

fn default_drill_hours() -> Option<String> {
    Some(DEFAULT_DRILL_HOURS.into())
}

/// The retention lock of a site without settings: 7 days.
pub const DEFAULT_RETENTION_LOCK_SECS: u64 = 7 * 24 * 3600;

fn default_lock() -> u64 {
    DEFAULT_RETENTION_LOCK_SECS
}

impl Default for SitePolicy {
    fn default() -> Self {
        SitePolicy {
            v: 1,
            window: None,
            timezone: "UTC".into(),
            bandwidth_bytes_per_sec: 0,
            drill_agent: None,
            retention_lock_secs: DEFAULT_RETENTION_LOCK_SECS,
            drill_hours: default_drill_hours(),
        }
    }
}

impl SitePolicy {
    /// Check every field; returns the window, ready to evaluate.
    pub fn validate(&self) -> Result<Option<Window>, PolicyError> {
        let tz = Tz::from_str(&self.timezone)
            .map_err(|_| err("timezone", format!("unknown time zone {:?}", self.timezone)))?;
        if let Some(agent) = &self.drill_agent {
            nex_backup_shared::ids::AgentId::try_from(agent.as_str())
                .map_err(|e| err("drill-agent", e.to_string()))?;
        }
        if let Some(h) = &self.drill_hours {
            Window::parse(h, tz).map_err(|e| err("drill-hours", e.reason))?;
        }
        self.window
            .as_deref()
            .map(|w| Window::parse(w, tz))
            .transpose()
    }

    /// Whether a scheduled drill may start at `now`: inside the backup window (if any)
    /// and inside the drill hours (if any).
    pub fn drills_allowed(&self, now: u64) -> bool {
        let Ok(tz) = Tz::from_str(&self.timezone) else {
            return false;
        };
        let open = |w: &Option<String>| {
            w.as_deref()
                .is_none_or(|w| Window::parse(w, tz).is_ok_and(|w| w.open_until(now).is_some()))
        };
        open(&self.window) && open(&self.drill_hours)
    }

    /// The window, if one is set and valid (a stored policy was validated when set).
    pub fn window(&self) -> Option<Window> {
        self.validate().ok().flatten()
    }

    /// Whether backups may run at `now`, and when that next changes (0: never, there is
    /// no window).
    pub fn window_state(&self, now: u64) -> (bool, u64) {
        match self.window() {
            None => (true, 0),
            Some(w) => match w.open_until(now) {
                Some(close) => (true, close),
                None => (false, w.next_open(now)),
            },
        }
    }
}

/// A daily backup window (see module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    start: NaiveTime,
    end: NaiveTime,
    tz: Tz,
}

fn parse_hm(s: &str, text: &str) -> Result<NaiveTime, PolicyError> {
    NaiveTime::parse_from_str(s.trim(), "%H:%M").map_err(|_| {
        err(
            "window",
            format!("{text:?}: expected HH:MM-HH:MM, e.g. 22:00-06:00"),
        )
    })
}

impl Window {
    pub fn parse(text: &str, tz: Tz) -> Result<Self, PolicyError> {
        let (a, b) = text.split_once('-').ok_or_else(|| {
            err(
                "window",
                format!("{text:?}: expected HH:MM-HH:MM, e.g. 22:00-06:00"),
            )
        })?;
        let (start, end) = (parse_hm(a, text)?, parse_hm(b, text)?);
        if start == end {
            return Err(err(
                "window",
                format!(
                    "{text:?} is empty: start and end are equal (use --window none for no window)"
                ),
            ));
        }
        Ok(Window { start, end, tz })
    }

    /// The instant local `time` on `date` happens; a time skipped by a DST change moves
    /// to the first valid minute after the gap, a repeated one is its first occurrence.
    fn instant(&self, date: NaiveDate, time: NaiveTime) -> u64 {
        let mut local = date.and_time(time);
        for _ in 0..=240 {
            match self.tz.from_local_datetime(&local) {
                LocalResult::Single(t) | LocalResult::Ambiguous(t, _) => {
                    return t.timestamp_millis().max(0) as u64;
                }
                LocalResult::None => local += Duration::minutes(1),
            }
        }
        local.and_utc().timestamp_millis().max(0) as u64
    }

    /// The window that opens on local `date`: (opens, closes).
    fn on(&self, date: NaiveDate) -> (u64, u64) {
        let end_date = if self.end > self.start {
            date
        } else {
            date.succ_opt().unwrap_or(date)
        };
        (
            self.instant(date, self.start),
            self.instant(end_date, self.end),
        )
    }

    fn local_date(&self, ms: u64) -> NaiveDate {
        Utc.timestamp_millis_opt(ms as i64)
            .single()
            .unwrap_or_default()
            .with_timezone(&self.tz)
            .date_naive()
    }

    /// When the window is open at `ms`: the instant it closes.
    pub fn open_until(&self, ms: u64) -> Option<u64> {
        let today = self.local_date(ms);
        [today.pred_opt(), Some(today)]
            .into_iter()
            .flatten()
            .map(|d| self.on(d))
            .find(|(open, close)| *open <= ms && ms < *close)
            .map(|(_, close)| close)
    }

    /// The first instant at or after `ms` at which the window is open.
    pub fn next_open(&self, ms: u64) -> u64 {
        if self.open_until(ms).is_some() {
            return ms;
        }
        let today = self.local_date(ms);
        [
            Some(today),
            today.succ_opt(),
            today.succ_opt().and_then(|d| d.succ_opt()),
        ]
        .into_iter()
        .flatten()
        .map(|d| self.on(d).0)
        .filter(|open| *open > ms)
        .min()
        .unwrap_or(ms)
    }
}

#[cfg(test)]
mod tests;
