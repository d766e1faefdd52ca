//! The states in memory: restore, catch-up with other processes, loads, folds, and the
//! appends queued on states whose locks are held.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use serde_json::Value;

use super::*;
use crate::event::{Appended, RecordedEvent};
use crate::store::{EventFilter, StreamAppend};

/// One strategy state in memory.
pub(super) struct Entry {
    pub(super) strategy: String,
    pub(super) key: String,
    pub(super) version: u64,
    pub(super) state: AnyState,
    /// Changed since the last committed checkpoint.
    pub(super) dirty: bool,
    /// A snapshot of this stream may be stored (it was loaded from one, or written one).
    pub(super) stored: bool,
    /// Appends (tickets) whose events this state holds already, before their commit: an
    /// append decided on this state depends on them, no snapshot is taken of it and it does
    /// not leave memory until they are answered.
    pub(super) pending: Vec<u64>,
    /// It may hold events of an append (this ticket) that was not stored: loaded again before
    /// any use, and whatever was decided on it depends on that append.
    pub(super) stale: Option<u64>,
}

#[derive(Default)]
pub(super) struct States {
    pub(super) map: Mutex<HashMap<String, Entry>>,
    /// The log position the states are caught up to with other processes' appends. Held
    /// only while catching up (decisions do not wait for it: their appends state the stream
    /// version they were taken on).
    pub(super) cursor: tokio::sync::Mutex<i64>,
    /// Positions above the cursor that this healer appended itself (their strategy events are
    /// folded as they are appended).
    pub(super) own: Mutex<std::collections::BTreeSet<i64>>,
    /// The map holds every state not at rest (a full restore ran): a stream missing from it
    /// is at rest. Otherwise a missing stream is loaded from its snapshot and events.
    pub(super) complete: std::sync::atomic::AtomicBool,
    /// Strategies whose streams a restore folded again from the log (snapshots had gone
    /// missing): the next checkpoint counts their snapshots anew.
    pub(super) recount: Mutex<Vec<String>>,
    /// Told whenever appends decided on states in memory are answered.
    pub(super) settled: tokio::sync::Notify,
    /// The store's change mark read before the last completed catch-up: while the mark is
    /// the same, nothing new is in the log and a catch-up has nothing to read.
    pub(super) caught_up_at: Mutex<Option<crate::store::ChangeMark>>,
}

/// The per-stream locks: an entry lives while someone holds or awaits it.
#[derive(Default)]
pub(super) struct KeyLocks {
    pub(super) map: HashMap<String, Arc<tokio::sync::Mutex<()>>>,
    /// The map's size after the last pruning: it is pruned again when it doubles.
    pub(super) pruned_at: usize,
}

/// Drops the states holding events of an append whose answer will not be awaited.
pub(super) struct Unsettled<'a> {
    pub(super) healer: &'a Healer,
    pub(super) ticket: u64,
    pub(super) streams: Vec<String>,
}

impl Drop for Unsettled<'_> {
    fn drop(&mut self) {
        if self.streams.is_empty() {
            return;
        }
        {
            let mut map = self.healer.lock_map();
            for s in &self.streams {
                if let Some(e) = map.get_mut(s)
                    && e.pending.contains(&self.ticket)
                {
                    e.pending.retain(|t| *t != self.ticket);
                    e.stale = Some(self.ticket);
                }
            }
        }
        self.healer.states.settled.notify_waiters();
    }
}

/// How many of this healer's own positions are remembered before a catch-up folds them away.
pub(super) const OWN_POSITIONS_MAX: usize = 4096;

/// State events a phase appends: the strategy, its stream, its key, the state (and its
/// version) the decision was taken on, the events.
pub(super) type Applied = (
    Arc<dyn ErasedStrategy>,
    String,
    String,
    (u64, AnyState),
    Vec<Value>,
);

