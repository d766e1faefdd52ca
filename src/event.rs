//! Events as the store sees them: what an appender hands in ([`NewEvent`]), what a reader gets
//! back ([`RecordedEvent`]), and the JSON Lines form ([`EventLine`]) used by `import`,
//! `export` and `events`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::time::{format_time, serde_rfc3339};

/// Longest accepted event id or stream id, in bytes. Ids are keys of unique indexes: a bound
/// keeps them from becoming a way to bloat the database.
pub const MAX_ID_LEN: usize = 256;

/// An event to append. The stream it goes to and the version expected are given with the
/// append, not here.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    /// Idempotency key: appending an id that is already stored writes nothing.
    pub event_id: String,
    /// A past-tense fact name, e.g. `failure_detected`.
    pub event_type: String,
    /// The version of the payload's shape for this event type, from 1.
    pub schema_version: u32,
    /// When the fact happened, given by the caller (possibly long ago).
    pub occurred_at: DateTime<Utc>,
    /// When a store first recorded the event. `None` means "now" (stamped by the store's clock
    /// at commit); an imported event keeps the time its original store gave it.
    pub recorded_at: Option<DateTime<Utc>>,
    /// The event's content: a JSON object.
    pub payload: Value,
}

impl NewEvent {
    /// A new event with a fresh, time-ordered id (UUIDv7).
    pub fn new(event_type: impl Into<String>, occurred_at: DateTime<Utc>, payload: Value) -> Self {
        NewEvent {
            event_id: uuid::Uuid::now_v7().to_string(),
            event_type: event_type.into(),
            schema_version: 1,
            occurred_at,
            recorded_at: None,
            payload,
        }
    }

    /// Sets the event id (for callers that derive ids themselves, to make retries idempotent).
    pub fn with_id(mut self, id: impl Into<String>) -> Self {
        self.event_id = id.into();
        self
    }

    /// Checks what the store requires of every event, and, for event types this binary knows,
    /// that the payload has the shape of that type.
    pub fn validate(&self) -> Result<()> {
        check_id("event_id", &self.event_id)?;
        check_id("event_type", &self.event_type)?;
        if self.schema_version == 0 {
            return Err(Error::InvalidEvent(
                "schema_version must be at least 1".into(),
            ));
        }
        check_time("occurred_at", self.occurred_at)?;
        if let Some(t) = self.recorded_at {
            check_time("recorded_at", t)?;
        }
        let Some(payload) = self.payload.as_object() else {
            return Err(Error::InvalidEvent(format!(
                "payload of {} must be a JSON object",
                self.event_id
            )));
        };
        // The fields copied into indexed columns, whatever the type, are bounded like ids
        // (known types check them fully, in `check_known_payload`).
        for key in INDEXED_TEXT_FIELDS {
            if let Some(Value::String(v)) = payload.get(*key)
                && v.len() > MAX_ID_LEN
            {
                return Err(Error::InvalidEvent(format!(
                    "{key} is {} bytes long; at most {MAX_ID_LEN} are allowed",
                    v.len()
                )));
            }
        }
        crate::events::check_known_payload(&self.event_type, self.schema_version, &self.payload)
    }
}

/// Payload fields of any event type that are copied into indexed columns as text (see
/// [`IndexFields`]).
const INDEXED_TEXT_FIELDS: &[&str] = &["failure_id", "agent_id", "failure_type", "strategy"];

/// Event times must be writable in RFC 3339 (years 0000 to 9999), so that what `export` writes
/// `import` takes back.
fn check_time(what: &str, t: DateTime<Utc>) -> Result<()> {
    use chrono::Datelike;
    if !(0..=9999).contains(&t.year()) {
        return Err(Error::InvalidEvent(format!(
            "{what} {t} is outside the years 0000 to 9999"
        )));
    }
    Ok(())
}

/// Ids are non-empty, bounded, printable text.
pub fn check_id(what: &str, id: &str) -> Result<()> {
    if id.is_empty() {
        return Err(Error::InvalidEvent(format!("{what} must not be empty")));
    }
    if id.len() > MAX_ID_LEN {
        return Err(Error::InvalidEvent(format!(
            "{what} is {} bytes long; at most {MAX_ID_LEN} are allowed",
            id.len()
        )));
    }
    if id.chars().any(char::is_control) {
        return Err(Error::InvalidEvent(format!(
            "{what} {id:?} contains control characters"
        )));
    }
    Ok(())
}

