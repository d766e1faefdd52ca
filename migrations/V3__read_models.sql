-- Analytics read models: derived from the events, maintained by triggers in the same
-- transaction as the events they derive from, and rebuildable from the events at any time
-- (`healstore rebuild`, which runs the set-based equivalents in src/analytics/rebuild.sql).
--
-- Times are microseconds since the Unix epoch, UTC, like the log's. An hour bucket is the
-- time truncated to the hour.

-- One row per failure: its detection, how healing went, and its resolution.
CREATE TABLE failures (
    -- The position of the failure_detected event (the first one, if an id was detected twice).
    position            INTEGER PRIMARY KEY,
    failure_id          TEXT    NOT NULL UNIQUE,
    failure_type        TEXT    NOT NULL,
    agent_id            TEXT,
    severity            TEXT,
    detected_at         INTEGER NOT NULL,
    -- healing_attempted events (every decision, acting or not) and healing_completed results.
    attempts            INTEGER NOT NULL DEFAULT 0,
    results             INTEGER NOT NULL DEFAULT 0,
    successes           INTEGER NOT NULL DEFAULT 0,
    last_decision       TEXT,
    -- The first failure_resolved event: when, by which strategy, and the time to recover
    -- (detection to resolution, never negative).
    resolved_position   INTEGER,
    resolved_at         INTEGER,
    resolved_by         TEXT,
    ttr_us              INTEGER
) STRICT;

CREATE INDEX failures_by_detected ON failures (detected_at, failure_type, agent_id, resolved_at);
CREATE INDEX failures_by_agent ON failures (agent_id, detected_at, failure_type)
    WHERE agent_id IS NOT NULL;
CREATE INDEX failures_by_type ON failures (failure_type, detected_at);
CREATE INDEX failures_by_resolved ON failures (resolved_at, ttr_us, failure_type)
    WHERE resolved_at IS NOT NULL;
CREATE INDEX failures_unresolved ON failures (detected_at) WHERE resolved_at IS NULL;

-- Failures per hour and type: detections by the hour of detection, resolutions (and their
-- summed time to recover) by the hour of resolution.
CREATE TABLE failure_hourly (
    hour                INTEGER NOT NULL,
    failure_type        TEXT    NOT NULL,
    detected            INTEGER NOT NULL DEFAULT 0,
    resolved            INTEGER NOT NULL DEFAULT 0,
    ttr_sum_us          INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (hour, failure_type)
) STRICT, WITHOUT ROWID;

-- Healing decisions per hour, strategy, failure type and decision.
CREATE TABLE attempt_hourly (
    hour                INTEGER NOT NULL,
    strategy            TEXT    NOT NULL,
    failure_type        TEXT    NOT NULL,
    decision            TEXT    NOT NULL,
    attempts            INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (hour, strategy, failure_type, decision)
) STRICT, WITHOUT ROWID;

-- Healing results (healing_completed) per hour, strategy and failure type.
CREATE TABLE healing_hourly (
    hour                INTEGER NOT NULL,
    strategy            TEXT    NOT NULL,
    failure_type        TEXT    NOT NULL,
    results             INTEGER NOT NULL DEFAULT 0,
    successes           INTEGER NOT NULL DEFAULT 0,
    duration_sum_ms     INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (hour, strategy, failure_type)
) STRICT, WITHOUT ROWID;

-- The latest learned version of every pattern (pattern_learned events).
CREATE TABLE patterns (
    pattern_id          TEXT    PRIMARY KEY,
    kind                TEXT    NOT NULL,
    agent_id            TEXT,
    support             INTEGER NOT NULL,
    confidence          REAL    NOT NULL,
    learned_at          INTEGER NOT NULL,
    position            INTEGER NOT NULL,
    content             TEXT    NOT NULL
) STRICT;

-- Every prediction made (prediction_made events); outcomes are judged against `failures`.
CREATE TABLE predictions (
    prediction_id       TEXT    PRIMARY KEY,
    agent_id            TEXT,
    failure_type        TEXT    NOT NULL,
    probability         REAL    NOT NULL,
    made_at             INTEGER NOT NULL,
    expected_at         INTEGER NOT NULL,
    expected_by         INTEGER NOT NULL,
    pattern_id          TEXT,
    position            INTEGER NOT NULL,
    content             TEXT    NOT NULL
) STRICT;
CREATE INDEX predictions_by_made ON predictions (made_at);

-- ----- incremental maintenance ----------------------------------------------------------------

CREATE TRIGGER rm_failure_detected AFTER INSERT ON events
WHEN NEW.event_type = 'failure_detected'
     AND NEW.failure_id IS NOT NULL AND NEW.failure_type IS NOT NULL