impl Healer {
    /// Restores every state not at rest: the snapshots, then the strategy events after the
    /// lowest checkpoint position (a position scan). A damaged snapshot, one older than its
    /// checkpoint says (another process wrote it), or a stream whose events do not follow on
    /// from what is known of it, is loaded on its own ([`Healer::load_stream`]). A strategy
    /// with fewer snapshots than its last checkpoint left (one went missing behind the
    /// store's back) has its streams folded again from the log: a missing snapshot costs
    /// time, never a state.
    pub(super) async fn restore(&self) -> Result<()> {
        let mut start = i64::MAX;
        let mut damaged = Vec::new();
        let mut stale = Vec::new();
        for (name, strategy) in &self.engine.strategies {
            let (position, left) = self.store.checkpoint_of(name).await?;
            let snaps = self
                .store
                .load_snapshots_for_restore(name, position)
                .await?;
            let mut from = position;
            if left.is_some_and(|n| (snaps.len() as u64) < n) {
                // Streams whose earliest events are archived cannot be folded again.
                if let Some(u) = self.store.uncovered_archived_stream().await? {
                    return Err(self.state_lost(u.describe()));
                }
                tracing::warn!(
                    strategy = %name,
                    "snapshots are missing; the strategy's streams are folded again from the log"
                );
                from = 0;
                self.states
                    .recount
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(name.clone());
            }
            start = start.min(from);
            for (snap, older) in snaps {
                let state = serde_json::from_str::<Value>(&snap.state)
                    .ok()
                    .and_then(|v| strategy.restore(&v));
                match state {
                    Some(state) => {
                        let entry = Entry {
                            strategy: name.clone(),
                            key: snap.key.clone(),
                            version: snap.stream_version,
                            state,
                            dirty: false,
                            stored: true,
                            pending: Vec::new(),
                            stale: None,
                        };
                        let mut map = self.lock_map();
                        match map.get_mut(&snap.stream_id) {
                            Some(e) if e.version >= entry.version => e.stored = true,
                            _ => {
                                map.insert(snap.stream_id.clone(), entry);
                            }
                        }
                        if older {
                            stale.push((strategy.clone(), snap.stream_id, snap.key));
                        }
                    }
                    None => {
                        tracing::warn!(stream = %snap.stream_id, "damaged snapshot; rebuilding from events");
                        damaged.push((strategy.clone(), snap.stream_id, snap.key));
                    }
                }
            }
        }
        if start == i64::MAX {
            start = 0;
        }
        for (strategy, stream, key) in damaged {
            self.load_stream(&strategy, &stream, &key).await?;
        }
        for (strategy, stream, key) in stale {
            self.refresh(&strategy, &stream, &key).await?;
        }
        // The log after `start` is read whatever the change mark says.
        *self.caught_up_at() = None;
        *self.states.cursor.lock().await = start;
        self.states
            .complete
            .store(true, std::sync::atomic::Ordering::Release);
        self.catch_up().await
    }

    /// The error for a state that cannot be rebuilt.
    pub(super) fn state_lost(&self, reason: String) -> Error {
        Error::StateLost {
            path: self.store.path().to_path_buf(),
            reason: format!(
                "{reason}; nothing is decided on a state that is not known (put the snapshot \
                 back, or import the archives and the log into a new database)"
            ),
        }
    }

