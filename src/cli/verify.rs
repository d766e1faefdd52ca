//! `verify`: the integrity of the database, its schema, the hash chain, the payloads and their
//! indexed columns, an expected head, the read models and the strategy snapshots. Exit 0 when
//! everything holds, 1 naming the first problem, 2 on an error.

use std::process::ExitCode;

use healstore::store::ExpectedHead;
use healstore::{VerifyOptions, VerifyReport};

use super::{Cli, Out};

#[derive(Debug, Clone, clap::Args)]
pub struct VerifyArgs {
    /// Run SQLite's full integrity check (also compares every index with its table; several
    /// times slower on large files) instead of its quick check.
    #[arg(long)]
    pub full_integrity: bool,
    /// Skip comparing the read models with a rebuild from the events.
    #[arg(long)]
    pub skip_read_models: bool,
    /// Check this archive file instead: its own chain, and that the database records its cut.
    #[arg(long)]
    pub archive: Option<std::path::PathBuf>,
    /// The head an earlier verify reported (`head_position:head_hash`, or the hash alone),
    /// kept outside the database: the log must still hold it (exit 1 if it was cut back or
    /// rewritten; events appended since are fine).
    #[arg(long, value_name = "[POSITION:]HASH", value_parser = parse_head, conflicts_with = "archive")]
    pub expect_head: Option<ExpectedHead>,
}

fn parse_head(s: &str) -> Result<ExpectedHead, String> {
    s.parse().map_err(|e: healstore::Error| e.to_string())
}

pub async fn run(cli: &Cli, args: &VerifyArgs, out: &mut Out) -> anyhow::Result<ExitCode> {
    if let Some(file) = &args.archive {
        return archive(cli, file, out).await;
    }
    let (config, _) = healstore::config::Config::load(cli.config.as_deref())?;
    let store = cli.open(false).await?;
    let options = VerifyOptions {
        full_integrity: args.full_integrity,
        read_models: !args.skip_read_models,
        expect_head: args.expect_head,
    };
    let result = verify(&store, &config, &options).await;
    store.close().await?;
    let report = result?;
    print(&report, out)?;
    Ok(if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The store's checks, then the snapshots through a healer that records nothing (it is
/// dropped, not closed, so that not even a checkpoint is written).
async fn verify(
    store: &healstore::Store,
    config: &healstore::config::Config,
    options: &VerifyOptions,
) -> anyhow::Result<VerifyReport> {
    let mut report = store.verify(options).await?;
    if report.anchor_position > 0 {
        // Streams cannot be folded from their start: every archived state stream needs a
        // snapshot that covers its archived events.
        let uncovered = store.uncovered_archived_stream().await?;
        report.ok &= uncovered.is_none();
        report.checks.push(healstore::store::CheckResult {
            check: "snapshots".into(),
            ok: uncovered.is_none(),
            position: None,
            detail: match uncovered {
                Some(u) => u.describe(),
                None => format!(
                    "every archived state stream has a snapshot covering its archived events \
                     (not compared with folds: events up to position {} are archived, so \
                     streams cannot be folded from their start)",
                    report.anchor_position
                ),
            },
        });
        return Ok(report);
    }
    let bad = async {
        let healer = config.builder().open(store.clone()).await?;
        let bad = healer.verify_snapshots().await;
        drop(healer);
        anyhow::Ok(bad?)
    }
    .await;
    let bad = match bad {
        Ok(bad) => bad,
        // A log already found altered (an undecodable payload in a strategy's stream) may not
        // fold: that follows from what is reported.
        Err(e) if !report.ok => {
            report.checks.push(healstore::store::CheckResult {
                check: "snapshots".into(),
                ok: false,
                position: None,
                detail: format!(
                    "not compared: the strategies' streams could not be folded: {}",
                    one_line(&e)
                ),
            });
            return Ok(report);
        }
        Err(e) => return Err(e),
    };
    let ok = bad.is_empty();
    report.ok &= ok;
    report.checks.push(healstore::store::CheckResult {
        check: "snapshots".into(),
        ok,
        position: None,
        detail: match bad.first() {
            None => "every strategy snapshot equals a fold of its stream".into(),
            Some((stream, what)) => {
                format!("{} snapshot(s) differ; first: {stream}: {what}", bad.len())
            }
        },
    });
    Ok(report)
}

fn print(report: &VerifyReport, out: &mut Out) -> anyhow::Result<()> {
    if out.json() {
        return out.json_value(report);
    }
    for c in &report.checks {
        let at = c
            .position
            .map(|p| format!(" at position {p}"))
            .unwrap_or_default();
        out.line(&format!(
            "{:<12} {}{at}: {}",
            c.check,
            if c.ok { "ok" } else { "FAILED" },
            c.detail
        ))?;
    }
    match report.first_problem() {
        None => out.line(&format!(
            "verified: {} events, head {} (keep it elsewhere, and pass it as --expect-head later)",
            report.events,
            report.head()
        )),
        Some(p) => out.line(&format!(
            "NOT verified: {}{}: {}",
            p.check,
            p.position
                .map(|p| format!(" at position {p}"))
                .unwrap_or_default(),
            p.detail
        )),
    }
}

/// `verify --archive FILE`: the file's chain on its own, then whether the database (when it
/// exists) records the cut that produced it.
async fn archive(cli: &Cli, file: &std::path::Path, out: &mut Out) -> anyhow::Result<ExitCode> {
    let mut check = healstore::store::archive::verify_archive(file).await?;
    let mut recorded = None;
    if check.ok && cli.db.exists() {
        let store = cli.open(false).await?;
        let end = check.header.as_ref().map(|h| h.end_hash.clone());
        // The record of the cut, or a later one that carries it among its earlier cuts.
        let found = store.recorded_cut(end.as_deref().unwrap_or("")).await?;
        store.close().await?;
        recorded = Some(found.is_some());
        if found.is_none() {
            check.ok = false;
            check.detail = format!(
                "{}; but {} records no archive ending with this hash",
                check.detail,
                cli.db.display()
            );
        } else {
            check.detail = format!(
                "{}; {} records this cut (events_archived at position {})",
                check.detail,
                cli.db.display(),
                found.unwrap_or_default()
            );
        }
    }
    if out.json() {
        out.json_value(&serde_json::json!({
            "ok": check.ok,
            "archive": file.display().to_string(),
            "header": check.header,
            "events": check.events,
            "position": check.position,
            "detail": check.detail,
            "recorded_in_database": recorded,
        }))?;
    } else {
        let at = check
            .position
            .map(|p| format!(" at position {p}"))
            .unwrap_or_default();
        out.line(&format!(
            "{} {}{at}: {}",
            if check.ok { "verified" } else { "NOT verified" },
            file.display(),
            check.detail
        ))?;
    }
    Ok(if check.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// An error and its causes on one line.
fn one_line(e: &anyhow::Error) -> String {
    e.chain()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(": ")
}
