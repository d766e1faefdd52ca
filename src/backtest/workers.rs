//! The candidates' replays on threads of their own: the read of the window (and what is
//! shared, the recorded side) turns each page of events into commands, and every replay
//! applies the same commands in the same order. A sweep's replays are split over the
//! machine's cores; a single backtest's replay runs beside the read of the next page.
//! Each replay is independent of the others (its own states, its own seeded draws), so the
//! split changes nothing in the reports.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;

use super::replay::{RecordedPhase, RecordedRecovery, Replay};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::heal::{Failure, Signal};

/// What every replay is fed, in order.
pub(crate) enum Cmd {
    /// A recorded phase of a failure (`first`: its first).
    Phase {
        failure: Arc<Failure>,
        first: bool,
        phase: RecordedPhase,
        at: DateTime<Utc>,
    },
    /// A recorded outcome.
    Outcome {
        failure_id: String,
        strategy: String,
        success: bool,
        at: DateTime<Utc>,
    },
    /// A signal (`only`: to that strategy).
    Signal {
        signal: Signal,
        at: DateTime<Utc>,
        only: Option<String>,
    },
    /// A configuration recorded: the replays of the configuration in effect switch to it.
    Configuration(Arc<Config>),
    /// A failure history never decided, released.
    Undecided {
        failure: Arc<Failure>,
        recovery: Option<RecordedRecovery>,
    },
    /// Nothing more is recorded about this failure in the window.
    Release(String),
    /// The window ends.
    End(DateTime<Utc>),
}

/// A replay, with whether it replays the configuration in effect and whether history acted.
pub(crate) struct Slot {
    pub index: usize,
    pub replay: Replay,
    pub current: bool,
    pub acts: bool,
    /// The most failures the replay held at once.
    pub held: usize,
}

impl Slot {
    fn apply(&mut self, cmd: &Cmd) {
        let r = &mut self.replay;
        match cmd {
            Cmd::Phase {
                failure,
                first,
                phase,
                at,
            } => r.failure_phase(failure, *first, phase, *at),
            Cmd::Outcome {
                failure_id,
                strategy,
                success,
                at,
            } => r.recorded_outcome(failure_id, strategy, *success, *at),
            Cmd::Signal { signal, at, only } => r.signal(signal, *at, only.as_deref()),
            Cmd::Configuration(config) => {
                // Checked by the reader before it was sent.
                if self.current
                    && let Ok(engine) = config.builder().engine()
                {
                    r.engine = engine.with_acting(self.acts).without_state_descriptions();
                }
            }
            Cmd::Undecided { failure, recovery } => r.undecided(failure, *recovery),
            Cmd::Release(id) => r.release(id),
            Cmd::End(until) => {
                r.advance(*until);
                r.signal(&Signal::Tick, *until, None);
                r.finish();
            }
        }
        self.held = self.held.max(r.held());
    }
}

/// The replays' threads: commands go in by batches, the replays come back at the end.
pub(crate) struct Workers {
    senders: Vec<mpsc::Sender<Arc<Vec<Cmd>>>>,
    handles: Vec<tokio::task::JoinHandle<Vec<Slot>>>,
    batch: Vec<Cmd>,
}

impl Workers {
    /// Commands gathered before a batch is handed over.
    const BATCH: usize = 2048;

    /// Splits `slots` over at most the machine's cores, each on a thread of its own.
    pub fn start(slots: Vec<Slot>) -> Workers {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let threads = cores.min(slots.len()).max(1);
        let mut groups: Vec<Vec<Slot>> = (0..threads).map(|_| Vec::new()).collect();
        for (i, s) in slots.into_iter().enumerate() {
            groups[i % threads].push(s);
        }
        let mut senders = Vec::new();
        let mut handles = Vec::new();
        for mut group in groups {
            // A few batches ahead at most: memory stays bounded when the replays are slower
            // than the read.
            let (tx, mut rx) = mpsc::channel::<Arc<Vec<Cmd>>>(4);
            senders.push(tx);
            handles.push(tokio::task::spawn_blocking(move || {
                while let Some(batch) = rx.blocking_recv() {
                    for slot in &mut group {
                        for cmd in batch.iter() {
                            slot.apply(cmd);
                        }
                    }
                }
                group
            }));
        }
        Workers {
            senders,
            handles,
            batch: Vec::with_capacity(Self::BATCH),
        }
    }

    /// Queues a command for every replay.
    pub async fn send(&mut self, cmd: Cmd) {
        self.batch.push(cmd);
        if self.batch.len() >= Self::BATCH {
            self.flush().await;
        }
    }

    async fn flush(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let batch = Arc::new(std::mem::replace(
            &mut self.batch,
            Vec::with_capacity(Self::BATCH),
        ));
        for tx in &self.senders {
            // A thread that ended panicked: `finish` says so.
            let _ = tx.send(Arc::clone(&batch)).await;
        }
    }

    /// Hands over what is queued, waits for every replay and gives them back in order (a
    /// replay's panic goes on in the caller).
    pub async fn finish(mut self) -> Result<Vec<Slot>> {
        self.flush().await;
        drop(std::mem::take(&mut self.senders));
        let mut slots = Vec::new();
        for h in self.handles {
            match h.await {
                Ok(group) => slots.extend(group),
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                Err(_) => return Err(Error::Closed),
            }
        }
        slots.sort_by_key(|s| s.index);
        Ok(slots)
    }
}
