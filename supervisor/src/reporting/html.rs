//! `nightshift report --html`: one self-contained page (inline SVG, CSS and a
//! few lines of script; nothing fetched from outside) with a timeline of every
//! agent attempt grouped by segment and orchestrator and coloured by outcome,
//! the run's total memory over time against its ceiling, and the failures.

use std::fmt::Write as _;
use std::time::SystemTime;

use serde_json::Value;

use shared::plan::Plan;

use crate::reporting::failures::reason_kind;
use crate::reporting::status::RunStatus;
use crate::reporting::timeline::Timeline;
use crate::reporting::view::{short_duration, size};

const LABEL_WIDTH: f64 = 230.0;
const CHART_WIDTH: f64 = 860.0;
const ROW: f64 = 16.0;

pub(crate) fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn seconds_between(from: SystemTime, to: SystemTime) -> f64 {
    to.duration_since(from).map_or(0.0, |d| d.as_secs_f64())
}

pub fn render(
    plan: &Plan,
    status: &RunStatus,
    timeline: &Timeline,
    report: Option<&Value>,
) -> String {
    let mut page = String::new();
    let _ = write!(
        page,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>nightshift report: {job}</title>\n<style>{CSS}</style></head>\n<body>\n<h1>{job}</h1>\n<p class=\"summary\">{state} · {done} of {total} items · {failed} failed · run directory <code>{dir}</code></p>\n",
        job = escape(&plan.job),
        state = escape(status.state),
        done = status.items.done,
        total = status.items.total,
        failed = status.items.failed,
        dir = escape(&status.run_dir),
    );
    page.push_str(&crate::reporting::cost::html_section(
        &status.usage,
        status.cost,
        status.projected_cost,
        &status.segments,
    ));
    page.push_str(&status.cache.html_section());
    page.push_str(&timeline_svg(plan, timeline));
    if let Some(memory) = report.map(|r| &r["memory"]) {
        page.push_str(&memory_svg(memory, timeline));
    }
    page.push_str(&failed_items_table(status, report));
    page.push_str(&failures_table(timeline, report));
    page.push_str(SCRIPT);
    page.push_str("</body></html>\n");
    page
}

fn timeline_svg(plan: &Plan, timeline: &Timeline) -> String {
    let (Some(first), Some(last)) = (timeline.first, timeline.last) else {
        return "<h2>Timeline</h2><p>No agent has been launched yet.</p>\n".to_owned();
    };
    let span = seconds_between(first, last).max(0.001);
    let x = |t: SystemTime| LABEL_WIDTH + seconds_between(first, t) / span * CHART_WIDTH;
    let mut rows = String::new();
    let mut y = 24.0;
    for segment in &plan.segments {
        let _ = writeln!(
            rows,
            "<text class=\"group\" x=\"4\" y=\"{:.1}\">segment {}</text>",
            y + 12.0,
            segment.number
        );
        y += ROW + 4.0;
        for orchestrator in &segment.orchestrators {
            let _ = writeln!(
                rows,
                "<text class=\"subgroup\" x=\"14\" y=\"{:.1}\">orch {}</text>",
                y + 12.0,
                orchestrator.number
            );
            y += ROW;
            for agent in &orchestrator.agents {
                let _ = writeln!(
                    rows,
                    "<text class=\"agent\" x=\"28\" y=\"{:.1}\">{}</text>",
                    y + 11.0,
                    escape(&agent.name)
                );
                for bar in timeline.bars.iter().filter(|b| b.agent == agent.name) {
                    let start = x(bar.start);
                    let end = x(bar.end.unwrap_or(last));
                    let width = (end - start).max(2.0);
                    let seconds = seconds_between(bar.start, bar.end.unwrap_or(last));
                    let _ = writeln!(
                        rows,
                        "<rect class=\"bar {outcome}\" id=\"{anchor}\" x=\"{start:.1}\" y=\"{top:.1}\" width=\"{width:.1}\" height=\"{h:.1}\"><title>{name} attempt {attempt}: {outcome} ({detail}), {secs}</title></rect>",
                        outcome = escape(&bar.outcome),
                        top = y + 2.0,
                        h = ROW - 4.0,
                        name = escape(&bar.agent),
                        attempt = bar.attempt,
                        anchor = attempt_anchor(&bar.agent, bar.attempt),
                        detail = escape(&bar.detail),
                        secs = short_duration(std::time::Duration::from_secs_f64(seconds)),
                    );
                }
                y += ROW;
            }
        }
    }
    let height = y + 10.0;
    let legend: String = [
        "succeeded",
        "failed",
        "crashed",
        "killed",
        "shutdown",
        "interrupted",
        "running",
    ]
    .iter()
    .map(|o| format!("<span class=\"key {o}\"></span>{o} "))
    .collect();
    format!(
        "<h2>Timeline</h2>\n<p class=\"legend\">{legend} · {span} in all</p>\n<svg class=\"timeline\" width=\"{w}\" height=\"{height:.0}\" viewBox=\"0 0 {w} {height:.0}\">\n<line class=\"axis\" x1=\"{LABEL_WIDTH}\" y1=\"16\" x2=\"{LABEL_WIDTH}\" y2=\"{height:.0}\"/>\n<text class=\"tick\" x=\"{LABEL_WIDTH}\" y=\"12\">0s</text><text class=\"tick\" x=\"{end:.0}\" y=\"12\" text-anchor=\"end\">{span}</text>\n{rows}{marks}</svg>\n",
        marks = resume_marks(timeline, &x, 16.0, height),
        span = short_duration(std::time::Duration::from_secs_f64(span)),
        w = LABEL_WIDTH + CHART_WIDTH + 10.0,
        end = LABEL_WIDTH + CHART_WIDTH,
    )
}

