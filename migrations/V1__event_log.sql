-- The event log: the only table healstore treats as the source of truth.
-- Everything else (strategy snapshots, analytics read models) is derived from it and can be
-- dropped and rebuilt at any time.

-- Marks the file as a healstore database ('HLST'), so that a foreign SQLite file is recognised.
PRAGMA application_id = 1212961620;

CREATE TABLE events (
    -- AUTOINCREMENT so that a position is never reused, even after the newest rows are lost to
    -- a rolled-back transaction: catch-up readers may rely on positions being final.
    position        INTEGER PRIMARY KEY AUTOINCREMENT,
    -- Idempotency key: appending an id that is already stored writes nothing.
    event_id        TEXT    NOT NULL UNIQUE,
    stream_id       TEXT    NOT NULL,
    -- 1-based, dense per stream; the unique key below is the optimistic-concurrency check.
    stream_version  INTEGER NOT NULL CHECK (stream_version >= 1),
    event_type      TEXT    NOT NULL,
    schema_version  INTEGER NOT NULL CHECK (schema_version >= 1),
    -- Microseconds since the Unix epoch, UTC. occurred_at is the time of the fact (given by the
    -- caller, possibly historical); recorded_at is when a store first recorded it. Neither is
    -- ever re-stamped.
    occurred_at     INTEGER NOT NULL,
    recorded_at     INTEGER NOT NULL,
    payload         TEXT    NOT NULL,
    -- Copies of well-known payload fields, extracted on append, for analytics to filter and
    -- group by without parsing JSON.
    failure_id      TEXT,
    agent_id        TEXT,
    failure_type    TEXT,
    strategy        TEXT,
    success         INTEGER CHECK (success IN (0, 1)),
    duration_ms     INTEGER,
    UNIQUE (stream_id, stream_version)
) STRICT;

-- Time-window scans, by type ("failures detected in the last hour") and without.
CREATE INDEX events_by_type_time ON events (event_type, occurred_at);
CREATE INDEX events_by_time ON events (occurred_at);
-- One failure's whole story (audit trail, MTTR pairs). Partial: most events carry no failure.
CREATE INDEX events_by_failure ON events (failure_id) WHERE failure_id IS NOT NULL;
CREATE INDEX events_by_agent ON events (agent_id, occurred_at) WHERE agent_id IS NOT NULL;
CREATE INDEX events_by_failure_type ON events (failure_type, occurred_at)
    WHERE failure_type IS NOT NULL;
-- Covers strategy-effectiveness queries (count, success, duration per strategy and window).
CREATE INDEX events_by_strategy ON events (strategy, occurred_at, success, duration_ms)
    WHERE strategy IS NOT NULL;

-- The log is append-only. These make any attempt to rewrite history fail loudly.
CREATE TRIGGER events_refuse_update BEFORE UPDATE ON events
BEGIN
    SELECT RAISE(ABORT, 'healstore: the event log is append-only; UPDATE refused');
END;

CREATE TRIGGER events_refuse_delete BEFORE DELETE ON events
BEGIN
    SELECT RAISE(ABORT, 'healstore: the event log is append-only; DELETE refused');
END;
