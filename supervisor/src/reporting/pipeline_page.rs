//! `nightshift report RUN --html FILE` on a pipeline: FILE is the pipeline's
//! page — every stage's state and items, and one timeline of every stage's
//! agent attempts on a common clock, so streaming stages show working side
//! by side — with a link to each stage's own page (see `html`).

use std::fmt::Write as _;
use std::time::SystemTime;

use crate::reporting::html::{escape, CSS};
use crate::reporting::status::RunStatus;
use crate::reporting::timeline::Timeline;

const LABEL_WIDTH: f64 = 120.0;
const CHART_WIDTH: f64 = 860.0;
const STAGE_ROW: f64 = 34.0;

/// One stage as the page shows it.
pub struct StageRow<'a> {
    pub name: &'a str,
    /// Its own page (a file name beside FILE).
    pub page: &'a str,
    pub status: &'a RunStatus,
    pub timeline: &'a Timeline,
    /// Items that reached the stage (its upstream stage's records so far).
    pub items_in: usize,
}

fn seconds_between(from: SystemTime, to: SystemTime) -> f64 {
    to.duration_since(from).map_or(0.0, |d| d.as_secs_f64())
}

pub fn render(job: &str, state: &str, stages: &[StageRow<'_>]) -> String {
    let mut page = String::new();
    let _ = write!(
        page,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>nightshift report: {job}</title>\n<style>{CSS}table{{border-collapse:collapse}}td,th{{padding:2px 10px;text-align:left}}</style></head>\n<body>\n<h1>{job}</h1>\n<p class=\"summary\">pipeline · {state} · {n} stages</p>\n",
        job = escape(job),
        state = escape(state),
        n = stages.len(),
    );
    page.push_str("<table><tr><th>stage</th><th>state</th><th>items</th><th>in</th><th>done</th><th>failed</th><th>running agents</th><th></th></tr>\n");
    for stage in stages {
        let items = &stage.status.items;
        let running = stage
            .status
            .agents
            .iter()
            .filter(|a| a.state == "running")
            .count();
        let _ = writeln!(
            page,
            "<tr><td>{name}</td><td>{state}</td><td>{total}</td><td>{items_in}</td><td>{done}</td><td>{failed}</td><td>{running}</td><td><a href=\"{page}\">its page</a></td></tr>",
            name = escape(stage.name),
            state = escape(stage.status.state),
            total = items.total,
            items_in = stage.items_in,
            done = items.done,
            failed = items.failed,
            page = escape(stage.page),
        );
    }
    page.push_str("</table>\n");
    page.push_str(&stages_svg(stages));
    page.push_str("</body></html>\n");
    page
}

/// Every stage's attempts on one clock: a row per stage, a bar per attempt
/// (stacked thin, coloured by outcome as on the stage pages).
fn stages_svg(stages: &[StageRow<'_>]) -> String {
    let first = stages.iter().filter_map(|s| s.timeline.first).min();
    let last = stages.iter().filter_map(|s| s.timeline.last).max();
    let (Some(first), Some(last)) = (first, last) else {
        return "<p>No agent has started yet.</p>\n".to_owned();
    };
    let span = seconds_between(first, last).max(0.001);
    let x = |at: SystemTime| LABEL_WIDTH + seconds_between(first, at) / span * CHART_WIDTH;
    let height = STAGE_ROW * stages.len() as f64 + 24.0;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        "<h2>Stages over time</h2>\n<svg width=\"{w:.0}\" height=\"{height:.0}\" role=\"img\" aria-label=\"every stage's agents over time\">",
        w = LABEL_WIDTH + CHART_WIDTH + 10.0,
    );
    for (row, stage) in stages.iter().enumerate() {
        let top = STAGE_ROW * row as f64;
        let _ = writeln!(
            svg,
            "<text class=\"group\" x=\"4\" y=\"{:.1}\">{}</text>",
            top + STAGE_ROW / 2.0 + 4.0,
            escape(stage.name)
        );
        let bars = &stage.timeline.bars;
        // Attempts share the row in lanes, so overlapping ones stay visible.
        let lanes = bars.len().clamp(1, 8);
        let lane_height = (STAGE_ROW - 6.0) / lanes as f64;
        for (index, bar) in bars.iter().enumerate() {
            let start = x(bar.start);
            let end = x(bar.end.unwrap_or(last));
            let _ = writeln!(
                svg,
                "<rect class=\"bar {outcome}\" x=\"{start:.1}\" y=\"{y:.1}\" width=\"{w:.1}\" height=\"{h:.1}\"><title>{stage} {agent} attempt {attempt}: {outcome}</title></rect>",
                outcome = escape(&bar.outcome),
                y = top + 2.0 + lane_height * (index % lanes) as f64,
                w = (end - start).max(1.0),
                h = (lane_height - 1.0).max(1.0),
                stage = escape(stage.name),
                agent = escape(&bar.agent),
                attempt = bar.attempt,
            );
        }
    }
    let _ = writeln!(
        svg,
        "<line class=\"axis\" x1=\"{LABEL_WIDTH}\" x2=\"{:.0}\" y1=\"{y:.0}\" y2=\"{y:.0}\"/><text class=\"tick\" x=\"{LABEL_WIDTH}\" y=\"{t:.0}\">0 s</text><text class=\"tick\" x=\"{:.0}\" y=\"{t:.0}\" text-anchor=\"end\">{span:.1} s</text>\n</svg>",
        LABEL_WIDTH + CHART_WIDTH,
        LABEL_WIDTH + CHART_WIDTH,
        y = height - 20.0,
        t = height - 6.0,
    );
    svg
}
