//! Human-readable figures for CLI tables.

/// 1536 -> "1.5 KiB".
pub fn bytes(n: u64) -> String {
    crate::policy::human_bytes(n)
}

/// Milliseconds since the epoch, in the operator's zone: `NEX_TZ` if set (e.g.
/// Europe/Bratislava), else the system's (`TZ`, /etc/localtime). UTC prints as
/// "2026-11-28 16:40:05Z", another zone as "2026-11-28 17:40:05 CET".
pub fn time(unix_ms: u64) -> String {
    time_in(unix_ms, operator_zone())
}

fn time_in(unix_ms: u64, tz: jiff::tz::TimeZone) -> String {
    if unix_ms == 0 {
        return "-".into();
    }
    let Ok(t) = jiff::Timestamp::from_millisecond(unix_ms as i64) else {
        return "-".into();
    };
    if tz.iana_name().is_none_or(|n| n == "UTC" || n == "Etc/UTC")
        && tz.to_offset(t) == jiff::tz::Offset::UTC
    {
        return t.strftime("%Y-%m-%d %H:%M:%SZ").to_string();
    }
    t.to_zoned(tz).strftime("%Y-%m-%d %H:%M:%S %Z").to_string()
}

fn operator_zone() -> jiff::tz::TimeZone {
    std::env::var("NEX_TZ")
        .ok()
        .and_then(|z| jiff::tz::TimeZone::get(&z).ok())
        .unwrap_or_else(jiff::tz::TimeZone::system)
}

/// An age such as "3m12s" or "2d4h".
pub fn age(now_ms: u64, then_ms: u64) -> String {
    if then_ms == 0 {
        return "-".into();
    }
    let s = now_ms.saturating_sub(then_ms) / 1000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{}s", s / 60, s % 60),
        3600..86400 => format!("{}h{}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{}h", s / 86400, (s % 86400) / 3600),
    }
}

/// A host's health in one cell: "load 0.4/2, mem 61%, disk 12.3 GiB free (pg_data main)".
pub fn health(h: Option<&nex_backup_shared::pb::HostHealth>) -> String {
    let Some(h) = h else { return "-".into() };
    let mem = (h.mem_used_bytes.saturating_mul(100))
        .checked_div(h.mem_total_bytes)
        .map_or("-".into(), |p| format!("{p}%"));
    let disk = h
        .volumes
        .iter()
        .min_by_key(|v| v.free_bytes)
        .map(|v| format!("{} free ({})", bytes(v.free_bytes), v.role))
        .unwrap_or_else(|| "-".into());
    let mut s = format!(
        "load {:.1}/{}, mem {mem}, disk {disk}",
        h.cpu_load_1m, h.cpus
    );
    if h.clock_offset_ms.abs() >= 2000 {
        s.push_str(&format!(
            ", clock {:+.1}s",
            h.clock_offset_ms as f64 / 1000.0
        ));
    }
    s
}

/// A host's health for `--json`.
pub fn health_json(h: Option<&nex_backup_shared::pb::HostHealth>) -> serde_json::Value {
    let Some(h) = h else {
        return serde_json::Value::Null;
    };
    serde_json::json!({
        "cpu_load_1m": h.cpu_load_1m, "cpus": h.cpus, "mem_total_bytes": h.mem_total_bytes,
        "mem_used_bytes": h.mem_used_bytes, "os": h.os, "clock_offset_ms": h.clock_offset_ms,
        "at_unix_ms": h.at_unix_ms,
        "volumes": h.volumes.iter().map(|v| serde_json::json!({"role": v.role, "path": v.path,
            "free_bytes": v.free_bytes, "total_bytes": v.total_bytes})).collect::<Vec<_>>(),
        "pg_versions": h.pg_versions.iter().map(|p| serde_json::json!({"target": p.target,
            "version": p.version})).collect::<Vec<_>>(),
    })
}

/// How a job's kind, state and trigger are printed (the same words the catalog keeps).
pub fn job_kind(k: i32) -> &'static str {
    use nex_backup_shared::pb::JobKind as K;
    match K::try_from(k).unwrap_or_default() {
        K::Backup => "backup",
        K::Restore => "restore",
        K::Verify => "verify",
        K::Inspect => "inspect",
        K::Unspecified => "?",
    }
}

pub fn job_state(s: i32) -> &'static str {
    use nex_backup_shared::pb::JobStatus as S;
    match S::try_from(s).unwrap_or_default() {
        S::Running => "running",
        S::Succeeded => "succeeded",
        S::Failed => "failed",
        S::Unspecified => "",
    }
}

pub fn job_trigger(t: i32) -> &'static str {
    use nex_backup_shared::pb::JobTrigger as T;
    match T::try_from(t).unwrap_or_default() {
        T::Manual => "manual",
        T::Schedule => "schedule",
        T::Retry => "retry",
        T::Drill => "drill",
        T::Unspecified => "?",
    }
}

/// Render rows as a left-aligned table with a header: columns two spaces apart, no
/// borders (comfy-table), trailing spaces trimmed.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    debug_assert!(rows.iter().all(|r| r.len() == header.len()), "ragged table");
    let mut t = comfy_table::Table::new();
    t.load_preset(comfy_table::presets::NOTHING)
        .set_content_arrangement(comfy_table::ContentArrangement::Disabled)
        .set_header(header.iter().copied())
        .add_rows(rows.iter().cloned());
    let last = header.len().saturating_sub(1);
    for (i, c) in t.column_iter_mut().enumerate() {
        c.set_padding((0, if i == last { 0 } else { 2 }));
    }
    t.lines()
        .map(|l| l.trim_end().to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures() {
        assert_eq!(bytes(10), "10 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(1024), "1.0 KiB");
        assert_eq!(bytes(2 << 20), "2.0 MiB");
        assert_eq!(bytes(493_977), "482.4 KiB");
        assert_eq!(age(200_000, 10_000), "3m10s");
        assert_eq!(time(0), "-");
        let utc = jiff::tz::TimeZone::UTC;
        assert_eq!(time_in(1_796_000_000_000, utc), "2026-11-30 00:53:20Z");
        let cet = jiff::tz::TimeZone::get("Europe/Bratislava").unwrap();
        assert_eq!(time_in(1_796_000_000_000, cet), "2026-11-30 01:53:20 CET");
        assert_eq!(
            table(&["a", "bb"], &[vec!["xxx".into(), "y".into()]]),
            "a    bb\nxxx  y"
        );
    }
}
