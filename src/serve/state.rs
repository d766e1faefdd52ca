//! What every request shares: the store, one long-lived healer, the configuration and the
//! clock.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::heal::Healer;
use crate::live::LiveLog;
use crate::metrics::{Metrics, MetricsOptions};
use crate::{Clock, Store};

/// The state handlers are given. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    healer: Healer,
    store: Store,
    config: Config,
    clock: Arc<dyn Clock>,
    metrics: Metrics,
    live: LiveLog,
    /// The periodic checkpoints' task ([`AppState::checkpoint_every`]) and its stop signal.
    checkpoints: std::sync::Mutex<Option<(tokio::sync::watch::Sender<bool>, JoinHandle<()>)>>,
}

/// [`AppState::checkpoint_every`]'s default: a checkpoint after every 10,000 events this
/// process appends.
pub const DEFAULT_CHECKPOINT_EVERY: u64 = 10_000;

impl AppState {
    /// The state of a server over `healer` (opened on its store with `config`'s routes, the
    /// configuration recorded: see [`AppState::open`]).
    pub fn new(healer: Healer, config: Config) -> AppState {
        AppState::with_metrics(healer, config, Metrics::default())
    }

    /// [`AppState::new`] with `metrics` (counting once [`Metrics::attach`]ed to the store:
    /// [`AppState::open_with`] does).
    pub fn with_metrics(healer: Healer, config: Config, metrics: Metrics) -> AppState {
        let store = healer.store().clone();
        let clock = store.options().clock.clone();
        let live = LiveLog::new(&store);
        AppState {
            inner: Arc::new(Inner {
                healer,
                store,
                config,
                clock,
                metrics,
                live,
                checkpoints: std::sync::Mutex::new(None),
            }),
        }
    }

    /// Records `config` in `store` if it changed (as every command that heals does), then
    /// opens one healer with every state restored, for the server's lifetime.
    pub async fn open(store: Store, config: Config) -> crate::Result<AppState> {
        AppState::open_with(store, config, MetricsOptions::default()).await
    }

    /// [`AppState::open`], with metrics counting from the log's head now on.
    pub async fn open_with(
        store: Store,
        config: Config,
        metrics: MetricsOptions,
    ) -> crate::Result<AppState> {
        config.record(&store).await?;
        let metrics = Metrics::new(metrics);
        metrics.attach(&store).await?;
        let head = store.head_position().await?;
        // A checkpoint writes one position for every strategy: the last one's.
        let mut from = 0;
        for strategy in [
            "CircuitBreaker",
            "AgentRestart",
            "TaskRetry",
            "GradualDegradation",
            "ResourceRebalance",
            "QuorumRecovery",
        ] {
            from = from.max(store.checkpoint_position(strategy).await?);
        }
        tracing::info!(
            checkpoint_position = from,
            head_position = head,
            events_to_replay = head - from,
            "opening the healer: its states from the snapshots of its last checkpoint, then the \
             events after it"
        );
        let healer = config.builder().open(store).await?;
        Ok(AppState::with_metrics(healer, config, metrics))
    }

    /// The process's metrics (`GET /metrics`).
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// The live view of the log (`GET /v1/events/stream`).
    pub fn live(&self) -> &LiveLog {
        &self.inner.live
    }

    pub fn healer(&self) -> &Healer {
        &self.inner.healer
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The instant requests treat as now: the store's clock (fixed by `--now`).
    pub fn now(&self) -> DateTime<Utc> {
        self.inner.clock.now()
    }

    /// Checkpoints the healer ([`Healer::checkpoint`]: snapshots of the states changed since
    /// the last one) each time this process has appended `every` events since the last one,
    /// in a task of its own, until [`AppState::close`] (which writes the last checkpoint), so
    /// that a restart, even after a crash, replays at most about `every` events. A failed
    /// checkpoint is logged and tried again at the next trigger (the snapshots are read
    /// models: nothing is lost meanwhile). Called again, it replaces the earlier task.
    pub fn checkpoint_every(&self, every: u64) {
        let every = i64::try_from(every.max(1)).unwrap_or(i64::MAX);
        let (stop_tx, mut stop) = tokio::sync::watch::channel(false);
        let mut head = self.inner.store.head_watch();
        let state = self.clone();
        let task = tokio::spawn(async move {
            let mut last = *head.borrow_and_update();
            loop {
                tokio::select! {
                    changed = head.changed() => if changed.is_err() { return },
                    _ = stop.wait_for(|s| *s) => return,
                }
                let now = *head.borrow_and_update();
                if now - last < every {
                    continue;
                }
                match state.checkpoint_now().await {
                    Ok(snapshots) => {
                        tracing::debug!(head_position = now, snapshots, "checkpoint written");
                        last = now;
                    }
                    Err(e) => tracing::warn!(error = %e, "a periodic checkpoint failed"),
                }
            }
        });
        let old = self
            .inner
            .checkpoints
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .replace((stop_tx, task));
        if let Some((stop, task)) = old {
            let _ = stop.send(true);
            task.abort();
        }
    }

    /// The healer caught up with the log (its position is where its checkpoint says a
    /// restore starts reading: a healer moves it only as it catches up), then checkpointed.
    async fn checkpoint_now(&self) -> crate::Result<usize> {
        let healer = &self.inner.healer;
        // Visiting no strategy's states is the cheapest catch-up there is.
        healer.visit_states("", |_, _| {}).await?;
        healer.checkpoint().await
    }

    /// Writes the healer's checkpoint and closes the store: the end of a server's life.
    /// Appends already accepted are committed and answered first.
    pub async fn close(&self) -> crate::Result<()> {
        let periodic = self
            .inner
            .checkpoints
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some((stop, task)) = periodic {
            // A checkpoint under way is finished, not cut short.
            let _ = stop.send(true);
            let _ = task.await;
        }
        self.inner.metrics.stop();
        self.inner.live.stop();
        let checkpoint = self.checkpoint_now().await;
        let closed = self.inner.store.clone().close().await;
        checkpoint?;
        closed
    }
}
