//! Analytics commands: stats, mttr, effectiveness, recommendations, dashboard, circuit-report,
//! patterns, predict, rebuild.

use std::collections::BTreeMap;
use std::path::Path;

use chrono::{DateTime, Utc};
use healstore::analytics::advice::AdviceOptions;
use healstore::analytics::request::{self, Learning, Verdicts, WindowSpec};
use healstore::analytics::{
    Analytics, Dashboard, MttrBy, MttrTo, PredictOptions, Window, parse_duration,
};
use healstore::config::Config;

use super::{Cli, Out};

/// The time window of an analytics command: `--window` ending now (or at `--now`, or at
/// `--until`), or `--since` to `--until`. The start is inclusive, the end exclusive.
#[derive(Debug, Clone, clap::Args)]
pub struct WindowArgs {
    /// The window's length, ending now: 90s, 15m, 1h, 24h, 7d, 2w.
    #[arg(long, conflicts_with = "since")]
    pub window: Option<String>,
    /// The window's start (RFC 3339, inclusive).
    #[arg(long, value_parser = super::parse_time)]
    pub since: Option<DateTime<Utc>>,
    /// The window's end (RFC 3339, exclusive; default: now).
    #[arg(long, value_parser = super::parse_time)]
    pub until: Option<DateTime<Utc>>,
}

impl WindowArgs {
    pub fn spec(&self) -> WindowSpec {
        WindowSpec {
            length: self.window.clone(),
            since: self.since,
            until: self.until,
        }
    }

    pub fn resolve(&self, now: DateTime<Utc>, default: &str) -> anyhow::Result<Window> {
        Ok(self.spec().resolve(now, default)?)
    }
}

/// What `mttr` measures to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ToArg {
    /// Detection to recovery (evidence that the agent or task works again): MTTR proper.
    #[default]
    Recover,
    /// Detection to remediation (the healing actions succeeded).
    Remediate,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ByArg {
    FailureType,
    Strategy,
    Agent,
}

/// Thresholds shared by the commands that give verdicts.
#[derive(Debug, Clone, clap::Args)]
pub struct VerdictArgs {
    /// Healing results a strategy needs before it gets a verdict other than `monitor`.
    #[arg(long, default_value_t = request::DEFAULT_MIN_RESULTS, value_parser = clap::value_parser!(i64).range(1..))]
    pub min_results: i64,
    /// Opens in the window from which a circuit counts as flapping.
    #[arg(long, default_value_t = request::DEFAULT_FLAP_THRESHOLD, value_parser = clap::value_parser!(i64).range(1..))]
    pub flap_threshold: i64,
}

impl VerdictArgs {
    fn advice(&self) -> anyhow::Result<AdviceOptions> {
        Ok(Verdicts {
            min_results: self.min_results,
            flap_threshold: self.flap_threshold,
        }
        .advice()?)
    }
}

/// Pattern-learning thresholds.
#[derive(Debug, Clone, clap::Args)]
pub struct LearnArgs {
    /// Occurrences a pattern needs.
    #[arg(long, default_value_t = request::DEFAULT_MIN_OCCURRENCES, value_parser = clap::value_parser!(i64).range(2..))]
    pub min_occurrences: i64,
    /// Confidence a pattern needs (0 to 1).
    #[arg(long, default_value_t = request::DEFAULT_MIN_CONFIDENCE, value_parser = parse_unit)]
    pub min_confidence: f64,
    /// Longest gap between two steps of a sequence.
    #[arg(long, default_value = request::DEFAULT_SEQUENCE_GAP)]
    pub sequence_gap: String,
    /// How soon after A a B counts as following it.
    #[arg(long, default_value = request::DEFAULT_CORRELATION_WINDOW)]
    pub correlation_window: String,
    /// Do not record the learned patterns (and predictions) as events.
    #[arg(long)]
    pub no_record: bool,
}

impl LearnArgs {
    pub fn learning(&self) -> Learning {
        Learning {
            min_occurrences: self.min_occurrences,
            min_confidence: self.min_confidence,
            sequence_gap: self.sequence_gap.clone(),
            correlation_window: self.correlation_window.clone(),
            record: !self.no_record,
        }
    }
}

fn parse_unit(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number"))?;
    if (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{v} is not between 0 and 1"))
    }
}

