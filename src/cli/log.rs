//! Commands on the raw log: init, import, append, export, events.

use std::io::IsTerminal;
use std::path::Path;

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use healstore::{EventFilter, RecordedEvent};
use serde_json::json;
use tokio::io::{AsyncRead, BufReader};

use super::{Cli, Out};

pub async fn init(cli: &Cli, out: &mut Out) -> anyhow::Result<()> {
    // An empty file is made a database here, as a missing one is.
    let existed = std::fs::metadata(&cli.db).is_ok_and(|m| m.len() > 0);
    let store = cli.open(true).await?;
    let head = store.head_position().await?;
    // (SQLite's and PostgreSQL's schemas are numbered apart)
    let schema_version = store.readiness().await?.schema_version;
    store.close().await?;
    let doc = json!({
        "database": cli.db.display().to_string(),
        "created": !existed,
        "schema_version": schema_version,
        "head_position": head,
    });
    if out.json() {
        out.json_value(&doc)?;
    } else if existed {
        out.line(&format!(
            "{} is a healstore database (schema version {}, {} events)",
            cli.db.display(),
            schema_version,
            head
        ))?;
    } else {
        out.line(&format!(
            "created {} (schema version {})",
            cli.db.display(),
            schema_version
        ))?;
    }
    Ok(())
}

/// Opens a file, a FIFO or standard input for reading; also a regular file's size, for a
/// progress bar. Nothing is sought: pipes and process substitutions read like files.
async fn open_input(
    file: &Path,
) -> anyhow::Result<(Box<dyn AsyncRead + Unpin + Send>, Option<u64>)> {
    if file == Path::new("-") {
        return Ok((Box::new(tokio::io::stdin()), None));
    }
    let f = tokio::fs::File::open(file)
        .await
        .with_context(|| format!("cannot read {}", file.display()))?;
    let meta = f.metadata().await?;
    if meta.is_dir() {
        bail!("cannot read {}: it is a directory", file.display());
    }
    Ok((Box::new(f), meta.is_file().then_some(meta.len())))
}

/// The input's name in messages.
fn input_name(file: &Path) -> String {
    if file == Path::new("-") {
        "standard input".into()
    } else {
        file.display().to_string()
    }
}

pub async fn import(cli: &Cli, file: &Path, out: &mut Out) -> anyhow::Result<()> {
    use healstore::store::feed::{self, ImportError};
    let failed = || format!("import of {} failed; nothing was imported", file.display());
    let (input, size) = open_input(file).await?;
    // An archive (gzip, with a header line) is read through its decompressor, told by its
    // first bytes: a pipe or standard input works as a file does.
    let opened = healstore::store::archive::open_input(input, &input_name(file))
        .await
        .with_context(failed)?;
    let store = cli.open(true).await?;
    let mut progress: Option<Option<indicatif::ProgressBar>> = None;
    let report = feed::import(&store, opened, |archive, bytes| {
        // (an archive's size is not the size of what is read from it)
        let bar = progress.get_or_insert_with(|| progress_bar(size.filter(|_| !archive)));
        if let Some(p) = bar {
            p.set_position(bytes);
        }
    })
    .await;
    if let Some(Some(p)) = &progress {
        p.finish_and_clear();
    }
    store.close().await?;
    let report = match report {
        Ok(r) => r,
        Err(ImportError::Refused(e)) => return Err(e.into()),
        Err(e) => return Err(anyhow::anyhow!("{e}").context(failed())),
    };
    if out.json() {
        out.json_value(&report)?;
    } else {
        out.line(&format!(
            "imported {} events ({} already present)",
            report.imported, report.duplicates
        ))?;
    }
    Ok(())
}

fn progress_bar(size: Option<u64>) -> Option<indicatif::ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = match size {
        Some(n) => indicatif::ProgressBar::new(n).with_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} importing [{bar:40}] {bytes}/{total_bytes} ({eta})",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        ),
        None => indicatif::ProgressBar::new_spinner(),
    };
    Some(bar)
}

pub async fn append(cli: &Cli, file: &Path, pipeline: u32, out: &mut Out) -> anyhow::Result<()> {
    use healstore::store::feed::{self, FeedError};
    let (input, _) = open_input(file).await?;
    let store = cli.open(true).await?;
    let mut lines = healstore::input::LineReader::new(BufReader::new(input));
    // Reads input and acknowledges commits at the same time, in input order (see
    // `healstore::store::feed`): a source that sends one event and waits for its
    // acknowledgement is answered at once.
    let (acks, received) = tokio::sync::mpsc::channel(pipeline as usize);
    let appending = async {
        let r = feed::append_lines(&store, &mut lines, pipeline as usize, &acks).await;
        drop(acks);
        r
    };
    let printing = async {
        // (owned here: dropped when printing stops, which stops the feed)
        let mut received = received;
        while let Some(a) = received.recv().await {
            // (a closed output stops the feed: the receiver is dropped)
            ack(out, &a)?;
            out.flush()?;
        }
        anyhow::Ok(())
    };
    let (appended, printed) = tokio::join!(appending, printing);
    out.flush()?;
    store.close().await?;
    printed?;
    match appended {
        Ok(()) | Err(FeedError::Closed) => Ok(()),
        Err(e) => Err(anyhow::anyhow!("{e}")),
    }
}

