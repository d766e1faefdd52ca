//! Reading JSON Lines input (`import`, `append`, `heal`, archives) with bounded memory.
//!
//! Every path reads lines through [`LineReader`], which enforces one maximum line length,
//! [`MAX_LINE_BYTES`], while it reads: a line that grows past it is refused at once, having
//! buffered at most the limit and one read buffer, however long the line (or a file without a
//! newline) goes on. [`sniff`] tells an archive (gzip) from plain JSON Lines by its first two
//! bytes, read from the stream itself, so that pipes, FIFOs and standard input work like
//! files: nothing is ever read twice or sought.

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};

/// The longest line accepted on input, in bytes, without its line ending (`\n` or `\r\n`):
/// 1 MiB. Every event healstore stores fits in one (see [`MAX_PAYLOAD_BYTES`]), so what
/// `export` writes `import` takes back.
pub const MAX_LINE_BYTES: usize = 1 << 20;

/// The largest payload an event may have, in bytes of its stored (canonical) JSON text: room
/// is left in a line of [`MAX_LINE_BYTES`] for the rest of the event (ids of at most 256
/// bytes, escaped, times, numbers, an archive's hash).
pub const MAX_PAYLOAD_BYTES: usize = MAX_LINE_BYTES - 4096;

/// Why a line could not be read.
#[derive(Debug)]
pub enum LineError {
    /// The line goes on past [`MAX_LINE_BYTES`].
    TooLong,
    /// The line is not UTF-8.
    NotUtf8(std::str::Utf8Error),
    /// The input could not be read (a damaged archive, a failed device).
    Io(std::io::Error),
}

impl std::fmt::Display for LineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LineError::TooLong => write!(
                f,
                "the line is longer than {MAX_LINE_BYTES} bytes (1 MiB), the most a line may \
                 hold; nothing after it was read"
            ),
            LineError::NotUtf8(e) => write!(f, "not UTF-8: {e}"),
            LineError::Io(e) => write!(f, "cannot read: {e}"),
        }
    }
}

impl std::error::Error for LineError {}

/// Lines of a byte stream, each at most [`MAX_LINE_BYTES`] long (see the module's
/// documentation). Line endings are `\n`, optionally preceded by `\r`; a last line without a
/// newline counts.
///
/// [`LineReader::next_line`] is cancel-safe: dropped before it completes (in a `select!`),
/// it keeps what it read for the next call.
pub struct LineReader<R> {
    inner: R,
    buf: Vec<u8>,
    /// The number of lines completed, or of the line being read once an error was returned.
    line: u64,
    max: usize,
    /// Whether the rest of a line refused as too long is skipped, so that reading goes on
    /// with the next line ([`LineReader::skipping_long_lines`]).
    resync: bool,
    /// Inside a line refused as too long: its rest is discarded before the next line.
    skipping: bool,
}

impl<R: AsyncBufRead + Unpin> LineReader<R> {
    pub fn new(inner: R) -> Self {
        LineReader::with_limit(inner, MAX_LINE_BYTES)
    }

    /// A reader with another limit (for tests of the limit itself).
    #[doc(hidden)]
    pub fn with_limit(inner: R, max: usize) -> Self {
        LineReader {
            inner,
            buf: Vec::new(),
            line: 0,
            max,
            resync: false,
            skipping: false,
        }
    }

    /// After a line refused as too long, reading goes on with the next line (by default
    /// nothing after such a line is read): the rest of the long line is read and discarded as
    /// it comes, never buffered.
    pub fn skipping_long_lines(mut self) -> Self {
        self.resync = true;
        self
    }

    /// The 1-based number of the line last returned, or of the line an error was about.
    pub fn line_number(&self) -> u64 {
        self.line
    }

    /// The next line without its ending, or `None` at the end of the input.
    pub async fn next_line(&mut self) -> Result<Option<String>, LineError> {
        while self.skipping {
            let available = self.inner.fill_buf().await.map_err(|e| {
                self.line += 1;
                LineError::Io(e)
            })?;
            if available.is_empty() {
                self.skipping = false;
                return Ok(None);
            }
            let (n, end) = match available.iter().position(|b| *b == b'\n') {
                Some(i) => (i + 1, true),
                None => (available.len(), false),
            };
            self.inner.consume(n);
            self.skipping = !end;
        }
        loop {
            let available = self.inner.fill_buf().await.map_err(|e| {
                self.line += 1;
                LineError::Io(e)
            })?;
            if available.is_empty() {
                if self.buf.is_empty() {
                    return Ok(None);
                }
                return self.complete();
            }
            // Up to a `\r` more than the limit may be kept: it belongs to the line ending.
            let room = self.max + 1 - self.buf.len();
            match available.iter().position(|b| *b == b'\n') {
                Some(i) if i <= room => {
                    self.buf.extend_from_slice(&available[..i]);
                    self.inner.consume(i + 1);
                    return self.complete();
                }
                Some(_) => return Err(self.too_long()),
                None if available.len() <= room => {
                    let n = available.len();
                    self.buf.extend_from_slice(available);
                    self.inner.consume(n);
                }
                None => return Err(self.too_long()),
            }
        }
    }

