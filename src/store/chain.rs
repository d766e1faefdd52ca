//! The hash chain that makes the log tamper-evident.
//!
//! Every event stores `hash = SHA-256(previous hash || canonical content)`, where the canonical
//! content is its position, id, stream, stream version, type, schema version, both times and
//! the stored payload text, each length-prefixed (numbers as 8 little-endian bytes), so that
//! no two different events encode alike. The first event chains to the anchor
//! (`chain_anchor`: 32 zero bytes for a log that starts at position 1; after an archive, the
//! hash of the last archived event). Changing, inserting or removing any event behind
//! healstore's back breaks the chain from that event on, and `verify` names it.

use sha2::{Digest, Sha256};

/// A link of the chain.
pub type Hash = [u8; 32];

/// The anchor of a log that starts at position 1.
pub const GENESIS: Hash = [0; 32];

/// The canonical content of one event, as stored.
#[derive(Debug, Clone, Copy)]
pub struct Content<'a> {
    pub position: i64,
    pub event_id: &'a str,
    pub stream_id: &'a str,
    pub stream_version: i64,
    pub event_type: &'a str,
    pub schema_version: i64,
    pub occurred_at: i64,
    pub recorded_at: i64,
    pub payload: &'a str,
}

/// The stored columns of an event that the chain covers, and its stored hash.
#[derive(Debug, Clone)]
pub(crate) struct StoredEvent {
    pub position: i64,
    pub event_id: String,
    pub stream_id: String,
    pub stream_version: i64,
    pub event_type: String,
    pub schema_version: i64,
    pub occurred_at: i64,
    pub recorded_at: i64,
    pub payload: String,
    pub hash: Option<Vec<u8>>,
}

impl<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow> for StoredEvent {
    /// By column index: position, event_id, stream_id, stream_version, event_type,
    /// schema_version, occurred_at, recorded_at, payload, hash.
    fn from_row(row: &'r sqlx::sqlite::SqliteRow) -> sqlx::Result<Self> {
        use sqlx::Row as _;
        Ok(StoredEvent {
            position: row.try_get(0)?,
            event_id: row.try_get(1)?,
            stream_id: row.try_get(2)?,
            stream_version: row.try_get(3)?,
            event_type: row.try_get(4)?,
            schema_version: row.try_get(5)?,
            occurred_at: row.try_get(6)?,
            recorded_at: row.try_get(7)?,
            payload: row.try_get(8)?,
            hash: row.try_get(9)?,
        })
    }
}

impl StoredEvent {
    pub fn content(&self) -> Content<'_> {
        Content {
            position: self.position,
            event_id: &self.event_id,
            stream_id: &self.stream_id,
            stream_version: self.stream_version,
            event_type: &self.event_type,
            schema_version: self.schema_version,
            occurred_at: self.occurred_at,
            recorded_at: self.recorded_at,
            payload: &self.payload,
        }
    }

    /// The stored hash, when it is one.
    pub fn stored_hash(&self) -> Option<Hash> {
        self.hash.as_deref().and_then(from_blob)
    }
}

/// The next link: `SHA-256(prev || content)`.
pub fn link(prev: &Hash, c: &Content<'_>) -> Hash {
    link_raw(
        prev,
        [
            c.position,
            c.stream_version,
            c.schema_version,
            c.occurred_at,
            c.recorded_at,
        ],
        [
            c.event_id.as_bytes(),
            c.stream_id.as_bytes(),
            c.event_type.as_bytes(),
            c.payload.as_bytes(),
        ],
    )
}

/// [`link`] over the stored bytes of the text fields (`event_id`, `stream_id`, `event_type`,
/// `payload`), whether or not they are UTF-8: `verify` reads them so, so that a field altered
/// into something that is not text still gets its hash compared rather than failing the read.
pub(crate) fn link_raw(prev: &Hash, numbers: [i64; 5], texts: [&[u8]; 4]) -> Hash {
    let mut h = Sha256::new();
    h.update(prev);
    for n in numbers {
        h.update(n.to_le_bytes());
    }
    for s in texts {
        h.update((s.len() as u64).to_le_bytes());
        h.update(s);
    }
    h.finalize().into()
}

/// Lower-case hexadecimal.
pub fn hex(h: &[u8]) -> String {
    h.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parses 64 hexadecimal digits.
pub fn from_hex(s: &str) -> Option<Hash> {
    let s = s.trim();
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// A stored hash as a [`Hash`], if it is one.
pub fn from_blob(b: &[u8]) -> Option<Hash> {
    b.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn content(payload: &str) -> Content<'_> {
        Content {
            position: 1,
            event_id: "e",
            stream_id: "s",
            stream_version: 1,
            event_type: "t",
            schema_version: 1,
            occurred_at: 10,
            recorded_at: 11,
            payload,
        }
    }

    #[test]
    fn every_field_and_the_previous_link_change_the_hash() {
        let a = link(&GENESIS, &content("{}"));
        assert_ne!(a, link(&GENESIS, &content("{ }")));
        assert_ne!(a, link(&[1; 32], &content("{}")));
        let mut c = content("{}");
        c.position = 2;
        assert_ne!(a, link(&GENESIS, &c));
        // Length prefixes: moving a character between fields changes the hash.
        let mut d = content("{}");
        d.event_id = "es";
        d.stream_id = "";
        let mut e = content("{}");
        e.event_id = "e";
        e.stream_id = "s";
        assert_ne!(link(&GENESIS, &d), link(&GENESIS, &e));
        assert_eq!(from_hex(&hex(&a)), Some(a));
        assert_eq!(from_hex("zz"), None);
    }
}