    pub(super) fn is_complete(&self) -> bool {
        self.states
            .complete
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// Makes the map hold every state not at rest (a lazily opened healer's listings).
    pub(super) async fn ensure_complete(&self) -> Result<()> {
        if self.is_complete() {
            return Ok(());
        }
        // What is already loaded is exact at its version; the restore only adds to it.
        self.restore().await
    }

    /// The one way a stream's state is loaded: its snapshot (unless it does not decode), then
    /// the stream's events after the snapshot's version. Replaces the stream's entry unless
    /// that one is newer. A stream whose earliest events are archived needs a snapshot
    /// covering them: without one its state is not known, and it is an error
    /// ([`Error::StateLost`]) rather than a default. Returns the state's version and a copy
    /// of it; a state at rest of which no snapshot is stored is not kept in memory.
    pub(super) async fn load_stream(
        &self,
        strategy: &Arc<dyn ErasedStrategy>,
        stream: &str,
        key: &str,
    ) -> Result<(u64, AnyState)> {
        let name = strategy.name();
        let mut entry = Entry {
            strategy: name.to_owned(),
            key: key.to_owned(),
            version: 0,
            state: strategy.new_state(),
            dirty: false,
            stored: false,
            pending: Vec::new(),
            stale: None,
        };
        let (snapshot, archived) = self.store.load_stream_base(stream).await?;
        let mut snapshot_is = "missing".to_owned();
        if let Some(snap) = snapshot {
            entry.stored = true;
            match serde_json::from_str::<Value>(&snap.state)
                .ok()
                .and_then(|v| strategy.restore(&v))
            {
                Some(state) => {
                    entry.state = state;
                    entry.version = snap.stream_version;
                    snapshot_is = format!("of version {} only", snap.stream_version);
                }
                None => {
                    tracing::warn!(stream = %stream, "damaged snapshot; rebuilding from events");
                    entry.dirty = true;
                    snapshot_is = "damaged".to_owned();
                }
            }
        }
        if entry.version < archived {
            return Err(self.state_lost(format!(
                "the state of {stream} cannot be rebuilt: its events up to version {archived} \
                 are archived and its snapshot is {snapshot_is}"
            )));
        }
        let mut events = self.store.read_stream_after(stream, entry.version);
        while let Some(e) = events.next().await {
            let e = e?;
            if e.stream_version != entry.version + 1 {
                return Err(self.state_lost(format!(
                    "the state of {stream} cannot be rebuilt: its events start at version {} \
                     after version {}",
                    e.stream_version, entry.version
                )));
            }
            if e.payload.get("strategy").and_then(Value::as_str) == Some(name)
                && let Err(err) = strategy.apply_json(&mut entry.state, &e.payload)
            {
                tracing::warn!(position = e.position, error = %err, "strategy event does not decode; skipped");
            }
            entry.version = e.stream_version;
            entry.dirty = true;
        }
        drop(events);
        let now = self.now();
        let mut map = self.lock_map();
        if let Some(current) = map.get(stream)
            && current.version >= entry.version
            && current.stale.is_none()
        {
            return Ok((current.version, strategy.clone_state(&current.state)));
        }
        let found = (entry.version, strategy.clone_state(&entry.state));
        if entry.stored || !strategy.at_rest(&entry.state, now) {
            map.insert(stream.to_owned(), entry);
        } else {
            // At rest, and no snapshot to delete: it needs no memory.
            map.remove(stream);
        }
        Ok(found)
    }

    /// Brings the states in memory up to the log's head with other processes' appends (this
    /// healer's own were folded as they were appended, and are not read again).
    ///
    /// Nothing committed since the last catch-up, by anyone, costs no query: the store's
    /// change mark (read before that catch-up asked for the head) is the same.
    pub(super) async fn catch_up(&self) -> Result<()> {
        let mark = self.store.change_mark();
        if mark.is_some() && *self.caught_up_at() == mark {
            return Ok(());
        }
        let mut cursor = self.states.cursor.lock().await;
        let (head, anchor) = self.store.head_and_anchor().await?;
        if head <= *cursor {
            *self.caught_up_at() = mark;
            return Ok(());
        }
        if anchor > *cursor {
            // Another process archived events this healer had not read.
            self.resync_after_cut().await?;
        }
        // The stretches since the cursor that other processes appended (positions are dense:
        // the writer numbers them under the write lock).
        let mut foreign: Vec<(i64, i64)> = Vec::new();
        {
            let own = self.states.own.lock().unwrap_or_else(|e| e.into_inner());
            let mut from = *cursor + 1;
            for &p in own.range(*cursor + 1..=head) {
                if p > from {
                    foreign.push((from, p - 1));
                }
                from = p + 1;
            }
            if from <= head {
                foreign.push((from, head));
            }
        }
        let complete = self.is_complete();
        let mut gaps = Vec::new();
        for (from, to) in foreign {
            let filter = EventFilter {
                stream_prefix: Some(STRATEGY_STREAM_PREFIX.to_owned()),
                after_position: from - 1,
                up_to_position: Some(to),
                position_order: true,
                ..Default::default()
            };
            let mut events = self.store.read(filter);
            while let Some(e) = events.next().await {
                self.fold(&e?, complete, &mut gaps);
            }
        }
        gaps.sort();
        gaps.dedup();
        for (name, stream, key) in gaps {
            if let Some(strategy) = self.engine.strategy(&name).cloned() {
                self.load_stream(&strategy, &stream, &key).await?;
            }
        }
        *cursor = head;
        self.states
            .own
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|p| *p > head);
        *self.caught_up_at() = mark;
        Ok(())
    }

