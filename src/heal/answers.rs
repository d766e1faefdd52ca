//! The healer's answers as documents: what `healstore circuits` and `states` print with
//! `--format json`, and what the HTTP API answers (one definition for both); and raw events
//! healed from JSON Lines in input order ([`heal_lines`], the HTTP API's `POST /v1/heal`).

use serde::Serialize;
use serde_json::Value;

use super::healer::{Healer, StateView};
use super::lines::{LineAnswer, detect_line, refuses_only_the_line, too_long};
use super::model::Failure;
use crate::{Error, Result};

/// `circuits --format json`: every circuit breaker not at rest, each the breaker's state with
/// its `agent_id`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CircuitsReport {
    pub circuits: Vec<Value>,
}

/// `states --format json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatesReport {
    pub states: Vec<StateView>,
}

impl Healer {
    /// `circuits --format json`: [`Healer::circuits`] as the document.
    pub async fn circuits_report(&self, agent: Option<&str>) -> Result<CircuitsReport> {
        Ok(CircuitsReport {
            circuits: self.circuits(agent).await?,
        })
    }

    /// Every strategy's state (only `strategy`'s when given), caught up with the log.
    pub async fn states_report(&self, strategy: Option<&str>) -> Result<StatesReport> {
        Ok(StatesReport {
            states: self.states(strategy).await?,
        })
    }
}

/// Bytes of input lines kept in flight at most by [`heal_lines`] (besides its pipeline): a
/// raw event's failure holds its text about twice (its metadata and the event itself), so with
/// lines of up to 1 MiB memory stays bounded whatever the pipeline.
pub const HEAL_BYTES_IN_FLIGHT: usize = 8 << 20;

/// Detects and heals raw monitoring events read as JSON Lines, up to `pipeline` at once (and
/// [`HEAL_BYTES_IN_FLIGHT`] bytes; group commit gathers their appends), and calls `answer`
/// with each line's number and answer in input order as soon as that line's heal is
/// committed (sends it on `answers`). Blank lines are skipped; a line too long or not UTF-8
/// is answered with an error and skipped. The stream stops after an answer whose error is not
/// about its line alone ([`refuses_only_the_line`]), when the input fails, or when `answers`
/// is closed; the lines already in flight are healed first.
pub async fn heal_lines<R>(
    healer: &Healer,
    lines: &mut crate::input::LineReader<R>,
    pipeline: usize,
    answers: &tokio::sync::mpsc::Sender<(u64, LineAnswer)>,
) -> std::result::Result<(), HealLinesError>
where
    R: tokio::io::AsyncBufRead + Unpin,
{
    use futures_util::stream::{FuturesOrdered, StreamExt};
    use std::future::Future;
    use std::pin::Pin;

    use crate::input::LineError;

    type Pending<'a> = Pin<Box<dyn Future<Output = (u64, usize, LineAnswer)> + Send + 'a>>;
    fn ready<'a>(n: u64, len: usize, a: LineAnswer) -> Pending<'a> {
        Box::pin(std::future::ready((n, len, a)))
    }
    fn healing(healer: &Healer, n: u64, len: usize, f: Failure) -> Pending<'_> {
        Box::pin(async move {
            let a = match healer.heal(f).await {
                Ok(r) => LineAnswer::Healed(Box::new(r)),
                Err(e) => LineAnswer::Refused(e),
            };
            (n, len, a)
        })
    }
    let pipeline = pipeline.max(1);
    let mut in_flight: FuturesOrdered<Pending<'_>> = FuturesOrdered::new();
    let mut bytes = 0usize;
    let mut reading = true;
    let mut stopped: Option<HealLinesError> = None;
    while reading || !in_flight.is_empty() {
        tokio::select! {
            biased;
            Some((n, len, a)) = in_flight.next(), if !in_flight.is_empty() => {
                bytes -= len;
                let fatal = match &a {
                    LineAnswer::Refused(e) if !refuses_only_the_line(e.kind()) => Some(e.clone()),
                    _ => None,
                };
                if stopped.is_none() && answers.send((n, a)).await.is_err() {
                    stopped = Some(HealLinesError::Closed);
                    reading = false;
                }
                if let Some(error) = fatal {
                    reading = false;
                    stopped.get_or_insert(HealLinesError::Stopped { line: n, error });
                }
            }
            line = lines.next_line(), if reading
                && in_flight.len() < pipeline
                && bytes < HEAL_BYTES_IN_FLIGHT =>
            {
                let n = lines.line_number();
                let text = match line {
                    Ok(Some(text)) => text,
                    Ok(None) => {
                        reading = false;
                        continue;
                    }
                    Err(LineError::Io(e)) => {
                        reading = false;
                        stopped.get_or_insert(HealLinesError::Read { line: n, error: e });
                        continue;
                    }
                    Err(LineError::TooLong) => {
                        in_flight.push_back(ready(n, 0, LineAnswer::Refused(too_long())));
                        continue;
                    }
                    Err(e @ LineError::NotUtf8(_)) => {
                        in_flight.push_back(ready(
                            n,
                            0,
                            LineAnswer::Refused(Error::InvalidInput(e.to_string())),
                        ));
                        continue;
                    }
                };
                if text.trim().is_empty() {
                    continue;
                }
                let len = text.len();
                bytes += len;
                match detect_line(&text, healer.now()) {
                    Ok(Some(f)) => {
                        drop(text);
                        in_flight.push_back(healing(healer, n, len, f));
                    }
                    Ok(None) => in_flight.push_back(ready(n, len, LineAnswer::NotDetected)),
                    Err(e) => in_flight.push_back(ready(n, len, LineAnswer::Refused(e))),
                }
            }
        }
    }
    match stopped {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Why [`heal_lines`] stopped before the end of its input.
#[derive(Debug)]
pub enum HealLinesError {
    /// Line `line`'s heal failed for a reason that would refuse the next lines too.
    Stopped { line: u64, error: Error },
    /// The input could not be read at line `line`.
    Read { line: u64, error: std::io::Error },
    /// The answers' receiver was dropped.
    Closed,
}

impl std::fmt::Display for HealLinesError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HealLinesError::Stopped { line, error } => write!(
                f,
                "line {line}: the stream stopped; lines after it were not read: {error}"
            ),
            HealLinesError::Read { line, error } => write!(f, "line {line}: cannot read: {error}"),
            HealLinesError::Closed => write!(f, "nobody takes the answers any more"),
        }
    }
}
