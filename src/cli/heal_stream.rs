//! `heal [FILE|-]`: raw monitoring events in, as JSON Lines (a file, a pipe, a FIFO, `tail -F`
//! on standard input); each detected and healed, many at once (group commit gathers their
//! appends); one answer out per line, in input order, as soon as that line's heal is committed.
//!
//! Each answer is what `record event` prints for the line, with the line's number: a heal's
//! report, `{"line":N,"detected":false}` for an event that is no failure, or an error record
//! `{"line":N,"error":{"code":..,"message":..}}` for a line refused (not JSON, too long, not a
//! raw event, facts that contradict a recorded failure id...), after which the stream goes on.
//! What is kept in flight is bounded in lines (`--pipeline`) and in bytes, so memory does not
//! follow the input's length.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::process::ExitCode;

use anyhow::{Context, bail};
use futures_util::FutureExt;
use futures_util::stream::{FuturesOrdered, StreamExt};
use healstore::Error;
use healstore::heal::HealReport;
use healstore::input::{LineError, LineReader};

use super::{Cli, Out};

/// Bytes of input lines kept in flight at most (besides `--pipeline`'s count). A raw event's
/// failure holds it about twice (its metadata and the event itself): with lines of up to
/// 1 MiB, memory stays bounded whatever the pipeline.
const HEAL_BYTES_IN_FLIGHT: usize = 8 << 20;

/// Heals between two checkpoints of the healer: states at rest leave memory at a checkpoint,
/// so a long stream's memory follows the states in use, not every key it ever named.
const CHECKPOINT_EVERY: u64 = 10_000;

use healstore::heal::lines::LineAnswer as Answer;

/// A line's answer, with its number and length (for the bound on bytes in flight).
struct Done {
    line: u64,
    bytes: usize,
    answer: Answer,
}

type Pending<'a> = Pin<Box<dyn Future<Output = Done> + 'a>>;

/// A line answered without healing, queued behind the lines before it.
fn ready<'a>(line: u64, bytes: usize, answer: Answer) -> Pending<'a> {
    Box::pin(std::future::ready(Done {
        line,
        bytes,
        answer,
    }))
}

use healstore::heal::lines::refuses_only_the_line;

