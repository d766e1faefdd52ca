//! A backtest's report as one self-contained HTML page, with the dashboard's page machinery
//! ([`crate::analytics::html`]): the figures of the recorded history and of the candidate
//! side by side, their differences charted, and the failures whose decision changed. No
//! script and nothing fetched.

use std::fmt::Write as _;

use super::report::{Figures, Report, show_decisions};
use crate::analytics::html::{PAGE_END, card, escape, page_start, paired_bars};

const NAMES: (&str, &str) = ("recorded", "candidate");

/// Rows of a chart: one per key of either side's map.
fn by_key(
    r: &std::collections::BTreeMap<String, u64>,
    c: &std::collections::BTreeMap<String, u64>,
) -> Vec<(String, f64, f64)> {
    let mut keys: Vec<&String> = r.keys().chain(c.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .map(|k| {
            let n =
                |m: &std::collections::BTreeMap<String, u64>| m.get(k).copied().unwrap_or(0) as f64;
            (k.clone(), n(r), n(c))
        })
        .collect()
}

fn chart(page: &mut String, title: &str, svg: String) {
    let _ = write!(page, "<div><h2>{}</h2>{svg}</div>", escape(title));
}

/// Renders the page of one backtest.
pub fn render(report: &Report) -> String {
    let (r, c) = (&report.recorded, &report.backtest);
    let mut page = page_start(
        &format!("healstore backtest: {}", report.candidate),
        &format!(
            "Window {} to {}; {} failures replayed; seed {}. {} of {} decisions as recorded \
             ({:.1} %); {} failures whose decision changed.",
            escape(&crate::time::format_time(report.since)),
            escape(&crate::time::format_time(report.until)),
            report.failures,
            report.seed,
            report.matching,
            report.decisions,
            report.match_share * 100.0,
            report.changed_failures
        ),
    );

    page.push_str("<div class=\"cards\">");
    let both = |x: String, y: String| format!("{x} → {y}");
    let pct = |x: Option<f64>| x.map_or("-".into(), |x| format!("{:.1}%", x * 100.0));
    let ms = |x: Option<f64>| x.map_or("-".into(), |x| format!("{x:.0} ms"));
    let better = |before: f64, after: f64, higher_is_better: bool| {
        if (after - before).abs() < 1e-9 {
            None
        } else {
            Some((after > before) == higher_is_better)
        }
    };
    page.push_str(&card(
        "Health score",
        both(
            format!("{:.1}", r.health_score),
            format!("{:.1}", c.health_score),
        ),
        better(r.health_score, c.health_score, true),
    ));
    page.push_str(&card(
        "Success rate",
        both(pct(r.success_rate), pct(c.success_rate)),
        match (r.success_rate, c.success_rate) {
            (Some(a), Some(b)) => better(a, b, true),
            _ => None,
        },
    ));
    page.push_str(&card(
        "MTTR (to recovery)",
        both(ms(r.mttr.ms), ms(c.mttr.ms)),
        match (r.mttr.ms, c.mttr.ms) {
            (Some(a), Some(b)) => better(a, b, false),
            _ => None,
        },
    ));
    page.push_str(&card(
        "Agent-minutes isolated",
        both(
            format!("{:.1}", r.agent_minutes_isolated),
            format!("{:.1}", c.agent_minutes_isolated),
        ),
        None,
    ));
    page.push_str(&card(
        "Circuits opened",
        both(r.circuits_opened.to_string(), c.circuits_opened.to_string()),
        None,
    ));
    page.push_str(&card(
        "Decisions as recorded",
        format!("{:.1}%", report.match_share * 100.0),
        None,
    ));
    page.push_str("</div>");

    page.push_str("<div class=\"grid\">");
    chart(
        &mut page,
        "Decisions by verdict",
        paired_bars(&by_key(&r.decisions, &c.decisions), "", NAMES),
    );
    chart(
        &mut page,
        "Actions by kind",
        paired_bars(&by_key(&r.actions, &c.actions), "", NAMES),
    );
    let outcomes = |f: &Figures| {
        [
            f.outcomes.observed as f64,
            f.outcomes.modelled as f64,
            f.outcomes.unknown as f64,
            f.successes.total() as f64,
            f.recovered.total() as f64,
            f.unrecovered as f64,
        ]
    };
    let (ro, co) = (outcomes(r), outcomes(c));
    let rows: Vec<(String, f64, f64)> = [
        "observed",
        "modelled",
        "unknown",
        "successes",
        "recovered",
        "unrecovered",
    ]
    .iter()
    .enumerate()
    .map(|(i, k)| ((*k).to_owned(), ro[i], co[i]))
    .collect();
    chart(
        &mut page,
        "Outcomes and recoveries",
        paired_bars(&rows, "", NAMES),
    );
    let v = |x: Option<f64>| x.unwrap_or(0.0);
    let rows = vec![
        ("MTTR".to_owned(), v(r.mttr.ms), v(c.mttr.ms)),
        (
            "MTTR observed".to_owned(),
            v(r.mttr.observed_ms),
            v(c.mttr.observed_ms),
        ),
        (
            "MTTR modelled".to_owned(),
            v(r.mttr.modelled_ms),
            v(c.mttr.modelled_ms),
        ),
        (
            "to remediate".to_owned(),
            v(r.time_to_remediate.ms),
            v(c.time_to_remediate.ms),
        ),
    ];
    chart(
        &mut page,
        "Mean times from detection (ms)",
        paired_bars(&rows, " ms", NAMES),
    );
    let rows = vec![
        (
            "agent-minutes isolated".to_owned(),
            r.agent_minutes_isolated,
            c.agent_minutes_isolated,
        ),
        (
            "circuits opened".to_owned(),
            r.circuits_opened as f64,
            c.circuits_opened as f64,
        ),
        (
            "half-open trials".to_owned(),
            r.half_open_trials as f64,
            c.half_open_trials as f64,
        ),
        (
            "withheld actions".to_owned(),
            r.withheld_actions as f64,
            c.withheld_actions as f64,
        ),
    ];
    chart(
        &mut page,
        "Isolation and limits",
        paired_bars(&rows, "", NAMES),
    );
    page.push_str("</div>");

    page.push_str(
        "<h2>Figures side by side</h2><table><tr><th>figure</th><th>recorded</th><th>candidate</th></tr>",
    );
    for (name, a, b) in report.rows() {
        let class = if a == b { "" } else { " class=\"miss\"" };
        let _ = write!(
            page,
            "<tr><td>{}</td><td>{}</td><td{class}>{}</td></tr>",
            escape(&name),
            escape(&a),
            escape(&b)
        );
    }
    page.push_str("</table>");

    let _ = write!(
        page,
        "<h2>Decisions changed ({} failures{})</h2>",
        report.changed_failures,
        if (report.changed.len() as u64) < report.changed_failures {
            format!(", the first {} listed", report.changed.len())
        } else {
            String::new()
        }
    );
    if report.changed.is_empty() {
        page.push_str("<p class=\"empty\">No decision changed.</p>");
    } else {
        page.push_str("<table><tr><th>failure</th><th>type</th><th>agent</th><th>at</th><th>recorded</th><th>candidate</th></tr>");
        for ch in &report.changed {
            let _ = write!(
                page,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(&ch.failure_id),
                escape(&ch.failure_type),
                escape(ch.agent_id.as_deref().unwrap_or("-")),
                escape(&crate::time::format_time(ch.at)),
                escape(&show_decisions(&ch.recorded)),
                escape(&show_decisions(&ch.candidate))
            );
        }
        page.push_str("</table>");
    }
    page.push_str("<h2>Notes</h2><ul>");
    for n in &report.notes {
        let _ = write!(page, "<li>{}</li>", escape(n));
    }
    page.push_str("</ul>");
    page.push_str(PAGE_END);
    page
}
