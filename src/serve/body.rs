//! Request bodies read as they arrive, and answers written as they are ready: JSON Lines in
//! and out with bounded memory (the lines read through [`crate::input::LineReader`], the same
//! limits as every other path in).

use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::{Body, BodyDataStream, Bytes};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::Stream;
use serde::Serialize;
use tokio::io::{AsyncBufRead, AsyncRead, ReadBuf};
use tokio::sync::mpsc;

use super::error::ApiError;

/// The media type of JSON Lines answers.
pub const JSON_LINES: &str = "application/x-ndjson";

/// A request body as an asynchronous reader (chunks as they arrive, nothing buffered beyond
/// the current one).
pub struct BodyReader {
    stream: BodyDataStream,
    chunk: Bytes,
    done: bool,
}

impl BodyReader {
    pub fn new(body: Body) -> BodyReader {
        BodyReader {
            stream: body.into_data_stream(),
            chunk: Bytes::new(),
            done: false,
        }
    }
}

impl AsyncBufRead for BodyReader {
    fn poll_fill_buf(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<&[u8]>> {
        let this = self.get_mut();
        while this.chunk.is_empty() && !this.done {
            match Pin::new(&mut this.stream).poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => this.done = true,
                Poll::Ready(Some(Ok(bytes))) => this.chunk = bytes,
                Poll::Ready(Some(Err(e))) => {
                    return Poll::Ready(Err(std::io::Error::other(e)));
                }
            }
        }
        Poll::Ready(Ok(&this.chunk))
    }

    fn consume(self: Pin<&mut Self>, amt: usize) {
        let this = self.get_mut();
        let amt = amt.min(this.chunk.len());
        let _ = this.chunk.split_to(amt);
    }
}

impl AsyncRead for BodyReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let available = match self.as_mut().poll_fill_buf(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Ready(Ok(b)) => {
                let n = b.len().min(buf.remaining());
                buf.put_slice(&b[..n]);
                n
            }
        };
        self.consume(available);
        Poll::Ready(Ok(()))
    }
}

/// A JSON Lines answer written as its lines are ready: a handler keeps the [`LineSender`]
/// (usually in a task of its own) and returns the response at once.
pub fn json_lines_channel() -> (LineSender, Response) {
    // A few lines buffered: the writer waits for a slow reader beyond that.
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<Bytes, std::convert::Infallible>(b), rx))
    });
    let response = json_lines_response(Body::from_stream(stream));
    (LineSender(tx), response)
}

/// A response with a JSON Lines body.
pub fn json_lines_response(body: Body) -> Response {
    let mut r = (StatusCode::OK, body).into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(JSON_LINES));
    r
}

/// Writes lines of a JSON Lines answer.
#[derive(Clone)]
pub struct LineSender(mpsc::Sender<Bytes>);

/// The client went away: nothing more can be answered.
#[derive(Debug)]
pub struct Gone;

impl std::fmt::Display for Gone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the client closed the connection")
    }
}

impl LineSender {
    /// Sends one value as a line (waits while the client is slow).
    pub async fn send<T: Serialize>(&self, v: &T) -> Result<(), Gone> {
        let mut line = serde_json::to_vec(v).map_err(|_| Gone)?;
        line.push(b'\n');
        self.0.send(Bytes::from(line)).await.map_err(|_| Gone)
    }

    /// Sends an error record `{"error":{"code":..,"message":..}}` (a stream that fails once
    /// its answer has begun ends with one).
    pub async fn send_error(&self, e: &crate::Error) -> Result<(), Gone> {
        self.send(&ApiError::from_error(e).body()).await
    }
}

/// Refuses a body that is not JSON Lines (415), before anything is read.
pub fn require_json_lines(headers: &axum::http::HeaderMap) -> Result<(), ApiError> {
    if super::guard::is_json_lines(headers) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!("send JSON Lines, with Content-Type: {JSON_LINES} (or application/jsonl)"),
        ))
    }
}

/// A JSON Lines answer of a stream's items, written as they are read (memory bounded by one
/// item): `first` (an item already read, to tell an empty answer from a missing one before
/// the answer begins), then the stream's. An error after the answer began ends it with an
/// error record.
pub fn stream_json_lines<T, S>(first: Option<T>, stream: S) -> Response
where
    T: Serialize + Send + 'static,
    S: Stream<Item = crate::Result<T>> + Send + Unpin + 'static,
{
    use futures_util::StreamExt;
    let head = futures_util::stream::iter(first.map(Ok));
    let lines = head.chain(stream);
    let body = futures_util::stream::unfold(Some(lines), |state| async move {
        let mut lines = state?;
        let item = lines.next().await?;
        let (bytes, next) = match item {
            Ok(v) => match serde_json::to_vec(&v) {
                Ok(mut b) => {
                    b.push(b'\n');
                    (b, Some(lines))
                }
                Err(e) => (error_line(&crate::Error::InvalidInput(e.to_string())), None),
            },
            Err(e) => (error_line(&e), None),
        };
        Some((
            Ok::<Bytes, std::convert::Infallible>(Bytes::from(bytes)),
            next,
        ))
    });
    json_lines_response(Body::from_stream(body))
}

fn error_line(e: &crate::Error) -> Vec<u8> {
    let mut b = serde_json::to_vec(&ApiError::from_error(e).body()).unwrap_or_default();
    b.push(b'\n');
    b
}
