//! Views of the states, snapshots, checkpoints, archives.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use serde_json::Value;

use super::*;
use crate::store::{Checkpoint, EventFilter, Snapshot};

impl Healer {
    /// Checks every stored snapshot against a fold of its stream's events up to the
    /// snapshot's version. Returns `(stream, what differs)` for each snapshot that does not
    /// match (an empty list when all hold).
    pub async fn verify_snapshots(&self) -> Result<Vec<(String, String)>> {
        let mut bad = Vec::new();
        for (name, strategy) in &self.engine.strategies {
            for snap in self.store.load_all_snapshots(name).await? {
                let mut state = strategy.new_state();
                let mut version = 0u64;
                let mut events = self.store.read(EventFilter::stream(snap.stream_id.clone()));
                while let Some(e) = events.next().await {
                    let e = e?;
                    if e.stream_version > snap.stream_version {
                        break;
                    }
                    if e.payload.get("strategy").and_then(Value::as_str) != Some(name.as_str()) {
                        continue;
                    }
                    let _ = strategy.apply_json(&mut state, &e.payload);
                    version = e.stream_version;
                }
                let stored = serde_json::from_str::<Value>(&snap.state).ok();
                let folded = strategy.snapshot(&state);
                if version != snap.stream_version {
                    bad.push((
                        snap.stream_id.clone(),
                        format!(
                            "the snapshot is at version {} but the stream's events end at {version}",
                            snap.stream_version
                        ),
                    ));
                } else if stored.as_ref() != Some(&folded) {
                    bad.push((
                        snap.stream_id.clone(),
                        format!("the snapshot at version {version} differs from its events' fold"),
                    ));
                }
            }
        }
        Ok(bad)
    }

    /// Raw snapshots of every state not at rest (for tests and verification: equal to a
    /// fresh fold).
    pub async fn snapshots(&self) -> Result<HashMap<String, (u64, Value)>> {
        self.ensure_complete().await?;
        self.catch_up().await?;
        self.reload_stale().await?;
        let now = self.now();
        let map = self.lock_map();
        Ok(map
            .iter()
            .filter_map(|(stream, e)| {
                let s = self.engine.strategy(&e.strategy)?;
                if s.at_rest(&e.state, now) {
                    return None;
                }
                Some((stream.clone(), (e.version, s.snapshot(&e.state))))
            })
            .collect())
    }

