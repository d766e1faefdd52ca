//! What every request shares: the store, one long-lived healer, the configuration and the
//! clock.

use std::sync::Arc;

use chrono::{DateTime, Utc};

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
}

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

    /// Writes the healer's checkpoint and closes the store: the end of a server's life.
    /// Appends already accepted are committed and answered first.
    pub async fn close(&self) -> crate::Result<()> {
        self.inner.metrics.stop();
        self.inner.live.stop();
        let checkpoint = self.inner.healer.checkpoint().await;
        let closed = self.inner.store.clone().close().await;
        checkpoint?;
        closed
    }
}
