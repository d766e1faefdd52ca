//! Parse, resolve, run, exit code. Data goes to stdout, diagnostics to stderr prefixed with
//! `healstore:`. Exit codes: 0 success, 1 a negative answer, 2 an error. A closed pipe on
//! stdout (`healstore events | head`) is not an error.

mod analytics;
mod backtest;
mod demo;
mod heal;
mod heal_stream;
mod log;
mod output;
mod prevent;
mod serve;
mod serve_guard;
mod verify;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use chrono::{DateTime, Utc};
use clap::{Parser, Subcommand, ValueEnum};
use healstore::{Durability, Store, StoreOptions};

pub use output::Out;

/// healstore: the durable memory of a self-healing system.
#[derive(Debug, Parser)]
#[command(name = "healstore", version, about, long_about = None)]
pub struct Cli {
    /// The database: an SQLite file (a path, or `sqlite:PATH`; the default), or a PostgreSQL
    /// database (`postgres://user@host/dbname`).
    #[arg(
        long,
        global = true,
        env = "HEALSTORE_DB",
        default_value = "healstore.db"
    )]
    pub db: PathBuf,

    /// Output format: a table for people, or JSON (one document per command, JSON Lines for
    /// event streams), a stable contract documented in the README.
    #[arg(long, global = true, value_enum, default_value_t = Format::Table)]
    pub format: Format,

    /// `full`: nothing acknowledged is ever lost; `normal`: faster, a power loss may lose the
    /// newest commits (never corrupts).
    #[arg(long, global = true, env = "HEALSTORE_DURABILITY", value_parser = parse_durability, default_value = "full")]
    pub durability: Durability,

    /// Evaluate everything time-dependent at this instant (RFC 3339) instead of the wall clock.
    #[arg(long, global = true, value_parser = parse_time)]
    pub now: Option<DateTime<Utc>>,

    /// The configuration file (default: healstore.toml in the current directory, if present;
    /// otherwise built-in defaults).
    #[arg(long, global = true, env = "HEALSTORE_CONFIG")]
    pub config: Option<PathBuf>,

    /// How long a write waits for another process's write lock (a long import or archive)
    /// before failing with a "retry later" error naming what holds it: `500ms`, `30s`, `10m`,
    /// `1h`; `0s` fails at once.
    #[arg(long, global = true, env = "HEALSTORE_BUSY_TIMEOUT", value_parser = parse_wait, default_value = "10m")]
    pub busy_timeout: std::time::Duration,

    /// Diagnostics on stderr: `text`, one `healstore: level: message` line each, or `json`,
    /// one JSON object a line with its level, target, fields and spans (a request's id), for
    /// log shippers. `RUST_LOG` chooses what is logged.
    #[arg(long, global = true, value_enum, env = "HEALSTORE_LOG_FORMAT", default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create the database (or check an existing one) and bring its schema up to date.
    Init,
    /// Import events from a JSON Lines file (`-` for standard input): all or nothing,
    /// idempotent by event id.
    Import {
        /// The file, or `-` for standard input.
        file: PathBuf,
    },
    /// Append events from JSON Lines as they arrive, acknowledging each on stdout once it is
    /// committed (for feeding a live source; unlike `import`, each line stands alone).
    Append {
        /// The file, or `-` for standard input.
        #[arg(default_value = "-")]
        file: PathBuf,
        /// How many appends may be in flight at once (group commit gathers them).
        #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=65536))]
        pipeline: u32,
    },
    /// Detect and heal raw monitoring events read as JSON Lines (a file, a pipe, a FIFO,
    /// `tail -F` on standard input), many at once, answering each line in input order as soon
    /// as its heal is committed: `record event`'s answer with the line's number, or an error
    /// record for a line refused (the stream goes on). Exit 0, or 1 when a line was refused.
    Heal {
        /// The file, or `-` for standard input.
        #[arg(default_value = "-")]
        file: PathBuf,
        /// How many lines may be in flight at once (group commit gathers their appends).
        #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=65536))]
        pipeline: u32,
    },
    /// Write events as JSON Lines that `import` takes back unchanged.
    Export {
        /// Only events that occurred at or after this time (RFC 3339).
        #[arg(long, value_parser = parse_time)]
        since: Option<DateTime<Utc>>,
        /// Only events that occurred before this time (RFC 3339).
        #[arg(long, value_parser = parse_time)]
        until: Option<DateTime<Utc>>,
    },
    /// List events, optionally following new ones as they are appended.
    Events(log::EventsArgs),
    /// Record failures, outcomes and signals (the healer decides on each failure).
    #[command(subcommand)]
    Record(heal::Record),
    /// List circuit breakers and their state.
    Circuits {
        #[arg(long)]
        agent: Option<String>,
    },
    /// Operate a circuit breaker by hand, or ask it for permission to call an agent.
    Circuit {
        #[arg(value_enum)]
        command: heal::CircuitCommand,
        #[arg(long)]
        agent: String,
        /// Why (required for open, close and reset; recorded in the log).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Let time-dependent states move on (open circuits whose wait has passed turn half-open).
    Tick,
    /// Every strategy's state.
    States {
        /// Only this strategy (e.g. CircuitBreaker, AgentRestart).
        #[arg(long)]
        strategy: Option<String>,
    },
    /// The decision trail of a failure, or of everything about an agent; with `--since`, an
    /// audit report: every automated action in the window, one record per action.
    Audit {
        /// The failure id.
        failure_id: Option<String>,
        /// The agent (with `--since`: only actions naming it).
        #[arg(long, conflicts_with = "failure_id")]
        agent: Option<String>,
        /// The report's start (RFC 3339, inclusive).
        #[arg(long, value_parser = parse_time, conflicts_with = "failure_id")]
        since: Option<DateTime<Utc>>,
        /// The report's end (RFC 3339, exclusive; default: now).
        #[arg(long, value_parser = parse_time, requires = "since")]
        until: Option<DateTime<Utc>>,
    },
    /// Run a simulated fleet healed live by the real healer on the real store (flapping
    /// agents, slow tasks, resource pressure, a lost quorum). A second run continues from the
    /// first one's state.
    Demo(demo::DemoArgs),
    /// Replay the window's recorded history (failures, outcomes, success signals, usage,
    /// operator commands, the passage of time) through a candidate configuration (`--config`)
    /// or the one in effect (`--current`), and compare with what was recorded. Reads the
    /// store only. Default window: 24 hours.
    Backtest(backtest::BacktestArgs),
    /// Overall healing statistics over a window (default: the last 24 h).
    Stats {
        #[command(flatten)]
        window: analytics::WindowArgs,
    },
    /// MTTR as a time series: the time from detection to recovery (or, with `--to
    /// remediate`, to remediation) of the failures recovered (remediated) in each bucket.
    Mttr {
        #[command(flatten)]
        window: analytics::WindowArgs,
        /// Measure to recovery (the agent or task works again) or to remediation (the healing
        /// actions succeeded).
        #[arg(long, value_enum, default_value = "recover")]
        to: analytics::ToArg,
        /// Split each bucket by failure type, remediating strategy or agent.
        #[arg(long, value_enum)]
        by: Option<analytics::ByArg>,
        /// The bucket length (1h, 1d, ...).
        #[arg(long, default_value = "1h")]
        bucket: String,
    },
    /// Strategy effectiveness with trend and verdict, and which strategy works for which
    /// failure type (default window: 7 days).
    Effectiveness {
        #[command(flatten)]
        window: analytics::WindowArgs,
        #[command(flatten)]
        verdicts: analytics::VerdictArgs,
    },
    /// What to change, from the window's figures.
    Recommendations {
        #[command(flatten)]
        window: analytics::WindowArgs,
        #[command(flatten)]
        verdicts: analytics::VerdictArgs,
        /// Write a candidate configuration combining every proposed change to this file (a
        /// new file, unless --force), and backtest each change and the combination over the
        /// window.
        #[arg(long)]
        propose: Option<PathBuf>,
        /// Replace an existing --propose file.
        #[arg(long, requires = "propose")]
        force: bool,
        /// Seeds the backtest's outcome model.
        #[arg(long, default_value_t = 0, requires = "propose")]
        seed: u64,
    },
    /// Every figure against its target, the health score and the recommendations.
    Dashboard {
        #[command(flatten)]
        window: analytics::WindowArgs,
        #[command(flatten)]
        verdicts: analytics::VerdictArgs,
        /// Also write a self-contained HTML page with charts to this file (a new file, unless
        /// `--force`).
        #[arg(long)]
        html: Option<PathBuf>,
        /// Replace the `--html` file if it exists (never the database or a non-regular file).
        #[arg(long, requires = "html")]
        force: bool,
    },
    /// Circuit analytics: time open and half-open, reopenings, flapping circuits.
    CircuitReport {
        #[command(flatten)]
        window: analytics::WindowArgs,
        #[command(flatten)]
        verdicts: analytics::VerdictArgs,
    },
    /// Learn failure patterns (sequences, frequencies, correlations, temporal spikes) and
    /// record them (default window: 7 days).
    Patterns {
        #[command(flatten)]
        window: analytics::WindowArgs,
        #[command(flatten)]
        learn: analytics::LearnArgs,
    },
    /// Predict the next failures from the latest events and the learned patterns, and report
    /// how earlier predictions turned out.
    Predict {
        #[arg(long)]
        agent: Option<String>,
        #[command(flatten)]
        window: analytics::WindowArgs,
        #[command(flatten)]
        learn: analytics::LearnArgs,
    },
    /// Preventions: predictions turned into preventive actions, approved or rejected, and
    /// their effect measured against a holdout.
    #[command(subcommand)]
    Prevent(prevent::Prevent),
    /// Drop every read model and rebuild it from the events.
    Rebuild,
    /// Check the database: SQLite's integrity, the schema (triggers included) against
    /// healstore's migrations, the hash chain over every event, every payload and its indexed
    /// columns, the read models and the strategy snapshots against the events, and (with
    /// --expect-head) a head kept from an earlier run. Exit 0 when all holds, 1 naming the
    /// first problem.
    Verify(verify::VerifyArgs),
    /// Serve the command line's JSON contract over HTTP (`/v1/...`, `/healthz`, `/readyz`,
    /// `/openapi.json`): one process holds the store and the healer for every client. Prints
    /// `listening on http://HOST:PORT` once it accepts connections; stops on SIGINT or
    /// SIGTERM, finishing the requests in flight.
    Serve {
        /// The address to listen on (loopback unless told otherwise; port 0 picks a free
        /// port, printed on start).
        #[arg(long, default_value = "127.0.0.1:7878")]
        listen: std::net::SocketAddr,
        /// The window `/metrics`' health score covers (ending now): 90s, 15m, 1h, 7d, ...
        #[arg(long, default_value = "1h", value_parser = parse_length)]
        metrics_health_window: std::time::Duration,
        /// How often the health score is computed (scrapes read the last one): 500ms, 30s, 5m.
        #[arg(long, default_value = "30s", value_parser = parse_wait)]
        metrics_health_interval: std::time::Duration,
        /// After SIGTERM or SIGINT, how long the requests in flight may take to finish: past
        /// it they are abandoned, what was accepted is committed, and the exit status is 2.
        #[arg(long, value_name = "WAIT", default_value = "30s", value_parser = parse_wait)]
        shutdown_timeout: std::time::Duration,
        /// Checkpoint the healer's states (snapshots) after every N events appended, and at
        /// shutdown: a restart, even after a crash, replays at most about N events.
        #[arg(long, value_name = "N", default_value_t = healstore::serve::state::DEFAULT_CHECKPOINT_EVERY)]
        checkpoint_every: u64,
        #[command(flatten)]
        guard: serve_guard::GuardArgs,
    },
    /// Move the events that occurred before a time into a compressed archive file (readable by
    /// its owner only), keeping the analytics of the archived periods and the chain verifiable
    /// across the cut. `import` and `verify --archive` accept the file.
    Archive {
        /// Archive the longest prefix of the log whose events all occurred before this time.
        #[arg(long, value_parser = parse_time)]
        before: DateTime<Utc>,
        /// The archive file to write: a new file (an existing one is never replaced, since
        /// the events of an earlier archive in it would be lost).
        #[arg(long)]
        to: PathBuf,
    },
}

