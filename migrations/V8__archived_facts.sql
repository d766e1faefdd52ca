-- The facts the analytics read from events one by one, kept for events that `archive` moved
-- out of the log. The hourly rollups answer a window's whole hours; the hours cut by its edges
-- are answered event by event (healing results and decisions), and so are the order of a
-- strategy's latest results (its trend), agents' success signals and recent usage reports.
-- Once archived, those events were gone and such answers dropped to zero. The archive's
-- transaction now copies, before it deletes them, what those queries read of each such event
-- into this table (src/analytics/mod.rs, ARCHIVE_FACTS), with the same conditions (schema
-- version 1 where the queries have it) and a healing event's failure type resolved as the
-- queries resolve it; the queries read the log and this table together, so that a window
-- answers after a cut exactly as before it. Events still in the log are not copied: this
-- table holds archived events only (a rebuild, refused once events were archived, has nothing
-- to rebuild it from and leaves it alone).
CREATE TABLE archived_facts (
    -- The event's position in the log.
    position            INTEGER PRIMARY KEY,
    event_type          TEXT    NOT NULL,
    occurred_at         INTEGER NOT NULL,
    strategy            TEXT,
    agent_id            TEXT,
    -- Healing decisions and results: the failure type ('' when unknown).
    failure_type        TEXT,
    -- healing_attempted: the decision ('' when none).
    decision            TEXT,
    -- healing_completed: success (0 or 1) and the duration as the rollups count it.
    success             INTEGER,
    duration_ms         INTEGER,
    -- resource_usage_reported: the resource and its usage as a share of the limit.
    resource            TEXT,
    usage_share         REAL
) STRICT;

CREATE INDEX archived_facts_by_type ON archived_facts (event_type, occurred_at);
CREATE INDEX archived_facts_by_strategy ON archived_facts (strategy, event_type, occurred_at)
    WHERE strategy IS NOT NULL;
