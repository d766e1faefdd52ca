//! The counts behind the healer's limits, read from the log under the limit streams'
//! locks; the verdicts are the engine's ([`crate::heal::engine::limits`]).

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Duration, Utc};
use serde_json::Value;

use super::*;
use crate::event::ExpectedVersion;
use crate::events::{DisabledAgent, HealEvent};
use crate::heal::model::{Action, Failure};
use crate::store::StreamAppend;

/// Locks on limit streams a heal took while deciding, kept until its actions are recorded.
#[derive(Default)]
pub(super) struct LimitGuards {
    pub(super) held: Vec<(String, tokio::sync::OwnedMutexGuard<()>)>,
    /// Appends whose events the states counted hold: the limit's fact depends on them.
    pub(super) after: Vec<u64>,
}

impl LimitGuards {
    async fn lock(&mut self, healer: &Healer, stream: &str) {
        if self.held.iter().any(|(s, _)| s == stream) {
            return;
        }
        let guard = healer.key_lock(stream).lock_owned().await;
        self.held.push((stream.to_owned(), guard));
    }
}

impl Healer {
    /// Checks the healer's own limits for a decision of `strategy` that would act, its state
    /// stream at `version_after` once appended. `Ok(Err(why))`: over a limit. `Ok(Ok(parts))`:
    /// within them; `parts` are the limit facts to append with the decision, each at the
    /// version of its limit stream that the check read, so that another process's decision
    /// counted meanwhile makes the append conflict (and the decision is taken again).
    ///
    /// The limit streams are locked in this process too (the fleet's last: a heal holding it
    /// takes no other lock), so that concurrent heals here queue instead of conflicting.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn check_limits(
        &self,
        failure: &Failure,
        strategy: &str,
        sstream: &str,
        version_after: u64,
        actions: &[Action],
        now: DateTime<Utc>,
        guards: &mut LimitGuards,
    ) -> Result<std::result::Result<Vec<StreamAppend>, String>> {
        let mut parts = Vec::new();
        if actions.is_empty() {
            return Ok(Ok(parts));
        }
        let limits = self.engine.options.limits;
        if let (Some(max), Some(agent)) = (limits.max_actions_per_agent_per_hour, &failure.agent_id)
        {
            let stream = agent_limit_stream(agent);
            guards.lock(self, &stream).await;
            let since = now - Duration::hours(1);
            // One statement, so the count and the version are read from one snapshot.
            let (count, version): (i64, i64) = self
                .store
                .db()
                .fetch_one(
                    "SELECT (SELECT count(*) FROM events WHERE agent_id = ?1 \
                             AND occurred_at > ?2 AND occurred_at <= ?3 \
                             AND event_type = 'limit_counted' AND stream_id = ?4), \
                            COALESCE((SELECT MAX(stream_version) FROM events \
                                      WHERE stream_id = ?4), \
                                     (SELECT version FROM archived_streams \
                                      WHERE stream_id = ?4), 0)",
                    &[
                        agent.into(),
                        crate::time::to_micros(since).into(),
                        crate::time::to_micros(now).into(),
                        (&stream).into(),
                    ],
                )
                .await
                .map_err(Error::from)?;
            let fact = match crate::heal::engine::limits::agent_actions(
                failure,
                strategy,
                agent,
                count.max(0) as u64,
                max,
            ) {
                Ok(fact) => fact,
                Err(why) => return Ok(Err(why)),
            };
            parts.push(StreamAppend {
                stream_id: stream,
                expected: ExpectedVersion::Exact(version as u64),
                events: vec![crate::heal::engine::facts::fact(
                    HealEvent::LimitCounted(fact),
                    now,
                )],
            });
        }
        if let Some(max_share) = limits.max_disabled_fraction {
            let disabling = crate::heal::engine::limits::disabling_agents(actions);
            if !disabling.is_empty() {
                // Every state not at rest counts: the map must hold them all.
                self.ensure_complete().await?;
                self.reload_stale().await?;
                guards.lock(self, FLEET_LIMIT_STREAM).await;
                let (version, listed) = self.fleet_limit_facts().await?;
                let read = self.refresh_listed(&listed).await?;
                let (disabled, known) = self.disabled_agents(now, &listed, &read);
                guards.after.extend(
                    self.lock_map()
                        .values()
                        .flat_map(|e| e.pending.iter().copied().chain(e.stale)),
                );
                let total = match (limits.fleet_size, &self.coordinator) {
                    (Some(n), _) => n as usize,
                    (None, Some(c)) => match c.topology().await {
                        Ok(t) => t.agent_count as usize + disabled.len(),
                        Err(_) => known,
                    },
                    (None, None) => known,
                }
                .max(1);
                let fact = match crate::heal::engine::limits::fleet_disabled(
                    failure,
                    strategy,
                    disabled,
                    &disabling,
                    sstream,
                    version_after,
                    total,
                    max_share,
                ) {
                    Ok(fact) => fact,
                    Err(why) => return Ok(Err(why)),
                };
                parts.push(StreamAppend {
                    stream_id: FLEET_LIMIT_STREAM.to_owned(),
                    expected: ExpectedVersion::Exact(version),
                    events: vec![crate::heal::engine::facts::fact(
                        HealEvent::LimitCounted(fact),
                        now,
                    )],
                });
            }
        }
        Ok(Ok(parts))
    }

    /// The fleet limit stream's version and the agents its last fact counted as disabled.
    ///
    /// One statement, so that the version and the fact are read from one snapshot of the
    /// log: a version read after another process's fact was committed, with the fact (or its
    /// absence) read before, would let a decision append at the new version without counting
    /// the agent that fact disabled.
    pub(super) async fn fleet_limit_facts(&self) -> Result<(u64, Vec<DisabledAgent>)> {
        let (version, event_type, schema_version, payload): (
            i64,
            Option<String>,
            Option<i64>,
            Option<String>,
        ) = self
            .store
            .db()
            .fetch_one(
                "SELECT v.version, e.event_type, e.schema_version, e.payload \
                 FROM (SELECT COALESCE((SELECT MAX(stream_version) FROM events \
                                        WHERE stream_id = ?1), \
                                       (SELECT version FROM archived_streams \
                                        WHERE stream_id = ?1), 0) AS version) v \
                 LEFT JOIN events e ON e.stream_id = ?1 AND e.stream_version = v.version",
                &[FLEET_LIMIT_STREAM.into()],
            )
            .await
            .map_err(Error::from)?;
        let version = u64::try_from(version).unwrap_or(0);
        let (Some(event_type), Some(payload)) = (event_type, payload) else {
            // Never written, or archived: every agent it counted was disabled before the cut,
            // and this healer's states (restored from snapshots) know them.
            return Ok((version, Vec::new()));
        };
        let payload: Value = serde_json::from_str(&payload).unwrap_or(Value::Null);
        let schema_version = schema_version.unwrap_or(1).max(1) as u32;
        let listed = match HealEvent::decode(&event_type, schema_version, &payload) {
            Some(HealEvent::LimitCounted(c)) => c.disabled,
            _ => Vec::new(),
        };
        Ok((version, listed))
    }

    /// Brings the state of every agent the fleet limit's last fact counted up to at least the
    /// version it was counted at (a state at rest, or one another process changed, is read
    /// from its stream): an agent released since then no longer counts. Returns the streams
    /// it read from the log: they are current, in memory or (at rest) not.
    pub(super) async fn refresh_listed(&self, listed: &[DisabledAgent]) -> Result<HashSet<String>> {
        let mut read = HashSet::new();
        for l in listed {
            let known = self.lock_map().get(&l.stream).map(|e| e.version);
            if known.is_some_and(|v| v >= l.version) {
                continue;
            }
            let found = self.engine.strategies.values().find_map(|s| {
                let key = l
                    .stream
                    .strip_prefix(STRATEGY_STREAM_PREFIX)?
                    .strip_prefix(s.name())?
                    .strip_prefix('-')?;
                (s.agent_of_key(key) == Some(l.agent.as_str())).then(|| (s.clone(), key))
            });
            if let Some((strategy, key)) = found {
                self.refresh(&strategy, &l.stream, key).await?;
                read.insert(l.stream.clone());
            }
        }
        Ok(read)
    }

    /// Agents disabled now: those some strategy's state disables, and those the fleet limit's
    /// last fact counted whose state this healer has not folded up to that fact's version (it
    /// may be behind: they count until it knows better). Also how many agents have state.
    pub(super) fn disabled_agents(
        &self,
        now: DateTime<Utc>,
        listed: &[DisabledAgent],
        read: &HashSet<String>,
    ) -> (Vec<DisabledAgent>, usize) {
        let map = self.lock_map();
        let mut disabled: HashMap<String, DisabledAgent> = HashMap::new();
        let mut known = HashSet::new();
        for (stream, e) in map.iter() {
            if let Some(s) = self.engine.strategy(&e.strategy) {
                // Only keys that stand for agents count (not `fleet`, resources, tasks...).
                let Some(agent) = s.agent_of_key(&e.key) else {
                    continue;
                };
                known.insert(agent.to_owned());
                if s.disables_agent(&e.state, now) {
                    disabled.insert(
                        agent.to_owned(),
                        DisabledAgent {
                            agent: agent.to_owned(),
                            stream: stream.clone(),
                            version: e.version,
                        },
                    );
                }
            }
        }
        for l in listed {
            // A stream just read from the log is current (out of memory: at rest).
            let behind = !read.contains(&l.stream)
                && map.get(&l.stream).is_none_or(|e| e.version < l.version);
            if behind {
                known.insert(l.agent.clone());
                disabled.entry(l.agent.clone()).or_insert_with(|| l.clone());
            }
        }
        (disabled.into_values().collect(), known.len())
    }
}