    fn too_long(&mut self) -> LineError {
        self.line += 1;
        self.buf = Vec::new();
        // (the line's newline, if any, is not consumed yet)
        self.skipping = self.resync;
        LineError::TooLong
    }

    fn complete(&mut self) -> Result<Option<String>, LineError> {
        self.line += 1;
        if self.buf.last() == Some(&b'\r') {
            self.buf.pop();
        }
        if self.buf.len() > self.max {
            self.buf = Vec::new();
            return Err(LineError::TooLong);
        }
        let bytes = std::mem::take(&mut self.buf);
        String::from_utf8(bytes)
            .map(Some)
            .map_err(|e| LineError::NotUtf8(e.utf8_error()))
    }
}

/// A boxed buffered byte stream.
pub type Input = Box<dyn AsyncBufRead + Unpin + Send>;

/// Reads the first bytes of `reader` to tell a gzip stream (an archive) from anything else,
/// without seeking: the bytes read are put back in front of the rest. Returns whether it is
/// gzip and the stream, decompressed when it is.
pub async fn sniff<R>(mut reader: R) -> std::io::Result<(bool, Input)>
where
    R: AsyncRead + Unpin + Send + 'static,
{
    let mut magic = [0u8; 2];
    let mut n = 0;
    // A pipe may deliver one byte at a time.
    while n < magic.len() {
        let got = reader.read(&mut magic[n..]).await?;
        if got == 0 {
            break;
        }
        n += got;
    }
    let head = std::io::Cursor::new(magic[..n].to_vec());
    let whole = BufReader::with_capacity(64 * 1024, head.chain(reader));
    if n == 2 && magic == [0x1f, 0x8b] {
        let gz = async_compression::tokio::bufread::GzipDecoder::new(whole);
        Ok((true, Box::new(BufReader::with_capacity(64 * 1024, gz))))
    } else {
        Ok((false, Box::new(whole)))
    }
}

/// A byte stream read by a thread of its own: see [`read_on_thread`].
pub struct ThreadReader {
    chunks: tokio::sync::mpsc::Receiver<std::io::Result<Vec<u8>>>,
    chunk: Vec<u8>,
    at: usize,
}

/// How many bytes the reading thread reads at a time, and how many such chunks it may read
/// ahead of the consumer.
const THREAD_CHUNK: usize = 64 * 1024;
const THREAD_CHUNKS_AHEAD: usize = 2;

/// Reads `reader` (standard input, a file, a FIFO) with blocking reads on a thread of its own,
/// handing what it reads on through a bounded queue (at most a few chunks of 64 KiB ahead of
/// the consumer).
///
/// Unlike tokio's standard input and files, whose blocking reads run on the runtime's
/// blocking pool and cannot be cancelled, a read waiting on a source that stays open (a
/// terminal, `tail -F`, a FIFO whose writer is idle) never keeps the process from exiting:
/// the thread is not the runtime's, and ends with the process.
///
/// `open` runs on that thread too (opening a FIFO waits for its writer); its error is the
/// first read's.
pub fn read_on_thread<R, F>(open: F) -> std::io::Result<ThreadReader>
where
    R: std::io::Read,
    F: FnOnce() -> std::io::Result<R> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(THREAD_CHUNKS_AHEAD);
    std::thread::Builder::new()
        .name("healstore-input".into())
        .spawn(move || {
            let mut reader = match open() {
                Ok(r) => r,
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            };
            loop {
                let mut buf = vec![0u8; THREAD_CHUNK];
                let sent = match reader.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        buf.truncate(n);
                        tx.blocking_send(Ok(buf))
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        let _ = tx.blocking_send(Err(e));
                        break;
                    }
                };
                if sent.is_err() {
                    break; // the consumer is gone
                }
            }
        })?;
    Ok(ThreadReader {
        chunks: rx,
        chunk: Vec::new(),
        at: 0,
    })
}

