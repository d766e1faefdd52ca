//! `healstore demo`: a short, deterministic demonstration of the event log. It writes the
//! failures and healing attempts of a small simulated fleet, then reads them back. A second
//! run continues where the first stopped (its events follow the ones already stored).

use chrono::Duration;
use futures_util::StreamExt;
use healstore::events::{
    ActionExecuted, FailureDetected, FailureResolved, HealingAttempted, HealingCompleted, Severity,
};
use healstore::{EventFilter, ExpectedVersion, HealEvent};
use serde_json::{Map, json};

use super::{Cli, Out};

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// How many failures to simulate.
    #[arg(long, default_value_t = 12, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    failures: u32,
}

pub async fn run(cli: &Cli, args: &DemoArgs, out: &mut Out) -> anyhow::Result<()> {
    let store = cli.open(true).await?;
    let start_head = store.head_position().await?;
    let now = cli.now();
    // Deterministic "randomness": a small linear congruential sequence seeded by how much the
    // log already holds, so that a second run differs from the first but every run reproduces.
    let mut seed = 0x2545_F491_4F6C_DD1Du64 ^ start_head as u64;
    let mut next = move || {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        seed >> 33
    };
    let types = [
        ("agent_down", Severity::High, "AgentRestart"),
        ("task_timeout", Severity::Medium, "TaskRetry"),
        ("resource_exhaustion", Severity::High, "GradualDegradation"),
        ("quorum_loss", Severity::Critical, "QuorumRecovery"),
    ];
    let n = args.failures as i64;
    for i in 0..n {
        let (failure_type, severity, strategy) = types[(next() % 4) as usize];
        let agent = format!("agent-{}", next() % 5 + 1);
        let failure_id = uuid::Uuid::now_v7().to_string();
        let detected = now - Duration::seconds((n - i) * 60);
        let took = 100 + (next() % 400) as i64;
        let success = next() % 10 < 8;
        let stream = format!("failure-{failure_id}");
        let mut facts = vec![
            (
                detected,
                HealEvent::FailureDetected(FailureDetected {
                    failure_id: failure_id.clone(),
                    failure_type: failure_type.into(),
                    severity,
                    agent_id: Some(agent.clone()),
                    task_id: None,
                    source_event: None,
                    metadata: Map::new(),
                }),
            ),
            (
                detected,
                HealEvent::HealingAttempted(HealingAttempted {
                    failure_id: failure_id.clone(),
                    strategy: strategy.into(),
                    agent_id: Some(agent.clone()),
                    failure_type: Some(failure_type.into()),
                    decision: "act".into(),
                    reason: format!("{strategy} handles {failure_type}"),
                    actions: vec![json!({"action": "restart", "target": agent})],
                    details: Map::new(),
                }),
            ),
            (
                detected + Duration::milliseconds(took),
                HealEvent::ActionExecuted(ActionExecuted {
                    failure_id: Some(failure_id.clone()),
                    strategy: strategy.into(),
                    agent_id: Some(agent.clone()),
                    action: "restart".into(),
                    target: Some(agent.clone()),
                    success,
                    error: (!success).then(|| "agent did not come back".to_string()),
                    duration_ms: took,
                }),
            ),
            (
                detected + Duration::milliseconds(took),
                HealEvent::HealingCompleted(HealingCompleted {
                    failure_id: failure_id.clone(),
                    strategy: strategy.into(),
                    agent_id: Some(agent.clone()),
                    failure_type: Some(failure_type.into()),
                    success,
                    duration_ms: took,
                    actions_taken: vec![format!("restarted {agent}")],
                    metadata: Map::new(),
                }),
            ),
        ];
        if success {
            facts.push((
                detected + Duration::milliseconds(took),
                HealEvent::FailureResolved(FailureResolved {
                    failure_id: failure_id.clone(),
                    failure_type: failure_type.into(),
                    agent_id: Some(agent.clone()),
                    strategy: Some(strategy.into()),
                    detected_at: detected,
                }),
            ));
        }
        let events = facts
            .iter()
            .map(|(at, fact)| fact.to_new_event(*at))
            .collect();
        store
            .append(&stream, ExpectedVersion::NoStream, events)
            .await?;
    }

    let mut stream = store.read(EventFilter::after(start_head).with_types(["healing_completed"]));
    let (mut ok, mut failed, mut total_ms) = (0u32, 0u32, 0i64);
    while let Some(e) = stream.next().await {
        if let Some(HealEvent::HealingCompleted(c)) = e?.decode() {
            if c.success {
                ok += 1;
            } else {
                failed += 1;
            }
            total_ms += c.duration_ms;
        }
    }
    drop(stream);
    let head = store.head_position().await?;
    store.close().await?;
    let summary = json!({
        "database": cli.db.display().to_string(),
        "failures": n,
        "events_written": head - start_head,
        "healed": ok,
        "not_healed": failed,
        "avg_healing_ms": if ok + failed > 0 { total_ms / (ok + failed) as i64 } else { 0 },
        "head_position": head,
    });
    if out.json() {
        out.json_value(&summary)?;
    } else {
        out.line(&format!(
            "simulated {n} failures: {ok} healed, {failed} not healed, average healing time {} ms",
            summary["avg_healing_ms"]
        ))?;
        out.line(&format!(
            "wrote {} events to {} (positions {}..={}); `healstore events` lists them",
            head - start_head,
            cli.db.display(),
            start_head + 1,
            head
        ))?;
    }
    Ok(())
}
