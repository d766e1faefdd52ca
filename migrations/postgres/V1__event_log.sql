-- The PostgreSQL schema of the event log (the SQLite schema's V1, V2 and V4 in one first
-- schema): the events, the hash chain's anchor, archived stream versions and strategy
-- snapshots. The analytics read models (SQLite's V3 and later) are not here yet.

-- Marks the database as healstore's (see src/store/pg.rs, `inspect`).
CREATE TABLE healstore_database (
    id              INTEGER PRIMARY KEY CHECK (id = 1),
    application     TEXT    NOT NULL CHECK (application = 'healstore')
);
INSERT INTO healstore_database (id, application) VALUES (1, 'healstore');

CREATE TABLE events (
    -- Numbered by the writer holding the append lock (pg_advisory_xact_lock), one after
    -- another with no gap: a position is visible only after every lower one is (see
    -- ARCHITECTURE.md, "Positions on PostgreSQL"). No sequence.
    position        BIGINT  PRIMARY KEY CHECK (position >= 1),
    -- Idempotency key: appending an id that is already stored writes nothing.
    event_id        TEXT    NOT NULL UNIQUE,
    stream_id       TEXT    NOT NULL,
    -- 1-based, dense per stream; the unique key below is the optimistic-concurrency check.
    stream_version  BIGINT  NOT NULL CHECK (stream_version >= 1),
    event_type      TEXT    NOT NULL,
    schema_version  BIGINT  NOT NULL CHECK (schema_version >= 1),
    -- Microseconds since the Unix epoch, UTC (as on SQLite: the chain hashes these numbers).
    occurred_at     BIGINT  NOT NULL,
    recorded_at     BIGINT  NOT NULL,
    payload         TEXT    NOT NULL,
    failure_id      TEXT,
    agent_id        TEXT,
    failure_type    TEXT,
    strategy        TEXT,
    success         BOOLEAN,
    duration_ms     BIGINT,
    hash            BYTEA   CHECK (hash IS NULL OR length(hash) = 32),
    UNIQUE (stream_id, stream_version)
);

CREATE INDEX events_by_type_time ON events (event_type, occurred_at);
CREATE INDEX events_by_time ON events (occurred_at);
CREATE INDEX events_by_failure ON events (failure_id) WHERE failure_id IS NOT NULL;
CREATE INDEX events_by_agent ON events (agent_id, occurred_at) WHERE agent_id IS NOT NULL;
CREATE INDEX events_by_strategy ON events (strategy, occurred_at, success, duration_ms)
    WHERE strategy IS NOT NULL;

-- The log is append-only, in the database itself: UPDATE and DELETE fail loudly.
CREATE FUNCTION healstore_refuse_rewrite() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'healstore: the event log is append-only; % refused', TG_OP;
END;
$$;

CREATE TRIGGER events_refuse_rewrite BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION healstore_refuse_rewrite();

CREATE TRIGGER events_refuse_truncate BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION healstore_refuse_rewrite();

-- Where the chain starts: 32 zero bytes for a log that starts at position 1.
CREATE TABLE chain_anchor (
    id              INTEGER PRIMARY KEY CHECK (id = 1),
    position        BIGINT  NOT NULL CHECK (position >= 0),
    hash            BYTEA   NOT NULL CHECK (length(hash) = 32),
    archived_to     TEXT,
    archived_at     BIGINT
);
INSERT INTO chain_anchor (id, position, hash) VALUES (1, 0, decode(repeat('00', 32), 'hex'));

CREATE TABLE archived_streams (
    stream_id       TEXT    PRIMARY KEY,
    version         BIGINT  NOT NULL CHECK (version >= 1)
);

-- Snapshots of strategy state: a read model, rebuildable from the events.
CREATE TABLE strategy_snapshots (
    stream_id       TEXT    PRIMARY KEY,
    strategy        TEXT    NOT NULL,
    key             TEXT    NOT NULL,
    stream_version  BIGINT  NOT NULL CHECK (stream_version >= 0),
    state           TEXT    NOT NULL,
    written_at      BIGINT  NOT NULL
);

CREATE TABLE strategy_checkpoints (
    strategy        TEXT    PRIMARY KEY,
    position        BIGINT  NOT NULL CHECK (position >= 0),
    written_at      BIGINT  NOT NULL
);
