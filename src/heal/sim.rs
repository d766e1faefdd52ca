//! A simulated fleet: a [`Coordinator`] with seeded randomness, for `healstore demo`, tests
//! and benchmarks. Agents can be flapping (they fail often and a restart brings them back only
//! some of the time) or broken (re-registration fails); tasks queue by priority; spawned
//! agents join the fleet.

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;
use serde::Serialize;
use serde_json::{Map, Value};

use super::coordinator::{CoordResult, Coordinator, CoordinatorError};
use super::model::{AgentStatus, Priority, Topology};

/// A small deterministic random number generator (PCG-style LCG): the same seed gives the same
/// run, on every platform.
#[derive(Debug, Clone)]
pub struct SimRng(u64);

impl SimRng {
    pub fn new(seed: u64) -> Self {
        SimRng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    pub fn next_u32(&mut self) -> u32 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) as u32
    }

    /// A float in [0, 1).
    pub fn unit(&mut self) -> f64 {
        f64::from(self.next_u32()) / f64::from(u32::MAX)
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    /// An index below `n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u32() as usize) % n.max(1)
    }
}

/// How a simulated agent behaves.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Temperament {
    /// Rarely fails.
    Steady,
    /// Fails often; a restart brings it back with probability 1/2.
    Flapping,
    /// Its re-registration fails: restarts never work.
    Broken,
}

/// One simulated agent.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SimAgent {
    pub registered: bool,
    pub healthy: bool,
    pub temperament: Temperament,
    pub restarts: u32,
    /// Ticks left in which a preventive restart keeps the agent from failing as often: the
    /// simulation's real effect of prevention ([`SimulatedFleet::refresh`]).
    pub fresh: u32,
}

/// How long a preventive restart keeps an agent fresh, in ticks, and what it multiplies the
/// agent's chance of failing by meanwhile.
pub const FRESH_TICKS: u32 = 24;
pub const FRESH_FACTOR: f64 = 0.15;

/// The fleet's observable state.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct FleetState {
    pub agents: BTreeMap<String, SimAgent>,
    /// Queued tasks per priority, and which priorities are paused.
    pub queued: BTreeMap<String, u32>,
    pub paused: Vec<Priority>,
    pub concurrency: u32,
    pub caching: bool,
    pub prompt_simplification: bool,
    pub retries_scheduled: u32,
    pub spawned: u32,
    pub calls: u64,
}

/// The simulated fleet.
#[derive(Debug)]
pub struct SimulatedFleet {
    state: Mutex<(FleetState, SimRng)>,
    /// When set, every call moves this clock on by a simulated duration, so that healing
    /// takes (simulated) time and MTTR is not zero.
    latency: Option<std::sync::Arc<crate::clock::ManualClock>>,
}

impl SimulatedFleet {
    /// A fleet of `agents` agents named `agent-1`.., of mixed temperaments, seeded.
    pub fn new(agents: usize, seed: u64) -> Self {
        let mut rng = SimRng::new(seed);
        let mut state = FleetState {
            concurrency: 10,
            ..Default::default()
        };
        for i in 1..=agents {
            let temperament = match i % 5 {
                0 => Temperament::Flapping,
                3 if agents >= 5 => Temperament::Broken,
                _ => Temperament::Steady,
            };
            state.agents.insert(
                format!("agent-{i}"),
                SimAgent {
                    registered: true,
                    healthy: true,
                    temperament,
                    restarts: 0,
                    fresh: 0,
                },
            );
        }
        for (p, n) in [("HIGH", 5), ("MEDIUM", 10), ("LOW", 20), ("BACKGROUND", 15)] {
            state.queued.insert(p.to_owned(), n + rng.below(5) as u32);
        }
        SimulatedFleet {
            state: Mutex::new((state, rng)),
            latency: None,
        }
    }

    /// Makes every call take simulated time on `clock` (a restart 150-450 ms, a spawn
    /// 300-900 ms, a retry 40-200 ms, a setting 5-30 ms).
    pub fn with_simulated_latency(
        mut self,
        clock: std::sync::Arc<crate::clock::ManualClock>,
    ) -> Self {
        self.latency = Some(clock);
        self
    }

    /// Spends a simulated duration between `lo` and `hi` milliseconds.
    fn spend(&self, lo: u64, hi: u64) {
        if let Some(clock) = &self.latency {
            let ms = {
                let mut g = self.state.lock().unwrap_or_else(|e| e.into_inner());
                lo + g.1.below((hi - lo + 1) as usize) as u64
            };
            clock.advance(chrono::Duration::milliseconds(ms as i64));
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut FleetState, &mut SimRng) -> T) -> T {
        let mut g = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (s, r) = &mut *g;
        s.calls += 1;
        f(s, r)
    }

    /// A copy of the fleet's state.
    pub fn snapshot(&self) -> FleetState {
        self.with(|s, _| s.clone())
    }

    /// Marks an agent as failed (the simulation's "something went wrong").
    pub fn fail_agent(&self, agent_id: &str) {
        self.with(|s, _| {
            if let Some(a) = s.agents.get_mut(agent_id) {
                a.healthy = false;
            }
        })
    }

    /// A preventive restart went through: an agent that came back healthy fails less for
    /// [`FRESH_TICKS`] ticks (the simulation's effect of prevention; a flapping agent that came
    /// back unhealthy gets nothing, a broken one's restart failed before it got here).
    pub fn refresh(&self, agent_id: &str) {
        self.with(|s, _| {
            if let Some(a) = s.agents.get_mut(agent_id)
                && a.registered
                && a.healthy
            {
                a.fresh = FRESH_TICKS;
            }
        })
    }

