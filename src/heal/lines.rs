//! Raw monitoring events one line at a time, as `healstore heal` and the HTTP API's JSON Lines
//! heal take them: what a line holds, and the record it is answered with. One definition for
//! both front ends.

use serde_json::{Value, json};

use super::{Failure, HealReport};
use crate::input::MAX_LINE_BYTES;
use crate::{Error, ErrorKind, Result};

/// What a line is answered with.
#[derive(Debug)]
pub enum LineAnswer {
    Healed(Box<HealReport>),
    /// A raw event that is not a failure (an unknown type, an agent that is not failed).
    NotDetected,
    Refused(Error),
}

impl LineAnswer {
    /// The line's record: the heal's answer ([`HealReport::to_json`]) with the line's number,
    /// `{"line":N,"detected":false}`, or `{"line":N,"error":{"code":..,"message":..}}`.
    pub fn to_json(&self, line: u64) -> Value {
        match self {
            LineAnswer::Healed(r) => {
                let mut m = r.to_json();
                m.insert("line".into(), json!(line));
                Value::Object(m)
            }
            LineAnswer::NotDetected => json!({"line": line, "detected": false}),
            LineAnswer::Refused(e) => json!({
                "line": line,
                "error": {"code": e.kind().code(), "message": e.to_string()},
            }),
        }
    }
}

/// The failure in a line, if any; refused when the line is not JSON, not a raw event, or
/// names an agent or task that no event could hold.
pub fn detect_line(text: &str, now: chrono::DateTime<chrono::Utc>) -> Result<Option<Failure>> {
    let raw: Value = serde_json::from_str(text)
        .map_err(|e| Error::InvalidInput(format!("the line is not JSON: {e}")))?;
    super::detect(&raw, now)
}

/// The refusal of a line longer than [`MAX_LINE_BYTES`] (skipped; the stream goes on).
pub fn too_long() -> Error {
    Error::InvalidInput(format!(
        "the line is longer than {MAX_LINE_BYTES} bytes (1 MiB), the most a line may hold; it \
         was skipped"
    ))
}

/// Errors that are about the line itself: it is answered with an error record and the stream
/// goes on. Any other kind (the database busy past the busy timeout, a full disk, a read-only
/// or damaged file, I/O) would refuse the next lines too: the stream stops there.
pub fn refuses_only_the_line(kind: ErrorKind) -> bool {
    matches!(
        kind,
        ErrorKind::InvalidInput | ErrorKind::Conflict | ErrorKind::NotFound
    )
}