/// A dashed line where each later supervisor session took the run up again
/// (the gap before it is the interruption), on both charts' shared axis.
fn resume_marks(
    timeline: &Timeline,
    x: &dyn Fn(SystemTime) -> f64,
    top: f64,
    bottom: f64,
) -> String {
    timeline
        .resumed
        .iter()
        .map(|at| {
            let at = x(*at);
            format!(
                "<line class=\"resumed\" x1=\"{at:.1}\" x2=\"{at:.1}\" y1=\"{top:.0}\" y2=\"{bottom:.0}\"/><text class=\"tick resumed\" x=\"{:.1}\" y=\"{:.0}\">resumed</text>\n",
                at + 3.0,
                top + 10.0
            )
        })
        .collect()
}

fn memory_svg(memory: &Value, timeline: &Timeline) -> String {
    let samples: Vec<(f64, f64)> = memory["samples"]
        .as_array()
        .map(|s| {
            s.iter()
                .filter_map(|p| Some((p["t"].as_f64()?, p["total"].as_f64()?)))
                .collect()
        })
        .unwrap_or_default();
    if samples.is_empty() {
        return String::new();
    }
    let ceiling = memory["ceiling"].as_f64();
    let peak = samples.iter().map(|(_, m)| *m).fold(0.0, f64::max);
    let top = ceiling.unwrap_or(0.0).max(peak).max(1.0) * 1.1;
    let t_max = samples.last().map_or(1.0, |(t, _)| *t).max(0.001);
    let (height, left) = (200.0, LABEL_WIDTH);
    // The timeline's axis when both are known: a sample at `t` seconds after
    // the session's start sits under the bars of that moment.
    let started = memory["started"]
        .as_str()
        .and_then(|s| humantime::parse_rfc3339(s).ok());
    let axis = match (started, timeline.first, timeline.last) {
        (Some(started), Some(first), Some(last)) => Some((started, first, last)),
        _ => None,
    };
    let x = |t: f64| match axis {
        Some((started, first, last)) => {
            let span = seconds_between(first, last).max(0.001);
            let at = started + std::time::Duration::from_secs_f64(t.max(0.0));
            left + (seconds_between(first, at) / span).min(1.0) * CHART_WIDTH
        }
        None => left + t / t_max * CHART_WIDTH,
    };
    let on_axis = |at: SystemTime| match axis {
        Some((_, first, last)) => {
            left + seconds_between(first, at) / seconds_between(first, last).max(0.001)
                * CHART_WIDTH
        }
        None => left,
    };
    let y = |m: f64| 10.0 + (1.0 - m / top) * (height - 30.0);
    let points: Vec<String> = samples
        .iter()
        .map(|(t, m)| format!("{:.1},{:.1}", x(*t), y(*m)))
        .collect();
    let ceiling_line = ceiling.map_or_else(String::new, |c| {
        format!(
            "<line class=\"ceiling\" x1=\"{left}\" x2=\"{:.0}\" y1=\"{:.1}\" y2=\"{:.1}\"/><text class=\"tick\" x=\"{:.0}\" y=\"{:.1}\" text-anchor=\"end\">ceiling {}</text>",
            left + CHART_WIDTH,
            y(c),
            y(c),
            left + CHART_WIDTH,
            y(c) - 4.0,
            size(c as u64)
        )
    });
    format!(
        "<h2>Memory</h2>\n<p>{mode} · peak total {peak}</p>\n<svg class=\"memory\" width=\"{w:.0}\" height=\"{height}\">\n<line class=\"axis\" x1=\"{left}\" y1=\"10\" x2=\"{left}\" y2=\"{base:.0}\"/><line class=\"axis\" x1=\"{left}\" y1=\"{base:.0}\" x2=\"{right:.0}\" y2=\"{base:.0}\"/>\n<text class=\"tick\" x=\"{tx}\" y=\"{ty:.0}\" text-anchor=\"end\">{top_label}</text><text class=\"tick\" x=\"{right:.0}\" y=\"{lab:.0}\" text-anchor=\"end\">{end_label}</text>\n{ceiling_line}\n<polyline class=\"total\" points=\"{points}\"/>\n{marks}</svg>\n",
        mode = escape(memory["mode"].as_str().unwrap_or("")),
        peak = size(peak as u64),
        w = left + CHART_WIDTH + 10.0,
        base = height - 20.0,
        right = left + CHART_WIDTH,
        tx = left - 4.0,
        ty = y(top) + 10.0,
        top_label = size(top as u64),
        lab = height - 6.0,
        points = points.join(" "),
        end_label = match axis {
            Some((_, first, last)) => short_duration(std::time::Duration::from_secs_f64(
                seconds_between(first, last)
            )),
            None => format!("{t_max:.0}s"),
        },
        marks = if axis.is_some() {
            resume_marks(timeline, &on_axis, 10.0, height - 20.0)
        } else {
            String::new()
        },
    )
}