impl AsyncRead for ThreadReader {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use std::task::Poll;
        let this = &mut *self;
        while this.at == this.chunk.len() {
            match this.chunks.poll_recv(cx) {
                Poll::Pending => return Poll::Pending,
                // The end of the input.
                Poll::Ready(None) => return Poll::Ready(Ok(())),
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(e)),
                Poll::Ready(Some(Ok(chunk))) => {
                    this.chunk = chunk;
                    this.at = 0;
                }
            }
        }
        let n = buf.remaining().min(this.chunk.len() - this.at);
        buf.put_slice(&this.chunk[this.at..this.at + n]);
        this.at += n;
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn all(text: &[u8], max: usize) -> Vec<Result<String, String>> {
        // A tiny read buffer, so that lines span many reads.
        let mut r = LineReader::with_limit(BufReader::with_capacity(3, text), max);
        let mut out = Vec::new();
        loop {
            match r.next_line().await {
                Ok(Some(l)) => out.push(Ok(l)),
                Ok(None) => break,
                Err(e) => {
                    out.push(Err(format!("{}: {e}", r.line_number())));
                    break;
                }
            }
        }
        out
    }

    #[tokio::test]
    async fn lines_up_to_the_limit_are_read_and_a_longer_one_is_refused_at_its_number() {
        let ok = |s: &str| Ok(s.to_owned());
        assert_eq!(
            all(b"abcd\r\n\nxy\nlast", 4).await,
            [ok("abcd"), ok(""), ok("xy"), ok("last")]
        );
        let refused = all(b"abcd\nabcde\nx\n", 4).await;
        assert_eq!(refused[0], ok("abcd"));
        assert!(
            matches!(&refused[1], Err(e) if e.starts_with("2: the line is longer than")),
            "{refused:?}"
        );
        assert_eq!(refused.len(), 2);
        // (a last line without a newline, and one whose `\r` is past the limit)
        assert!(matches!(&all(b"abcde", 4).await[0], Err(e) if e.starts_with("1:")));
        assert_eq!(all(b"abcd\r", 4).await, [ok("abcd")]);
        assert!(
            all(b"\xff\n", 4).await[0]
                .as_ref()
                .is_err_and(|e| e.contains("invalid utf-8"))
        );
    }

    #[tokio::test]
    async fn a_line_without_end_is_refused_having_buffered_at_most_the_limit() {
        // An endless line: the reader must stop by itself.
        let endless = tokio::io::repeat(b'a');
        let mut r = LineReader::with_limit(BufReader::new(endless), 1000);
        assert!(matches!(r.next_line().await, Err(LineError::TooLong)));
        assert_eq!(r.line_number(), 1);
    }

    #[tokio::test]
    async fn sniffing_reads_gzip_and_plain_text_alike_from_a_stream() {
        use tokio::io::AsyncWriteExt;
        let mut gz = async_compression::tokio::write::GzipEncoder::new(Vec::new());
        gz.write_all(b"one\ntwo\n").await.unwrap();
        gz.shutdown().await.unwrap();
        let packed = gz.into_inner();
        for (bytes, gzip) in [(packed, true), (b"one\ntwo\n".to_vec(), false)] {
            let (is_gzip, input) = sniff(std::io::Cursor::new(bytes)).await.unwrap();
            assert_eq!(is_gzip, gzip);
            let mut r = LineReader::new(input);
            assert_eq!(r.next_line().await.unwrap().as_deref(), Some("one"));
            assert_eq!(r.next_line().await.unwrap().as_deref(), Some("two"));
            assert_eq!(r.next_line().await.unwrap(), None);
        }
        // (one byte, and nothing at all)
        let (g, input) = sniff(std::io::Cursor::new(b"x".to_vec())).await.unwrap();
        assert!(!g);
        assert_eq!(
            LineReader::new(input).next_line().await.unwrap().as_deref(),
            Some("x")
        );
        let (g, input) = sniff(std::io::Cursor::new(Vec::new())).await.unwrap();
        assert!(!g);
        assert_eq!(LineReader::new(input).next_line().await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_reader_that_skips_long_lines_goes_on_with_the_next_line() {
        let ok = |s: &str| Ok(s.to_owned());
        let mut r = LineReader::with_limit(
            BufReader::with_capacity(3, &b"abcd\nabcdefghij\nxy\nabcdefgh"[..]),
            4,
        )
        .skipping_long_lines();
        let mut seen = Vec::new();
        loop {
            match r.next_line().await {
                Ok(Some(l)) => seen.push(ok(&l)),
                Ok(None) => break,
                Err(e) => seen.push(Err(format!("{}: {e}", r.line_number()))),
            }
        }
        assert_eq!(seen.len(), 4, "{seen:?}");
        assert_eq!(seen[0], ok("abcd"));
        assert!(matches!(&seen[1], Err(e) if e.starts_with("2: the line is longer")));
        assert_eq!(seen[2], ok("xy"));
        assert!(matches!(&seen[3], Err(e) if e.starts_with("4: the line is longer")));
        // (an endless line is skipped without being buffered, and then ends the input)
        let endless = tokio::io::AsyncReadExt::take(tokio::io::repeat(b'a'), 10_000_000);
        let mut r = LineReader::with_limit(BufReader::new(endless), 1000).skipping_long_lines();
        assert!(matches!(r.next_line().await, Err(LineError::TooLong)));
        assert!(matches!(r.next_line().await, Ok(None)));
    }

    #[tokio::test]
    async fn a_thread_reader_hands_on_everything_in_order() {
        let text: Vec<u8> = (0..200_000u32)
            .flat_map(|i| format!("{i}\n").into_bytes())
            .collect();
        let copy = text.clone();
        let reader = read_on_thread(move || Ok(std::io::Cursor::new(copy))).unwrap();
        let mut lines = LineReader::new(BufReader::new(reader));
        let mut n = 0u32;
        while let Some(l) = lines.next_line().await.unwrap() {
            assert_eq!(l, n.to_string());
            n += 1;
        }
        assert_eq!(n, 200_000);
    }
}