/// The version an append expects its stream to be at (the number of events in it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpectedVersion {
    /// No check.
    Any,
    /// The stream must not exist yet (same as `Exact(0)`).
    NoStream,
    /// The stream must hold at least one event.
    StreamExists,
    /// The stream must hold exactly this many events.
    Exact(u64),
}

impl ExpectedVersion {
    pub(crate) fn admits(self, current: u64) -> bool {
        match self {
            ExpectedVersion::Any => true,
            ExpectedVersion::NoStream => current == 0,
            ExpectedVersion::StreamExists => current > 0,
            ExpectedVersion::Exact(v) => current == v,
        }
    }
}

impl std::fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExpectedVersion::Any => f.write_str("any"),
            ExpectedVersion::NoStream => f.write_str("no stream"),
            ExpectedVersion::StreamExists => f.write_str("stream exists"),
            ExpectedVersion::Exact(v) => write!(f, "{v}"),
        }
    }
}

/// What an append returns for each event, once it is committed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Appended {
    pub event_id: String,
    /// The event's global position: unique, increasing in commit order, never reused.
    pub position: i64,
    pub stream_version: u64,
    /// True when the id was already stored: nothing was written and the original position is
    /// returned.
    pub duplicate: bool,
}

/// An event read back from the store.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedEvent {
    pub position: i64,
    pub event_id: String,
    pub stream_id: String,
    pub stream_version: u64,
    pub event_type: String,
    pub schema_version: u32,
    pub occurred_at: DateTime<Utc>,
    pub recorded_at: DateTime<Utc>,
    pub payload: Value,
}

impl RecordedEvent {
    /// The typed form of the event, or `None` for an event type or schema version this binary
    /// does not know (or a payload that does not fit it): such events stay available as data.
    pub fn decode(&self) -> Option<crate::events::HealEvent> {
        crate::events::HealEvent::decode(&self.event_type, self.schema_version, &self.payload)
    }

    /// The JSON Lines form.
    pub fn to_line(&self) -> EventLine {
        EventLine {
            position: Some(self.position),
            event_id: Some(self.event_id.clone()),
            stream_id: self.stream_id.clone(),
            stream_version: Some(self.stream_version),
            event_type: self.event_type.clone(),
            schema_version: self.schema_version,
            occurred_at: self.occurred_at,
            recorded_at: Some(self.recorded_at),
            payload: self.payload.clone(),
            hash: None,
        }
    }
}

/// Well-known payload fields copied into indexed columns on append, so that analytics filter
/// and group without parsing JSON. Any event type may carry them, known or not.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct IndexFields {
    pub failure_id: Option<String>,
    pub agent_id: Option<String>,
    pub failure_type: Option<String>,
    pub strategy: Option<String>,
    pub success: Option<bool>,
    pub duration_ms: Option<i64>,
}

impl IndexFields {
    pub fn from_payload(payload: &Value) -> Self {
        let obj = payload.as_object();
        let text = |k: &str| {
            obj.and_then(|o| o.get(k))
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        IndexFields {
            failure_id: text("failure_id"),
            agent_id: text("agent_id"),
            failure_type: text("failure_type"),
            strategy: text("strategy"),
            success: obj.and_then(|o| o.get("success")).and_then(Value::as_bool),
            duration_ms: obj
                .and_then(|o| o.get("duration_ms"))
                .and_then(Value::as_i64),
        }
    }
}

fn default_schema_version() -> u32 {
    1
}

/// One line of healstore's JSON Lines event format: what `export` and `events --format json`
/// write and what `import` and `append` read. Field order is fixed; payload keys are sorted.
///
/// On input, `position` and `stream_version` are optional and ignored (the receiving store
/// assigns them), `event_id` is optional (when absent, an id is derived from the line's
/// content, so that importing the same file twice stays idempotent), `schema_version` defaults
/// to 1, `recorded_at` is kept when given and stamped by the store otherwise, and `payload`
/// is required (`{}` when there is nothing to say). Any other field is an error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventLine {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<i64>,
    #[serde(default)]
    pub event_id: Option<String>,
    pub stream_id: String,
    #[serde(default)]
    pub stream_version: Option<u64>,
    pub event_type: String,
    #[serde(default = "default_schema_version")]
    pub schema_version: u32,
    #[serde(with = "serde_rfc3339")]
    pub occurred_at: DateTime<Utc>,
    #[serde(default, with = "serde_rfc3339::option")]
    pub recorded_at: Option<DateTime<Utc>>,
    pub payload: Value,
    /// The event's link in the hash chain (hexadecimal), in archive files. Ignored on input:
    /// the receiving store chains events itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
}