    /// The store's change mark read before the last catch-up that completed.
    pub(super) fn caught_up_at(
        &self,
    ) -> std::sync::MutexGuard<'_, Option<crate::store::ChangeMark>> {
        self.states
            .caught_up_at
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// After another process archived events this healer had not read, the states they
    /// changed are read again from what the archive keeps, the snapshots: every state in
    /// memory whose stream moved on and, when the map holds every state not at rest, every
    /// snapshot in use that is newer than memory. The cost follows the states in use.
    pub(super) async fn resync_after_cut(&self) -> Result<()> {
        let known: Vec<(String, String, String, u64)> = self
            .lock_map()
            .iter()
            .map(|(stream, e)| (stream.clone(), e.strategy.clone(), e.key.clone(), e.version))
            .collect();
        for chunk in known.chunks(1024) {
            let streams: Vec<String> = chunk.iter().map(|k| k.0.clone()).collect();
            let versions = self.store.stream_versions(&streams).await?;
            for (stream, name, key, version) in chunk {
                if versions.get(stream).is_some_and(|v| v > version)
                    && let Some(strategy) = self.engine.strategy(name).cloned()
                {
                    self.load_stream(&strategy, stream, key).await?;
                }
            }
        }
        if self.is_complete() {
            for (name, strategy) in &self.engine.strategies {
                for snap in self.store.load_snapshots(name).await? {
                    let behind = self
                        .lock_map()
                        .get(&snap.stream_id)
                        .is_none_or(|e| e.version < snap.stream_version);
                    if behind {
                        self.load_stream(strategy, &snap.stream_id, &snap.key)
                            .await?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Applies one stored strategy event, once (by stream version). A stream not in memory is
    /// started only when the map is complete (otherwise it is loaded when needed); an event
    /// that does not follow on from the state in memory marks a gap, loaded on its own.
    pub(super) fn fold(
        &self,
        e: &RecordedEvent,
        complete: bool,
        gaps: &mut Vec<(String, String, String)>,
    ) {
        let Some(name) = e.payload.get("strategy").and_then(Value::as_str) else {
            return;
        };
        let Some(strategy) = self.engine.strategy(name) else {
            return; // a strategy this healer does not run
        };
        let key = e
            .payload
            .get("key")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let mut map = self.lock_map();
        if map.get(&e.stream_id).is_some_and(|x| x.stale.is_some()) {
            return; // loaded again before its next use
        }
        let known = map.get(&e.stream_id).map(|x| x.version);
        let version = match known {
            Some(v) => v,
            None if complete => 0,
            None => return,
        };
        if e.stream_version <= version {
            return;
        }
        if e.stream_version > version + 1 {
            gaps.push((name.to_owned(), e.stream_id.clone(), key.to_owned()));
            return;
        }
        let entry = map.entry(e.stream_id.clone()).or_insert_with(|| Entry {
            strategy: name.to_owned(),
            key: key.to_owned(),
            version: 0,
            state: strategy.new_state(),
            dirty: false,
            stored: false,
            pending: Vec::new(),
            stale: None,
        });
        if let Err(err) = strategy.apply_json(&mut entry.state, &e.payload) {
            tracing::warn!(position = e.position, error = %err, "strategy event does not decode; skipped");
        }
        entry.version = e.stream_version;
        entry.dirty = true;
        let now = self.now();
        Self::rest(strategy, &mut map, &e.stream_id, now);
    }

    /// A state at rest of which no snapshot is stored leaves memory: it needs none (one that
    /// has a snapshot leaves at the next checkpoint, which deletes the snapshot).
    pub(super) fn rest(
        strategy: &Arc<dyn ErasedStrategy>,
        map: &mut HashMap<String, Entry>,
        stream: &str,
        now: DateTime<Utc>,
    ) {
        if let Some(e) = map.get(stream)
            && !e.stored
            && e.pending.is_empty()
            && e.stale.is_none()
            && strategy.at_rest(&e.state, now)
        {
            map.remove(stream);
        }
    }

    /// Remembers the positions of events this healer wrote (not those of duplicates, which
    /// may be anyone's), so that catch-up does not read them again. Bounded: past
    /// [`OWN_POSITIONS_MAX`] the oldest are forgotten (a catch-up then reads them, and folds
    /// nothing twice: folds go by stream version).
    pub(super) fn note_own(&self, appended: &[crate::event::Appended]) {
        let mut own = self.states.own.lock().unwrap_or_else(|e| e.into_inner());
        own.extend(appended.iter().filter(|a| !a.duplicate).map(|a| a.position));
        while own.len() > OWN_POSITIONS_MAX {
            own.pop_first();
        }
    }

    pub(super) fn lock_map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.states.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The version and a copy of one state, loaded from its snapshot and stream when it is not
    /// in memory (a decision never takes a missing state for a fresh one).
    pub(super) async fn current(
        &self,
        strategy: &Arc<dyn ErasedStrategy>,
        stream: &str,
        key: &str,
    ) -> Result<(u64, AnyState)> {
        if let Some(found) = self.cached(strategy, stream) {
            return Ok(found);
        }
        self.load_stream(strategy, stream, key).await
    }

    pub(super) fn cached(
        &self,
        strategy: &Arc<dyn ErasedStrategy>,
        stream: &str,
    ) -> Option<(u64, AnyState)> {
        let map = self.lock_map();
        map.get(stream)
            .filter(|e| e.stale.is_none())
            .map(|e| (e.version, strategy.clone_state(&e.state)))
    }

    /// A signal's view of one state: in a complete map a missing stream is at rest, and a
    /// state at rest reacts as the default one (an append it leads to states version 0, and
    /// a conflict loads the stream); otherwise it is loaded.
    pub(super) async fn current_for_signal(
        &self,
        strategy: &Arc<dyn ErasedStrategy>,
        stream: &str,
        key: &str,
    ) -> Result<(u64, AnyState)> {
        if let Some(found) = self.cached(strategy, stream) {
            return Ok(found);
        }
        if self.is_complete() && !self.lock_map().contains_key(stream) {
            return Ok((0, strategy.new_state()));
        }
        self.current(strategy, stream, key).await
    }

    /// After a conflict on `stream`: reads that stream's events after the version in memory
    /// (or loads it), whatever the other streams.
    pub(super) async fn refresh(
        &self,
        strategy: &Arc<dyn ErasedStrategy>,
        stream: &str,
        key: &str,
    ) -> Result<()> {
        let known = self.lock_map().get(stream).map(|e| e.version);
        let Some(from) = known else {
            self.load_stream(strategy, stream, key).await?;
            return Ok(());
        };
        let mut events = self.store.read_stream_after(stream, from);
        let mut read = Vec::new();
        while let Some(e) = events.next().await {
            read.push(e?);
        }
        drop(events);
        let gap = self.fold_read(strategy, stream, &read);
        if gap {
            self.load_stream(strategy, stream, key).await?;
        }
        Ok(())
    }

    /// Folds a stream's events read after the version in memory; true when they do not
    /// follow on from it (or the state left memory meanwhile): the stream must be loaded.
    pub(super) fn fold_read(
        &self,
        strategy: &Arc<dyn ErasedStrategy>,
        stream: &str,
        read: &[RecordedEvent],
    ) -> bool {
        let mut map = self.lock_map();
        let Some(entry) = map.get_mut(stream) else {
            return true;
        };
        {
            for e in read {
                if e.stream_version <= entry.version {
                    continue;
                }
                if e.stream_version != entry.version + 1 {
                    return true;
                }
                if e.payload.get("strategy").and_then(Value::as_str) == Some(strategy.name()) {
                    let _ = strategy.apply_json(&mut entry.state, &e.payload);
                }
                entry.version = e.stream_version;
                entry.dirty = true;
            }
        }
        false
    }

    /// Folds events this healer just appended (they are applied once, by version) onto the
    /// state in memory, or, when that state left memory meanwhile (it was at rest, and a
    /// checkpoint or a fold let it go between the decision and its append) or is behind, onto
    /// `base`: the state the decision was taken on, at the version the append stated, which
    /// its success proves current.
    pub(super) fn apply_local(
        &self,
        strategy: &Arc<dyn ErasedStrategy>,
        stream: &str,
        key: &str,
        base: (u64, &AnyState),
        events: &[(u64, Value)],
    ) {
        let mut map = self.lock_map();
        if map
            .get(stream)
            .is_none_or(|e| e.version < base.0 || e.stale.is_some())
        {
            let stored = map.get(stream).is_some_and(|e| e.stored);
            map.insert(
                stream.to_owned(),
                Entry {
                    strategy: strategy.name().to_owned(),
                    key: key.to_owned(),
                    version: base.0,
                    state: strategy.clone_state(base.1),
                    dirty: true,
                    stored,
                    pending: Vec::new(),
                    stale: None,
                },
            );
        }
        let Some(entry) = map.get_mut(stream) else {
            return;
        };
        for (version, payload) in events {
            if *version == entry.version + 1 {
                let _ = strategy.apply_json(&mut entry.state, payload);
                entry.version = *version;
                entry.dirty = true;
            }
        }
        let now = self.now();
        Self::rest(strategy, &mut map, stream, now);
    }

    /// Loads again every state that holds events of an append that was not stored.
    pub(super) async fn reload_stale(&self) -> Result<()> {
        let stale: Vec<(String, String, String)> = self
            .lock_map()
            .iter()
            .filter(|(_, e)| e.stale.is_some())
            .map(|(s, e)| (s.clone(), e.strategy.clone(), e.key.clone()))
            .collect();
        for (stream, name, key) in stale {
            if let Some(strategy) = self.engine.strategy(&name).cloned() {
                // (no lock: the caller may hold this stream's; a load never replaces a state
                // that is not stale with an older one)
                self.wait_settled(&stream).await;
                self.load_stream(&strategy, &stream, &key).await?;
            }
        }
        Ok(())
    }

    /// The appends not yet answered whose events the state of `stream` holds.
    pub(super) fn pending_of(&self, stream: &str) -> Vec<u64> {
        self.lock_map()
            .get(stream)
            .map(|e| e.pending.clone())
            .unwrap_or_default()
    }

    /// Waits until the state of `stream` holds no event whose append is unanswered (an
    /// answer that is not itself an append, such as a permit, never reads a decision that
    /// may not be stored).
    pub(super) async fn wait_settled(&self, stream: &str) {
        loop {
            let settled = self.states.settled.notified();
            tokio::pin!(settled);
            settled.as_mut().enable();
            if self
                .lock_map()
                .get(stream)
                .is_none_or(|e| e.pending.is_empty())
            {
                return;
            }
            settled.await;
        }
    }

    /// Submits an append decided on the states in memory while their locks are held, applies
    /// its state events to those states at once (later decisions build on them; their appends
    /// depend on this one and are stored only if it is), releases the locks and waits for the
    /// answer. `applied` are the state events of the first parts of `parts`, each with the
    /// state and version it was decided on (which it is applied to when the state left memory
    /// meanwhile). On a refusal the states that hold its events are stale: loaded again from
    /// the log before their next use.
    pub(super) async fn submit_decided(
        &self,
        parts: Vec<StreamAppend>,
        applied: &[Applied],
        after: Vec<u64>,
        guards: Vec<tokio::sync::OwnedMutexGuard<()>>,
    ) -> Result<Vec<Appended>> {
        let pending = self.store.submit_atomic_after(parts, after).await?;
        let ticket = pending.ticket();
        {
            let mut map = self.lock_map();
            for (strategy, stream, key, (version, base), values) in applied {
                if map
                    .get(stream)
                    .is_none_or(|e| e.version < *version || e.stale.is_some())
                {
                    let stored = map.get(stream).is_some_and(|e| e.stored);
                    map.insert(
                        stream.clone(),
                        Entry {
                            strategy: strategy.name().to_owned(),
                            key: key.clone(),
                            version: *version,
                            state: strategy.clone_state(base),
                            dirty: true,
                            stored,
                            pending: Vec::new(),
                            stale: None,
                        },
                    );
                }
                let Some(entry) = map.get_mut(stream) else {
                    continue;
                };
                if entry.version == *version {
                    for payload in values {
                        let _ = strategy.apply_json(&mut entry.state, payload);
                    }
                    entry.version = version + values.len() as u64;
                    entry.dirty = true;
                    entry.pending.push(ticket);
                } else {
                    // The state moved (or left memory) since it was read: the append will
                    // meet another version; the stream is loaded again when needed.
                    entry.stale = Some(ticket);
                }
            }
        }
        drop(guards);
        // Should this future be dropped before the answer (a caller gave up), the states that
        // hold the events leave memory rather than keep events that may not be stored.
        let mut unsettled = Unsettled {
            healer: self,
            ticket,
            streams: applied.iter().map(|(_, s, _, _, _)| s.clone()).collect(),
        };
        let answer = pending.await;
        unsettled.streams.clear();
        {
            let now = self.now();
            let mut map = self.lock_map();
            let mut i = 0;
            for (strategy, stream, _, (version, _), values) in applied {
                let stored = answer.as_ref().is_ok_and(|a| {
                    a[i..i + values.len()]
                        .iter()
                        .enumerate()
                        .all(|(j, a)| a.stream_version == version + 1 + j as u64)
                });
                i += values.len();
                let Some(entry) = map.get_mut(stream) else {
                    continue;
                };
                let held = entry.pending.contains(&ticket);
                entry.pending.retain(|t| *t != ticket);
                if held && !stored {
                    entry.stale = Some(ticket);
                } else if entry.pending.is_empty() {
                    Self::rest(strategy, &mut map, stream, now);
                }
            }
        }
        self.states.settled.notify_waiters();
        let appended = answer?;
        self.note_own(&appended);
        Ok(appended)
    }

    pub(super) fn key_lock(&self, stream: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        if locks.map.len() > 2 * locks.pruned_at.max(64) {
            // A lock nobody holds or awaits (only the map refers to it) can go: the next
            // user makes a new one.
            locks.map.retain(|_, l| Arc::strong_count(l) > 1);
            locks.pruned_at = locks.map.len();
        }
        locks.map.entry(stream.to_owned()).or_default().clone()
    }
}
