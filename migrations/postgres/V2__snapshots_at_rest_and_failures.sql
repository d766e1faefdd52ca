-- What the healer reads besides the events: strategy snapshots as SQLite's V9 keeps them, and
-- the `failures` read model (one row per failure: its detection, decisions, results,
-- remediation and recovery), kept by a trigger as SQLite's V3, V6, V10 and V13 triggers keep
-- it. The analytics rollups, and the failures' histogram buckets (SQLite's V12, V13), are not
-- here yet.

-- ----- strategy snapshots (SQLite's V9) ------------------------------------------------------

-- A state at rest needs no snapshot, except when its stream's earliest events are archived:
-- then its snapshot is kept, marked `at_rest`. A restore reads only those not at rest.
ALTER TABLE strategy_snapshots ADD COLUMN at_rest INTEGER NOT NULL DEFAULT 0
    CHECK (at_rest IN (0, 1));

CREATE INDEX strategy_snapshots_in_use ON strategy_snapshots (strategy) WHERE at_rest = 0;

-- Per strategy, how many snapshots not at rest healstore's checkpoints left (moved by each
-- checkpoint's own writes, never by counting the table): a restore that finds fewer folds the
-- strategy's streams again from the log. NULL: not known (counted by the next checkpoint).
ALTER TABLE strategy_checkpoints ADD COLUMN snapshots BIGINT CHECK (snapshots >= 0);

UPDATE strategy_checkpoints
SET snapshots = (SELECT count(*) FROM strategy_snapshots s
                 WHERE s.strategy = strategy_checkpoints.strategy);

-- ----- the failures read model ---------------------------------------------------------------

CREATE TABLE failures (
    -- The position of the failure_detected event (the first one, if an id was detected twice).
    position            BIGINT  PRIMARY KEY,
    failure_id          TEXT    NOT NULL UNIQUE,
    failure_type        TEXT    NOT NULL,
    agent_id            TEXT,
    task_id             TEXT,
    severity            TEXT,
    detected_at         BIGINT  NOT NULL,
    -- healing_attempted events (every decision, acting or not) and healing_completed results.
    attempts            BIGINT  NOT NULL DEFAULT 0,
    results             BIGINT  NOT NULL DEFAULT 0,
    successes           BIGINT  NOT NULL DEFAULT 0,
    last_decision       TEXT,
    -- The first failure_resolved event after the detection: when, by which strategy, and the
    -- time from detection (never negative).
    remediated_position BIGINT,
    remediated_at       BIGINT,
    remediated_by       TEXT,
    remediate_us        BIGINT,
    -- The first failure_recovered event after the detection: when, how (signal, status,
    -- confirmed), and the time from detection.
    recovered_position  BIGINT,
    recovered_at        BIGINT,
    recovered_how       TEXT,
    recover_us          BIGINT
);

-- The open failures of an agent (those without a task) and of a task: what a success signal
-- recovers.
CREATE INDEX failures_open_by_agent ON failures (agent_id, detected_at)
    WHERE recovered_at IS NULL AND task_id IS NULL AND agent_id IS NOT NULL;
CREATE INDEX failures_open_by_task ON failures (task_id, detected_at)
    WHERE recovered_at IS NULL AND task_id IS NOT NULL;

-- A text field of a payload (SQLite's `payload ->> '$.field'`). PostgreSQL refuses to turn a
-- JSON text holding the escape \u0000 into text: such a payload yields NULL rather than
-- refusing the append (only payloads holding those six characters pay for the guard).
CREATE FUNCTION healstore_payload_text(payload TEXT, field TEXT) RETURNS TEXT
LANGUAGE plpgsql IMMUTABLE STRICT AS $$
DECLARE
    v TEXT;
BEGIN
    IF strpos(payload, '\u0000') = 0 THEN
        RETURN payload::json ->> field;
    END IF;
    BEGIN
        v := payload::json ->> field;
    EXCEPTION WHEN untranslatable_character THEN
        v := NULL;
    END;
    RETURN v;
END;
$$;

-- What one event changes in `failures`: the statements of SQLite's triggers (only schema
-- version 1 of each type is interpreted; an event of another version is stored and skipped).
CREATE FUNCTION healstore_failures_apply(e events) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF e.schema_version <> 1 OR e.failure_id IS NULL THEN
        RETURN;
    END IF;
    IF e.event_type = 'failure_detected' THEN
        IF e.failure_type IS NOT NULL THEN
            INSERT INTO failures (position, failure_id, failure_type, agent_id, task_id,
                                  severity, detected_at)
            VALUES (e.position, e.failure_id, e.failure_type, e.agent_id,
                    healstore_payload_text(e.payload, 'task_id'),
                    healstore_payload_text(e.payload, 'severity'), e.occurred_at)
            ON CONFLICT DO NOTHING;
        END IF;
    ELSIF e.event_type = 'healing_attempted' THEN
        IF e.strategy IS NOT NULL THEN
            UPDATE failures
            SET attempts = attempts + 1,
                last_decision = healstore_payload_text(e.payload, 'decision')
            WHERE failure_id = e.failure_id;
        END IF;
    ELSIF e.event_type = 'healing_completed' THEN
        IF e.strategy IS NOT NULL AND e.success IS NOT NULL THEN
            UPDATE failures
            SET results = results + 1, successes = successes + e.success::int
            WHERE failure_id = e.failure_id;
        END IF;
    ELSIF e.event_type = 'failure_resolved' THEN
        -- The first remediation counts.
        UPDATE failures
        SET remediated_position = e.position, remediated_at = e.occurred_at,
            remediated_by = e.strategy, remediate_us = GREATEST(0, e.occurred_at - detected_at)
        WHERE failure_id = e.failure_id AND remediated_at IS NULL;
    ELSIF e.event_type = 'failure_recovered' THEN
        -- The first recovery counts.
        UPDATE failures
        SET recovered_position = e.position, recovered_at = e.occurred_at,
            recovered_how = healstore_payload_text(e.payload, 'how'),
            recover_us = GREATEST(0, e.occurred_at - detected_at)
        WHERE failure_id = e.failure_id AND recovered_at IS NULL;
    END IF;
END;
$$;

CREATE FUNCTION healstore_failures_trigger() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM healstore_failures_apply(NEW);
    RETURN NULL;
END;
$$;

-- Fired for each row at the end of the INSERT that writes it, in the order the rows were
-- written (position order): a failure and its decisions appended together are applied in
-- that order, in the same transaction.
CREATE TRIGGER rm_failures AFTER INSERT ON events
    FOR EACH ROW
    WHEN (NEW.failure_id IS NOT NULL AND NEW.schema_version = 1
          AND NEW.event_type IN ('failure_detected', 'healing_attempted', 'healing_completed',
                                 'failure_resolved', 'failure_recovered'))
    EXECUTE FUNCTION healstore_failures_trigger();

-- A log that already holds events gets its failures from them, in position order.
DO $$
DECLARE
    e events;
BEGIN
    FOR e IN SELECT * FROM events
             WHERE failure_id IS NOT NULL AND schema_version = 1
               AND event_type IN ('failure_detected', 'healing_attempted', 'healing_completed',
                                  'failure_resolved', 'failure_recovered')
             ORDER BY position
    LOOP
        PERFORM healstore_failures_apply(e);
    END LOOP;
END;
$$;