/// Opens the store read for analytics, runs `f`, and closes the store whatever `f` answered.
async fn query<T>(
    cli: &Cli,
    f: impl AsyncFnOnce(&Analytics) -> healstore::Result<T>,
) -> anyhow::Result<T> {
    let store = cli.open(false).await?;
    let result = f(&Analytics::new(&store)).await;
    store.close().await?;
    Ok(result?)
}

fn pct(x: f64) -> String {
    format!("{:.1}%", x * 100.0)
}

pub async fn stats(cli: &Cli, w: &WindowArgs, out: &mut Out) -> anyhow::Result<()> {
    let window = w.resolve(cli.now(), "24h")?;
    let s = query(cli, async |a| a.stats(&window).await).await?;
    if out.json() {
        return out.json_value(&s);
    }
    out.line(&format!(
        "Healing statistics, {} to {}",
        s.window.since, s.window.until
    ))?;
    let rows = vec![
        vec!["total_failures".into(), s.total_failures.to_string()],
        vec!["total_healings".into(), s.total_healings.to_string()],
        vec!["success_rate".into(), pct(s.success_rate)],
        vec![
            "avg_healing_time_ms".into(),
            format!("{:.1}", s.avg_healing_time_ms),
        ],
        vec!["remediated".into(), s.remediated.to_string()],
        vec![
            "mttr_remediate_ms".into(),
            format!("{:.1}", s.mttr_remediate_ms),
        ],
        vec![
            "mttr_remediate_p50/p90/p99_ms".into(),
            format!(
                "{:.1} / {:.1} / {:.1}",
                s.mttr_remediate_p50_ms, s.mttr_remediate_p90_ms, s.mttr_remediate_p99_ms
            ),
        ],
        vec!["recovered".into(), s.recovered.to_string()],
        vec![
            "mttr_recover_ms".into(),
            format!("{:.1}", s.mttr_recover_ms),
        ],
        vec![
            "mttr_recover_p50/p90/p99_ms".into(),
            format!(
                "{:.1} / {:.1} / {:.1}",
                s.mttr_recover_p50_ms, s.mttr_recover_p90_ms, s.mttr_recover_p99_ms
            ),
        ],
        vec!["unrecovered".into(), s.unrecovered.to_string()],
    ];
    out.table(&[], &rows)?;
    counts(out, "by strategy (healings)", &s.by_strategy)?;
    counts(out, "by failure type (detected)", &s.by_failure_type)
}

fn counts(out: &mut Out, title: &str, m: &BTreeMap<String, i64>) -> anyhow::Result<()> {
    out.line("")?;
    out.line(title)?;
    if m.is_empty() {
        return out.line("  (none)");
    }
    let rows: Vec<Vec<String>> = m
        .iter()
        .map(|(k, v)| vec![format!("  {k}"), v.to_string()])
        .collect();
    out.table(&[], &rows)
}

pub async fn mttr(
    cli: &Cli,
    w: &WindowArgs,
    to: ToArg,
    by: Option<ByArg>,
    bucket: &str,
    out: &mut Out,
) -> anyhow::Result<()> {
    let window = w.resolve(cli.now(), "24h")?;
    // (checked before the store is opened)
    parse_duration(bucket)?;
    let by = by.map(|b| match b {
        ByArg::FailureType => MttrBy::FailureType,
        ByArg::Strategy => MttrBy::Strategy,
        ByArg::Agent => MttrBy::Agent,
    });
    let to = match to {
        ToArg::Recover => MttrTo::Recover,
        ToArg::Remediate => MttrTo::Remediate,
    };
    let r = query(cli, async |a| a.mttr_report(&window, to, by, bucket).await).await?;
    if out.json() {
        return out.json_value(&r);
    }
    let rows: Vec<Vec<String>> = r
        .series
        .iter()
        .map(|p| {
            vec![
                p.bucket_start.clone(),
                p.group.clone().unwrap_or_else(|| "-".into()),
                p.resolved.to_string(),
                format!("{:.1}", p.mttr_ms),
                format!("{:.1}", p.p50_ms),
                format!("{:.1}", p.p90_ms),
                format!("{:.1}", p.max_ms),
            ]
        })
        .collect();
    out.table(
        &[
            "bucket", "group", "resolved", "mttr_ms", "p50_ms", "p90_ms", "max_ms",
        ],
        &rows,
    )
}

