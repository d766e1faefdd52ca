-- The read models interpret only the schema versions they know: an event of another version
-- of a known type (a newer producer's shape, say a `pattern_learned` whose `support` is text)
-- is stored and read back as data, and skipped by the read models instead of failing its
-- append. The triggers of V3 and V5 are recreated with a `schema_version = 1` condition;
-- src/analytics/rebuild.sql has the same conditions.

DROP TRIGGER rm_failure_detected;
DROP TRIGGER rm_healing_attempted;
DROP TRIGGER rm_healing_completed;
DROP TRIGGER rm_failure_resolved;
DROP TRIGGER rm_pattern_learned;
DROP TRIGGER rm_prediction_made;
DROP TRIGGER rm_circuit_transitioned;

CREATE TRIGGER rm_failure_detected AFTER INSERT ON events
WHEN NEW.event_type = 'failure_detected' AND NEW.schema_version = 1
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
WHEN NEW.event_type = 'healing_attempted' AND NEW.schema_version = 1
     AND NEW.failure_id IS NOT NULL AND NEW.strategy IS NOT NULL
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
WHEN NEW.event_type = 'healing_completed' AND NEW.schema_version = 1
     AND NEW.failure_id IS NOT NULL AND NEW.strategy IS NOT NULL AND NEW.success IS NOT NULL
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
WHEN NEW.event_type = 'failure_resolved' AND NEW.schema_version = 1
     AND NEW.failure_id IS NOT NULL
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
WHEN NEW.event_type = 'pattern_learned' AND NEW.schema_version = 1
     AND NEW.payload ->> '$.pattern_id' IS NOT NULL
BEGIN
    INSERT OR REPLACE INTO patterns (pattern_id, kind, agent_id, support, confidence,
                                     learned_at, position, content)
    VALUES (NEW.payload ->> '$.pattern_id', COALESCE(NEW.payload ->> '$.kind', ''),
            NEW.agent_id, COALESCE(NEW.payload ->> '$.support', 0),
            COALESCE(NEW.payload ->> '$.confidence', 0.0), NEW.occurred_at, NEW.position,
            NEW.payload);
END;

CREATE TRIGGER rm_prediction_made AFTER INSERT ON events
WHEN NEW.event_type = 'prediction_made' AND NEW.schema_version = 1
     AND NEW.payload ->> '$.prediction_id' IS NOT NULL AND NEW.failure_type IS NOT NULL
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

CREATE TRIGGER rm_circuit_transitioned AFTER INSERT ON events
WHEN NEW.event_type = 'circuit_transitioned' AND NEW.schema_version = 1
     AND NEW.payload ->> '$.circuit' IS NOT NULL AND NEW.payload ->> '$.to' IS NOT NULL
BEGIN
    INSERT INTO circuit_transitions (position, strategy, circuit, agent_id, from_state,
                                     to_state, at)
    VALUES (NEW.position, COALESCE(NEW.strategy, ''), NEW.payload ->> '$.circuit', NEW.agent_id,
            COALESCE(NEW.payload ->> '$.from', 'closed'), NEW.payload ->> '$.to',
            NEW.occurred_at);
END;
