//! `healstore backtest`: recorded history replayed through a candidate configuration.

use healstore::backtest::{BacktestOptions, Candidate, backtest};

use super::output::Out;
use super::{Cli, analytics::WindowArgs};

#[derive(Debug, Clone, clap::Args)]
pub struct BacktestArgs {
    #[command(flatten)]
    pub window: WindowArgs,
    /// Replay the configuration in effect (from the log's `configuration_changed` events)
    /// and report the share of decisions taken as recorded: the fidelity check. Without it,
    /// the candidate is the `--config` file.
    #[arg(long)]
    pub current: bool,
    /// Seeds the outcome model (outcomes of actions history did not take).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// How many changed decisions the table lists (JSON lists them all).
    #[arg(long, default_value_t = 20)]
    pub changed: usize,
}

pub async fn run(cli: &Cli, args: &BacktestArgs, out: &mut Out) -> anyhow::Result<()> {
    let candidate = match (&cli.config, args.current) {
        (Some(_), true) => anyhow::bail!("give --config CANDIDATE.toml or --current, not both"),
        (Some(path), false) => Candidate::from_file(path)?,
        (None, true) => Candidate::Current,
        (None, false) => {
            anyhow::bail!("backtest needs a candidate: --config CANDIDATE.toml, or --current")
        }
    };
    let window = args.window.resolve(cli.now(), "24h")?;
    // Read only: nothing is created, migrated or appended.
    let store = cli.open(false).await?;
    let options = BacktestOptions {
        window,
        seed: args.seed,
    };
    let result = backtest(&store, &options, std::slice::from_ref(&candidate)).await;
    store.close().await?;
    let report = result?
        .into_iter()
        .next()
        .expect("one report per candidate");
    if out.json() {
        return out.json_value(&report);
    }
    for line in report.table(args.changed).lines() {
        out.line(line)?;
    }
    Ok(())
}
