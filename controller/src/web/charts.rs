//! Charts as SVG rendered on the server (no script, no library): a line or bar series
//! over time with an optional threshold line (RPO, RTO), and a compliance calendar of
//! one cell per day. Each chart names itself for screen readers and says its figures
//! in text as well; colour is never the only carrier.

use maud::{Markup, html};

use crate::rpo::RpoEvent;

const W: f64 = 640.0;
const H: f64 = 180.0;
const PAD_L: f64 = 56.0;
const PAD_B: f64 = 22.0;
const PAD_T: f64 = 10.0;

/// How a chart draws its points.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Style {
    Line,
    Bars,
}

/// One series: (unix ms, value) points, oldest first.
pub struct Series<'a> {
    pub title: &'a str,
    pub points: Vec<(u64, f64)>,
    /// A horizontal line (an objective), with its label.
    pub threshold: Option<(f64, String)>,
    /// Formats a value for the axis and the text summary.
    pub fmt: &'a dyn Fn(f64) -> String,
    pub style: Style,
}

fn x_of(t: u64, t0: u64, t1: u64) -> f64 {
    let span = (t1.saturating_sub(t0)).max(1) as f64;
    PAD_L + (t.saturating_sub(t0)) as f64 / span * (W - PAD_L - 8.0)
}

fn y_of(v: f64, max: f64) -> f64 {
    let inner = H - PAD_B - PAD_T;
    H - PAD_B - (v / max.max(f64::MIN_POSITIVE)).clamp(0.0, 1.0) * inner
}

fn day(t: u64) -> String {
    jiff::Timestamp::from_millisecond(i64::try_from(t).unwrap_or(0))
        .map(|t| t.strftime("%m-%d").to_string())
        .unwrap_or_default()
}

/// A series as an SVG chart, with its summary in text beneath.
pub fn chart(s: &Series) -> Markup {
    if s.points.is_empty() {
        return html! { figure.chart { figcaption { (s.title) ": no data yet" } } };
    }
    let t0 = s.points.first().map_or(0, |p| p.0);
    let t1 = s.points.last().map_or(0, |p| p.0).max(t0 + 1);
    let top = s
        .points
        .iter()
        .map(|p| p.1)
        .chain(s.threshold.as_ref().map(|t| t.0))
        .fold(0.0_f64, f64::max)
        * 1.1;
    let path: String = s
        .points
        .iter()
        .map(|(t, v)| format!("{:.1},{:.1}", x_of(*t, t0, t1), y_of(*v, top)))
        .collect::<Vec<_>>()
        .join(" ");
    let last = s.points.last().map_or(0.0, |p| p.1);
    let peak = s.points.iter().map(|p| p.1).fold(0.0_f64, f64::max);
    let bar_w = ((W - PAD_L - 8.0) / s.points.len() as f64 * 0.7).clamp(1.0, 24.0);
    let label = format!(
        "{}: {} points, latest {}, highest {}",
        s.title,
        s.points.len(),
        (s.fmt)(last),
        (s.fmt)(peak)
    );
    html! {
        figure.chart {
            svg viewBox=(format!("0 0 {W} {H}")) role="img" aria-label=(label) preserveAspectRatio="none" {
                title { (label) }
                line.axis x1=(PAD_L) y1=(H - PAD_B) x2=(W - 4.0) y2=(H - PAD_B) {}
                line.axis x1=(PAD_L) y1=(PAD_T) x2=(PAD_L) y2=(H - PAD_B) {}
                text.tick x=(PAD_L - 4.0) y=(PAD_T + 8.0) text-anchor="end" { ((s.fmt)(top)) }
                text.tick x=(PAD_L - 4.0) y=(H - PAD_B) text-anchor="end" { "0" }
                text.tick x=(PAD_L) y=(H - 6.0) { (day(t0)) }
                text.tick x=(W - 8.0) y=(H - 6.0) text-anchor="end" { (day(t1)) }
                @if let Some((v, name)) = &s.threshold {
                    line.threshold x1=(PAD_L) y1=(y_of(*v, top)) x2=(W - 4.0) y2=(y_of(*v, top)) {}
                    text.tick x=(W - 8.0) y=(y_of(*v, top) - 3.0) text-anchor="end" { (name) }
                }
                @match s.style {
                    Style::Line => { polyline.series points=(path) {} }
                    Style::Bars => {
                        @for (t, v) in &s.points {
                            rect.bar x=(format!("{:.1}", x_of(*t, t0, t1) - bar_w / 2.0)) y=(format!("{:.1}", y_of(*v, top)))
                                width=(format!("{bar_w:.1}")) height=(format!("{:.1}", (H - PAD_B - y_of(*v, top)).max(0.5))) {}
                        }
                    }
                }
            }
            figcaption { (label) }
        }
    }
}