BEGIN
    INSERT OR IGNORE INTO failures (position, failure_id, failure_type, agent_id, severity,
                                    detected_at)
    VALUES (NEW.position, NEW.failure_id, NEW.failure_type, NEW.agent_id,
            NEW.payload ->> '$.severity', NEW.occurred_at);
    INSERT INTO failure_hourly (hour, failure_type, detected)
    SELECT (detected_at / 3600000000) * 3600000000, failure_type, 1
    FROM failures WHERE position = NEW.position
    ON CONFLICT (hour, failure_type) DO UPDATE SET detected = detected + 1;
END;

CREATE TRIGGER rm_healing_attempted AFTER INSERT ON events
WHEN NEW.event_type = 'healing_attempted' AND NEW.failure_id IS NOT NULL
     AND NEW.strategy IS NOT NULL
BEGIN
    UPDATE failures
    SET attempts = attempts + 1, last_decision = NEW.payload ->> '$.decision'
    WHERE failure_id = NEW.failure_id;
    INSERT INTO attempt_hourly (hour, strategy, failure_type, decision, attempts)
    VALUES ((NEW.occurred_at / 3600000000) * 3600000000, NEW.strategy,
            COALESCE(NEW.failure_type,
                     (SELECT failure_type FROM failures WHERE failure_id = NEW.failure_id), ''),
            COALESCE(NEW.payload ->> '$.decision', ''), 1)
    ON CONFLICT (hour, strategy, failure_type, decision) DO UPDATE SET attempts = attempts + 1;
END;

CREATE TRIGGER rm_healing_completed AFTER INSERT ON events
WHEN NEW.event_type = 'healing_completed' AND NEW.failure_id IS NOT NULL
     AND NEW.strategy IS NOT NULL AND NEW.success IS NOT NULL
BEGIN
    UPDATE failures
    SET results = results + 1, successes = successes + NEW.success
    WHERE failure_id = NEW.failure_id;
    INSERT INTO healing_hourly (hour, strategy, failure_type, results, successes,
                                duration_sum_ms)
    VALUES ((NEW.occurred_at / 3600000000) * 3600000000, NEW.strategy,
            COALESCE(NEW.failure_type,
                     (SELECT failure_type FROM failures WHERE failure_id = NEW.failure_id), ''),
            1, NEW.success, MAX(0, COALESCE(NEW.duration_ms, 0)))
    ON CONFLICT (hour, strategy, failure_type) DO UPDATE
    SET results = results + 1, successes = successes + excluded.successes,
        duration_sum_ms = duration_sum_ms + excluded.duration_sum_ms;
END;

CREATE TRIGGER rm_failure_resolved AFTER INSERT ON events
WHEN NEW.event_type = 'failure_resolved' AND NEW.failure_id IS NOT NULL
BEGIN
    UPDATE failures
    SET resolved_position = NEW.position, resolved_at = NEW.occurred_at,
        resolved_by = NEW.strategy, ttr_us = MAX(0, NEW.occurred_at - detected_at)
    WHERE failure_id = NEW.failure_id AND resolved_at IS NULL;
    INSERT INTO failure_hourly (hour, failure_type, resolved, ttr_sum_us)
    SELECT (resolved_at / 3600000000) * 3600000000, failure_type, 1, ttr_us
    FROM failures WHERE failure_id = NEW.failure_id AND resolved_position = NEW.position
    ON CONFLICT (hour, failure_type) DO UPDATE
    SET resolved = resolved + 1, ttr_sum_us = ttr_sum_us + excluded.ttr_sum_us;
END;

CREATE TRIGGER rm_pattern_learned AFTER INSERT ON events
WHEN NEW.event_type = 'pattern_learned' AND NEW.payload ->> '$.pattern_id' IS NOT NULL
BEGIN
    INSERT OR REPLACE INTO patterns (pattern_id, kind, agent_id, support, confidence,
                                     learned_at, position, content)
    VALUES (NEW.payload ->> '$.pattern_id', COALESCE(NEW.payload ->> '$.kind', ''),
            NEW.agent_id, COALESCE(NEW.payload ->> '$.support', 0),
            COALESCE(NEW.payload ->> '$.confidence', 0.0), NEW.occurred_at, NEW.position,
            NEW.payload);
END;

CREATE TRIGGER rm_prediction_made AFTER INSERT ON events
WHEN NEW.event_type = 'prediction_made' AND NEW.payload ->> '$.prediction_id' IS NOT NULL
     AND NEW.failure_type IS NOT NULL
BEGIN
    INSERT OR IGNORE INTO predictions (prediction_id, agent_id, failure_type, probability,
                                       made_at, expected_at, expected_by, pattern_id,
                                       position, content)
    VALUES (NEW.payload ->> '$.prediction_id', NEW.agent_id, NEW.failure_type,
            COALESCE(NEW.payload ->> '$.probability', 0.0), NEW.occurred_at,
            NEW.occurred_at + 1000 * COALESCE(NEW.payload ->> '$.expected_in_ms', 0),
            NEW.occurred_at + 1000 * COALESCE(NEW.payload ->> '$.window_ms', 0),
            NEW.payload ->> '$.pattern_id', NEW.position, NEW.payload);
END;