pub async fn effectiveness(
    cli: &Cli,
    w: &WindowArgs,
    v: &VerdictArgs,
    out: &mut Out,
) -> anyhow::Result<()> {
    let window = w.resolve(cli.now(), "7d")?;
    let advice = v.advice()?;
    let e = query(cli, async |a| {
        a.effectiveness(&window, &advice.effectiveness).await
    })
    .await?;
    if out.json() {
        return out.json_value(&e);
    }
    let rows: Vec<Vec<String>> = e
        .strategies
        .iter()
        .map(|s| {
            vec![
                s.strategy.clone(),
                s.success_count.to_string(),
                s.failure_count.to_string(),
                pct(s.success_rate),
                format!("{:.1}", s.avg_healing_time_ms),
                s.trend.clone(),
                s.recommendation.clone(),
                s.status.clone(),
            ]
        })
        .collect();
    out.table(
        &[
            "strategy",
            "success",
            "failed",
            "rate",
            "avg_ms",
            "trend",
            "recommendation",
            "status",
        ],
        &rows,
    )?;
    out.line("")?;
    out.line("per failure type")?;
    let rows: Vec<Vec<String>> = e
        .pairs
        .iter()
        .map(|p| {
            let best = e.best_for.get(&p.failure_type) == Some(&p.strategy);
            vec![
                p.failure_type.clone(),
                p.strategy.clone(),
                p.results.to_string(),
                pct(p.success_rate),
                format!("{:.1}", p.avg_healing_time_ms),
                p.trend.clone(),
                p.recommendation.clone(),
                if best { "best".into() } else { String::new() },
            ]
        })
        .collect();
    out.table(
        &[
            "failure_type",
            "strategy",
            "results",
            "rate",
            "avg_ms",
            "trend",
            "recommendation",
            "",
        ],
        &rows,
    )
}

pub async fn recommendations(
    cli: &Cli,
    w: &WindowArgs,
    v: &VerdictArgs,
    propose: Option<(&Path, bool, u64)>,
    out: &mut Out,
) -> anyhow::Result<()> {
    use healstore::analytics::propose;
    use healstore::backtest::{BacktestOptions, Candidate, Figures};
    let window = w.resolve(cli.now(), "24h")?;
    let advice = v.advice()?;
    let (config, _) = Config::load(cli.config.as_deref())?;
    if let Some((path, force, _)) = propose {
        html_check(cli, path, force)?;
    }
    let store = cli.open(false).await?;
    let result = async {
        let mut r = Analytics::new(&store)
            .recommendations_report(&window, &advice)
            .await?;
        let proposals = propose::proposals(&mut r.recommendations, &config);
        let Some((path, force, seed)) = propose else {
            return Ok::<_, anyhow::Error>((r, proposals, None));
        };
        let combined = propose::combine(&config, &proposals)?;
        let text = propose::to_toml(&combined)?;
        // What is written must read back as the configuration it stands for.
        if Config::parse(&text)? != combined {
            anyhow::bail!("the combined configuration does not read back as itself");
        }
        let mut candidates = Vec::new();
        for p in &proposals {
            candidates.push(Candidate::Config {
                name: match &p.subject {
                    Some(s) => format!("{} ({s})", p.rule),
                    None => p.rule.clone(),
                },
                config: Box::new(p.apply(&config)?),
            });
        }
        candidates.push(Candidate::Config {
            name: path.display().to_string(),
            config: Box::new(combined),
        });
        let reports = healstore::backtest::backtest(
            &store,
            &BacktestOptions {
                seed,
                ..BacktestOptions::new(window)
            },
            &candidates,
        )
        .await?;
        let existing = if force {
            healstore::output::Existing::Replace
        } else {
            healstore::output::Existing::Refuse {
                hint: "add --force to replace it",
            }
        };
        healstore::output::write(path, &cli.db, existing, text.as_bytes())?;
        Ok((r, proposals, Some((text, reports))))
    }
    .await;
    store.close().await?;
    let (r, proposals, backtested) = result?;
    let effect = |f: &Figures| {
        serde_json::json!({
            "success_rate": f.success_rate,
            "mttr_ms": f.mttr.ms,
            "circuits_opened": f.circuits_opened,
            "agent_minutes_isolated": f.agent_minutes_isolated,
            "limits_reached": f.limits_reached,
            "actions": f.actions,
            "health_score": f.health_score,
        })
    };
    if out.json() {
        let Some((text, reports)) = &backtested else {
            return out.json_value(&r);
        };
        let mut doc = serde_json::to_value(&r)?;
        {
            let props: Vec<serde_json::Value> = proposals
                .iter()
                .zip(reports)
                .map(|(p, rep)| {
                    serde_json::json!({
                        "rule": p.rule,
                        "subject": p.subject,
                        "change": p.change,
                        "toml": p.toml,
                        "candidate": rep.candidate,
                        "recorded": effect(&rep.recorded),
                        "expected": effect(&rep.backtest),
                        "decisions_changed": rep.decisions - rep.matching,
                    })
                })
                .collect();
            let last = reports.last();
            doc["proposals"] = serde_json::json!(props);
            doc["candidate"] = serde_json::json!({
                "file": propose.map(|(p, _, _)| p.display().to_string()),
                "toml": text,
                "recorded": last.map(|r| effect(&r.recorded)),
                "expected": last.map(|r| effect(&r.backtest)),
                "decisions_changed": last.map(|r| r.decisions - r.matching),
            });
        }
        return out.json_value(&doc);
    }
    let line = |f: &Figures| {
        format!(
            "success rate {}, MTTR {}, circuits opened {}, limits reached {}, health {:.1}",
            f.success_rate.map_or("-".into(), pct),
            f.mttr.ms.map_or("-".into(), |m| format!("{m:.0} ms")),
            f.circuits_opened,
            f.limits_reached,
            f.health_score
        )
    };
    for (i, rec) in r.recommendations.iter().enumerate() {
        out.line(&format!("{}. [{}] {}", i + 1, rec.severity, rec.message))?;
        if let Some(toml) = &rec.proposal {
            for l in toml.lines() {
                out.line(&format!("     {l}"))?;
            }
            if let Some((_, reports)) = &backtested
                && let Some(k) = proposals
                    .iter()
                    .position(|p| p.rule == rec.rule && p.subject == rec.subject)
            {
                let rep = &reports[k];
                out.line(&format!("     recorded: {}", line(&rep.recorded)))?;
                out.line(&format!("     expected: {}", line(&rep.backtest)))?;
            }
        }
    }
    if let (Some((_, reports)), Some((path, _, _))) = (&backtested, propose) {
        let rep = reports
            .last()
            .expect("the combined candidate is backtested");
        out.line(&format!(
            "\nwrote {} ({} change(s)); backtested over the window:",
            path.display(),
            proposals.len()
        ))?;
        out.line(&format!("  recorded: {}", line(&rep.recorded)))?;
        out.line(&format!("  expected: {}", line(&rep.backtest)))?;
    }
    Ok(())
}

