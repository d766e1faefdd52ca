//! Commands of the healing engine: record, circuits, circuit, tick, states, audit.

use std::process::ExitCode;

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use healstore::heal::{Failure, HealReport, Healer, Severity, SignalReport};
use healstore::{EventFilter, RecordedEvent};
use serde_json::{Map, Value, json};

use super::{Cli, Out};

#[derive(Debug, clap::Subcommand)]
pub enum Record {
    /// Record a failure and run the healer on it (decision mode: the decision is recorded and
    /// its actions printed for the caller to carry out; report the outcome with
    /// `record outcome`).
    Failure {
        /// The failure type (agent_down, task_timeout, resource_exhaustion, quorum_loss...).
        #[arg(long = "type")]
        failure_type: String,
        #[arg(long)]
        agent: Option<String>,
        #[arg(long)]
        task: Option<String>,
        /// critical, high, medium or low.
        #[arg(long, default_value = "high", value_parser = parse_severity)]
        severity: Severity,
        /// Strategy inputs as a JSON object (resource_type, current_usage, limit, ...).
        #[arg(long)]
        meta: Option<String>,
        /// The failure id (default: a new UUIDv7). Recording an id twice heals once; the retry
        /// prints the recorded answer.
        #[arg(long)]
        id: Option<String>,
        /// When the failure happened (default: now).
        #[arg(long, value_parser = super::parse_time)]
        at: Option<DateTime<Utc>>,
    },
    /// Detect a failure in a raw monitoring event and heal it as `record failure` does.
    Event {
        /// The raw event, e.g. '{"type":"heartbeat_failed","agent_id":"a-1"}'.
        #[arg(long)]
        json: String,
    },
    /// Report the outcome of a delegated decision.
    Outcome {
        #[arg(long)]
        failure: String,
        #[arg(long, conflicts_with = "failed", required_unless_present = "failed")]
        success: bool,
        #[arg(long)]
        failed: bool,
        #[arg(long)]
        duration_ms: Option<u32>,
        #[arg(long, value_parser = super::parse_time)]
        at: Option<DateTime<Utc>>,
    },
    /// Confirm that a failure recovered: its agent or task works again (once per failure;
    /// a recovery already recorded, by a success signal, a healthy status or an earlier
    /// confirmation, is the answer and nothing is written).
    Recovered {
        #[arg(long)]
        failure: String,
        /// When it recovered (default: now).
        #[arg(long, value_parser = super::parse_time)]
        at: Option<DateTime<Utc>>,
    },
    /// Report that an agent completed work successfully (a success signal; it recovers the
    /// agent's open failures, or the task's when `--task` is given).
    Success {
        #[arg(long)]
        agent: String,
        #[arg(long)]
        task: Option<String>,
        #[arg(long, value_parser = super::parse_time)]
        at: Option<DateTime<Utc>>,
    },
    /// Report a resource's usage (degradation steps back as pressure falls).
    Usage {
        #[arg(long)]
        resource: String,
        #[arg(long)]
        current: f64,
        #[arg(long)]
        limit: f64,
        #[arg(long, value_parser = super::parse_time)]
        at: Option<DateTime<Utc>>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CircuitCommand {
    /// Force the circuit open (the agent is taken out of rotation until closed).
    Open,
    /// Force the circuit closed.
    Close,
    /// Close the circuit and clear its counters and escalation.
    Reset,
    /// Ask whether a call may go to the agent: exit 0 when admitted, 1 when rejected.
    Permit,
}

fn parse_severity(s: &str) -> Result<Severity, String> {
    serde_json::from_value(Value::String(s.to_owned()))
        .map_err(|_| format!("{s:?} is not one of critical, high, medium, low"))
}

/// Opens the healer for one command: states are loaded as the command needs them.
pub async fn open_healer(cli: &Cli) -> anyhow::Result<Healer> {
    let (config, _) = healstore::config::Config::load(cli.config.as_deref())?;
    let store = cli.open(true).await?;
    config.record(&store).await?;
    Ok(config.builder().open_lazy(store).await?)
}

/// Opens the healer of an existing database for a command that reads state (`circuits`,
/// `tick`; `states` through `open_reading_healer`): a missing or empty file is refused rather than created. (Closing it may
/// save snapshots of the states it loaded, a cache that speeds up the next restore.)
pub async fn open_existing_healer(cli: &Cli) -> anyhow::Result<Healer> {
    open_existing(cli, true).await
}

/// `open_existing_healer` for `states`, which only reads: the configuration is not recorded (a
/// read writes nothing to the log, even after a run under another configuration, such as the
/// demo's preventions policy).
async fn open_reading_healer(cli: &Cli) -> anyhow::Result<Healer> {
    open_existing(cli, false).await
}

async fn open_existing(cli: &Cli, record: bool) -> anyhow::Result<Healer> {
    let (config, _) = healstore::config::Config::load(cli.config.as_deref())?;
    let store = cli.open(false).await?;
    if record {
        config.record(&store).await?;
    }
    Ok(config.builder().open_lazy(store).await?)
}

/// Opens the healer with every state restored (what a checkpoint before an archive needs).
pub async fn open_full_healer(cli: &Cli) -> anyhow::Result<Healer> {
    let (config, _) = healstore::config::Config::load(cli.config.as_deref())?;
    let store = cli.open(true).await?;
    config.record(&store).await?;
    Ok(config.builder().open(store).await?)
}

pub async fn record(cli: &Cli, what: &Record, out: &mut Out) -> anyhow::Result<ExitCode> {
    // Input is checked before the healer is opened (which records the configuration), so
    // that a refused command changes nothing.
    let input = check_input(what, cli.now())?;
    // The healer is opened without recording the configuration, so that a command the healer
    // would refuse is refused before anything is written.
    let (config, _) = healstore::config::Config::load(cli.config.as_deref())?;
    let store = cli.open(true).await?;
    let healer = config.builder().open_lazy(store.clone()).await?;
    if let Err(e) = precheck(&healer, what).await {
        drop(healer);
        store.close().await?;
        return Err(e);
    }
    config.record(&store).await?;
    let now = healer.now();
    let result = record_inner(&healer, what, input, now, out).await;
    healer.close().await?;
    result
}

/// The parsed `--meta` of `record failure`, or the failure detected in `record event`.
enum Input {
    None,
    Meta(Option<Map<String, Value>>),
    Detected(Option<Failure>),
}

/// What the healer would refuse, checked before anything is written.
async fn precheck(healer: &Healer, what: &Record) -> anyhow::Result<()> {
    use healstore::event::check_id;
    match what {
        Record::Failure {
            failure_type,
            agent,
            task,
            id,
            ..
        } => {
            check_id("failure_type", failure_type)?;
            for (name, v) in [("agent_id", agent), ("task_id", task), ("failure_id", id)] {
                if let Some(v) = v {
                    check_id(name, v)?;
                }
            }
        }
        Record::Outcome {
            failure, success, ..
        } => healer.check_outcome(failure, *success).await?,
        Record::Recovered { failure, at } => {
            healer
                .check_recovered(failure, at.unwrap_or_else(|| healer.now()))
                .await?
        }
        Record::Success { agent, task, .. } => {
            check_id("agent_id", agent)?;
            if let Some(t) = task {
                check_id("task_id", t)?;
            }
        }
        Record::Usage {
            resource,
            current,
            limit,
            ..
        } => {
            check_id("resource_type", resource)?;
            if !(current.is_finite() && limit.is_finite() && *limit > 0.0 && *current >= 0.0) {
                bail!("usage {current} of limit {limit} is not a valid measurement");
            }
        }
        Record::Event { .. } => {}
    }
    Ok(())
}

fn check_input(what: &Record, now: DateTime<Utc>) -> anyhow::Result<Input> {
    Ok(match what {
        Record::Failure {
            meta: Some(meta), ..
        } => {
            let v: Value = serde_json::from_str(meta).context("--meta is not valid JSON")?;
            let Value::Object(m) = v else {
                bail!("--meta must be a JSON object");
            };
            Input::Meta(Some(m))
        }
        Record::Failure { meta: None, .. } => Input::Meta(None),
        Record::Event { json } => {
            let raw: Value = serde_json::from_str(json).context("--json is not valid JSON")?;
            Input::Detected(healstore::heal::detect(&raw, now)?)
        }
        _ => Input::None,
    })
}

async fn record_inner(
    healer: &Healer,
    what: &Record,
    input: Input,
    now: DateTime<Utc>,
    out: &mut Out,
) -> anyhow::Result<ExitCode> {
    match what {
        Record::Failure {
            failure_type,
            agent,
            task,
            severity,
            meta: _,
            id,
            at,
        } => {
            let mut f = Failure::new(failure_type.clone(), *severity, at.unwrap_or(now));
            f.agent_id = agent.clone();
            f.task_id = task.clone();
            if let Some(id) = id {
                f.failure_id = id.clone();
            }
            if let Input::Meta(Some(m)) = input {
                f.metadata = m;
            }
            let report = healer.heal(f).await?;
            answer(out, &report)?;
        }
        Record::Event { json: _ } => {
            let Input::Detected(detected) = input else {
                bail!("internal error: the raw event was not checked");
            };
            match detected {
                Some(f) => {
                    let report = healer.heal(f).await?;
                    answer(out, &report)?;
                }
                None => {
                    if out.json() {
                        out.json_value(&json!({"detected": false}))?;
                    } else {
                        out.line("no failure detected in this event")?;
                    }
                }
            }
        }
        Record::Outcome {
            failure,
            success,
            failed: _,
            duration_ms,
            at,
        } => {
            let r = healer
                .record_outcome(
                    failure,
                    *success,
                    duration_ms.map(i64::from),
                    at.unwrap_or(now),
                )
                .await?;
            if out.json() {
                out.json_value(&r)?;
            } else {
                out.line(&format!(
                    "{}: {} {} by {} ({} ms){}",
                    if r.duplicate {
                        "already recorded (nothing was written again)"
                    } else {
                        "recorded"
                    },
                    r.failure_id,
                    if r.success { "healed" } else { "not healed" },
                    r.strategy,
                    r.duration_ms,
                    r.time_to_remediate_ms
                        .map(|t| format!(", remediated {t} ms after detection"))
                        .unwrap_or_default()
                ))?;
            }
        }
        Record::Recovered { failure, at } => {
            let r = healer.record_recovered(failure, at.unwrap_or(now)).await?;
            if out.json() {
                out.json_value(&r)?;
            } else {
                out.line(&format!(
                    "{}: {} recovered ({}) at {}, {} ms after detection",
                    if r.duplicate {
                        "already recorded (nothing was written again)"
                    } else {
                        "recorded"
                    },
                    r.failure_id,
                    r.how.as_str(),
                    healstore::time::format_time(r.recovered_at),
                    r.time_to_recover_ms
                ))?;
            }
        }
        Record::Success { agent, task, at } => {
            let r = healer
                .record_success(agent, task.as_deref(), at.unwrap_or(now))
                .await?;
            print_signal(out, &r)?;
        }
        Record::Usage {
            resource,
            current,
            limit,
            at,
        } => {
            let r = healer
                .record_usage(resource, *current, *limit, at.unwrap_or(now))
                .await?;
            print_signal(out, &r)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints a heal's answer and flushes it. The failure is recorded by now: when the answer
/// cannot be written, the error says so, and how to get the answer again.
fn answer(out: &mut Out, r: &HealReport) -> anyhow::Result<()> {
    print_report(out, r)
        .and_then(|()| out.flush())
        .with_context(|| {
            let f = &r.failure;
            format!(
                "failure {id} was recorded, but its answer could not be written; `healstore \
                 record failure --type {ty}{agent}{task} --id {id}` again returns it",
                id = f.failure_id,
                ty = f.failure_type,
                agent = f
                    .agent_id
                    .as_ref()
                    .map(|a| format!(" --agent {a}"))
                    .unwrap_or_default(),
                task = f
                    .task_id
                    .as_ref()
                    .map(|t| format!(" --task {t}"))
                    .unwrap_or_default(),
            )
        })
}

/// A heal's answer as `--format json` prints it (see [`HealReport::to_json`]).
pub(super) fn report_json(r: &HealReport) -> Map<String, Value> {
    r.to_json()
}

fn print_report(out: &mut Out, r: &HealReport) -> anyhow::Result<()> {
    if out.json() {
        return out.json_value(&report_json(r));
    }
    out.line(&format!("failure_id: {}", r.failure.failure_id))?;
    if r.duplicate {
        out.line("this failure id was already recorded: its recorded answer follows (nothing was done again)")?;
    }
    out.line(&format!("route: {}", r.route))?;
    for a in &r.attempts {
        out.line(&format!("  {} {}: {}", a.strategy, a.decision, a.reason))?;
        for (i, act) in a.actions.iter().enumerate() {
            let result = match a.results.get(i) {
                Some(Ok(s)) => format!(" -> {s}"),
                Some(Err(e)) => format!(" -> failed: {e}"),
                None => String::new(),
            };
            out.line(&format!("    action: {}{result}", act.describe()))?;
        }
    }
    if !r.delegated.is_empty() {
        out.line("carry out these actions, then run `healstore record outcome`:")?;
        for a in &r.delegated {
            out.line(&format!("  {}", serde_json::to_string(a)?))?;
        }
    }
    Ok(())
}

fn print_signal(out: &mut Out, r: &SignalReport) -> anyhow::Result<()> {
    if out.json() {
        return out.json_value(r);
    }
    if r.reactions.is_empty() {
        out.line("recorded; no strategy state changed")?;
    }
    for x in &r.reactions {
        out.line(&format!("{} [{}]: {}", x.strategy, x.key, x.reason))?;
        for a in &x.actions {
            out.line(&format!("  action: {}", a.describe()))?;
        }
    }
    if let Some(p) = r.permitted {
        out.line(if p { "permitted" } else { "rejected" })?;
    }
    if !r.recovered.is_empty() {
        out.line(&format!("recovered: {}", r.recovered.join(", ")))?;
    }
    Ok(())
}

pub async fn circuits(cli: &Cli, agent: Option<&str>, out: &mut Out) -> anyhow::Result<()> {
    let healer = open_existing_healer(cli).await?;
    let report = healer.circuits_report(agent).await;
    healer.close().await?;
    let report = report?;
    if out.json() {
        return out.json_value(&report);
    }
    let rows = report.circuits;
    let cell = |v: &Value, k: &str| match v.get(k) {
        None | Some(Value::Null) => "-".to_owned(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    };
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|v| {
            [
                "circuit",
                "state",
                "consecutive_failures",
                "reopen_count",
                "opened_at",
                "next_transition_at",
            ]
            .iter()
            .map(|k| cell(v, k))
            .collect()
        })
        .collect();
    out.table(
        &[
            "CIRCUIT",
            "STATE",
            "CONSECUTIVE_FAILURES",
            "REOPENS",
            "OPENED_AT",
            "NEXT_TRANSITION_AT",
        ],
        &table,
    )
}

pub async fn circuit(
    cli: &Cli,
    command: CircuitCommand,
    agent: &str,
    reason: Option<&str>,
    out: &mut Out,
) -> anyhow::Result<ExitCode> {
    // Refused before the healer is opened (which records the configuration), so that a
    // refused command changes nothing.
    let reason = reason.filter(|r| !r.trim().is_empty());
    if command != CircuitCommand::Permit && reason.is_none() {
        bail!("`circuit {command:?}` needs --reason");
    }
    let healer = open_healer(cli).await?;
    let result = match command {
        CircuitCommand::Permit => healer.permit(agent).await,
        other => {
            let word = match other {
                CircuitCommand::Open => "open",
                CircuitCommand::Close => "close",
                _ => "reset",
            };
            healer
                .command(
                    Some("CircuitBreaker"),
                    agent,
                    word,
                    reason.unwrap_or_default(),
                )
                .await
        }
    };
    healer.close().await?;
    let report = result?;
    print_signal(out, &report)?;
    Ok(match report.permitted {
        Some(false) => ExitCode::from(1),
        _ => ExitCode::SUCCESS,
    })
}

pub async fn tick(cli: &Cli, out: &mut Out) -> anyhow::Result<()> {
    // Nothing to move on in a database that does not exist: refused rather than created.
    let healer = open_existing_healer(cli).await?;
    let r = healer.tick().await;
    healer.close().await?;
    print_signal(out, &r?)
}

pub async fn states(cli: &Cli, strategy: Option<&str>, out: &mut Out) -> anyhow::Result<()> {
    let healer = open_reading_healer(cli).await?;
    let r = healer.states_report(strategy).await;
    healer.close().await?;
    let states = r?.states;
    if out.json() {
        return out.json_value(&healstore::heal::StatesReport { states });
    }
    let rows: Vec<Vec<String>> = states
        .iter()
        .map(|s| {
            vec![
                s.strategy.clone(),
                s.key.clone(),
                s.version.to_string(),
                s.state.to_string(),
            ]
        })
        .collect();
    out.table(&["STRATEGY", "KEY", "VERSION", "STATE"], &rows)
}

pub async fn audit(
    cli: &Cli,
    failure_id: Option<&str>,
    agent: Option<&str>,
    out: &mut Out,
) -> anyhow::Result<()> {
    let store = cli.open(false).await?;
    let filter = match (failure_id, agent) {
        (Some(f), None) => EventFilter::stream(healstore::heal::model::failure_stream(f)),
        (None, Some(a)) => EventFilter {
            agent_id: Some(a.to_owned()),
            position_order: true,
            ..Default::default()
        },
        _ => {
            store.close().await?;
            bail!("give a failure id or --agent (one of them)");
        }
    };
    let mut events = store.read(filter);
    let mut n = 0;
    while let Some(e) = events.next().await {
        let e = e?;
        n += 1;
        if out.json() {
            out.json_value(&e.to_line())?;
        } else {
            out.line(&describe(&e))?;
        }
    }
    drop(events);
    store.close().await?;
    if n == 0 {
        match failure_id {
            Some(f) => bail!("no failure with id {f:?} is recorded"),
            None => {
                if !out.json() {
                    out.line("no events name this agent")?;
                }
            }
        }
    }
    Ok(())
}

/// One line of the decision trail, for people.
fn describe(e: &RecordedEvent) -> String {
    let p = &e.payload;
    let s = |k: &str| p.get(k).and_then(Value::as_str).unwrap_or("-").to_owned();
    let what = match e.event_type.as_str() {
        "failure_detected" => format!(
            "{} detected (severity {}){}{}",
            s("failure_type"),
            s("severity"),
            p.get("agent_id")
                .and_then(Value::as_str)
                .map(|a| format!(" on agent {a}"))
                .unwrap_or_default(),
            p.get("task_id")
                .and_then(Value::as_str)
                .map(|t| format!(" for task {t}"))
                .unwrap_or_default(),
        ),
        "healing_attempted" => {
            let details = p
                .get("details")
                .and_then(Value::as_object)
                .map(summarize)
                .unwrap_or_default();
            format!(
                "{} decided {}: {}{}",
                s("strategy"),
                s("decision"),
                s("reason"),
                if details.is_empty() {
                    String::new()
                } else {
                    format!(" [{details}]")
                }
            )
        }
        "action_executed" => format!(
            "{} {} {}: {}",
            s("strategy"),
            s("action"),
            s("target"),
            if p.get("success").and_then(Value::as_bool) == Some(true) {
                "ok".to_owned()
            } else {
                format!("failed ({})", s("error"))
            }
        ),
        "healing_completed" => format!(
            "{} {} in {} ms",
            s("strategy"),
            if p.get("success").and_then(Value::as_bool) == Some(true) {
                "healed"
            } else {
                "did not heal"
            },
            p.get("duration_ms").cloned().unwrap_or(Value::Null)
        ),
        "failure_resolved" => format!(
            "remediated by {} (detected {})",
            s("strategy"),
            s("detected_at")
        ),
        "failure_recovered" => format!(
            "recovered ({}){}",
            s("how"),
            p.get("evidence_event_id")
                .and_then(Value::as_str)
                .map(|e| format!(", evidence {e}"))
                .or_else(|| p
                    .get("status")
                    .and_then(Value::as_str)
                    .map(|st| format!(", status {st}")))
                .unwrap_or_default()
        ),
        "circuit_transitioned" => format!(
            "circuit {}: {} -> {} ({})",
            s("circuit"),
            s("from"),
            s("to"),
            s("reason")
        ),
        _ => {
            let mut m = p.as_object().cloned().unwrap_or_default();
            m.remove("strategy");
            m.remove("key");
            summarize(&m)
        }
    };
    format!(
        "{}  #{}  {:<22} {}",
        healstore::time::format_time(e.occurred_at),
        e.position,
        e.event_type,
        what
    )
}

fn summarize(m: &Map<String, Value>) -> String {
    m.iter()
        .filter(|(k, _)| k.as_str() != "state_before")
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `audit --since T [--until T] [--agent A]`: every automated action in the window, streamed
/// (one JSON Lines record per action, or a table with fixed columns).
pub async fn audit_report(
    cli: &Cli,
    window: healstore::Window,
    agent: Option<&str>,
    out: &mut Out,
) -> anyhow::Result<()> {
    let store = cli.open(false).await?;
    let mut records = healstore::audit::records(
        &store,
        healstore::audit::AuditQuery {
            window,
            agent_id: agent.map(str::to_owned),
        },
    );
    // Columns and their widths; the last (the reason) is not padded. Longer cells push the
    // rest of their line along rather than being cut: nothing of an audit is hidden.
    const COLUMNS: &[(&str, usize)] = &[
        ("TIME", 27),
        ("FAILURE", 36),
        ("TYPE", 19),
        ("AGENT", 10),
        ("SEVERITY", 8),
        ("STRATEGY", 20),
        ("DECISION", 12),
        ("ACTION", 16),
        ("TARGET", 10),
        ("RESULT", 12),
        ("MS", 6),
        ("REMEDIATED", 27),
        ("RECOVERED", 37),
        ("REASON", 0),
    ];
    let render = |cells: &[String]| {
        let mut s = String::new();
        for (i, (c, (_, w))) in cells.iter().zip(COLUMNS).enumerate() {
            if i > 0 {
                s.push_str("  ");
            }
            s.push_str(c);
            s.extend(std::iter::repeat_n(
                ' ',
                w.saturating_sub(c.chars().count()),
            ));
        }
        s.trim_end().to_owned()
    };
    let result = async {
        let mut n = 0u64;
        if !out.json() {
            let header: Vec<String> = COLUMNS.iter().map(|(h, _)| (*h).to_owned()).collect();
            out.line(&render(&header))?;
        }
        while let Some(r) = records.next().await {
            let r = r?;
            n += 1;
            if out.json() {
                out.json_value(&r)?;
                continue;
            }
            let dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".to_owned());
            let result = match &r.error {
                Some(e) => format!("{}: {e}", r.result),
                None => r.result.clone(),
            };
            out.line(&render(&[
                r.time.clone(),
                dash(&r.failure_id),
                dash(&r.failure_type),
                dash(&r.agent_id),
                dash(&r.severity),
                r.strategy.clone(),
                dash(&r.decision),
                dash(&r.action),
                dash(&r.target),
                result,
                r.duration_ms
                    .map_or_else(|| "-".to_owned(), |d| d.to_string()),
                match &r.remediated_at {
                    Some(t) => t.clone(),
                    None => "no".to_owned(),
                },
                match (&r.recovered_at, &r.recovered_how) {
                    (Some(t), Some(how)) => format!("{t} ({how})"),
                    (Some(t), None) => t.clone(),
                    _ => "no".to_owned(),
                },
                dash(&r.reason),
            ]))?;
        }
        if n == 0 && !out.json() {
            out.line("no automated actions in this window")?;
        }
        anyhow::Ok(())
    }
    .await;
    drop(records);
    store.close().await?;
    result
}