fn ack(out: &mut Out, a: &healstore::store::feed::AppendAck) -> anyhow::Result<()> {
    if out.json() {
        out.json_value(a)
    } else {
        out.line(&format!(
            "line {}: {} at position {}{}",
            a.line,
            a.event_id,
            a.position,
            if a.duplicate { " (already stored)" } else { "" }
        ))
    }
}

pub async fn export(
    cli: &Cli,
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
    out: &mut Out,
) -> anyhow::Result<()> {
    let store = cli.open(false).await?;
    let filter = EventFilter {
        since,
        until,
        position_order: true,
        ..Default::default()
    };
    let mut events = store.read(filter);
    while let Some(e) = events.next().await {
        out.line(&e?.to_line().to_json())?;
    }
    drop(events);
    store.close().await?;
    Ok(())
}

#[derive(Debug, clap::Args)]
pub struct EventsArgs {
    /// Only this stream.
    #[arg(long)]
    stream: Option<String>,
    /// Only these event types (repeatable).
    #[arg(long = "type")]
    types: Vec<String>,
    /// Only events that occurred at or after this time (RFC 3339).
    #[arg(long, value_parser = super::parse_time)]
    since: Option<DateTime<Utc>>,
    /// Only events that occurred before this time (RFC 3339).
    #[arg(long, value_parser = super::parse_time)]
    until: Option<DateTime<Utc>>,
    /// Only events after this global position (catch-up).
    #[arg(long, default_value_t = 0)]
    after: i64,
    /// At most this many events.
    #[arg(long)]
    limit: Option<u64>,
    /// Keep running and print events as they are appended (by any process).
    #[arg(long)]
    follow: bool,
}

pub async fn events(cli: &Cli, args: &EventsArgs, out: &mut Out) -> anyhow::Result<()> {
    let store = cli.open(false).await?;
    let filter = EventFilter {
        stream_id: args.stream.clone(),
        event_types: args.types.clone(),
        since: args.since,
        until: args.until,
        after_position: args.after,
        limit: args.limit,
        ..Default::default()
    };
    let mut events = if args.follow {
        store.follow(filter)
    } else {
        store.read(filter)
    };
    const HEADER: [&str; 6] = [
        "POSITION",
        "OCCURRED_AT",
        "STREAM",
        "VERSION",
        "TYPE",
        "PAYLOAD",
    ];
    if out.json() {
        while let Some(e) = events.next().await {
            out.json_value(&e?.to_line())?;
            if args.follow {
                out.flush()?;
            }
        }
    } else if args.follow {
        out.line(&HEADER.join("  "))?;
        out.flush()?;
        while let Some(e) = events.next().await {
            out.line(&row(&e?).join("  "))?;
            out.flush()?;
        }
    } else {
        // A page at a time, so that a long listing stays bounded in memory.
        let mut rows = Vec::new();
        let mut first = true;
        while let Some(e) = events.next().await {
            rows.push(row(&e?));
            if rows.len() == 1000 {
                print_rows(out, &HEADER, &mut rows, &mut first)?;
            }
        }
        print_rows(out, &HEADER, &mut rows, &mut first)?;
    }
    drop(events);
    store.close().await?;
    Ok(())
}

fn print_rows(
    out: &mut Out,
    header: &[&str],
    rows: &mut Vec<Vec<String>>,
    first: &mut bool,
) -> anyhow::Result<()> {
    if rows.is_empty() && !*first {
        return Ok(());
    }
    if *first {
        out.table(header, rows)?;
    } else {
        out.table(&[], rows)?;
    }
    *first = false;
    rows.clear();
    Ok(())
}

fn row(e: &RecordedEvent) -> Vec<String> {
    let mut payload = e.payload.to_string();
    if payload.chars().count() > 80 {
        payload = payload.chars().take(77).collect::<String>() + "...";
    }
    vec![
        e.position.to_string(),
        healstore::time::format_time(e.occurred_at),
        e.stream_id.clone(),
        e.stream_version.to_string(),
        e.event_type.clone(),
        payload,
    ]
}

pub async fn archive(
    cli: &Cli,
    before: chrono::DateTime<chrono::Utc>,
    to: &Path,
    out: &mut Out,
) -> anyhow::Result<()> {
    // The file is checked before the healer's checkpoint writes anything.
    healstore::store::archive::check_target(to, &cli.db)?;
    // Strategy state must be in snapshots before its events leave the log (states at rest
    // included): the healer writes them, then cuts.
    let healer = super::heal::open_full_healer(cli).await?;
    let report = healer.archive(before, to, cli.now()).await;
    healer.close().await?;
    let report = report?;
    match report {
        None => {
            if out.json() {
                out.json_value(&serde_json::json!({ "archived": 0 }))?;
            } else {
                out.line("nothing to archive: no event before that time could be moved")?;
            }
        }
        Some(r) => {
            if out.json() {
                out.json_value(&r)?;
            } else {
                out.line(&format!(
                    "archived {} events (positions {} to {}) into {}; the log's chain now starts after hash {}",
                    r.events, r.from_position, r.to_position, r.file, r.end_hash
                ))?;
            }
        }
    }
    Ok(())
}