pub async fn heal(
    cli: &Cli,
    file: &Path,
    pipeline: u32,
    out: &mut Out,
) -> anyhow::Result<ExitCode> {
    let name = if file == Path::new("-") {
        "standard input".to_owned()
    } else {
        file.display().to_string()
    };
    // The input is checked before the database is opened (a missing file creates nothing),
    // and opened on the reading thread (a FIFO's open waits for its writer).
    let reader = if file == Path::new("-") {
        healstore::input::read_on_thread(|| Ok(std::io::stdin()))?
    } else {
        let meta =
            std::fs::metadata(file).with_context(|| format!("cannot read {}", file.display()))?;
        if meta.is_dir() {
            bail!("cannot read {}: it is a directory", file.display());
        }
        let path = file.to_owned();
        healstore::input::read_on_thread(move || {
            std::fs::File::open(&path).map_err(|e| {
                std::io::Error::new(e.kind(), format!("cannot open {}: {e}", path.display()))
            })
        })?
    };
    let mut signals = Signals::new()?;
    let (config, _) = healstore::config::Config::load(cli.config.as_deref())?;
    let store = cli.open(true).await?;
    let healer = match config.builder().open_lazy(store.clone()).await {
        Ok(h) => h,
        Err(e) => {
            store.close().await?;
            return Err(e.into());
        }
    };
    // Compressed input (`zcat` done for you), told by its first bytes.
    let input = tokio::select! {
        r = healstore::input::sniff(reader) => r.with_context(|| format!("cannot read {name}")),
        () = signals.recv() => {
            healer.close().await?;
            return Ok(ExitCode::SUCCESS);
        }
    };
    let input = match input {
        Ok((_, input)) => input,
        Err(e) => {
            healer.close().await?;
            return Err(e);
        }
    };
    let mut lines = LineReader::new(input).skipping_long_lines();

    let mut s = Stream {
        bytes: 0,
        reading: true,
        out_closed: false,
        fatal: None,
        answered: 0,
        refused: 0,
        first_refused: None,
        healed_since_checkpoint: 0,
    };
    let mut config_recorded = false;
    {
        let healer = &healer;
        let mut in_flight: FuturesOrdered<Pending<'_>> = FuturesOrdered::new();
        let mut checkpoint: Option<Pin<Box<dyn Future<Output = healstore::Result<usize>> + '_>>> =
            None;
        // Reads lines and writes answers at the same time, in input order: a source that sends
        // one event and waits for its answer is answered at once. Heals start in input order
        // (the ordered queue polls new ones first-in, first-out), so decisions on one state are
        // taken in input order too: the healer's per-state locks are fair.
        while s.reading || !in_flight.is_empty() {
            tokio::select! {
                biased;
                Some(done) = in_flight.next(), if !in_flight.is_empty() => {
                    s.settle(done, out);
                    // Every answer already committed, then one write to the output.
                    while let Some(Some(done)) = in_flight.next().now_or_never() {
                        s.settle(done, out);
                    }
                    s.flush(out);
                    if s.healed_since_checkpoint >= CHECKPOINT_EVERY && checkpoint.is_none() {
                        s.healed_since_checkpoint = 0;
                        checkpoint = Some(Box::pin(healer.checkpoint()));
                    }
                }
                r = async { checkpoint.as_mut().expect("a checkpoint").await },
                    if checkpoint.is_some() =>
                {
                    checkpoint = None;
                    if let Err(e) = r {
                        // (a missed checkpoint costs memory and restore time, never a state)
                        tracing::warn!("checkpoint failed, the stream goes on: {e}");
                    }
                }
                () = signals.recv() => {
                    if !s.reading {
                        bail!(
                            "interrupted again: {} lines in flight were not answered (those \
                             committed are in the log)",
                            in_flight.len()
                        );
                    }
                    // Like the end of the input: the lines read are healed and answered.
                    s.reading = false;
                }
                line = lines.next_line(), if s.reading
                    && in_flight.len() < pipeline as usize
                    && s.bytes < HEAL_BYTES_IN_FLIGHT =>
                {
                    let n = lines.line_number();
                    let text = match line {
                        Ok(Some(text)) => text,
                        Ok(None) => {
                            s.reading = false;
                            continue;
                        }
                        Err(LineError::Io(e)) => {
                            s.stop(anyhow::Error::new(e).context(format!("line {n} of {name}")));
                            continue;
                        }
                        Err(LineError::TooLong) => {
                            in_flight.push_back(ready(
                                n,
                                0,
                                Answer::Refused(healstore::heal::lines::too_long()),
                            ));
                            continue;
                        }
                        Err(e @ LineError::NotUtf8(_)) => {
                            in_flight.push_back(ready(
                                n,
                                0,
                                Answer::Refused(Error::InvalidInput(e.to_string())),
                            ));
                            continue;
                        }
                    };
                    // (blank lines are no events: skipped, as `append` does)
                    if text.trim().is_empty() {
                        continue;
                    }
                    let len = text.len();
                    let detected = healstore::heal::lines::detect_line(&text, healer.now());
                    drop(text);
                    s.bytes += len;
                    let failure = match detected {
                        Ok(Some(f)) => f,
                        Ok(None) => {
                            in_flight.push_back(ready(n, len, Answer::NotDetected));
                            continue;
                        }
                        Err(e) => {
                            in_flight.push_back(ready(n, len, Answer::Refused(e)));
                            continue;
                        }
                    };
                    // The configuration is recorded with the first heal, so that a stream of
                    // refused lines writes nothing at all.
                    if !config_recorded {
                        if let Err(e) = config.record(healer.store()).await {
                            in_flight.push_back(ready(n, len, Answer::Refused(e)));
                            continue;
                        }
                        config_recorded = true;
                    }
                    in_flight.push_back(Box::pin(async move {
                        let answer = match healer.heal(failure).await {
                            Ok(r) => Answer::Healed(Box::new(r)),
                            Err(e) => Answer::Refused(e),
                        };
                        Done {
                            line: n,
                            bytes: len,
                            answer,
                        }
                    }));
                }
            }
        }
        if let Some(c) = checkpoint.take()
            && let Err(e) = c.await
        {
            tracing::warn!("checkpoint failed: {e}");
        }
    }
    let closed = healer.close().await;
    s.flush(out);
    if let Some(e) = s.fatal {
        return Err(e);
    }
    closed?;
    if s.refused > 0 {
        eprintln!(
            "healstore: warning: {} of {} lines were refused (the first: line {}); their error \
             records say why",
            s.refused,
            s.answered,
            s.first_refused.unwrap_or_default()
        );
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

/// The stream's bookkeeping.
struct Stream {
    /// Bytes of the lines in flight.
    bytes: usize,
    /// Until the end of the input, a signal, an error that stops the stream or a closed
    /// output.
    reading: bool,
    /// The output was closed (`| head`): the lines in flight are healed, their answers dropped.
    out_closed: bool,
    /// What stopped the stream, if an error did (exit 2).
    fatal: Option<anyhow::Error>,
    answered: u64,
    refused: u64,
    first_refused: Option<u64>,
    healed_since_checkpoint: u64,
}

impl Stream {
    fn stop(&mut self, e: anyhow::Error) {
        self.reading = false;
        self.fatal.get_or_insert(e);
    }

    /// Takes a line's answer into account and writes it.
    fn settle(&mut self, done: Done, out: &mut Out) {
        self.bytes -= done.bytes;
        self.answered += 1;
        match &done.answer {
            Answer::Healed(_) => self.healed_since_checkpoint += 1,
            Answer::NotDetected => {}
            Answer::Refused(e) if refuses_only_the_line(e.kind()) => {
                self.refused += 1;
                self.first_refused.get_or_insert(done.line);
            }
            Answer::Refused(e) => {
                let e = anyhow::Error::new(e.clone()).context(format!(
                    "line {}: the stream stopped; lines after it were not read",
                    done.line
                ));
                self.stop(e);
            }
        }
        if self.out_closed {
            return;
        }
        if let Err(e) = write_answer(out, &done) {
            self.output_failed(e);
        }
    }

    fn flush(&mut self, out: &mut Out) {
        if self.out_closed {
            return;
        }
        if let Err(e) = out.flush() {
            self.output_failed(e);
        }
    }

    /// A closed output (`| head`) ends the stream as the end of the input does; any other
    /// failure to write is an error.
    fn output_failed(&mut self, e: anyhow::Error) {
        self.out_closed = true;
        self.reading = false;
        if !super::output::is_broken_pipe(&e) {
            self.fatal
                .get_or_insert(e.context("cannot write the answers"));
        }
    }
}

fn write_answer(out: &mut Out, done: &Done) -> anyhow::Result<()> {
    let n = done.line;
    if out.json() {
        return out.json_value(&done.answer.to_json(n));
    }
    let text = match &done.answer {
        Answer::Healed(r) => summary(r),
        Answer::NotDetected => "no failure detected in this event".to_owned(),
        Answer::Refused(e) => format!("error: {e}"),
    };
    out.line(&format!(
        "line {n}: {}",
        text.split_whitespace().collect::<Vec<_>>().join(" ")
    ))
}

/// A heal's answer on one line, for people.
fn summary(r: &HealReport) -> String {
    let f = &r.failure;
    let mut s = format!("{} {}", f.failure_id, f.failure_type);
    if let Some(a) = &f.agent_id {
        s.push_str(&format!(" agent {a}"));
    }
    if let Some(t) = &f.task_id {
        s.push_str(&format!(" task {t}"));
    }
    s.push_str(": ");
    if r.duplicate {
        s.push_str("already recorded (nothing was done again); ");
    }
    match r.attempts.last() {
        Some(a) => s.push_str(&format!("{} {}: {}", a.strategy, a.decision, a.reason)),
        None => s.push_str("no decision recorded"),
    }
    if !r.delegated.is_empty() {
        let actions: Vec<String> = r.delegated.iter().map(|a| a.describe()).collect();
        s.push_str(&format!("; carry out: {}", actions.join(", ")));
    }
    s
}

/// SIGINT and SIGTERM: stop reading, answer the lines in flight, exit.
struct Signals {
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> anyhow::Result<Signals> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Signals {
                terminate: signal(SignalKind::terminate())?,
                interrupt: signal(SignalKind::interrupt())?,
            })
        }
        #[cfg(not(unix))]
        Ok(Signals {})
    }

    async fn recv(&mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.terminate.recv() => {}
            _ = self.interrupt.recv() => {}
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
