-- Tamper evidence: every event carries a hash chained to the previous event's hash over its
-- canonical content (see src/store/chain.rs). Events stored before this migration get theirs
-- computed in the same transaction (the binary does it, in position order).
ALTER TABLE events ADD COLUMN hash BLOB;

-- Where the chain starts: 32 zero bytes for a log that starts at position 1; after events are
-- archived, the position and hash of the last archived event (the log's own
-- `events_archived` event records the same, so the anchor can be checked too).
CREATE TABLE chain_anchor (
    id              INTEGER PRIMARY KEY CHECK (id = 1),
    position        INTEGER NOT NULL CHECK (position >= 0),
    hash            BLOB    NOT NULL CHECK (length(hash) = 32),
    archived_to     TEXT,
    archived_at     INTEGER
) STRICT;

INSERT INTO chain_anchor (id, position, hash) VALUES (1, 0, zeroblob(32));

-- Streams whose newest events were archived: their version, so that a stream continues at the
-- next version after an archive (and a stream that existed is never mistaken for a new one).
CREATE TABLE archived_streams (
    stream_id       TEXT    PRIMARY KEY,
    version         INTEGER NOT NULL CHECK (version >= 1)
) STRICT, WITHOUT ROWID;