fn parse_time(s: &str) -> Result<DateTime<Utc>, String> {
    healstore::time::parse_time(s).map_err(|e| e.to_string())
}

/// A wait: a whole number and a unit (`ms`, `s`, `m`, `h`), at most a day.
fn parse_wait(s: &str) -> Result<std::time::Duration, String> {
    let bad = || format!("{s:?} is not a wait; use a whole number and a unit: 500ms, 30s, 10m, 1h");
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| bad())?;
    let ms = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" | "min" => 60_000,
        "h" => 3_600_000,
        _ => return Err(bad()),
    };
    n.checked_mul(ms)
        .filter(|ms| *ms <= 86_400_000)
        .map(std::time::Duration::from_millis)
        .ok_or_else(|| format!("{s:?} is longer than a day"))
}

/// A length (`90s`, `15m`, `1h`, `7d`, `2w`), as analytics windows take it.
fn parse_length(s: &str) -> Result<std::time::Duration, String> {
    healstore::analytics::parse_duration(s)
        .map_err(|e| e.to_string())?
        .to_std()
        .map_err(|_| format!("{s:?} is not a positive length"))
}

fn parse_durability(s: &str) -> Result<Durability, String> {
    s.parse().map_err(|e: healstore::Error| e.to_string())
}

impl Cli {
    /// Opens the store for a command; `create` for commands that may make a new file.
    pub async fn open(&self, create: bool) -> anyhow::Result<Store> {
        let mut options = StoreOptions {
            durability: self.durability,
            create,
            busy_timeout: self.busy_timeout,
            ..StoreOptions::default()
        };
        if let Some(now) = self.now {
            // `--now` stands for the wall clock everywhere, including `recorded_at`.
            options.clock = std::sync::Arc::new(healstore::ManualClock::new(now));
        }
        Ok(Store::open(&self.db, options).await?)
    }

