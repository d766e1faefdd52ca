//! `healstore prevent`: predictions turned into preventive actions, approved or rejected by a
//! person (or by the configured policy), and their effect measured against the holdout.

use std::process::ExitCode;

use healstore::analytics::{Analytics, PredictOptions};
use healstore::config::Config;
use healstore::heal::prevention::{self, PreventionView};

use super::analytics::{LearnArgs, WindowArgs};
use super::{Cli, Out};

#[derive(Debug, clap::Subcommand)]
pub enum Prevent {
    /// Predict (as `predict` does, recording the predictions) and turn each prediction at or
    /// above `prevention.min_probability` into a proposed prevention, kept back by the
    /// holdout or approved by the policy where the configuration says so.
    Propose {
        #[arg(long)]
        agent: Option<String>,
        #[command(flatten)]
        window: WindowArgs,
        #[command(flatten)]
        learn: LearnArgs,
    },
    /// Preventions and their status (pending, approved, rejected, held_back, executed, ...).
    List {
        /// Only preventions of this status.
        #[arg(long)]
        status: Option<String>,
    },
    /// Approve a pending prevention: its actions are carried out (or, without a coordinator,
    /// printed for the caller to carry out and report with `prevent outcome`). Once only.
    Approve {
        id: String,
        /// Who approves (default: $USER).
        #[arg(long)]
        by: Option<String>,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Reject a pending prevention, with the reason.
    Reject {
        id: String,
        #[arg(long)]
        by: Option<String>,
        #[arg(long)]
        reason: String,
    },
    /// Report the outcome of a delegated prevention's actions, once.
    Outcome {
        id: String,
        #[arg(long, conflicts_with = "failed", required_unless_present = "failed")]
        success: bool,
        #[arg(long)]
        failed: bool,
        #[arg(long, default_value_t = 0)]
        duration_ms: i64,
    },
    /// The measured effect: per prediction source and action, how often the predicted failure
    /// happened with the prevention and without (the holdout), the difference with a 95 %
    /// interval, and the cost. Default window: 7 days.
    Report {
        #[command(flatten)]
        window: WindowArgs,
    },
}

fn who(by: &Option<String>) -> String {
    by.clone()
        .or_else(|| std::env::var("USER").ok().filter(|u| !u.is_empty()))
        .unwrap_or_else(|| "operator".into())
}

fn row(v: &PreventionView) -> Vec<String> {
    vec![
        v.prevention_id.clone(),
        v.status.clone(),
        v.agent_id.clone().unwrap_or_else(|| "(fleet)".into()),
        v.failure_type.clone(),
        format!("{:.2}", v.probability),
        v.source.clone(),
        v.actions.join("+"),
        v.proposed_at.clone(),
        v.decided_by.clone().unwrap_or_default(),
    ]
}

const HEADER: &[&str] = &[
    "prevention",
    "status",
    "agent",
    "failure_type",
    "probability",
    "source",
    "action",
    "proposed_at",
    "decided_by",
];

pub async fn run(cli: &Cli, what: &Prevent, out: &mut Out) -> anyhow::Result<ExitCode> {
    match what {
        Prevent::Propose {
            agent,
            window,
            learn,
        } => {
            let window = window.resolve(cli.now(), "7d")?;
            let (config, _) = Config::load(cli.config.as_deref())?;
            let options =
                PredictOptions::for_request(&config, &learn.learning(), agent.as_deref(), &window)?;
            let healer = super::heal::open_healer(cli).await?;
            let report = Analytics::new(healer.store())
                .predict(window.until, &options)
                .await?;
            let proposals = healer
                .propose_preventions(&report.predictions, window.until)
                .await;
            healer.close().await?;
            let proposals = proposals?;
            if out.json() {
                out.json_value(&serde_json::json!({ "proposals": proposals }))?;
                return Ok(ExitCode::SUCCESS);
            }
            if proposals.is_empty() {
                out.line("No failure is predicted.")?;
            }
            for p in &proposals {
                out.line(&format!(
                    "{} {}: {}{}",
                    p.prevention_id,
                    p.status,
                    p.reason,
                    p.policy
                        .as_ref()
                        .map(|w| format!(" (not approved automatically: {w})"))
                        .unwrap_or_default()
                ))?;
            }
        }
        Prevent::List { status } => {
            let store = cli.open(false).await?;
            let list = prevention::list(&store, None, None).await;
            store.close().await?;
            let mut list = list?;
            if let Some(s) = status {
                list.retain(|v| &v.status == s);
            }
            if out.json() {
                out.json_value(&serde_json::json!({ "preventions": list }))?;
            } else if list.is_empty() {
                out.line("No prevention.")?;
            } else {
                let rows: Vec<Vec<String>> = list.iter().map(row).collect();
                out.table(HEADER, &rows)?;
            }
        }
        Prevent::Approve { id, by, reason } => {
            let healer = super::heal::open_existing_healer(cli).await?;
            let r = healer
                .approve_prevention(id, &who(by), reason.as_deref(), cli.now())
                .await;
            healer.close().await?;
            let r = r?;
            if out.json() {
                out.json_value(&r)?;
            } else {
                out.line(&format!(
                    "{} approved by {}: {} ({})",
                    r.prevention_id, r.by, r.decision, r.reason
                ))?;
                for a in &r.actions {
                    out.line(&format!(
                        "  {}{}",
                        a.describe(),
                        if r.decision == "delegated" {
                            " (carry it out, then: healstore prevent outcome ID --success|--failed)"
                        } else {
                            ""
                        }
                    ))?;
                }
            }
        }
        Prevent::Reject { id, by, reason } => {
            let healer = super::heal::open_existing_healer(cli).await?;
            let r = healer
                .reject_prevention(id, &who(by), reason, cli.now())
                .await;
            healer.close().await?;
            let v = r?;
            if out.json() {
                out.json_value(&v)?;
            } else {
                out.line(&format!(
                    "{} rejected by {}: {}",
                    v.prevention_id,
                    v.decided_by.as_deref().unwrap_or(""),
                    v.decision_reason.as_deref().unwrap_or("")
                ))?;
            }
        }
        Prevent::Outcome {
            id,
            success,
            failed: _,
            duration_ms,
        } => {
            let healer = super::heal::open_existing_healer(cli).await?;
            let r = healer
                .record_prevention_outcome(id, *success, *duration_ms, cli.now())
                .await;
            healer.close().await?;
            let (v, duplicate) = r?;
            if out.json() {
                out.json_value(&serde_json::json!({ "prevention": v, "duplicate": duplicate }))?;
            } else {
                out.line(&format!(
                    "{} {}{}",
                    v.prevention_id,
                    v.status,
                    if duplicate { " (already recorded)" } else { "" }
                ))?;
            }
        }
        Prevent::Report { window } => {
            let window = window.resolve(cli.now(), "7d")?;
            let store = cli.open(false).await?;
            let r = Analytics::new(&store).prevention_report(&window).await;
            store.close().await?;
            let r = r?;
            if out.json() {
                out.json_value(&r)?;
                return Ok(ExitCode::SUCCESS);
            }
            out.line(&format!(
                "{} proposed: {} pending, {} held back, {} approved (awaiting outcome), {} \
                 executed, {} failed, {} shadow, {} declined, {} rejected",
                r.proposed,
                r.pending,
                r.held_back,
                r.approved,
                r.executed,
                r.failed,
                r.shadow,
                r.declined,
                r.rejected
            ))?;
            if r.effects.is_empty() {
                out.line("No settled prevention or holdout prediction yet.")?;
                return Ok(ExitCode::SUCCESS);
            }
            let rows: Vec<Vec<String>> = r
                .effects
                .iter()
                .map(|e| {
                    vec![
                        e.source.clone(),
                        e.action.clone(),
                        format!("{}/{}", e.assigned_failed, e.assigned),
                        format!("{}/{}", e.held_back_failed, e.held_back),
                        format!("{:+.2}", e.reduction),
                        format!("[{:+.2}, {:+.2}]", e.ci_low, e.ci_high),
                        format!("{}/{}", e.prevented_failed, e.prevented),
                        format!("{:+.2}", e.executed_reduction),
                        e.actions_taken.to_string(),
                        e.agents_disrupted.to_string(),
                        format!("{}{}", e.verdict, if e.flagged { " (flagged)" } else { "" }),
                    ]
                })
                .collect();
            out.table(
                &[
                    "source",
                    "action",
                    "failed_assigned",
                    "failed_held_back",
                    "reduction",
                    "95%_interval",
                    "failed_executed",
                    "executed_reduction",
                    "actions",
                    "agents_disrupted",
                    "verdict",
                ],
                &rows,
            )?;
            out.line(
                "reduction: held back minus assigned to act, whatever became of the proposal \
                 (intention to treat); executed_reduction compares the executed ones alone, \
                 biased when people choose what to approve",
            )?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
