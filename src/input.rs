//! Reading JSON Lines input (`import`, `append`, archives) with bounded memory.
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
        }
    }

    /// The 1-based number of the line last returned, or of the line an error was about.
    pub fn line_number(&self) -> u64 {
        self.line
    }

    /// The next line without its ending, or `None` at the end of the input.
    pub async fn next_line(&mut self) -> Result<Option<String>, LineError> {
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
}