    /// One tick passed: preventive restarts wear off.
    pub fn age(&self) {
        self.with(|s, _| {
            for a in s.agents.values_mut() {
                a.fresh = a.fresh.saturating_sub(1);
            }
        })
    }

    /// Removes agents from the fleet (a lost quorum).
    pub fn lose_agents(&self, n: usize) -> Vec<String> {
        self.with(|s, _| {
            let victims: Vec<String> = s
                .agents
                .iter()
                .filter(|(_, a)| a.registered && a.healthy)
                .map(|(k, _)| k.clone())
                .take(n)
                .collect();
            for v in &victims {
                if let Some(a) = s.agents.get_mut(v) {
                    a.healthy = false;
                    a.registered = false;
                }
            }
            victims
        })
    }
}

#[async_trait]
impl Coordinator for SimulatedFleet {
    async fn agent_status(&self, agent_id: &str) -> CoordResult<Option<AgentStatus>> {
        Ok(self.with(|s, _| {
            s.agents.get(agent_id).map(|a| AgentStatus {
                agent_id: agent_id.to_owned(),
                state: if a.healthy { "active" } else { "failed" }.into(),
                last_heartbeat: None,
                metadata: Map::from_iter([(
                    "temperament".to_owned(),
                    serde_json::to_value(a.temperament).unwrap_or(Value::Null),
                )]),
            })
        }))
    }

    async fn register_agent(
        &self,
        agent_id: &str,
        _metadata: Map<String, Value>,
    ) -> CoordResult<()> {
        self.spend(150, 450);
        self.with(|s, rng| {
            let a = s.agents.get_mut(agent_id).ok_or_else(|| {
                CoordinatorError::new(format!("agent {agent_id} is not part of the fleet"))
            })?;
            match a.temperament {
                Temperament::Broken => Err(CoordinatorError::new(format!(
                    "agent {agent_id} failed to start"
                ))),
                Temperament::Flapping => {
                    a.registered = true;
                    a.restarts += 1;
                    a.healthy = rng.chance(0.5);
                    Ok(())
                }
                Temperament::Steady => {
                    a.registered = true;
                    a.restarts += 1;
                    a.healthy = true;
                    Ok(())
                }
            }
        })
    }

    async fn unregister_agent(&self, agent_id: &str) -> CoordResult<()> {
        self.spend(10, 40);
        self.with(|s, _| match s.agents.get_mut(agent_id) {
            Some(a) => {
                a.registered = false;
                Ok(())
            }
            None => Err(CoordinatorError::new(format!("unknown agent {agent_id}"))),
        })
    }

    async fn topology(&self) -> CoordResult<Topology> {
        Ok(self.with(|s, _| Topology {
            agent_count: s.agents.values().filter(|a| a.registered).count() as u32,
            healthy_count: s
                .agents
                .values()
                .filter(|a| a.registered && a.healthy)
                .count() as u32,
        }))
    }

    async fn pause_tasks(&self, priorities: &[Priority]) -> CoordResult<u32> {
        self.spend(5, 30);
        Ok(self.with(|s, _| {
            let mut n = 0;
            for p in priorities {
                if !s.paused.contains(p) {
                    s.paused.push(*p);
                    n += s.queued.get(priority_name(*p)).copied().unwrap_or(0);
                }
            }
            n
        }))
    }

    async fn resume_tasks(&self, priorities: &[Priority]) -> CoordResult<u32> {
        self.spend(5, 30);
        Ok(self.with(|s, _| {
            let before = s.paused.len();
            s.paused.retain(|p| !priorities.contains(p));
            (before - s.paused.len()) as u32
        }))
    }

    async fn set_concurrency(&self, max_per_agent: u32) -> CoordResult<()> {
        self.spend(5, 30);
        if max_per_agent == 0 {
            return Err(CoordinatorError::new("concurrency must be at least 1"));
        }
        self.with(|s, _| s.concurrency = max_per_agent);
        Ok(())
    }

    async fn set_caching(&self, enabled: bool) -> CoordResult<()> {
        self.spend(5, 30);
        self.with(|s, _| s.caching = enabled);
        Ok(())
    }

    async fn set_prompt_simplification(&self, enabled: bool) -> CoordResult<()> {
        self.spend(5, 30);
        self.with(|s, _| s.prompt_simplification = enabled);
        Ok(())
    }

    async fn retry_task(
        &self,
        _task: &str,
        _agent: Option<&str>,
        _delay_ms: u64,
    ) -> CoordResult<()> {
        self.spend(40, 200);
        self.with(|s, _| s.retries_scheduled += 1);
        Ok(())
    }

    async fn spawn_agents(&self, count: u32) -> CoordResult<Vec<String>> {
        for _ in 0..count.min(16) {
            self.spend(300, 900);
        }
        Ok(self.with(|s, _| {
            (0..count)
                .map(|_| {
                    s.spawned += 1;
                    let id = format!("spawned-{}", s.spawned);
                    s.agents.insert(
                        id.clone(),
                        SimAgent {
                            registered: true,
                            healthy: true,
                            temperament: Temperament::Steady,
                            restarts: 0,
                            fresh: 0,
                        },
                    );
                    id
                })
                .collect()
        }))
    }
}

fn priority_name(p: Priority) -> &'static str {
    match p {
        Priority::Critical => "CRITICAL",
        Priority::High => "HIGH",
        Priority::Medium => "MEDIUM",
        Priority::Low => "LOW",
        Priority::Background => "BACKGROUND",
    }
}
