//! The dashboard as one self-contained HTML page: inline CSS and SVG charts, no script and
//! nothing fetched, so it opens offline and can be attached to an incident report.

use std::fmt::Write as _;

use super::Dashboard;

/// Escapes text for HTML element content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const W: f64 = 640.0;
const H: f64 = 220.0;
const PAD: f64 = 36.0;

/// A bar chart of `values` against `max`, with an optional target line.
pub fn bars(values: &[(String, f64)], max: f64, unit: &str, target: Option<f64>) -> String {
    let mut s = format!(r#"<svg viewBox="0 0 {W} {H}" role="img">"#);
    let n = values.len().max(1) as f64;
    let max = if max > 0.0 { max } else { 1.0 };
    let bw = (W - 2.0 * PAD) / n;
    let _ = write!(
        s,
        r##"<line x1="{PAD}" y1="{y}" x2="{x2}" y2="{y}" stroke="#999"/>"##,
        y = H - PAD,
        x2 = W - PAD
    );
    for (i, (label, v)) in values.iter().enumerate() {
        let h = (v / max).clamp(0.0, 1.0) * (H - 2.0 * PAD);
        let x = PAD + i as f64 * bw;
        let _ = write!(
            s,
            r##"<rect x="{x:.1}" y="{y:.1}" width="{w:.1}" height="{h:.1}" fill="#4a7bd0"><title>{t}: {v:.2}{unit}</title></rect>"##,
            y = H - PAD - h,
            w = (bw * 0.8).max(1.0),
            t = escape(label)
        );
        if values.len() <= 24 {
            let _ = write!(
                s,
                r#"<text x="{cx:.1}" y="{ty:.1}" font-size="10" text-anchor="middle">{t}</text>"#,
                cx = x + bw * 0.4,
                ty = H - PAD + 12.0,
                t = escape(label)
            );
        }
    }
    if let Some(t) = target {
        let y = H - PAD - (t / max).clamp(0.0, 1.0) * (H - 2.0 * PAD);
        let _ = write!(
            s,
            r##"<line x1="{PAD}" y1="{y:.1}" x2="{x2}" y2="{y:.1}" stroke="#d04a4a" stroke-dasharray="4"/><text x="{x2}" y="{ty:.1}" font-size="10" text-anchor="end" fill="#d04a4a">target {t}{unit}</text>"##,
            x2 = W - PAD,
            ty = y - 3.0
        );
    }
    let _ = write!(
        s,
        r#"<text x="4" y="{PAD}" font-size="10">{max:.1}{unit}</text></svg>"#
    );
    s
}

fn line(points: &[(String, f64)], target: Option<f64>, unit: &str) -> String {
    if points.is_empty() {
        return "<p class=\"empty\">No failure recovered in this window.</p>".into();
    }
    let max = points
        .iter()
        .map(|p| p.1)
        .fold(target.unwrap_or(0.0), f64::max)
        .max(1e-9);
    let n = points.len();
    let x = |i: usize| {
        if n == 1 {
            W / 2.0
        } else {
            PAD + i as f64 * (W - 2.0 * PAD) / (n - 1) as f64
        }
    };
    let y = |v: f64| H - PAD - (v / max).clamp(0.0, 1.0) * (H - 2.0 * PAD);
    let mut s = format!(r#"<svg viewBox="0 0 {W} {H}" role="img">"#);
    let path: Vec<String> = points
        .iter()
        .enumerate()
        .map(|(i, (_, v))| format!("{:.1},{:.1}", x(i), y(*v)))
        .collect();
    let _ = write!(
        s,
        r##"<polyline fill="none" stroke="#4a7bd0" stroke-width="2" points="{}"/>"##,
        path.join(" ")
    );
    for (i, (label, v)) in points.iter().enumerate() {
        let _ = write!(
            s,
            r##"<circle cx="{:.1}" cy="{:.1}" r="3" fill="#4a7bd0"><title>{}: {v:.1}{unit}</title></circle>"##,
            x(i),
            y(*v),
            escape(label)
        );
    }
    if let Some(t) = target {
        let _ = write!(
            s,
            r##"<line x1="{PAD}" y1="{yy:.1}" x2="{x2}" y2="{yy:.1}" stroke="#d04a4a" stroke-dasharray="4"/><text x="{x2}" y="{ty:.1}" font-size="10" text-anchor="end" fill="#d04a4a">target {t}{unit}</text>"##,
            yy = y(t),
            x2 = W - PAD,
            ty = y(t) - 3.0
        );
    }
    let _ = write!(
        s,
        r#"<text x="4" y="{PAD}" font-size="10">{max:.0}{unit}</text><text x="{PAD}" y="{b}" font-size="10">{first}</text><text x="{x2}" y="{b}" font-size="10" text-anchor="end">{last}</text></svg>"#,
        b = H - 8.0,
        x2 = W - PAD,
        first = escape(&points[0].0),
        last = escape(&points[n - 1].0)
    );
    s
}

fn circuit_timeline(d: &Dashboard) -> String {
    let shown: Vec<_> = d
        .circuits
        .circuits
        .iter()
        .filter(|c| !c.spans.is_empty())
        .take(12)
        .collect();
    if shown.is_empty() {
        return "<p class=\"empty\">No circuit left the closed state in this window.</p>".into();
    }
    let (start, end) = (
        shown
            .iter()
            .flat_map(|c| c.spans.iter().map(|s| s.from_us))
            .min()
            .unwrap_or(0),
        shown
            .iter()
            .flat_map(|c| c.spans.iter().map(|s| s.until_us))
            .max()
            .unwrap_or(1),
    );
    let span = (end - start).max(1) as f64;
    let row = 22.0;
    let left = 140.0;
    let h = row * shown.len() as f64 + 30.0;
    let mut s = format!(r#"<svg viewBox="0 0 {W} {h}" role="img">"#);
    for (i, c) in shown.iter().enumerate() {
        let y = 4.0 + i as f64 * row;
        let _ = write!(
            s,
            r#"<text x="0" y="{ty:.1}" font-size="11">{}</text>"#,
            escape(&c.circuit),
            ty = y + 13.0
        );
        for sp in &c.spans {
            let x = left + (sp.from_us - start) as f64 / span * (W - left - 10.0);
            let w = ((sp.until_us - sp.from_us) as f64 / span * (W - left - 10.0)).max(1.0);
            let color = match sp.state.as_str() {
                "open" => "#d04a4a",
                "half_open" => "#e0a030",
                _ => "#5bb06b",
            };
            let _ = write!(
                s,
                r#"<rect x="{x:.1}" y="{y:.1}" width="{w:.1}" height="16" fill="{color}"><title>{}: {} to {}</title></rect>"#,
                escape(&sp.state),
                escape(&sp.from),
                escape(&sp.until)
            );
        }
    }
    let _ = write!(
        s,
        r##"<text x="{left}" y="{ly:.1}" font-size="10"><tspan fill="#5bb06b">■ closed</tspan> <tspan fill="#e0a030">■ half-open</tspan> <tspan fill="#d04a4a">■ open</tspan></text></svg>"##,
        ly = h - 6.0
    );
    s
}

/// The start of a page: its head with the one stylesheet every page shares, its title as a
/// heading and `intro_html` (already escaped) as its first paragraph. End it with
/// [`PAGE_END`].
pub fn page_start(title: &str, intro_html: &str) -> String {
    format!(
        r#"<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1400px}}h1{{font-size:22px}}h2{{font-size:16px;margin-top:28px}}
.cards{{display:flex;flex-wrap:wrap;gap:12px}}.card{{border:1px solid #ddd;border-radius:6px;padding:10px 14px;min-width:150px}}
.card .v{{font-size:22px;font-weight:600}}.met{{color:#2a8a3a}}.miss{{color:#c03030}}table{{border-collapse:collapse}}
td,th{{border-bottom:1px solid #eee;padding:4px 10px;text-align:left;font-size:13px;vertical-align:top}}.grid{{display:grid;grid-template-columns:repeat(auto-fit,minmax(560px,1fr));gap:18px}}
svg{{width:100%;height:auto;background:#fafafa;border:1px solid #eee}}.empty{{color:#777}}</style></head><body>
<h1>{title}</h1><p>{intro_html}</p>"#,
        title = escape(title)
    )
}

/// The end of a page begun with [`page_start`].
pub const PAGE_END: &str = "</body></html>\n";

/// A figure as a card: its name and value, green when it meets its target, red when not.
pub fn card(name: &str, value: String, met: Option<bool>) -> String {
    let class = match met {
        Some(true) => "v met",
        Some(false) => "v miss",
        None => "v",
    };
    format!(
        "<div class=\"card\"><div>{}</div><div class=\"{class}\">{}</div></div>",
        escape(name),
        escape(&value)
    )
}

/// Two series side by side per label (`a` in blue, `b` in orange), each bar titled with its
/// value, and a legend naming the series.
pub fn paired_bars(rows: &[(String, f64, f64)], unit: &str, names: (&str, &str)) -> String {
    if rows.is_empty() {
        return "<p class=\"empty\">Nothing to show.</p>".into();
    }
    let max = rows
        .iter()
        .map(|r| r.1.max(r.2))
        .fold(0.0, f64::max)
        .max(1e-9);
    let mut s = format!(r#"<svg viewBox="0 0 {W} {H}" role="img">"#);
    let bw = (W - 2.0 * PAD) / rows.len() as f64;
    let _ = write!(
        s,
        r##"<line x1="{PAD}" y1="{y}" x2="{x2}" y2="{y}" stroke="#999"/>"##,
        y = H - PAD,
        x2 = W - PAD
    );
    for (i, (label, a, b)) in rows.iter().enumerate() {
        let x = PAD + i as f64 * bw;
        for (j, (v, color, name)) in [(a, "#4a7bd0", names.0), (b, "#e08a30", names.1)]
            .into_iter()
            .enumerate()
        {
            let h = (v / max).clamp(0.0, 1.0) * (H - 2.0 * PAD);
            let _ = write!(
                s,
                r#"<rect x="{x:.1}" y="{y:.1}" width="{w:.1}" height="{h:.1}" fill="{color}"><title>{t} ({n}): {v:.2}{unit}</title></rect>"#,
                x = x + j as f64 * bw * 0.4,
                y = H - PAD - h,
                w = (bw * 0.38).max(1.0),
                t = escape(label),
                n = escape(name)
            );
        }
        let _ = write!(
            s,
            r#"<text x="{cx:.1}" y="{ty:.1}" font-size="10" text-anchor="middle">{t}</text>"#,
            cx = x + bw * 0.4,
            ty = H - PAD + 12.0,
            t = escape(label)
        );
    }
    let _ = write!(
        s,
        r##"<text x="4" y="{PAD}" font-size="10">{max:.1}{unit}</text><text x="{x2}" y="14" font-size="10" text-anchor="end"><tspan fill="#4a7bd0">■ {a}</tspan> <tspan fill="#e08a30">■ {b}</tspan></text></svg>"##,
        x2 = W - PAD,
        a = escape(names.0),
        b = escape(names.1)
    );
    s
}

/// Renders the dashboard page.
pub fn render(d: &Dashboard) -> String {
    let o = &d.overall;
    let mut page = page_start(
        "healstore dashboard",
        &format!(
            "Window {} to {} ({} ms); generated {}.",
            escape(&d.window.since),
            escape(&d.window.until),
            d.time_range_ms,
            escape(&d.timestamp)
        ),
    );

    page.push_str("<div class=\"cards\">");
    let met = |metric: &str| {
        d.targets
            .iter()
            .find(|t| t.metric == metric && t.measured)
            .map(|t| t.met)
    };
    page.push_str(&card(
        "Health score (target > 80)",
        format!("{:.1}", d.health_score),
        met("health_score"),
    ));
    page.push_str(&card(
        "Success rate (target > 85%)",
        format!("{:.1}%", o.success_rate * 100.0),
        met("success_rate"),
    ));
    page.push_str(&card(
        "MTTR: time to recover (target < 500 ms)",
        format!("{:.0} ms", o.mttr_recover_ms),
        met("mttr_recover_ms"),
    ));
    page.push_str(&card(
        "Time to remediate",
        format!("{:.0} ms", o.mttr_remediate_ms),
        None,
    ));
    page.push_str(&card("Failures", o.total_failures.to_string(), None));
    page.push_str(&card("Healings", o.total_healings.to_string(), None));
    page.push_str(&card(
        "Remediated / recovered",
        format!("{} / {}", o.remediated, o.recovered),
        None,
    ));
    page.push_str(&card("Unrecovered", o.unrecovered.to_string(), None));
    page.push_str(&card(
        "Time to recover p50 / p90 / p99",
        format!(
            "{:.0} / {:.0} / {:.0} ms",
            o.mttr_recover_p50_ms, o.mttr_recover_p90_ms, o.mttr_recover_p99_ms
        ),
        None,
    ));
    page.push_str("</div>");

    page.push_str("<div class=\"grid\">");
    let mttr: Vec<(String, f64)> = d
        .mttr_series
        .iter()
        .map(|p| (p.bucket_start.clone(), p.mttr_ms))
        .collect();
    let _ = write!(
        page,
        "<div><h2>MTTR (time to recover) over time ({} buckets)</h2>{}</div>",
        escape(&d.mttr_bucket),
        line(&mttr, Some(500.0), " ms")
    );
    let rates: Vec<(String, f64)> = d
        .strategies
        .iter()
        .map(|s| (s.strategy.clone(), s.success_rate * 100.0))
        .collect();
    let _ = write!(
        page,
        "<div><h2>Success rate per strategy</h2>{}</div>",
        if rates.is_empty() {
            "<p class=\"empty\">No healing results in this window.</p>".to_owned()
        } else {
            bars(&rates, 100.0, "%", Some(70.0))
        }
    );
    let hours: Vec<(String, f64)> = d
        .failures_by_hour
        .iter()
        .enumerate()
        .map(|(h, n)| (format!("{h:02}"), *n as f64))
        .collect();
    let max_h = hours.iter().map(|h| h.1).fold(0.0, f64::max);
    let _ = write!(
        page,
        "<div><h2>Failures by hour of day (UTC)</h2>{}</div>",
        bars(&hours, max_h, "", None)
    );
    let _ = write!(
        page,
        "<div><h2>Circuit states over time</h2>{}</div>",
        circuit_timeline(d)
    );
    page.push_str("</div>");

    page.push_str("<h2>Strategies</h2><table><tr><th>strategy</th><th>results</th><th>success</th><th>rate</th><th>avg ms</th><th>trend</th><th>recommendation</th></tr>");
    for s in &d.strategies {
        let _ = write!(
            page,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"{}\">{:.1}%</td><td>{:.1}</td><td>{}</td><td>{}</td></tr>",
            escape(&s.strategy),
            s.results,
            s.success_count,
            if s.success_rate > 0.7 { "met" } else { "miss" },
            s.success_rate * 100.0,
            s.avg_healing_time_ms,
            escape(&s.trend),
            escape(&s.recommendation)
        );
    }
    page.push_str("</table>");

    page.push_str("<h2>Which remediation works for which failure</h2><table><tr><th>failure type</th><th>strategy</th><th>results</th><th>rate</th><th>avg ms</th></tr>");
    for p in &d.pairs {
        let _ = write!(
            page,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{:.1}%</td><td>{:.1}</td></tr>",
            escape(&p.failure_type),
            escape(&p.strategy),
            p.results,
            p.success_rate * 100.0,
            p.avg_healing_time_ms
        );
    }
    page.push_str("</table>");

    page.push_str("<h2>Failures by type</h2><table>");
    for (t, n) in &d.by_failure_type {
        let _ = write!(page, "<tr><td>{}</td><td>{n}</td></tr>", escape(t));
    }
    page.push_str("</table><h2>Agents with the most failures</h2><table>");
    for (a, n) in &d.top_agents {
        let _ = write!(page, "<tr><td>{}</td><td>{n}</td></tr>", escape(a));
    }
    let p = &d.preventions;
    let _ = write!(
        page,
        "</table><h2>Preventions</h2><p>{} proposed: {} pending, {} held back (the holdout), \
         {} executed, {} failed, {} awaiting the caller, {} shadow, {} declined, {} rejected.</p>",
        p.proposed,
        p.pending,
        p.held_back,
        p.executed,
        p.failed,
        p.approved,
        p.shadow,
        p.declined,
        p.rejected
    );
    if !p.effects.is_empty() {
        page.push_str("<table><tr><th>source</th><th>action</th><th>failed when assigned to act</th><th>failed when held back</th><th>reduction</th><th>95% interval</th><th>failed after execution (secondary)</th><th>actions</th><th>agents disrupted</th><th>verdict</th></tr>");
        for e in &p.effects {
            let _ = write!(
                page,
                "<tr><td>{}</td><td>{}</td><td>{} of {} ({:.0}%)</td><td>{} of {} ({:.0}%)</td><td>{:+.2}</td><td>{:+.2} to {:+.2}</td><td>{} of {} ({:.0}%; {:+.2})</td><td>{}</td><td>{}</td><td>{}{}</td></tr>",
                escape(&e.source),
                escape(&e.action),
                e.assigned_failed,
                e.assigned,
                e.assigned_rate * 100.0,
                e.held_back_failed,
                e.held_back,
                e.held_back_rate * 100.0,
                e.reduction,
                e.ci_low,
                e.ci_high,
                e.prevented_failed,
                e.prevented,
                e.prevented_rate * 100.0,
                e.executed_reduction,
                e.actions_taken,
                e.agents_disrupted,
                escape(&e.verdict),
                if e.flagged { " (flagged)" } else { "" }
            );
        }
        page.push_str("</table>");
    }
    page.push_str("<h2>Recommendations</h2><ol>");
    for r in &d.recommendations {
        let _ = write!(
            page,
            "<li><b>{}</b> [{}] {}</li>",
            escape(&r.severity),
            escape(&r.rule),
            escape(&r.message)
        );
    }
    page.push_str("</ol>");
    page.push_str(PAGE_END);
    page
}
