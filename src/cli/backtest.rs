//! `healstore backtest`: recorded history replayed through a candidate configuration, or
//! through every combination of settings (`--set`).

use healstore::backtest::{BacktestOptions, Candidate, backtest, configuration_at, sweep};
use healstore::config::Config;

use super::output::Out;
use super::{Cli, analytics::WindowArgs};

#[derive(Debug, Clone, clap::Args)]
pub struct BacktestArgs {
    #[command(flatten)]
    pub window: WindowArgs,
    /// Replay the configuration in effect (from the log's `configuration_changed` events)
    /// and report the share of decisions taken as recorded: the fidelity check. Without it,
    /// the candidate is the `--config` file. With `--set`, the base of the sweep.
    #[arg(long)]
    pub current: bool,
    /// A sweep: `KEY=V1,V2,...` (a dotted key as in the file, such as
    /// `circuit_breaker.failure_threshold=3,5,8`; values split at commas), repeatable. One
    /// backtest per combination of the values, over one read of the log, on the `--config`
    /// file or (`--current`) the configuration in effect at the window's end.
    #[arg(long = "set", value_name = "KEY=V1,V2,...")]
    pub set: Vec<String>,
    /// Seeds the outcome model (outcomes of actions history did not take).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// How many failures whose decision changed are listed, in the table and in JSON (all
    /// are counted: `changed_failures`).
    #[arg(long, default_value_t = 20)]
    pub changed: usize,
    /// Also write the report as a self-contained HTML page with charts (no script, nothing
    /// fetched) to this new file (`--force` replaces an existing one).
    #[arg(long)]
    pub html: Option<std::path::PathBuf>,
    /// Replace the `--html` file if it exists (never the database or a non-regular file).
    #[arg(long, requires = "html")]
    pub force: bool,
}

/// `KEY=V1,V2,...` as a key and its values; an empty list or value is refused.
fn parse_set(s: &str) -> anyhow::Result<(String, Vec<String>)> {
    let Some((key, values)) = s.split_once('=') else {
        anyhow::bail!(
            "invalid input: --set {s}: expected KEY=V1,V2,... (such as circuit_breaker.failure_threshold=3,5,8)"
        );
    };
    let key = key.trim();
    if values.trim().is_empty() {
        anyhow::bail!("invalid input: --set {key}= names no value");
    }
    let values: Vec<String> = values.split(',').map(|v| v.trim().to_owned()).collect();
    if values.iter().any(String::is_empty) {
        anyhow::bail!("invalid input: --set {s}: an empty value in the list");
    }
    Ok((key.to_owned(), values))
}

pub async fn run(cli: &Cli, args: &BacktestArgs, out: &mut Out) -> anyhow::Result<()> {
    let settings = args
        .set
        .iter()
        .map(|s| parse_set(s))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let candidate = match (&cli.config, args.current) {
        (Some(_), true) => anyhow::bail!("give --config CANDIDATE.toml or --current, not both"),
        (Some(path), false) => Candidate::from_file(path)?,
        (None, true) => Candidate::Current,
        (None, false) => {
            anyhow::bail!(
                "backtest needs a candidate: --config CANDIDATE.toml, or --current (also as \
                 the base of a --set sweep)"
            )
        }
    };
    if !settings.is_empty() {
        if args.html.is_some() {
            anyhow::bail!("--html writes the page of one backtest, not of a --set sweep");
        }
        // A file's combinations are checked before the store is opened.
        if let Candidate::Config { config, .. } = &candidate {
            config.sweep(&settings)?;
        }
    }
    if let Some(path) = &args.html {
        super::analytics::html_check(cli, path, args.force)?;
    }
    let window = args.window.resolve(cli.now(), "24h")?;
    // Read only: nothing is created, migrated or appended.
    let store = cli.open(false).await?;
    let options = BacktestOptions {
        seed: args.seed,
        max_changed: args.changed,
        ..BacktestOptions::new(window)
    };
    if !settings.is_empty() {
        let result = async {
            let (name, base): (String, Config) = match &candidate {
                Candidate::Config { name, config } => (name.clone(), (**config).clone()),
                Candidate::Current => (
                    "current".to_owned(),
                    configuration_at(&store, window.until).await?,
                ),
            };
            sweep(&store, &options, &name, &base, &settings).await
        }
        .await;
        store.close().await?;
        let s = result?;
        if out.json() {
            return out.json_value(&s);
        }
        for line in s.table().lines() {
            out.line(line)?;
        }
        return Ok(());
    }
    let result = backtest(&store, &options, std::slice::from_ref(&candidate)).await;
    store.close().await?;
    let report = result?
        .into_iter()
        .next()
        .expect("one report per candidate");
    if let Some(path) = &args.html {
        let page = healstore::backtest::html::render(&report);
        healstore::output::write(
            path,
            &cli.db,
            super::analytics::html_existing(args.force),
            page.as_bytes(),
        )?;
    }
    if out.json() {
        return out.json_value(&report);
    }
    for line in report.table(args.changed).lines() {
        out.line(line)?;
    }
    if let Some(path) = &args.html {
        out.line(&format!("\nwrote {}", path.display()))?;
    }
    Ok(())
}