    /// The instant commands treat as "now".
    pub fn now(&self) -> DateTime<Utc> {
        self.now.unwrap_or_else(Utc::now)
    }
}

pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    init_tracing(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
    {
        Ok(rt) => rt,
        Err(e) => return fail(&e),
    };
    let result = runtime.block_on(run(&cli));
    match result {
        Ok(code) => code,
        Err(e) if output::is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

/// `--help` and `--version` print and succeed; a usage error is one line on stderr, exit 2.
fn usage_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            }
        }
        _ => {
            let text = e.to_string();
            let mut lines = text.lines().skip_while(|l| l.trim().is_empty());
            let mut message = lines
                .next()
                .unwrap_or("invalid arguments")
                .trim_start_matches("error: ")
                .to_owned();
            // What the message refers to (the missing arguments, the possible values, a tip)
            // follows on indented lines: keep it, on the same line.
            for detail in lines.take_while(|l| l.starts_with(' ') && !l.trim().is_empty()) {
                message.push(' ');
                message.push_str(detail.trim());
            }
            eprintln!("healstore: error: {message} (see `healstore --help`)");
            ExitCode::from(2)
        }
    }
}

fn fail(e: &anyhow::Error) -> ExitCode {
    eprintln!("healstore: error: {}", one_line(e));
    ExitCode::from(2)
}

