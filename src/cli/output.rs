//! Writing results: buffered stdout, JSON or aligned tables, and closed pipes.

use std::io::{BufWriter, Write};

use super::Format;

/// Where command results go.
pub struct Out {
    pub format: Format,
    w: Box<dyn Write>,
}

impl Out {
    pub fn stdout(format: Format) -> Out {
        Out {
            format,
            w: Box::new(BufWriter::new(std::io::stdout())),
        }
    }

    pub fn json(&self) -> bool {
        self.format == Format::Json
    }

    /// Writes one line.
    pub fn line(&mut self, s: &str) -> anyhow::Result<()> {
        self.w.write_all(s.as_bytes())?;
        self.w.write_all(b"\n")?;
        Ok(())
    }

    /// Writes one JSON document (or one JSON Lines record) on its own line.
    pub fn json_value<T: serde::Serialize>(&mut self, v: &T) -> anyhow::Result<()> {
        serde_json::to_writer(&mut self.w, v)?;
        self.w.write_all(b"\n")?;
        Ok(())
    }

    /// Writes an aligned table.
    pub fn table(&mut self, header: &[&str], rows: &[Vec<String>]) -> anyhow::Result<()> {
        let columns = header.len().max(rows.first().map_or(0, Vec::len));
        let mut widths: Vec<usize> = (0..columns)
            .map(|i| header.get(i).map_or(0, |h| h.chars().count()))
            .collect();
        for row in rows {
            for (i, cell) in row.iter().enumerate() {
                if i < widths.len() {
                    widths[i] = widths[i].max(cell.chars().count());
                }
            }
        }
        let render = |cells: &mut dyn Iterator<Item = &str>| {
            let mut s = String::new();
            for (i, c) in cells.enumerate() {
                if i > 0 {
                    s.push_str("  ");
                }
                s.push_str(c);
                if i + 1 < widths.len() {
                    let pad = widths[i].saturating_sub(c.chars().count());
                    s.extend(std::iter::repeat_n(' ', pad));
                }
            }
            s.trim_end().to_owned()
        };
        if !header.is_empty() {
            let head = render(&mut header.iter().copied());
            self.line(&head)?;
        }
        for row in rows {
            let line = render(&mut row.iter().map(String::as_str));
            self.line(&line)?;
        }
        Ok(())
    }

    pub fn flush(&mut self) -> anyhow::Result<()> {
        self.w.flush()?;
        Ok(())
    }
}

/// True when the error is a write to a pipe whose reader has gone (`healstore events | head`).
pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        let io = c.downcast_ref::<std::io::Error>().map(std::io::Error::kind);
        let json = c
            .downcast_ref::<serde_json::Error>()
            .and_then(serde_json::Error::io_error_kind);
        io.or(json) == Some(std::io::ErrorKind::BrokenPipe)
    })
}