impl EventLine {
    /// Parses one line. Errors name the problem (serde's message includes the column).
    pub fn parse(line: &str) -> Result<EventLine> {
        serde_json::from_str(line).map_err(|e| Error::InvalidEvent(e.to_string()))
    }

    /// Serialises to one line (no trailing newline).
    pub fn to_json(&self) -> String {
        // Serialising plain data to a String cannot fail; fall back to an explicit error
        // object rather than a panic should serde_json ever disagree.
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":{:?}}}", e.to_string()))
    }

    /// The stream and the event to append for this line. `position` and `stream_version` are
    /// not carried over: the receiving store assigns both, in input order, so that a full
    /// export imported into an empty store reproduces them exactly.
    pub fn into_append(self) -> Result<(String, NewEvent)> {
        check_id("stream_id", &self.stream_id)?;
        let event_id = match self.event_id {
            Some(id) => id,
            None => derived_id(&self),
        };
        let event = NewEvent {
            event_id,
            event_type: self.event_type,
            schema_version: self.schema_version,
            occurred_at: self.occurred_at,
            recorded_at: self.recorded_at,
            payload: self.payload,
        };
        event.validate()?;
        Ok((self.stream_id, event))
    }
}

/// A stable id for a line that has none: a UUIDv5 over the stream, type, time and payload.
fn derived_id(line: &EventLine) -> String {
    // A fixed namespace so that the same content always gets the same id, in every process.
    const NAMESPACE: uuid::Uuid = uuid::uuid!("6f1c2a8e-2d0b-4c55-9a43-8d1f3b7e9c01");
    let key = format!(
        "{}\u{1f}{}\u{1f}{}\u{1f}{}\u{1f}{}",
        line.stream_id,
        line.event_type,
        line.schema_version,
        format_time(line.occurred_at),
        line.payload
    );
    uuid::Uuid::new_v5(&NAMESPACE, key.as_bytes()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_fields_come_from_top_level_payload_keys() {
        let f = IndexFields::from_payload(&serde_json::json!({
            "failure_id": "f1", "agent_id": "a1", "failure_type": "agent_down",
            "strategy": "AgentRestart", "success": true, "duration_ms": 150, "other": 1
        }));
        assert_eq!(f.failure_id.as_deref(), Some("f1"));
        assert_eq!(f.strategy.as_deref(), Some("AgentRestart"));
        assert_eq!(f.success, Some(true));
        assert_eq!(f.duration_ms, Some(150));
        assert_eq!(
            IndexFields::from_payload(&serde_json::json!({})),
            IndexFields::default()
        );
    }

    #[test]
    fn line_without_id_gets_a_stable_derived_id() {
        let text = r#"{"stream_id":"s","event_type":"x","occurred_at":"2026-01-01T00:00:00Z","payload":{}}"#;
        let a = EventLine::parse(text).unwrap().into_append().unwrap().1;
        let b = EventLine::parse(text).unwrap().into_append().unwrap().1;
        assert_eq!(a.event_id, b.event_id);
        assert_eq!(a.payload, serde_json::json!({}));
    }

    #[test]
    fn unknown_fields_and_bad_times_are_rejected() {
        assert!(EventLine::parse(
            r#"{"stream_id":"s","event_type":"x","occurred_at":"2026-01-01T00:00:00Z","extra":1}"#
        )
        .is_err());
        assert!(
            EventLine::parse(r#"{"stream_id":"s","event_type":"x","occurred_at":"last tuesday"}"#)
                .is_err()
        );
    }
}