pub async fn circuit_report(
    cli: &Cli,
    w: &WindowArgs,
    v: &VerdictArgs,
    out: &mut Out,
) -> anyhow::Result<()> {
    let window = w.resolve(cli.now(), "24h")?;
    v.advice()?;
    let r = query(cli, async |a| a.circuits(&window, v.flap_threshold).await).await?;
    if out.json() {
        return out.json_value(&r);
    }
    let rows: Vec<Vec<String>> = r
        .circuits
        .iter()
        .map(|c| {
            vec![
                c.circuit.clone(),
                c.state.clone(),
                c.opens.to_string(),
                c.reopens.to_string(),
                c.open_ms.to_string(),
                c.half_open_ms.to_string(),
                if c.flapping {
                    "yes".into()
                } else {
                    "no".into()
                },
            ]
        })
        .collect();
    out.table(
        &[
            "circuit",
            "state",
            "opens",
            "reopens",
            "open_ms",
            "half_open_ms",
            "flapping",
        ],
        &rows,
    )
}

pub async fn dashboard(
    cli: &Cli,
    w: &WindowArgs,
    v: &VerdictArgs,
    html: Option<(&Path, bool)>,
    out: &mut Out,
) -> anyhow::Result<()> {
    let window = w.resolve(cli.now(), "24h")?;
    if let Some((path, force)) = html {
        html_check(cli, path, force)?;
    }
    let advice = v.advice()?;
    let d = query(cli, async |a| {
        a.dashboard(&window, &advice, cli.now()).await
    })
    .await?;
    if let Some((path, force)) = html {
        write_html(cli, path, force, &d)?;
    }
    if out.json() {
        return out.json_value(&d);
    }
    print_dashboard(&d, out)?;
    if let Some((path, _)) = html {
        out.line(&format!("\nwrote {}", path.display()))?;
    }
    Ok(())
}