    /// Writes snapshots of the states changed since the last checkpoint, and deletes those of
    /// states now at rest (which then leave memory). Returns how many snapshots it wrote.
    ///
    /// Nothing is marked saved before the write committed: after a failed checkpoint the next
    /// one writes everything again. A healer opened with [`HealerBuilder::open_lazy`] writes
    /// snapshots but moves no checkpoint position.
    pub async fn checkpoint(&self) -> Result<usize> {
        let cursor = self.states.cursor.lock().await;
        let now = self.now();
        let mut snapshots = Vec::new();
        let mut deleted = Vec::new();
        // (stream, version written, at rest)
        let mut written: Vec<(String, u64, bool)> = Vec::new();
        {
            let map = self.lock_map();
            for (stream, e) in map.iter() {
                let Some(s) = self.engine.strategy(&e.strategy) else {
                    continue;
                };
                if !e.pending.is_empty() || e.stale.is_some() {
                    continue; // not all stored yet: saved by a later checkpoint
                }
                let rest = s.at_rest(&e.state, now);
                let snapshot = || Snapshot {
                    stream_id: stream.clone(),
                    strategy: e.strategy.clone(),
                    key: e.key.clone(),
                    stream_version: e.version,
                    state: s.snapshot(&e.state).to_string(),
                    at_rest: rest,
                };
                if rest && (e.stored || e.dirty) {
                    // Deleted; or kept at rest when the stream's first events are archived.
                    deleted.push(snapshot());
                    written.push((stream.clone(), e.version, true));
                } else if e.dirty {
                    snapshots.push(snapshot());
                    written.push((stream.clone(), e.version, false));
                }
            }
        }
        let n = snapshots.len();
        let recount = self
            .states
            .recount
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let positions = if self.is_complete() {
            self.engine
                .strategies
                .keys()
                .map(|name| (name.clone(), *cursor))
                .collect()
        } else {
            Vec::new()
        };
        self.store
            .write_checkpoint(Checkpoint {
                positions,
                snapshots,
                deleted,
                recount: recount.clone(),
            })
            .await?;
        self.states
            .recount
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|s| !recount.contains(s));
        // Committed: only now are the states saved (unless they changed meanwhile).
        let mut map = self.lock_map();
        for (stream, version, rest) in written {
            let Some(e) = map.get_mut(&stream) else {
                continue;
            };
            if !rest {
                // A snapshot of the stream is stored now, even if the state moved on since.
                e.stored = true;
            }
            if e.version != version {
                continue;
            }
            e.dirty = false;
            if rest {
                map.remove(&stream);
            }
        }
        Ok(n)
    }

    /// Archives the events before `before` into `file` ([`Store::archive`]) after writing
    /// what the cut needs to keep every state: a checkpoint of every state not at rest, and a
    /// snapshot (at rest) of each state stream the cut goes through that has none. A state at
    /// rest needs no snapshot while its events are in the log; once they are archived, its
    /// snapshot is all that rebuilds it. `None` when there is nothing to archive.
    pub async fn archive(
        &self,
        before: DateTime<Utc>,
        file: &std::path::Path,
        now: DateTime<Utc>,
    ) -> Result<Option<crate::store::archive::ArchiveReport>> {
        // The file first: nothing is written for an archive that cannot be.
        crate::store::archive::check_target(file, self.store.path())?;
        self.ensure_complete().await?;
        self.checkpoint().await?;
        let Some(cut) = self.store.archive_cut(before).await? else {
            return Ok(None);
        };
        let mut after = String::new();
        loop {
            let page = self.store.uncovered_streams(cut, &after, 512).await?;
            let Some((_, last, _)) = page.last() else {
                break;
            };
            after = last.clone();
            let mut snapshots = Vec::with_capacity(page.len());
            for (name, stream, _) in &page {
                let strategy = self.engine.strategy(name).cloned();
                let key = stream
                    .strip_prefix(STRATEGY_STREAM_PREFIX)
                    .and_then(|k| k.strip_prefix(name.as_str()))
                    .and_then(|k| k.strip_prefix('-'));
                let (Some(strategy), Some(key)) = (strategy, key) else {
                    return Err(Error::InvalidInput(format!(
                        "the state of {stream} belongs to strategy {name}, which this healer \
                         does not run: it has no snapshot, so its events cannot be archived"
                    )));
                };
                let (version, state) = self.load_stream(&strategy, stream, key).await?;
                let now = self.now();
                snapshots.push(Snapshot {
                    stream_id: stream.clone(),
                    strategy: name.clone(),
                    key: key.to_owned(),
                    stream_version: version,
                    state: strategy.snapshot(&state).to_string(),
                    at_rest: strategy.at_rest(&state, now),
                });
            }
            let written: Vec<(String, u64, bool)> = snapshots
                .iter()
                .map(|s| (s.stream_id.clone(), s.stream_version, s.at_rest))
                .collect();
            self.store
                .write_checkpoint(Checkpoint {
                    positions: Vec::new(),
                    snapshots,
                    deleted: Vec::new(),
                    recount: Vec::new(),
                })
                .await?;
            // Saved: states at rest leave memory again.
            let mut map = self.lock_map();
            for (stream, version, rest) in written {
                if let Some(e) = map.get_mut(&stream) {
                    e.stored = true;
                    if e.version == version {
                        e.dirty = false;
                        if rest {
                            map.remove(&stream);
                        }
                    }
                }
            }
        }
        self.store.archive_up_to(before, file, now, Some(cut)).await
    }
}