/// The error and its causes on one line, each said once: a cause whose text the line already
/// holds (a library error that repeats the message it wraps) is left out.
fn one_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
        if text.is_empty() || line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

/// Diagnostics on stderr in the `healstore: <level>: <message>` form of every other line
/// healstore writes there (`RUST_LOG=healstore=debug` for more than warnings); colours only on
/// a terminal. The library never installs a subscriber itself.
///
/// With `--log-format json`, one JSON object a line instead (`timestamp`, `level`, `target`,
/// the event's `fields`, and the current `span` with its fields, such as a request's id).
fn init_tracing(format: LogFormat) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = match format {
        LogFormat::Text => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
            .event_format(Diagnostic)
            .try_init(),
        LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
    };
}

/// Formats a tracing event as one `healstore: warning: message (field=value, ...)` line.
struct Diagnostic;

impl<S, N> tracing_subscriber::fmt::FormatEvent<S, N> for Diagnostic
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let level = match *event.metadata().level() {
            tracing::Level::ERROR => "error",
            tracing::Level::WARN => "warning",
            tracing::Level::INFO => "info",
            tracing::Level::DEBUG => "debug",
            tracing::Level::TRACE => "trace",
        };
        let mut fields = Fields::default();
        event.record(&mut fields);
        let message = fields.message.split_whitespace().collect::<Vec<_>>();
        write!(writer, "healstore: {level}: {}", message.join(" "))?;
        if !fields.rest.is_empty() {
            let rest = fields.rest.split_whitespace().collect::<Vec<_>>();
            write!(writer, " ({})", rest.join(" "))?;
        }
        writeln!(writer)
    }
}

/// An event's message, and its other fields as `name=value, ...`, without any styling.
#[derive(Default)]
struct Fields {
    message: String,
    rest: String,
}

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        use std::fmt::Write as _;
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else if !field.name().starts_with("log.") {
            if !self.rest.is_empty() {
                self.rest.push_str(", ");
            }
            let _ = write!(self.rest, "{}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.record_debug(field, &format_args!("{value}"));
    }
}

/// The commands a PostgreSQL database does not serve yet, and why: they need the analytics
/// read models (or SQLite's file), which come in a later phase.
fn not_yet_on_postgres(command: &Command) -> Option<&'static str> {
    match command {
        Command::Init
        | Command::Import { .. }
        | Command::Append { .. }
        | Command::Export { .. }
        | Command::Events(_)
        | Command::Verify(_)
        | Command::Heal { .. }
        | Command::Record(_)
        | Command::Tick
        | Command::Circuits { .. }
        | Command::Circuit { .. }
        | Command::States { .. }
        | Command::Serve { .. } => None,
        Command::Archive { .. } => Some("archive"),
        Command::Demo(_) | Command::Backtest(_) => Some("demo and backtest"),
        _ => Some("analytics (the read models)"),
    }
}

