//! `POST /v1/heal`: raw monitoring events as JSON Lines, healed many at once, each line
//! answered in input order as soon as its heal is committed, with the record `healstore heal
//! --format json` writes for it (see [`crate::heal::lines`]). A line refused gets an error
//! record of its own and the stream goes on; an error that would refuse every later line (a
//! full disk, a database busy past the busy timeout) is answered for its line and ends the
//! stream. Memory is bounded: lines of at most 1 MiB, a bounded number in flight, and the
//! answers go out as they are ready.

use std::future::Future;
use std::pin::Pin;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use futures_util::stream::FuturesOrdered;
use tokio::io::AsyncWriteExt;

use crate::Error;
use crate::heal::lines::{LineAnswer, detect_line, refuses_only_the_line, too_long};
use crate::input::{LineError, LineReader};
use crate::serve::AppState;

/// Lines of one request in flight at most (group commit gathers their appends).
const PIPELINE: usize = 256;

/// Answers buffered ahead of a slow client at most.
const ANSWERS_BUFFERED: usize = 64;

type Pending<'a> = Pin<Box<dyn Future<Output = (u64, LineAnswer)> + Send + 'a>>;

fn ready<'a>(line: u64, answer: LineAnswer) -> Pending<'a> {
    Box::pin(std::future::ready((line, answer)))
}

/// Heal raw monitoring events sent as JSON Lines; the answer is JSON Lines too, one record
/// per non-blank input line, in input order, streamed as heals are committed.
#[utoipa::path(post, path = "/v1/heal", tag = "record",
    request_body(content = String, content_type = "application/x-ndjson",
        description = "Raw monitoring events, one JSON object a line"),
    responses((status = 200, content_type = "application/x-ndjson",
        description = "One record a line, in input order: a heal's answer with its `line`, \
                       {\"line\":N,\"detected\":false}, or {\"line\":N,\"error\":{\"code\",\"message\"}}")))]
pub async fn heal(State(state): State<AppState>, body: Body) -> Response {
    // The body, copied into a pipe read a line at a time: it never sits in memory whole.
    let (mut pipe, reader) = tokio::io::duplex(64 << 10);
    tokio::spawn(async move {
        let mut data = body.into_data_stream();
        while let Some(Ok(chunk)) = data.next().await {
            if pipe.write_all(&chunk).await.is_err() {
                break;
            }
        }
    });
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(ANSWERS_BUFFERED);
    tokio::spawn(async move {
        let healer = state.healer();
        let mut lines = LineReader::new(tokio::io::BufReader::new(reader)).skipping_long_lines();
        let mut in_flight: FuturesOrdered<Pending<'_>> = FuturesOrdered::new();
        let mut reading = true;
        while reading || !in_flight.is_empty() {
            tokio::select! {
                biased;
                Some((n, answer)) = in_flight.next(), if !in_flight.is_empty() => {
                    if matches!(&answer, LineAnswer::Refused(e) if !refuses_only_the_line(e.kind())) {
                        reading = false;
                    }
                    let mut record = answer.to_json(n).to_string().into_bytes();
                    record.push(b'\n');
                    if tx.send(Ok(Bytes::from(record))).await.is_err() {
                        // The client went away: the lines read are healed, nothing more read.
                        reading = false;
                    }
                }
                line = lines.next_line(), if reading && in_flight.len() < PIPELINE => {
                    let n = lines.line_number();
                    match line {
                        Ok(Some(text)) if text.trim().is_empty() => {}
                        Ok(Some(text)) => match detect_line(&text, healer.now()) {
                            Ok(Some(f)) => in_flight.push_back(Box::pin(async move {
                                let answer = match healer.heal(f).await {
                                    Ok(r) => LineAnswer::Healed(Box::new(r)),
                                    Err(e) => LineAnswer::Refused(e),
                                };
                                (n, answer)
                            })),
                            Ok(None) => in_flight.push_back(ready(n, LineAnswer::NotDetected)),
                            Err(e) => in_flight.push_back(ready(n, LineAnswer::Refused(e))),
                        },
                        Ok(None) => reading = false,
                        Err(LineError::TooLong) => {
                            in_flight.push_back(ready(n, LineAnswer::Refused(too_long())))
                        }
                        Err(e @ LineError::NotUtf8(_)) => in_flight.push_back(ready(
                            n,
                            LineAnswer::Refused(Error::InvalidInput(e.to_string())),
                        )),
                        Err(LineError::Io(e)) => {
                            reading = false;
                            in_flight.push_back(ready(
                                n,
                                LineAnswer::Refused(Error::Io(format!("cannot read the body: {e}"))),
                            ));
                        }
                    }
                }
            }
        }
    });
    let answers = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    (
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(answers),
    )
        .into_response()
}
