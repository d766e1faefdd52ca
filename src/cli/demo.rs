//! `healstore demo`: a simulated fleet healed live by the real healer on the real store.
//!
//! Flapping agents, slow tasks, token pressure that rises and falls, and a lost quorum are
//! generated with seeded randomness; every raw event goes through detection and the healer,
//! which acts through the simulated coordinator. What shows that the fleet works again is
//! reported as a caller would: healthy agents' successes, retried tasks that succeed, and
//! confirmations once token pressure has fallen back or the quorum is whole again (the
//! failures of neither an agent nor a task). Simulated time advances by a fixed step per
//! tick (an injected clock, no sleeping), and the simulated period ends at the present (or at
//! `--now`), so that the commands run next see it in their default window. A second run
//! continues where the first stopped: it starts after the newest recorded event and simulates
//! the ticks that fit before the present, and the circuits, backoffs and degradation levels
//! are restored from the log.
//!
//! Prevention is at work too: every 10 simulated seconds the demo predicts from the last half
//! hour and turns the predictions into preventions, approved by a policy (the configuration's
//! `[prevention.auto]`, else the demo's own) with a holdout kept back; a preventive restart
//! makes the simulated agent fail less for a while ([`SimulatedFleet::refresh`]). Failure ids
//! are derived from the seed and the log's head at the start (UUIDv5), so that the prediction
//! ids, and with them the holdout's choices, are the same in every run with the same seed, and
//! a run continuing a log never reuses an earlier run's ids.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::Duration;
use healstore::analytics::{LearnOptions, PredictOptions};
use healstore::heal::prevention::{AutoApproval, PreventionPolicy};
use healstore::heal::sim::{FRESH_FACTOR, SimRng, SimulatedFleet, Temperament};
use healstore::heal::{Coordinator, HealReport, Healer};
use healstore::{EventFilter, ManualClock, Store, StoreOptions};
use serde_json::{Value, json};

use super::{Cli, Out};

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Simulated ticks (5 seconds each), ending at the present; a run that continues a previous
    /// one simulates at most the ticks that fit between the previous run's end and now.
    #[arg(long, default_value_t = 120, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    ticks: u32,
    /// Agents in the fleet.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    agents: u32,
    /// Random seed (default: derived from what the log already holds, so that each run
    /// differs and every run can be reproduced).
    #[arg(long)]
    seed: Option<u64>,
    /// Also write the closing dashboard as a self-contained HTML page to this file (a new
    /// file, unless `--force`).
    #[arg(long)]
    html: Option<std::path::PathBuf>,
    /// Replace the `--html` file if it exists (never the database or a non-regular file).
    #[arg(long, requires = "html")]
    force: bool,
}

const TICK: i64 = 5;

/// Every this many ticks (a simulated minute) the demo predicts and proposes preventions.
const PREDICT_EVERY: u32 = 12;

/// The demo's failure ids: UUIDv5 of the seed, the log's head when the run started, and a
/// counter. The same seed on the same log gives the same ids; a run continuing a log starts at
/// another head, so its ids are new.
struct FailureIds {
    seed: u64,
    head: i64,
    next: u64,
}

impl FailureIds {
    fn next(&mut self) -> String {
        self.next += 1;
        uuid::Uuid::new_v5(
            &uuid::Uuid::NAMESPACE_OID,
            format!("healstore-demo:{}:{}:{}", self.seed, self.head, self.next).as_bytes(),
        )
        .to_string()
    }
}

/// When the simulated period starts and how many ticks it holds. The period ends at `now`, so
/// that the commands run after the demo see it in their default window: it starts `ticks`
/// ticks earlier, or, when the log already holds events in that span (a previous run), one tick
/// after the newest of them, with as many ticks as fit before `now`.
fn schedule(
    now: chrono::DateTime<chrono::Utc>,
    last: Option<chrono::DateTime<chrono::Utc>>,
    ticks: u32,
) -> anyhow::Result<(chrono::DateTime<chrono::Utc>, u32)> {
    let full = now - Duration::seconds(TICK * i64::from(ticks));
    match last {
        Some(t) if t + Duration::seconds(TICK) > full => {
            let start = t + Duration::seconds(TICK);
            let fit = (now - start).num_seconds().div_euclid(TICK);
            if fit < 1 {
                anyhow::bail!(
                    "the log's newest event is at {}, less than one tick ({TICK} s) before now \
                     ({}): the demo simulates the time up to now and continues after the \
                     log's newest event, so there is nothing to simulate yet; run it again \
                     later, or pass a later --now",
                    healstore::time::format_time(t),
                    healstore::time::format_time(now)
                );
            }
            Ok((start, ticks.min(u32::try_from(fit).unwrap_or(u32::MAX))))
        }
        _ => Ok((full, ticks)),
    }
}