async fn run(cli: &Cli) -> anyhow::Result<ExitCode> {
    let mut out = Out::stdout(cli.format);
    let mut code = ExitCode::SUCCESS;
    if let healstore::store::Target::Postgres(_) = healstore::store::Target::parse(&cli.db)
        && let Some(what) = not_yet_on_postgres(&cli.command)
    {
        anyhow::bail!("not yet available on PostgreSQL: {what}");
    }
    match &cli.command {
        Command::Init => log::init(cli, &mut out).await?,
        Command::Import { file } => log::import(cli, file, &mut out).await?,
        Command::Append { file, pipeline } => log::append(cli, file, *pipeline, &mut out).await?,
        Command::Export { since, until } => log::export(cli, *since, *until, &mut out).await?,
        Command::Events(args) => log::events(cli, args, &mut out).await?,
        Command::Demo(args) => demo::run(cli, args, &mut out).await?,
        Command::Backtest(args) => backtest::run(cli, args, &mut out).await?,
        Command::Record(what) => code = heal::record(cli, what, &mut out).await?,
        Command::Heal { file, pipeline } => {
            code = heal_stream::heal(cli, file, *pipeline, &mut out).await?
        }
        Command::Circuits { agent } => heal::circuits(cli, agent.as_deref(), &mut out).await?,
        Command::Circuit {
            command,
            agent,
            reason,
        } => code = heal::circuit(cli, *command, agent, reason.as_deref(), &mut out).await?,
        Command::Tick => heal::tick(cli, &mut out).await?,
        Command::States { strategy } => heal::states(cli, strategy.as_deref(), &mut out).await?,
        Command::Stats { window } => analytics::stats(cli, window, &mut out).await?,
        Command::Mttr {
            window,
            to,
            by,
            bucket,
        } => analytics::mttr(cli, window, *to, *by, bucket, &mut out).await?,
        Command::Effectiveness { window, verdicts } => {
            analytics::effectiveness(cli, window, verdicts, &mut out).await?
        }
        Command::Recommendations {
            window,
            verdicts,
            propose,
            force,
            seed,
        } => {
            let propose = propose.as_ref().map(|p| (p.as_path(), *force, *seed));
            analytics::recommendations(cli, window, verdicts, propose, &mut out).await?
        }
        Command::Dashboard {
            window,
            verdicts,
            html,
            force,
        } => {
            let html = html.as_ref().map(|p| (p.as_path(), *force));
            analytics::dashboard(cli, window, verdicts, html, &mut out).await?
        }
        Command::CircuitReport { window, verdicts } => {
            analytics::circuit_report(cli, window, verdicts, &mut out).await?
        }
        Command::Patterns { window, learn } => {
            analytics::patterns(cli, window, learn, &mut out).await?
        }
        Command::Predict {
            agent,
            window,
            learn,
        } => analytics::predict(cli, agent.as_deref(), window, learn, &mut out).await?,
        Command::Prevent(what) => code = prevent::run(cli, what, &mut out).await?,
        Command::Rebuild => analytics::rebuild(cli, &mut out).await?,
        Command::Verify(args) => code = verify::run(cli, args, &mut out).await?,
        Command::Archive { before, to } => log::archive(cli, *before, to, &mut out).await?,
        Command::Serve {
            listen,
            metrics_health_window,
            metrics_health_interval,
            shutdown_timeout,
            checkpoint_every,
            guard,
        } => {
            let metrics = healstore::metrics::MetricsOptions {
                health_window: *metrics_health_window,
                health_interval: *metrics_health_interval,
                ..Default::default()
            };
            let stopping = serve::Stopping {
                shutdown_timeout: *shutdown_timeout,
                checkpoint_every: *checkpoint_every,
            };
            serve::run(cli, *listen, metrics, guard, stopping).await?
        }
        Command::Audit {
            failure_id: _,
            agent,
            since: Some(since),
            until,
        } => {
            let window = healstore::Window::new(*since, until.unwrap_or_else(|| cli.now()))?;
            heal::audit_report(cli, window, agent.as_deref(), &mut out).await?
        }
        Command::Audit {
            failure_id, agent, ..
        } => heal::audit(cli, failure_id.as_deref(), agent.as_deref(), &mut out).await?,
    }
    out.flush()?;
    Ok(code)
}
