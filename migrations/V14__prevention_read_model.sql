-- Preventions as a read model: a row per prevention stream (`prevention-<prediction_id>`), kept
-- by triggers in the transaction of the events it derives from.
--
-- `prevent list`, `prevent report` and the dashboard read every prevention stream's events
-- and folded them in Rust: their cost grew with the whole history, and an archive that moved
-- prevention events out of the log took them out of every figure. This table holds what the
-- fold (src/heal/prevention.rs, `PreventionView::fold`) needs: the latest proposal's payload,
-- the latest approval or rejection after it, the latest outcome after it, and the status they
-- leave; it is read by the time of the proposal. Like the other read models it keeps its rows
-- when their events are archived, so the figures of archived periods stay what they were.
-- Only schema version 1 of each event is interpreted. src/analytics/rebuild.sql has the
-- set-based equivalent; a log upgraded to this version gets the table filled below from its
-- events (prevention events archived before the upgrade are gone and are not in it).

CREATE TABLE preventions (
    -- The prevention stream.
    stream_id           TEXT    PRIMARY KEY,
    prevention_id       TEXT    NOT NULL,
    -- The latest prevention_proposed: when, at which stream version, its payload.
    proposed_at         INTEGER NOT NULL,
    proposed_version    INTEGER NOT NULL,
    proposal            TEXT    NOT NULL,
    -- pending, held_back, approved, shadow, declined, rejected, executed or failed.
    status              TEXT    NOT NULL,
    -- The latest prevention_approved or prevention_rejected after the proposal.
    decided_version     INTEGER,
    decided_at          INTEGER,
    decided_type        TEXT,
    decision            TEXT,
    -- The latest prevention_executed after the proposal.
    executed_version    INTEGER,
    executed_at         INTEGER,
    executed            TEXT,
    -- The stream's latest version (what an approval is appended at).
    version             INTEGER NOT NULL
) STRICT;

CREATE INDEX preventions_by_time ON preventions (proposed_at);

CREATE TRIGGER rm_prevention_proposed AFTER INSERT ON events
WHEN NEW.event_type = 'prevention_proposed' AND NEW.schema_version = 1
     AND NEW.stream_id >= 'prevention-' AND NEW.stream_id < 'prevention.'
BEGIN
    INSERT OR REPLACE INTO preventions (stream_id, prevention_id, proposed_at, proposed_version,
                                        proposal, status, version)
    VALUES (NEW.stream_id, COALESCE(NEW.payload ->> '$.prevention_id', ''), NEW.occurred_at,
            NEW.stream_version, NEW.payload,
            CASE WHEN NEW.payload ->> '$.holdout.held_back' THEN 'held_back' ELSE 'pending' END,
            NEW.stream_version);
END;

CREATE TRIGGER rm_prevention_decided AFTER INSERT ON events
WHEN NEW.event_type IN ('prevention_approved', 'prevention_rejected')
     AND NEW.schema_version = 1
     AND NEW.stream_id >= 'prevention-' AND NEW.stream_id < 'prevention.'
BEGIN
    UPDATE preventions
    SET status = CASE
            WHEN NEW.event_type = 'prevention_rejected' THEN 'rejected'
            WHEN NEW.payload ->> '$.decision' = 'shadow' THEN 'shadow'
            WHEN NEW.payload ->> '$.decision' = 'declined' THEN 'declined'
            ELSE 'approved' END,
        decided_version = NEW.stream_version, decided_at = NEW.occurred_at,
        decided_type = NEW.event_type, decision = NEW.payload
    WHERE stream_id = NEW.stream_id;
END;

CREATE TRIGGER rm_prevention_executed AFTER INSERT ON events
WHEN NEW.event_type = 'prevention_executed' AND NEW.schema_version = 1
     AND NEW.stream_id >= 'prevention-' AND NEW.stream_id < 'prevention.'
BEGIN
    UPDATE preventions
    SET status = CASE WHEN NEW.payload ->> '$.success' THEN 'executed' ELSE 'failed' END,
        executed_version = NEW.stream_version, executed_at = NEW.occurred_at,
        executed = NEW.payload
    WHERE stream_id = NEW.stream_id;
END;

CREATE TRIGGER rm_prevention_version AFTER INSERT ON events
WHEN NEW.schema_version = 1
     AND NEW.stream_id >= 'prevention-' AND NEW.stream_id < 'prevention.'
BEGIN
    UPDATE preventions SET version = NEW.stream_version
    WHERE stream_id = NEW.stream_id AND version < NEW.stream_version;
END;

-- ----- the upgraded log's events (as src/analytics/rebuild.sql does) --------------------------

INSERT INTO preventions (stream_id, prevention_id, proposed_at, proposed_version, proposal,
                         status, version)
SELECT e.stream_id, COALESCE(e.payload ->> '$.prevention_id', ''), e.occurred_at,
       e.stream_version, e.payload,
       CASE WHEN e.payload ->> '$.holdout.held_back' THEN 'held_back' ELSE 'pending' END,
       (SELECT MAX(x.stream_version) FROM events x
        WHERE x.stream_id = e.stream_id AND x.schema_version = 1)
FROM events e
WHERE e.event_type = 'prevention_proposed' AND e.schema_version = 1
  AND e.stream_id >= 'prevention-' AND e.stream_id < 'prevention.'
  AND NOT EXISTS (SELECT 1 FROM events l
                  WHERE l.stream_id = e.stream_id AND l.event_type = 'prevention_proposed'
                    AND l.schema_version = 1 AND l.stream_version > e.stream_version);

UPDATE preventions
SET (decided_version, decided_at, decided_type, decision) = (
        SELECT d.stream_version, d.occurred_at, d.event_type, d.payload FROM events d
        WHERE d.stream_id = preventions.stream_id
          AND d.event_type IN ('prevention_approved', 'prevention_rejected')
          AND d.schema_version = 1 AND d.stream_version > preventions.proposed_version
        ORDER BY d.stream_version DESC LIMIT 1)
WHERE EXISTS (SELECT 1 FROM events d
              WHERE d.stream_id = preventions.stream_id
                AND d.event_type IN ('prevention_approved', 'prevention_rejected')
                AND d.schema_version = 1 AND d.stream_version > preventions.proposed_version);

UPDATE preventions
SET (executed_version, executed_at, executed) = (
        SELECT x.stream_version, x.occurred_at, x.payload FROM events x
        WHERE x.stream_id = preventions.stream_id AND x.event_type = 'prevention_executed'
          AND x.schema_version = 1 AND x.stream_version > preventions.proposed_version
        ORDER BY x.stream_version DESC LIMIT 1)
WHERE EXISTS (SELECT 1 FROM events x
              WHERE x.stream_id = preventions.stream_id AND x.event_type = 'prevention_executed'
                AND x.schema_version = 1 AND x.stream_version > preventions.proposed_version);

-- The status the last of them left.
UPDATE preventions
SET status = CASE
        WHEN executed_version IS NOT NULL
             AND (decided_version IS NULL OR executed_version > decided_version)
        THEN CASE WHEN executed ->> '$.success' THEN 'executed' ELSE 'failed' END
        WHEN decided_type = 'prevention_rejected' THEN 'rejected'
        WHEN decision ->> '$.decision' = 'shadow' THEN 'shadow'
        WHEN decision ->> '$.decision' = 'declined' THEN 'declined'
        ELSE 'approved' END
WHERE decided_version IS NOT NULL OR executed_version IS NOT NULL;
