//! Commands on the raw log: init, import, append, export, events.

use std::collections::VecDeque;
use std::io::IsTerminal;
use std::path::Path;

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use healstore::{EventFilter, EventLine, ExpectedVersion, RecordedEvent};
use serde_json::json;
use tokio::io::{AsyncRead, BufReader};

use super::{Cli, Out};

pub async fn init(cli: &Cli, out: &mut Out) -> anyhow::Result<()> {
    // An empty file is made a database here, as a missing one is.
    let existed = std::fs::metadata(&cli.db).is_ok_and(|m| m.len() > 0);
    let store = cli.open(true).await?;
    let head = store.head_position().await?;
    store.close().await?;
    let doc = json!({
        "database": cli.db.display().to_string(),
        "created": !existed,
        "schema_version": healstore::SCHEMA_VERSION,
        "head_position": head,
    });
    if out.json() {
        out.json_value(&doc)?;
    } else if existed {
        out.line(&format!(
            "{} is a healstore database (schema version {}, {} events)",
            cli.db.display(),
            healstore::SCHEMA_VERSION,
            head
        ))?;
    } else {
        out.line(&format!(
            "created {} (schema version {})",
            cli.db.display(),
            healstore::SCHEMA_VERSION
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
    let failed = || format!("import of {} failed; nothing was imported", file.display());
    let (input, size) = open_input(file).await?;
    // An archive (gzip, with a header line) is read through its decompressor, told by its
    // first bytes: a pipe or standard input works as a file does.
    let (header, mut lines) = healstore::store::archive::open_input(input, &input_name(file))
        .await
        .with_context(failed)?;
    let store = cli.open(true).await?;
    if let Some(h) = &header
        && let Err(e) = store.check_archive_import(h).await
    {
        store.close().await?;
        return Err(e.into());
    }
    // (an archive's size is not the size of what is read from it)
    let progress = progress_bar(size.filter(|_| header.is_none()));
    let mut sink = store.begin_import().await?;
    let mut bytes = 0u64;
    let failure = loop {
        let line = match lines.next_line().await {
            Ok(Some(l)) => l,
            Ok(None) => break None,
            Err(e) => break Some(anyhow::anyhow!("line {}: {e}", lines.line_number())),
        };
        let line_no = lines.line_number();
        bytes += line.len() as u64 + 1;
        if let Some(p) = &progress {
            p.set_position(bytes);
        }
        if line.trim().is_empty() {
            continue;
        }
        let parsed = EventLine::parse(&line).and_then(EventLine::into_append);
        drop(line);
        let (stream, event) = match parsed {
            Ok(v) => v,
            Err(e) => break Some(anyhow::anyhow!("line {line_no}: {e}")),
        };
        match sink.send(line_no, stream, event).await {
            Ok(()) => {}
            // The writer refused an earlier line; `finish` says which.
            Err(healstore::Error::Closed) => break None,
            Err(e) => break Some(anyhow::anyhow!("line {line_no}: {e}")),
        }
    };
    if let Some(p) = &progress {
        p.finish_and_clear();
    }
    if let Some(e) = failure {
        sink.abort().await;
        store.close().await?;
        return Err(e.context(failed()));
    }
    let report = sink.finish().await;
    store.close().await?;
    let report = report.with_context(failed)?;
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

/// Bytes of input lines `append` keeps in flight at most (besides `--pipeline`'s count): with
/// lines of up to 1 MiB, memory stays bounded whatever the pipeline.
const APPEND_BYTES_IN_FLIGHT: usize = 16 << 20;

pub async fn append(cli: &Cli, file: &Path, pipeline: u32, out: &mut Out) -> anyhow::Result<()> {
    let (input, _) = open_input(file).await?;
    let store = cli.open(true).await?;
    let mut lines = healstore::input::LineReader::new(BufReader::new(input));
    // Each append in flight, with its line's number and length.
    let mut in_flight: VecDeque<(u64, usize, healstore::PendingAppend)> = VecDeque::new();
    let mut bytes_in_flight = 0usize;
    let mut eof = false;
    let result: anyhow::Result<()> = async {
        // Reads input and acknowledges commits at the same time, in input order: a source
        // that sends one event and waits for its acknowledgement is answered at once.
        while !eof || !in_flight.is_empty() {
            tokio::select! {
                biased;
                r = async { (&mut in_flight.front_mut().expect("not empty").2).await },
                    if !in_flight.is_empty() =>
                {
                    let (n, len, _) = in_flight.pop_front().expect("not empty");
                    bytes_in_flight -= len;
                    ack(out, n, r)?;
                    out.flush()?;
                }
                line = lines.next_line(), if !eof
                    && in_flight.len() < pipeline as usize
                    && bytes_in_flight < APPEND_BYTES_IN_FLIGHT =>
                {
                    let line_no = lines.line_number();
                    let line = match line {
                        Ok(Some(l)) => l,
                        Ok(None) => {
                            eof = true;
                            continue;
                        }
                        Err(e) => bail!("line {line_no}: {e}"),
                    };
                    if line.trim().is_empty() {
                        continue;
                    }
                    let len = line.len();
                    let (stream, event) = EventLine::parse(&line)
                        .and_then(EventLine::into_append)
                        .with_context(|| format!("line {line_no}"))?;
                    drop(line);
                    let pending = store
                        .submit(&stream, ExpectedVersion::Any, vec![event])
                        .await
                        .with_context(|| format!("line {line_no}"))?;
                    bytes_in_flight += len;
                    in_flight.push_back((line_no, len, pending));
                }
            }
        }
        Ok(())
    }
    .await;
    // Whatever happened, appends already queued are committed and acknowledged before exit.
    while let Some((n, _, p)) = in_flight.pop_front() {
        let _ = ack(out, n, p.await);
    }
    out.flush()?;
    store.close().await?;
    result
}

fn ack(
    out: &mut Out,
    line: u64,
    r: healstore::Result<Vec<healstore::Appended>>,
) -> anyhow::Result<()> {
    let appended = r.with_context(|| format!("line {line}"))?;
    for a in appended {
        if out.json() {
            out.json_value(&json!({
                "line": line,
                "event_id": a.event_id,
                "position": a.position,
                "stream_version": a.stream_version,
                "duplicate": a.duplicate,
            }))?;
        } else {
            out.line(&format!(
                "line {line}: {} at position {}{}",
                a.event_id,
                a.position,
                if a.duplicate { " (already stored)" } else { "" }
            ))?;
        }
    }
    Ok(())
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