/// How an existing `--html` file is treated.
pub fn html_existing(force: bool) -> healstore::output::Existing {
    if force {
        healstore::output::Existing::Replace
    } else {
        healstore::output::Existing::Refuse {
            hint: "add --force to replace it",
        }
    }
}

/// Checks an `--html` target before any work is done (see [`healstore::output`]).
pub fn html_check(cli: &Cli, path: &Path, force: bool) -> anyhow::Result<()> {
    Ok(healstore::output::check(
        path,
        &cli.db,
        html_existing(force),
    )?)
}

/// Writes the page through a temporary file beside its destination (see
/// [`healstore::output`]): a reader never sees half a page, and the database, an existing file
/// (without `--force`) or a non-regular file is never written over.
pub fn write_html(cli: &Cli, path: &Path, force: bool, d: &Dashboard) -> anyhow::Result<()> {
    let page = healstore::analytics::html::render(d);
    healstore::output::write(path, &cli.db, html_existing(force), page.as_bytes())?;
    Ok(())
}

pub fn print_dashboard(d: &Dashboard, out: &mut Out) -> anyhow::Result<()> {
    let o = &d.overall;
    out.line(&format!(
        "Healing dashboard, {} to {}",
        d.window.since, d.window.until
    ))?;
    out.line(&"=".repeat(60))?;
    let mark = |metric: &str| match d.targets.iter().find(|t| t.metric == metric) {
        Some(t) if !t.measured => format!("(target {} {}: no data)", t.comparison, t.target),
        Some(t) if t.met => format!("(target {} {}: met)", t.comparison, t.target),
        Some(t) => format!("(target {} {}: MISSED)", t.comparison, t.target),
        None => String::new(),
    };
    let rows = vec![
        vec![
            "health score".into(),
            format!("{:.1}", d.health_score),
            mark("health_score"),
        ],
        vec![
            "success rate".into(),
            pct(o.success_rate),
            mark("success_rate"),
        ],
        vec![
            "MTTR (to recover)".into(),
            format!("{:.1} ms", o.mttr_recover_ms),
            mark("mttr_recover_ms"),
        ],
        vec![
            "MTTR p50/p90/p99".into(),
            format!(
                "{:.1} / {:.1} / {:.1} ms",
                o.mttr_recover_p50_ms, o.mttr_recover_p90_ms, o.mttr_recover_p99_ms
            ),
            String::new(),
        ],
        vec![
            "time to remediate".into(),
            format!("{:.1} ms", o.mttr_remediate_ms),
            format!(
                "p50/p90/p99 {:.1} / {:.1} / {:.1} ms",
                o.mttr_remediate_p50_ms, o.mttr_remediate_p90_ms, o.mttr_remediate_p99_ms
            ),
        ],
        vec![
            "failures".into(),
            o.total_failures.to_string(),
            format!("({:.2} per hour)", d.failures_per_hour),
        ],
        vec![
            "healings".into(),
            o.total_healings.to_string(),
            format!("avg {:.1} ms", o.avg_healing_time_ms),
        ],
        vec![
            "remediated / recovered".into(),
            format!("{} / {}", o.remediated, o.recovered),
            format!("{} unrecovered", o.unrecovered),
        ],
        vec![
            "circuit opens".into(),
            d.circuits.total_opens.to_string(),
            format!("{} flapping", d.circuits.flapping.len()),
        ],
    ];
    out.table(&[], &rows)?;
    out.line("")?;
    out.line("Strategies")?;
    let rows: Vec<Vec<String>> = d
        .strategies
        .iter()
        .map(|s| {
            let t = d
                .targets
                .iter()
                .find(|t| t.metric == format!("strategy:{}", s.strategy));
            vec![
                format!("  {}", s.strategy),
                pct(s.success_rate),
                format!("{} results", s.results),
                format!("{:.1} ms", s.avg_healing_time_ms),
                s.trend.clone(),
                s.recommendation.clone(),
                match t {
                    Some(t) if t.met => "(> 70%: met)".into(),
                    _ => "(> 70%: MISSED)".into(),
                },
            ]
        })
        .collect();
    if rows.is_empty() {
        out.line("  (no healing results)")?;
    } else {
        out.table(&[], &rows)?;
    }
    counts(out, "Failures by type", &d.by_failure_type)?;
    out.line("")?;
    let p = &d.preventions;
    if p.proposed > 0 {
        out.line(&format!(
            "Preventions: {} proposed, {} executed, {} failed, {} held back (the holdout), {} \
             pending, {} awaiting the caller, {} shadow, {} declined, {} rejected",
            p.proposed,
            p.executed,
            p.failed,
            p.held_back,
            p.pending,
            p.approved,
            p.shadow,
            p.declined,
            p.rejected
        ))?;
        for e in &p.effects {
            out.line(&format!(
                "  {} / {}: the predicted failure followed {} of {} assigned to act and {} of {} \
                 held back ({} not yet settled); reduction {:+.2}, 95% interval [{:+.2}, \
                 {:+.2}]: {} (executed alone: {} of {}, {:+.2})",
                e.source,
                e.action,
                e.assigned_failed,
                e.assigned,
                e.held_back_failed,
                e.held_back,
                e.pending,
                e.reduction,
                e.ci_low,
                e.ci_high,
                e.verdict,
                e.prevented_failed,
                e.prevented,
                e.executed_reduction
            ))?;
        }
        out.line("")?;
    }
    out.line("Recommendations")?;
    for (i, r) in d.recommendations.iter().enumerate() {
        out.line(&format!("  {}. [{}] {}", i + 1, r.severity, r.message))?;
    }
    Ok(())
}

