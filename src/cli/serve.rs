//! `serve [--listen ADDR]`: the HTTP service (see `healstore::serve`). Opens the store and one
//! healer as `archive` does (the configuration recorded, every state restored), prints
//! `listening on http://HOST:PORT`, and serves until SIGINT or SIGTERM.

use std::net::SocketAddr;

use healstore::serve::{AppState, ServeOptions};

use super::Cli;
use super::serve_guard::GuardArgs;

/// How the server's healer checkpoints, and how long a shutdown may wait.
pub struct Stopping {
    pub shutdown_timeout: std::time::Duration,
    pub checkpoint_every: u64,
}

pub async fn run(
    cli: &Cli,
    listen: SocketAddr,
    metrics: healstore::metrics::MetricsOptions,
    guard: &GuardArgs,
    stopping: Stopping,
) -> anyhow::Result<()> {
    // Tokens and the exposure check first: a refused start touches no file.
    let guard = guard.guard(listen)?;
    let (config, _) = healstore::config::Config::load(cli.config.as_deref())?;
    let store = cli.open(true).await?;
    let state = match AppState::open_with(store.clone(), config, metrics).await {
        Ok(s) => s,
        Err(e) => {
            store.close().await?;
            return Err(e.into());
        }
    };
    state.checkpoint_every(stopping.checkpoint_every);
    let signal = shutdown_signal()?;
    let app = healstore::serve::router_with(state.clone(), Some(&guard));
    let shutdown = async move {
        signal.await;
        guard.close_streams();
    };
    let options = ServeOptions {
        listen,
        shutdown_timeout: stopping.shutdown_timeout,
    };
    healstore::serve::serve_app(state, app, options, shutdown).await?;
    Ok(())
}

/// Completes on SIGINT or SIGTERM.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()> + Send + 'static> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut terminate = signal(SignalKind::terminate())?;
        let mut interrupt = signal(SignalKind::interrupt())?;
        Ok(async move {
            tokio::select! {
                _ = terminate.recv() => {}
                _ = interrupt.recv() => {}
            }
        })
    }
    #[cfg(not(unix))]
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
    })
}
