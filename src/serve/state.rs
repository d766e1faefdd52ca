//! What every request shares: the store, one long-lived healer, the configuration and the
//! clock.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::config::Config;
use crate::heal::Healer;
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
}

impl AppState {
    /// The state of a server over `healer` (opened on its store with `config`'s routes, the
    /// configuration recorded: see [`AppState::open`]).
    pub fn new(healer: Healer, config: Config) -> AppState {
        let store = healer.store().clone();
        let clock = store.options().clock.clone();
        AppState {
            inner: Arc::new(Inner {
                healer,
                store,
                config,
                clock,
            }),
        }
    }

    /// Records `config` in `store` if it changed (as every command that heals does), then
    /// opens one healer with every state restored, for the server's lifetime.
    pub async fn open(store: Store, config: Config) -> crate::Result<AppState> {
        config.record(&store).await?;
        let healer = config.builder().open(store).await?;
        Ok(AppState::new(healer, config))
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
        let checkpoint = self.inner.healer.checkpoint().await;
        let closed = self.inner.store.clone().close().await;
        checkpoint?;
        closed
    }
}
