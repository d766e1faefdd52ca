-- What "resolved" means, and when a circuit's open period ends.
--
-- A failure is *remediated* when the healing actions succeeded (`failure_resolved`: a restart
-- went through, a retry was scheduled, a circuit opened) and *recovered* when there is evidence
-- that the failed agent or task works again (`failure_recovered`: a success signal after the
-- failure, a healthy status from the coordinator after a remediation, a caller's
-- confirmation). The `failures` read model keeps both, each with its time from detection, and
-- `failure_hourly` rolls both up by the hour they happened in. The resolution columns of V3
-- are renamed to say what they always held (the remediation); the failure's task is kept, so
-- that a success signal for a task finds that task's open failures through an index.
--
-- `circuit_transitions` keeps the deadline of each opening (`open_until`), so that time in
-- state is right even when nothing recorded the half-open period after the deadline.
--
-- The triggers recreated here keep V6's `schema_version = 1` conditions and V7's saturating
-- sums (at 2^62 microseconds); src/analytics/rebuild.sql has the same statements, set-based.
-- A log upgraded to this version gets the new columns filled from its events below (what
-- archived events held is gone: their failures keep no task and no recovery, and their
-- openings no deadline).

DROP TRIGGER rm_failure_detected;
DROP TRIGGER rm_failure_resolved;
DROP TRIGGER rm_circuit_transitioned;
DROP INDEX failures_by_detected;
DROP INDEX failures_by_resolved;
DROP INDEX failures_unresolved;

ALTER TABLE failures RENAME COLUMN resolved_position TO remediated_position;
ALTER TABLE failures RENAME COLUMN resolved_at TO remediated_at;
ALTER TABLE failures RENAME COLUMN resolved_by TO remediated_by;
ALTER TABLE failures RENAME COLUMN ttr_us TO remediate_us;
ALTER TABLE failures ADD COLUMN task_id TEXT;
ALTER TABLE failures ADD COLUMN recovered_position INTEGER;
ALTER TABLE failures ADD COLUMN recovered_at INTEGER;
ALTER TABLE failures ADD COLUMN recovered_how TEXT;
ALTER TABLE failures ADD COLUMN recover_us INTEGER;

ALTER TABLE failure_hourly RENAME COLUMN resolved TO remediated;
ALTER TABLE failure_hourly RENAME COLUMN ttr_sum_us TO remediate_us_sum;
ALTER TABLE failure_hourly ADD COLUMN recovered INTEGER NOT NULL DEFAULT 0;
ALTER TABLE failure_hourly ADD COLUMN recover_us_sum INTEGER NOT NULL DEFAULT 0;

ALTER TABLE circuit_transitions ADD COLUMN open_until INTEGER;

CREATE INDEX failures_by_detected ON failures (detected_at, failure_type, agent_id, recovered_at);
CREATE INDEX failures_by_remediated ON failures (remediated_at, remediate_us, failure_type)
    WHERE remediated_at IS NOT NULL;
CREATE INDEX failures_by_recovered ON failures (recovered_at, recover_us, failure_type)
    WHERE recovered_at IS NOT NULL;
-- The open failures of an agent (those without a task) and of a task: what a success signal
-- recovers.
CREATE INDEX failures_open_by_agent ON failures (agent_id, detected_at)
    WHERE recovered_at IS NULL AND task_id IS NULL AND agent_id IS NOT NULL;
CREATE INDEX failures_open_by_task ON failures (task_id, detected_at)
    WHERE recovered_at IS NULL AND task_id IS NOT NULL;

-- ----- the upgraded log's events -------------------------------------------------------------

UPDATE failures SET task_id = e.payload ->> '$.task_id'
FROM events e
WHERE e.position = failures.position AND e.event_type = 'failure_detected'
  AND e.schema_version = 1;

WITH x AS (
    SELECT f.failure_id, MIN(e.position) AS p
    FROM events e JOIN failures f ON f.failure_id = e.failure_id AND f.position < e.position
    WHERE e.event_type = 'failure_recovered' AND e.schema_version = 1
    GROUP BY f.failure_id
)
UPDATE failures
SET recovered_position = x.p, recovered_at = e.occurred_at,
    recovered_how = e.payload ->> '$.how',
    recover_us = MAX(0, e.occurred_at - failures.detected_at)
FROM x JOIN events e ON e.position = x.p
WHERE failures.failure_id = x.failure_id;

-- Summed saturating at 2^62 microseconds, as rebuild.sql sums them (a group whose
-- floating-point total is certainly past that point is not summed as integers at all).
INSERT INTO failure_hourly (hour, failure_type, recovered, recover_us_sum)
SELECT hour, failure_type, COUNT(*),
       CASE WHEN MAX(g) >= 6.9e18 THEN 4611686018427387904
            ELSE MIN(SUM(CASE WHEN g < 6.9e18 THEN t ELSE 0 END), 4611686018427387904) END
FROM (
    SELECT (recovered_at / 3600000000) * 3600000000 AS hour, failure_type, recover_us AS t,
           TOTAL(recover_us) OVER (PARTITION BY (recovered_at / 3600000000) * 3600000000,
                                                failure_type) AS g
    FROM failures WHERE recovered_at IS NOT NULL
)
WHERE true
GROUP BY hour, failure_type
ON CONFLICT (hour, failure_type) DO UPDATE
SET recovered = recovered + excluded.recovered,
    recover_us_sum = MIN(recover_us_sum + excluded.recover_us_sum, 4611686018427387904);

