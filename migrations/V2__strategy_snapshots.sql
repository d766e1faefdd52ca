-- Snapshots of strategy state: a read model, derived from the events and rebuildable from them
-- at any time. They only shorten restores: a missing or damaged snapshot is rebuilt by
-- replaying its stream.

CREATE TABLE strategy_snapshots (
    -- The strategy's state stream (`strategy-<name>-<key>`).
    stream_id       TEXT    PRIMARY KEY,
    strategy        TEXT    NOT NULL,
    key             TEXT    NOT NULL,
    -- The state after folding the stream's events 1..stream_version.
    stream_version  INTEGER NOT NULL CHECK (stream_version >= 0),
    state           TEXT    NOT NULL,
    written_at      INTEGER NOT NULL
) STRICT;

-- Per strategy: every snapshot of that strategy covers all of its stream's events at or below
-- `position`, so a restore reads snapshots and then only the events after it.
CREATE TABLE strategy_checkpoints (
    strategy        TEXT    PRIMARY KEY,
    position        INTEGER NOT NULL CHECK (position >= 0),
    written_at      INTEGER NOT NULL
) STRICT;