pub async fn patterns(
    cli: &Cli,
    w: &WindowArgs,
    l: &LearnArgs,
    out: &mut Out,
) -> anyhow::Result<()> {
    let window = w.resolve(cli.now(), "7d")?;
    let learning = l.learning();
    let options = learning.options()?;
    let r = query(cli, async |a| {
        a.patterns_report(&window, &options, learning.record, cli.now())
            .await
    })
    .await?;
    if out.json() {
        return out.json_value(&r);
    }
    let rows: Vec<Vec<String>> = r
        .patterns
        .iter()
        .map(|p| {
            vec![
                p.pattern_id.clone(),
                p.kind.clone(),
                p.support.to_string(),
                format!("{:.2}", p.confidence),
                p.description.clone(),
            ]
        })
        .collect();
    out.table(
        &["pattern", "kind", "support", "confidence", "description"],
        &rows,
    )?;
    out.line(&format!(
        "\n{} patterns, {} recorded as new events",
        r.patterns.len(),
        r.recorded
    ))
}

pub async fn predict(
    cli: &Cli,
    agent: Option<&str>,
    w: &WindowArgs,
    l: &LearnArgs,
    out: &mut Out,
) -> anyhow::Result<()> {
    let window = w.resolve(cli.now(), "7d")?;
    let (config, _) = Config::load(cli.config.as_deref())?;
    let options = PredictOptions::for_request(&config, &l.learning(), agent, &window)?;
    // (predicted from the window's end: `--until`, or now)
    let r = query(cli, async |a| a.predict(window.until, &options).await).await?;
    if out.json() {
        return out.json_value(&r);
    }
    let rows: Vec<Vec<String>> = r
        .predictions
        .iter()
        .map(|p| {
            vec![
                p.agent_id.clone().unwrap_or_else(|| "(fleet)".into()),
                p.failure_type.clone(),
                format!("{:.2}", p.probability),
                p.expected_at.clone(),
                p.expected_by.clone(),
                p.source.clone(),
                p.recommended_action.clone(),
            ]
        })
        .collect();
    if rows.is_empty() {
        out.line("No failure is predicted.")?;
    } else {
        out.table(
            &[
                "agent",
                "failure_type",
                "probability",
                "expected_at",
                "expected_by",
                "source",
                "recommended_action",
            ],
            &rows,
        )?;
    }
    out.line(&format!(
        "\nfrom {} patterns; earlier predictions: {} confirmed, {} missed, {} pending; accuracy {}, false positives {}",
        r.patterns_used,
        r.confirmed,
        r.missed,
        r.pending,
        pct(r.accuracy),
        pct(r.false_positive_rate)
    ))
}

pub async fn rebuild(cli: &Cli, out: &mut Out) -> anyhow::Result<()> {
    let r = query(cli, async |a| a.rebuild().await).await?;
    if out.json() {
        return out.json_value(&r);
    }
    out.line(&format!(
        "rebuilt from the events: {} failures, {} + {} + {} hourly rollup rows, {} patterns, {} predictions; strategy snapshots dropped (rebuilt on next use)",
        r.failures, r.failure_hourly, r.attempt_hourly, r.healing_hourly, r.patterns, r.predictions
    ))
}