-- A deadline is an RFC 3339 text in the payload: healstore writes
-- `2026-11-28T09:30:00.123456Z`, read to the microsecond; any other RFC 3339 form is read to
-- the millisecond.
UPDATE circuit_transitions
SET open_until = (
    SELECT CASE
        WHEN u GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z'
        THEN CAST(strftime('%s', substr(u, 1, 19)) AS INTEGER) * 1000000
             + CAST(substr(u, 21, 6) AS INTEGER)
        ELSE CAST(round((julianday(u) - 2440587.5) * 86400000.0) AS INTEGER) * 1000
    END
    FROM (SELECT e.payload ->> '$.open_until' AS u FROM events e
          WHERE e.position = circuit_transitions.position)
)
WHERE to_state = 'open';

-- ----- incremental maintenance ---------------------------------------------------------------

CREATE TRIGGER rm_failure_detected AFTER INSERT ON events
WHEN NEW.event_type = 'failure_detected' AND NEW.schema_version = 1
     AND NEW.failure_id IS NOT NULL AND NEW.failure_type IS NOT NULL
BEGIN
    INSERT OR IGNORE INTO failures (position, failure_id, failure_type, agent_id, task_id,
                                    severity, detected_at)
    VALUES (NEW.position, NEW.failure_id, NEW.failure_type, NEW.agent_id,
            NEW.payload ->> '$.task_id', NEW.payload ->> '$.severity', NEW.occurred_at);
    INSERT INTO failure_hourly (hour, failure_type, detected)
    SELECT (detected_at / 3600000000) * 3600000000, failure_type, 1
    FROM failures WHERE position = NEW.position
    ON CONFLICT (hour, failure_type) DO UPDATE SET detected = detected + 1;
END;

-- The first remediation counts (by position, after the detection).
CREATE TRIGGER rm_failure_resolved AFTER INSERT ON events
WHEN NEW.event_type = 'failure_resolved' AND NEW.schema_version = 1
     AND NEW.failure_id IS NOT NULL
BEGIN
    UPDATE failures
    SET remediated_position = NEW.position, remediated_at = NEW.occurred_at,
        remediated_by = NEW.strategy, remediate_us = MAX(0, NEW.occurred_at - detected_at)
    WHERE failure_id = NEW.failure_id AND remediated_at IS NULL;
    INSERT INTO failure_hourly (hour, failure_type, remediated, remediate_us_sum)
    SELECT (remediated_at / 3600000000) * 3600000000, failure_type, 1, remediate_us
    FROM failures WHERE failure_id = NEW.failure_id AND remediated_position = NEW.position
    ON CONFLICT (hour, failure_type) DO UPDATE
    SET remediated = remediated + 1,
        remediate_us_sum = MIN(remediate_us_sum + excluded.remediate_us_sum,
                               4611686018427387904);
END;

-- The first recovery counts (by position, after the detection).
CREATE TRIGGER rm_failure_recovered AFTER INSERT ON events
WHEN NEW.event_type = 'failure_recovered' AND NEW.schema_version = 1
     AND NEW.failure_id IS NOT NULL
BEGIN
    UPDATE failures
    SET recovered_position = NEW.position, recovered_at = NEW.occurred_at,
        recovered_how = NEW.payload ->> '$.how',
        recover_us = MAX(0, NEW.occurred_at - detected_at)
    WHERE failure_id = NEW.failure_id AND recovered_at IS NULL;
    INSERT INTO failure_hourly (hour, failure_type, recovered, recover_us_sum)
    SELECT (recovered_at / 3600000000) * 3600000000, failure_type, 1, recover_us
    FROM failures WHERE failure_id = NEW.failure_id AND recovered_position = NEW.position
    ON CONFLICT (hour, failure_type) DO UPDATE
    SET recovered = recovered + 1,
        recover_us_sum = MIN(recover_us_sum + excluded.recover_us_sum, 4611686018427387904);
END;

CREATE TRIGGER rm_circuit_transitioned AFTER INSERT ON events
WHEN NEW.event_type = 'circuit_transitioned' AND NEW.schema_version = 1
     AND NEW.payload ->> '$.circuit' IS NOT NULL AND NEW.payload ->> '$.to' IS NOT NULL
BEGIN
    INSERT INTO circuit_transitions (position, strategy, circuit, agent_id, from_state,
                                     to_state, at, open_until)
    SELECT NEW.position, COALESCE(NEW.strategy, ''), NEW.payload ->> '$.circuit', NEW.agent_id,
           COALESCE(NEW.payload ->> '$.from', 'closed'), NEW.payload ->> '$.to',
           NEW.occurred_at,
           CASE
               WHEN NEW.payload ->> '$.to' <> 'open' THEN NULL
               WHEN u GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z'
               THEN CAST(strftime('%s', substr(u, 1, 19)) AS INTEGER) * 1000000
                    + CAST(substr(u, 21, 6) AS INTEGER)
               ELSE CAST(round((julianday(u) - 2440587.5) * 86400000.0) AS INTEGER) * 1000
           END
    FROM (SELECT NEW.payload ->> '$.open_until' AS u);
END;