/// The id of an attempt's bar on the timeline, for links to it.
fn attempt_anchor(agent: &str, attempt: u32) -> String {
    format!("attempt-{}-{attempt}", agent.replace('/', "-"))
}

/// Failed items grouped by the kind of their reason, largest group first,
/// each row linking to its agent's attempt on the timeline. From report.json
/// once the run has ended, else the last few `status` knows.
fn failed_items_table(status: &RunStatus, report: Option<&Value>) -> String {
    let items: Vec<Value> = match report.and_then(|r| r["failures"].as_array()) {
        Some(all) => all.clone(),
        None => status
            .failures
            .last
            .iter()
            .filter_map(|item| serde_json::to_value(item).ok())
            .collect(),
    };
    let mut table = String::from("<h2>Failed items</h2>\n");
    if items.is_empty() {
        table.push_str("<p>No item failed.</p>\n");
        return table;
    }
    let reason = |item: &Value| item["reason"].as_str().unwrap_or("").to_owned();
    let mut groups: Vec<(String, Vec<&Value>)> = Vec::new();
    for item in &items {
        let kind = reason_kind(&reason(item)).to_owned();
        match groups.iter_mut().find(|(k, _)| *k == kind) {
            Some((_, members)) => members.push(item),
            None => groups.push((kind, vec![item])),
        }
    }
    groups.sort_by_key(|group| std::cmp::Reverse(group.1.len()));
    for (kind, members) in groups {
        let _ = writeln!(
            table,
            "<h3>{} ({})</h3>\n<table class=\"failed-items\"><tr><th>item</th><th>reason</th><th>attempts</th><th>agent</th></tr>",
            escape(&kind),
            members.len()
        );
        for item in members {
            let id = match &item["id"] {
                Value::String(text) => text.clone(),
                other => other.to_string(),
            };
            let agent = item["agent"].as_str().unwrap_or("");
            let agent_cell = match item["attempt"].as_u64().and_then(|a| u32::try_from(a).ok()) {
                Some(attempt) => format!(
                    "<a href=\"#{}\">{} (attempt {attempt})</a>",
                    attempt_anchor(agent, attempt),
                    escape(agent)
                ),
                None => escape(agent),
            };
            let _ = writeln!(
                table,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{agent_cell}</td></tr>",
                escape(&id),
                escape(&reason(item)),
                item["attempts"].as_u64().unwrap_or(0)
            );
        }
        table.push_str("</table>\n");
    }
    table
}