/// A small line of percentages (0-100), with its last value in text.
pub fn sparkline(label: &str, values: &[f64]) -> Markup {
    let n = values.len().max(2) as f64;
    let pts: String = values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            format!(
                "{:.1},{:.1}",
                i as f64 * 100.0 / (n - 1.0),
                20.0 - v.clamp(0.0, 100.0) / 5.0
            )
        })
        .collect::<Vec<_>>()
        .join(" ");
    let last = values.last().copied().unwrap_or(0.0);
    let text = format!("{label} {last:.0}%");
    html! {
        span.spark {
            svg viewBox="0 0 100 20" role="img" aria-label=(format!("{text}, last {} reports", values.len())) preserveAspectRatio="none" {
                polyline.series points=(pts) {}
            }
            span { (text) }
        }
    }
}

/// The age (ms) of the newest good snapshot, sampled every hour over `[from, now]`,
/// from the good snapshots' times (sorted).
pub fn age_series(good: &[u64], from: u64, now: u64) -> Vec<(u64, f64)> {
    let mut out = vec![];
    let mut t = from;
    while t <= now {
        let newest = good.iter().rev().find(|g| **g <= t);
        if let Some(g) = newest {
            out.push((t, (t - g) as f64));
        }
        t += 3_600_000;
    }
    out
}

/// One compliance cell per day of the last `days`, from the target's recorded RPO
/// events (oldest first): the share of the day in compliance, or `None` before the
/// first event.
pub fn calendar_days(events: &[RpoEvent], days: u64, now: u64) -> Vec<(u64, Option<f64>)> {
    let first = events.first().map(|e| e.at_unix_ms);
    let today = now - now % 86_400_000;
    (0..days)
        .rev()
        .map(|d| {
            let start = today - d * 86_400_000;
            let end = (start + 86_400_000).min(now);
            let pct = first
                .filter(|f| *f < end)
                .map(|_| crate::rpo::compliance(events, start, end).0);
            (start, pct)
        })
        .collect()
}

pub fn calendar(cells: &[(u64, Option<f64>)]) -> Markup {
    html! {
        figure.chart {
            ol.calendar aria-label="Compliance per day, oldest first" {
                @for (day_ms, pct) in cells {
                    @match pct {
                        None => li.cal-none title=(format!("{}: no data", day(*day_ms))) { span { (day(*day_ms)) } span { "–" } }
                        Some(p) if *p >= 99.95 => li.cal-ok title=(format!("{}: in compliance all day", day(*day_ms))) { span { (day(*day_ms)) } span { "✔ 100%" } }
                        Some(p) => li.cal-bad title=(format!("{}: {p:.0}% in compliance", day(*day_ms))) { span { (day(*day_ms)) } span { "✖ " (format!("{p:.0}%")) } }
                    }
                }
            }
            figcaption { "RPO compliance per day, the last " (cells.len()) " days" }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_age_saws_up_and_drops_at_each_good_snapshot() {
        let h = 3_600_000;
        let s = age_series(&[0, 5 * h], 0, 7 * h);
        let ages: Vec<u64> = s.iter().map(|p| (p.1 / h as f64) as u64).collect();
        assert_eq!(ages, [0, 1, 2, 3, 4, 0, 1, 2]);
        let html = chart(&Series {
            title: "t",
            points: s,
            threshold: Some((2.0 * h as f64, "RPO".into())),
            fmt: &|v| format!("{v}"),
            style: Style::Line,
        })
        .into_string();
        assert!(html.contains("<polyline") && html.contains("threshold"));
    }
}