#[derive(Default, serde::Serialize)]
struct Tally {
    failures: u64,
    healed: u64,
    not_healed: u64,
    held: u64,
    withheld: u64,
    by_type: BTreeMap<String, u64>,
    by_strategy: BTreeMap<String, u64>,
}

impl Tally {
    fn add(&mut self, r: &HealReport) {
        self.failures += 1;
        *self
            .by_type
            .entry(r.failure.failure_type.clone())
            .or_default() += 1;
        let last = r.attempts.last().map(|a| a.decision.as_str()).unwrap_or("");
        match last {
            "held" => self.held += 1,
            "withheld" => self.withheld += 1,
            _ if r.result.success => {
                self.healed += 1;
                *self
                    .by_strategy
                    .entry(r.result.strategy_used.clone())
                    .or_default() += 1;
            }
            _ => self.not_healed += 1,
        }
    }
}

pub async fn run(cli: &Cli, args: &DemoArgs, out: &mut Out) -> anyhow::Result<()> {
    let (config, _) = healstore::config::Config::load(cli.config.as_deref())?;
    // A page that could not be written must not cost a simulated run: check it first.
    if let Some(path) = &args.html {
        super::analytics::html_check(cli, path, args.force)?;
    }
    // Find where the previous run stopped, to continue after it.
    let probe = cli.open(true).await?;
    let head = probe.head_position().await?;
    let mut last = probe.read(EventFilter {
        after_position: head - 1,
        ..Default::default()
    });
    let last_time = futures_util::StreamExt::next(&mut last)
        .await
        .transpose()?
        .map(|e| e.occurred_at);
    drop(last);
    probe.close().await?;
    let (start, ticks) = schedule(cli.now(), last_time, args.ticks)?;
    let clock = Arc::new(ManualClock::new(start));
    let store = Store::open(
        &cli.db,
        StoreOptions {
            durability: cli.durability,
            clock: clock.clone(),
            ..Default::default()
        },
    )
    .await?;
    // Prevention at work: unless the configuration says otherwise, the demo approves
    // preventive restarts by itself and keeps three predictions in ten back, so that its
    // effect shows against the holdout within the simulated minutes.
    let mut config = config;
    if config.prevention.auto.is_none() {
        config.prevention = PreventionPolicy {
            min_probability: 0.6,
            holdout_share: 0.3,
            holdout_seed: 0,
            auto: Some(AutoApproval {
                min_probability: 0.6,
                actions: vec!["restart_agent".into()],
                max_per_agent_per_hour: 30,
            }),
        };
    }
    config.record(&store).await?;
    let seed = args.seed.unwrap_or(head as u64);
    let mut ids = FailureIds {
        seed,
        head,
        next: 0,
    };
    let fleet = Arc::new(
        SimulatedFleet::new(args.agents as usize, seed).with_simulated_latency(clock.clone()),
    );
    let healer = config
        .builder()
        .coordinator(fleet.clone() as Arc<dyn Coordinator>)
        .open(store)
        .await?;
    let mut rng = SimRng::new(seed.wrapping_add(17));
    let mut tally = Tally::default();
    let quorum_tick = ticks / 2;
    let mut successes = 0u64;
    let mut transitions = 0usize;
    // Failures of the fleet or a resource, confirmed recovered once the simulation sees it.
    let mut pressure: Vec<String> = Vec::new();
    let mut quorum: Vec<(String, u32)> = Vec::new();
    let mut confirmed = 0u64;
    let mut prevented: BTreeMap<String, u64> = BTreeMap::new();
    let predict_options = PredictOptions {
        learn: LearnOptions {
            sequence_gap: Duration::minutes(2),
            ..LearnOptions::default()
        },
        learn_window: Duration::minutes(30),
        routes: config.route_names(),
        ..PredictOptions::default()
    };

    for tick in 0..ticks {
        // Each tick at its instant on the schedule; a tick whose simulated actions took longer
        // than a tick starts late rather than early.
        let due = start + Duration::seconds(TICK * i64::from(tick));
        if clock.now_value() < due {
            clock.set(due);
        }
        let now = clock.now_value();
        let snapshot = fleet.snapshot();
        for (id, agent) in &snapshot.agents {
            if !agent.registered {
                continue;
            }
            let mut p_fail = match (agent.healthy, agent.temperament) {
                (false, _) => 0.6,
                (true, Temperament::Steady) => 0.01,
                (true, Temperament::Flapping) => 0.25,
                (true, Temperament::Broken) => 0.1,
            };
            if agent.healthy && agent.fresh > 0 {
                // Restarted before it failed: it fails less for a while.
                p_fail *= FRESH_FACTOR;
            }
            if rng.chance(p_fail) {
                fleet.fail_agent(id);
                let raw = json!({"type": "heartbeat_failed", "agent_id": id});
                heal_raw(&healer, raw, &mut ids, &mut tally).await?;
            } else if agent.healthy && rng.chance(0.2) {
                healer.record_success(id, None, now).await?;
                successes += 1;
            }
        }
        // Slow tasks: a small pool, so that retries of one task add up; a retried task
        // succeeds, now and then, on a healthy agent.
        if rng.chance(0.25) {
            let task = format!("task-{}", rng.below(6) + 1);
            let agent = format!("agent-{}", rng.below(args.agents as usize) + 1);
            let raw = json!({"type": "task_timeout", "task_id": task, "agent_id": agent});
            heal_raw(&healer, raw, &mut ids, &mut tally).await?;
        }
        if rng.chance(0.3) {
            let task = format!("task-{}", rng.below(6) + 1);
            let healthy: Vec<&String> = snapshot
                .agents
                .iter()
                .filter(|(_, a)| a.registered && a.healthy)
                .map(|(id, _)| id)
                .collect();
            if !healthy.is_empty() {
                let agent = healthy[rng.below(healthy.len())];
                healer.record_success(agent, Some(&task), now).await?;
                successes += 1;
            }
        }
        // Token pressure: a slow wave that crosses the degradation thresholds and falls back.
        let phase = f64::from(tick) / 12.0;
        let usage = (0.72 + 0.27 * phase.sin()).clamp(0.0, 1.0);
        let limit = 100_000.0;
        if usage >= 0.8 && rng.chance(0.5) {
            let raw = json!({
                "type": "resource_exhaustion", "resource_type": "tokens",
                "current_usage": (usage * limit).round(), "limit": limit,
            });
            if let Some(r) = heal_raw(&healer, raw, &mut ids, &mut tally).await? {
                pressure.push(r.failure.failure_id);
            }
        } else if tick % 3 == 0 {
            healer
                .record_usage("tokens", (usage * limit).round(), limit, now)
                .await?;
        }
        if usage < 0.8 {
            // Pressure has fallen back: the token failures are over.
            for id in pressure.drain(..) {
                healer.record_recovered(&id, healer.now()).await?;
                confirmed += 1;
            }
        }
        // Halfway through, part of the fleet drops out and the quorum is lost.
        if tick == quorum_tick {
            let lost = fleet.lose_agents((args.agents as usize / 2).max(1));
            let healthy = fleet.topology().await.map(|t| t.healthy_count).unwrap_or(0);
            let required = (args.agents / 2 + 1).max(3);
            let raw = json!({
                "type": "quorum_loss", "required_quorum": required,
                "healthy_agents": healthy, "lost": lost,
            });
            if let Some(r) = heal_raw(&healer, raw, &mut ids, &mut tally).await? {
                quorum.push((r.failure.failure_id, required));
            }
        }
        if !quorum.is_empty() {
            let healthy = fleet.topology().await.map(|t| t.healthy_count).unwrap_or(0);
            let mut still = Vec::new();
            for (id, required) in quorum.drain(..) {
                if healthy >= required {
                    healer.record_recovered(&id, healer.now()).await?;
                    confirmed += 1;
                } else {
                    still.push((id, required));
                }
            }
            quorum = still;
        }
        transitions += healer.tick().await?.reactions.len();
        fleet.age();
        // Every minute: predict from the last half hour (sequences within 2 minutes: a flapping
        // agent that just failed is likely to fail again), and turn the predictions into
        // preventions (approved by the policy, or held back).
        if tick % PREDICT_EVERY == PREDICT_EVERY - 1 {
            let now = clock.now_value();
            let predicted = healstore::Analytics::new(healer.store())
                .predict(now, &predict_options)
                .await?;
            for p in healer
                .propose_preventions(&predicted.predictions, now)
                .await?
            {
                // What a preventive restart does in this simulated fleet.
                if let Some(a) = &p.approval {
                    for r in a.results.iter().filter(|r| r.success) {
                        if r.action == "restart_agent"
                            && let Some(agent) = &r.target
                        {
                            fleet.refresh(agent);
                        }
                    }
                }
                // New proposals only (a prediction made again is answered `already_proposed`;
                // one no strategy offers an action for writes nothing and may be offered later).
                if matches!(
                    p.status.as_str(),
                    "proposed" | "auto_approved" | "held_back"
                ) {
                    *prevented.entry(p.status).or_insert(0u64) += 1;
                }
            }
        }
    }

    let circuits = healer.states(Some("CircuitBreaker")).await?;
    let degradation = healer.states(Some("GradualDegradation")).await?;
    // The simulated period ends at the present (or where the last tick's actions ended, if
    // they ran past it).
    let end = clock.now_value().max(cli.now());
    let head = healer.store().head_position().await?;
    // The run ends with the dashboard over the simulated period.
    let window = healstore::Window::new(start, end)?;
    let dashboard = healstore::Analytics::new(healer.store())
        .dashboard(&window, &Default::default(), end)
        .await?;
    healer.close().await?;
    if let Some(path) = &args.html {
        super::analytics::write_html(cli, path, args.force, &dashboard)?;
    }
    let fleet_state = fleet.snapshot();

    let circuit_rows: Vec<Value> = circuits
        .iter()
        .map(|c| {
            json!({
                "agent_id": c.key,
                "state": c.state.get("state").cloned().unwrap_or(Value::Null),
                "reopen_count": c.state.get("reopen_count").cloned().unwrap_or(Value::Null),
            })
        })
        .collect();
    let summary = json!({
        "database": cli.db.display().to_string(),
        "seed": seed,
        "ticks": ticks,
        "simulated_from": healstore::time::format_time(start),
        "simulated_until": healstore::time::format_time(end),
        "failures": tally,
        "success_signals": successes,
        "recoveries_confirmed": confirmed,
        "tick_reactions": transitions,
        "circuits": circuit_rows,
        "degradation": degradation.iter().map(|d| json!({"resource": d.key, "state": d.state})).collect::<Vec<_>>(),
        "fleet": {
            "registered": fleet_state.agents.values().filter(|a| a.registered).count(),
            "healthy": fleet_state.agents.values().filter(|a| a.registered && a.healthy).count(),
            "spawned": fleet_state.spawned,
            "paused_priorities": fleet_state.paused,
            "concurrency": fleet_state.concurrency,
            "caching": fleet_state.caching,
            "prompt_simplification": fleet_state.prompt_simplification,
            "retries_scheduled": fleet_state.retries_scheduled,
        },
        "preventions": prevented,
        "head_position": head,
        "dashboard": dashboard,
    });
    if out.json() {
        return out.json_value(&summary);
    }
    out.line(&format!(
        "simulated {} agents for {} ticks ({} to {}), seed {seed}",
        args.agents,
        ticks,
        healstore::time::format_time(start),
        healstore::time::format_time(end)
    ))?;
    out.line(&format!(
        "failures: {} ({} healed, {} not healed, {} held by an open circuit or backoff, {} withheld by limits)",
        tally.failures, tally.healed, tally.not_healed, tally.held, tally.withheld
    ))?;
    for (t, n) in &tally.by_type {
        out.line(&format!("  {t:<22} {n}"))?;
    }
    out.line("healed by:")?;
    for (s, n) in &tally.by_strategy {
        out.line(&format!("  {s:<40} {n}"))?;
    }
    out.line(&format!(
        "fleet: {} registered, {} healthy, {} spawned; paused {:?}; concurrency {}; caching {}; prompt simplification {}",
        summary["fleet"]["registered"],
        summary["fleet"]["healthy"],
        fleet_state.spawned,
        fleet_state.paused,
        fleet_state.concurrency,
        fleet_state.caching,
        fleet_state.prompt_simplification
    ))?;
    let rows: Vec<Vec<String>> = circuits
        .iter()
        .map(|c| {
            let g = |k: &str| match c.state.get(k) {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Null) | None => "-".into(),
                Some(v) => v.to_string(),
            };
            vec![
                c.key.clone(),
                g("state"),
                g("consecutive_failures"),
                g("reopen_count"),
                g("next_transition_at"),
            ]
        })
        .collect();
    out.line("circuits:")?;
    out.table(
        &[
            "AGENT",
            "STATE",
            "CONSECUTIVE_FAILURES",
            "REOPENS",
            "NEXT_TRANSITION_AT",
        ],
        &rows,
    )?;
    out.line(&format!(
        "preventions: {} proposed ({} approved by the policy, {} held back by the holdout, {} \
         left to a person); `healstore prevent list`, `healstore prevent report`",
        prevented.values().sum::<u64>(),
        prevented.get("auto_approved").unwrap_or(&0),
        prevented.get("held_back").unwrap_or(&0),
        prevented.get("proposed").unwrap_or(&0),
    ))?;
    out.line(&format!(
        "{head} events in {}; run `healstore demo` again to continue, `healstore circuits`, `healstore audit --agent agent-5`",
        cli.db.display()
    ))?;
    out.line("")?;
    super::analytics::print_dashboard(&dashboard, out)?;
    if let Some(path) = &args.html {
        out.line(&format!("\nwrote {}", path.display()))?;
    }
    Ok(())
}

async fn heal_raw(
    healer: &Healer,
    mut raw: Value,
    ids: &mut FailureIds,
    tally: &mut Tally,
) -> anyhow::Result<Option<HealReport>> {
    raw["failure_id"] = Value::String(ids.next());
    let Some(f) = healstore::heal::detect(&raw, healer.now())? else {
        return Ok(None);
    };
    let report = healer.heal(f).await?;
    tally.add(&report);
    Ok(Some(report))
}