fn failures_table(timeline: &Timeline, report: Option<&Value>) -> String {
    let failed: Vec<_> = timeline
        .bars
        .iter()
        .filter(|b| !matches!(b.outcome.as_str(), "succeeded" | "running"))
        .collect();
    let mut table = String::from("<h2>Failed attempts</h2>\n");
    if failed.is_empty() {
        table.push_str("<p>No agent attempt failed.</p>\n");
    } else {
        table.push_str("<table class=\"failures\"><tr><th>agent</th><th>attempt</th><th>outcome</th><th>detail</th></tr>\n");
        for bar in failed {
            let _ = writeln!(
                table,
                "<tr><td>{}</td><td>{}</td><td class=\"{}\">{}</td><td>{}</td></tr>",
                escape(&bar.agent),
                bar.attempt,
                escape(&bar.outcome),
                escape(&bar.outcome),
                escape(&bar.detail)
            );
        }
        table.push_str("</table>\n");
    }
    if let Some(missing) = report
        .and_then(|r| r["missing_ids"].as_array())
        .filter(|m| !m.is_empty())
    {
        let shown: Vec<String> = missing
            .iter()
            .take(50)
            .map(|v| escape(v.as_str().unwrap_or("")))
            .collect();
        let _ = writeln!(
            table,
            "<p>{} missing id(s): {}{}</p>",
            missing.len(),
            shown.join(", "),
            if missing.len() > 50 { ", …" } else { "" }
        );
    }
    table
}

pub(crate) const CSS: &str = "body{font:14px system-ui,sans-serif;margin:24px;color:#222}h1{margin:0 0 4px}code{font-size:12px}\
svg text{font:11px system-ui,sans-serif}text.group{font-weight:bold}text.subgroup{fill:#555}text.tick{fill:#777}\
.axis{stroke:#bbb}.ceiling{stroke:#c00;stroke-dasharray:6 4}.resumed{stroke:#6b7280;stroke-dasharray:3 3}text.resumed{fill:#6b7280;stroke:none}.total{fill:none;stroke:#2563eb;stroke-width:1.5}\
rect.succeeded{fill:#16a34a}span.succeeded{background:#16a34a}rect.failed{fill:#dc2626}span.failed{background:#dc2626}rect.crashed{fill:#7c3aed}span.crashed{background:#7c3aed}rect.killed{fill:#ea580c}span.killed{background:#ea580c}rect.shutdown{fill:#9ca3af}span.shutdown{background:#9ca3af}rect.interrupted{fill:#facc15}span.interrupted{background:#facc15}rect.running{fill:#2563eb}span.running{background:#2563eb}\
.key{display:inline-block;width:12px;height:12px;margin:0 4px 0 10px;vertical-align:middle}\
table.failures{border-collapse:collapse}table.failures td,table.failures th{border:1px solid #ddd;padding:2px 8px;text-align:left}";

/// Counts the bars the browser actually laid out, for a headless check.
const SCRIPT: &str = "<script>addEventListener('load',()=>{const n=[...document.querySelectorAll('rect.bar')]\
.filter(r=>r.getBoundingClientRect().width>0).length;document.body.dataset.renderedBars=String(n);});</script>\n";
