-- Rebuilds every analytics read model from the events: the set-based equivalent of the
-- triggers (migrations/V3__read_models.sql and V5, as recreated by V6, V7, V10, V12 and V13:
-- only schema version 1 of each type is interpreted; sums of times to remediate and recover
-- saturate; V12 adds the rollups by the minute, per agent, histograms and recovery pairs; V13
-- the rollups by the second and each time's histogram bucket; V14 the preventions),
-- statement for statement. A test checks that a rebuild reproduces the incrementally
-- maintained tables exactly.
--
-- `archived_facts` is not rebuilt: it holds only what archives kept of events no longer in the
-- log, and a rebuild is refused once events are archived.
--
-- Where the triggers depend on the order of events (a failure's healing events count only
-- after its detection; the first remediation and the first recovery win; the newest pattern
-- version wins), the statements here compare positions to the same effect.

DELETE FROM failures;
DELETE FROM failure_hourly;
DELETE FROM attempt_hourly;
DELETE FROM healing_hourly;
DELETE FROM patterns;
DELETE FROM predictions;
DELETE FROM preventions;
DELETE FROM circuit_transitions;
DELETE FROM failure_minutely;
DELETE FROM attempt_minutely;
DELETE FROM healing_minutely;
DELETE FROM agent_rollup;
DELETE FROM ttr_histogram;
DELETE FROM recovery_pairs;
DELETE FROM failure_secondly;
DELETE FROM attempt_secondly;
DELETE FROM healing_secondly;

INSERT OR IGNORE INTO failures (position, failure_id, failure_type, agent_id, task_id,
                                severity, detected_at)
SELECT position, failure_id, failure_type, agent_id, payload ->> '$.task_id',
       payload ->> '$.severity', occurred_at
FROM events
WHERE event_type = 'failure_detected' AND schema_version = 1
  AND failure_id IS NOT NULL AND failure_type IS NOT NULL
ORDER BY position;

WITH a AS (
    SELECT f.failure_id, COUNT(*) AS n, MAX(e.position) AS last_position
    FROM events e JOIN failures f ON f.failure_id = e.failure_id AND f.position < e.position
    WHERE e.event_type = 'healing_attempted' AND e.schema_version = 1
      AND e.strategy IS NOT NULL
    GROUP BY f.failure_id
)
UPDATE failures
SET attempts = a.n,
    last_decision = (SELECT payload ->> '$.decision' FROM events WHERE position = a.last_position)
FROM a WHERE failures.failure_id = a.failure_id;

WITH r AS (
    SELECT f.failure_id, COUNT(*) AS n, SUM(e.success) AS s
    FROM events e JOIN failures f ON f.failure_id = e.failure_id AND f.position < e.position
    WHERE e.event_type = 'healing_completed' AND e.schema_version = 1
      AND e.strategy IS NOT NULL
      AND e.success IS NOT NULL
    GROUP BY f.failure_id
)
UPDATE failures SET results = r.n, successes = r.s
FROM r WHERE failures.failure_id = r.failure_id;

WITH x AS (
    SELECT f.failure_id, MIN(e.position) AS p
    FROM events e JOIN failures f ON f.failure_id = e.failure_id AND f.position < e.position
    WHERE e.event_type = 'failure_resolved' AND e.schema_version = 1
    GROUP BY f.failure_id
)
UPDATE failures
SET remediated_position = x.p, remediated_at = e.occurred_at, remediated_by = e.strategy,
    remediate_us = MAX(0, e.occurred_at - failures.detected_at),
    remediate_bucket = (SELECT CASE WHEN x < 128 THEN x ELSE e * 64 + (x >> (e - 6)) - 64 END FROM (
      SELECT x,
        7 + (x >> 8 > 0) + (x >> 9 > 0) + (x >> 10 > 0) + (x >> 11 > 0) +
        (x >> 12 > 0) + (x >> 13 > 0) + (x >> 14 > 0) + (x >> 15 > 0) + (x >> 16 > 0) +
        (x >> 17 > 0) + (x >> 18 > 0) + (x >> 19 > 0) + (x >> 20 > 0) + (x >> 21 > 0) +
        (x >> 22 > 0) + (x >> 23 > 0) + (x >> 24 > 0) + (x >> 25 > 0) + (x >> 26 > 0) +
        (x >> 27 > 0) + (x >> 28 > 0) + (x >> 29 > 0) + (x >> 30 > 0) + (x >> 31 > 0) +
        (x >> 32 > 0) + (x >> 33 > 0) + (x >> 34 > 0) + (x >> 35 > 0) + (x >> 36 > 0) +
        (x >> 37 > 0) + (x >> 38 > 0) + (x >> 39 > 0) + (x >> 40 > 0) + (x >> 41 > 0) +
        (x >> 42 > 0) + (x >> 43 > 0) + (x >> 44 > 0) + (x >> 45 > 0) + (x >> 46 > 0) +
        (x >> 47 > 0) + (x >> 48 > 0) + (x >> 49 > 0) + (x >> 50 > 0) + (x >> 51 > 0) +
        (x >> 52 > 0) + (x >> 53 > 0) + (x >> 54 > 0) + (x >> 55 > 0) + (x >> 56 > 0) +
        (x >> 57 > 0) + (x >> 58 > 0) + (x >> 59 > 0) + (x >> 60 > 0) + (x >> 61 > 0) +
        (x >> 62 > 0) AS e
      FROM (SELECT MAX(0, e.occurred_at - failures.detected_at) AS x)))
FROM x JOIN events e ON e.position = x.p
WHERE failures.failure_id = x.failure_id;

WITH x AS (
    SELECT f.failure_id, MIN(e.position) AS p
    FROM events e JOIN failures f ON f.failure_id = e.failure_id AND f.position < e.position
    WHERE e.event_type = 'failure_recovered' AND e.schema_version = 1
    GROUP BY f.failure_id
)
UPDATE failures
SET recovered_position = x.p, recovered_at = e.occurred_at,
    recovered_how = e.payload ->> '$.how',
    recover_us = MAX(0, e.occurred_at - failures.detected_at),
    recover_bucket = (SELECT CASE WHEN x < 128 THEN x ELSE e * 64 + (x >> (e - 6)) - 64 END FROM (
      SELECT x,
        7 + (x >> 8 > 0) + (x >> 9 > 0) + (x >> 10 > 0) + (x >> 11 > 0) +
        (x >> 12 > 0) + (x >> 13 > 0) + (x >> 14 > 0) + (x >> 15 > 0) + (x >> 16 > 0) +
        (x >> 17 > 0) + (x >> 18 > 0) + (x >> 19 > 0) + (x >> 20 > 0) + (x >> 21 > 0) +
        (x >> 22 > 0) + (x >> 23 > 0) + (x >> 24 > 0) + (x >> 25 > 0) + (x >> 26 > 0) +
        (x >> 27 > 0) + (x >> 28 > 0) + (x >> 29 > 0) + (x >> 30 > 0) + (x >> 31 > 0) +
        (x >> 32 > 0) + (x >> 33 > 0) + (x >> 34 > 0) + (x >> 35 > 0) + (x >> 36 > 0) +
        (x >> 37 > 0) + (x >> 38 > 0) + (x >> 39 > 0) + (x >> 40 > 0) + (x >> 41 > 0) +
        (x >> 42 > 0) + (x >> 43 > 0) + (x >> 44 > 0) + (x >> 45 > 0) + (x >> 46 > 0) +
        (x >> 47 > 0) + (x >> 48 > 0) + (x >> 49 > 0) + (x >> 50 > 0) + (x >> 51 > 0) +
        (x >> 52 > 0) + (x >> 53 > 0) + (x >> 54 > 0) + (x >> 55 > 0) + (x >> 56 > 0) +
        (x >> 57 > 0) + (x >> 58 > 0) + (x >> 59 > 0) + (x >> 60 > 0) + (x >> 61 > 0) +
        (x >> 62 > 0) AS e
      FROM (SELECT MAX(0, e.occurred_at - failures.detected_at) AS x)))
FROM x JOIN events e ON e.position = x.p
WHERE failures.failure_id = x.failure_id;

-- Times to remediate and to recover are summed saturating at 2^62 microseconds, as the
-- triggers sum them (V7, V10). gm and gr, the group's floating-point totals, tell the groups
-- whose exact sum might overflow: their sum is certainly past the saturation point (above
-- 1.5 x 2^62 within rounding), so their integers are not summed at all (an integer SUM that
-- overflows is an error).
INSERT INTO failure_hourly (hour, failure_type, detected, remediated, remediate_us_sum,
                            recovered, recover_us_sum)
SELECT hour, failure_type, SUM(d), SUM(m),
       CASE WHEN MAX(gm) >= 6.9e18 THEN 4611686018427387904
            ELSE MIN(SUM(CASE WHEN gm < 6.9e18 THEN mt ELSE 0 END), 4611686018427387904) END,
       SUM(r),
       CASE WHEN MAX(gr) >= 6.9e18 THEN 4611686018427387904
            ELSE MIN(SUM(CASE WHEN gr < 6.9e18 THEN rt ELSE 0 END), 4611686018427387904) END
FROM (
    SELECT hour, failure_type, d, m, mt, r, rt,
           TOTAL(mt) OVER (PARTITION BY hour, failure_type) AS gm,
           TOTAL(rt) OVER (PARTITION BY hour, failure_type) AS gr
    FROM (
        SELECT (detected_at / 3600000000) * 3600000000 AS hour, failure_type,
               1 AS d, 0 AS m, 0 AS mt, 0 AS r, 0 AS rt
        FROM failures
        UNION ALL
        SELECT (remediated_at / 3600000000) * 3600000000, failure_type, 0, 1, remediate_us, 0, 0
        FROM failures WHERE remediated_at IS NOT NULL
        UNION ALL
        SELECT (recovered_at / 3600000000) * 3600000000, failure_type, 0, 0, 0, 1, recover_us
        FROM failures WHERE recovered_at IS NOT NULL
    )
)
GROUP BY hour, failure_type;

INSERT INTO attempt_hourly (hour, strategy, failure_type, decision, attempts)
SELECT (e.occurred_at / 3600000000) * 3600000000, e.strategy,
       COALESCE(e.failure_type, f.failure_type, ''),
       COALESCE(e.payload ->> '$.decision', ''), COUNT(*)
FROM events e LEFT JOIN failures f ON f.failure_id = e.failure_id AND f.position < e.position
WHERE e.event_type = 'healing_attempted' AND e.schema_version = 1 AND e.failure_id IS NOT NULL
  AND e.strategy IS NOT NULL
GROUP BY 1, 2, 3, 4;

INSERT INTO healing_hourly (hour, strategy, failure_type, results, successes, duration_sum_ms)
SELECT (e.occurred_at / 3600000000) * 3600000000, e.strategy,
       COALESCE(e.failure_type, f.failure_type, ''),
       COUNT(*), SUM(e.success), SUM(MAX(0, COALESCE(e.duration_ms, 0)))
FROM events e LEFT JOIN failures f ON f.failure_id = e.failure_id AND f.position < e.position
WHERE e.event_type = 'healing_completed' AND e.schema_version = 1 AND e.failure_id IS NOT NULL
  AND e.strategy IS NOT NULL AND e.success IS NOT NULL
GROUP BY 1, 2, 3;

INSERT OR REPLACE INTO patterns (pattern_id, kind, agent_id, support, confidence, learned_at,
                                 position, content)
SELECT payload ->> '$.pattern_id', COALESCE(payload ->> '$.kind', ''), agent_id,
       COALESCE(payload ->> '$.support', 0), COALESCE(payload ->> '$.confidence', 0.0),
       occurred_at, position, payload
FROM events
WHERE event_type = 'pattern_learned' AND schema_version = 1
  AND payload ->> '$.pattern_id' IS NOT NULL
ORDER BY position;

INSERT OR IGNORE INTO predictions (prediction_id, agent_id, failure_type, probability, made_at,
                                   expected_at, expected_by, pattern_id, position, content)
SELECT payload ->> '$.prediction_id', agent_id, failure_type,
       COALESCE(payload ->> '$.probability', 0.0), occurred_at,
       occurred_at + 1000 * COALESCE(payload ->> '$.expected_in_ms', 0),
       occurred_at + 1000 * COALESCE(payload ->> '$.window_ms', 0),
       payload ->> '$.pattern_id', position, payload
FROM events
WHERE event_type = 'prediction_made' AND schema_version = 1
  AND payload ->> '$.prediction_id' IS NOT NULL
  AND failure_type IS NOT NULL
ORDER BY position;

-- Preventions (migrations/V14): the latest proposal of each prevention stream, the latest
-- decision and outcome after it, and the status the last of them left.
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

-- An opening's deadline, read as migrations/V10 reads it.
INSERT INTO circuit_transitions (position, strategy, circuit, agent_id, from_state, to_state, at,
                                 open_until)
SELECT position, COALESCE(strategy, ''), payload ->> '$.circuit', agent_id,
       COALESCE(payload ->> '$.from', 'closed'), payload ->> '$.to', occurred_at,
       CASE
           WHEN payload ->> '$.to' <> 'open' THEN NULL
           WHEN u GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z'
           THEN CAST(strftime('%s', substr(u, 1, 19)) AS INTEGER) * 1000000
                + CAST(substr(u, 21, 6) AS INTEGER)
           ELSE CAST(round((julianday(u) - 2440587.5) * 86400000.0) AS INTEGER) * 1000
       END
FROM (SELECT *, payload ->> '$.open_until' AS u FROM events
      WHERE event_type = 'circuit_transitioned' AND schema_version = 1
        AND payload ->> '$.circuit' IS NOT NULL AND payload ->> '$.to' IS NOT NULL);

-- The rollups of migrations/V12: by the minute, per agent, the histograms of the times to
-- remediate and recover, and the detection/recovery pairs.
INSERT INTO failure_minutely (minute, failure_type, detected, remediated, remediate_us_sum,
                              recovered, recover_us_sum)
SELECT minute, failure_type, SUM(d), SUM(m),
       CASE WHEN MAX(gm) >= 6.9e18 THEN 4611686018427387904
            ELSE MIN(SUM(CASE WHEN gm < 6.9e18 THEN mt ELSE 0 END), 4611686018427387904) END,
       SUM(r),
       CASE WHEN MAX(gr) >= 6.9e18 THEN 4611686018427387904
            ELSE MIN(SUM(CASE WHEN gr < 6.9e18 THEN rt ELSE 0 END), 4611686018427387904) END
FROM (
    SELECT minute, failure_type, d, m, mt, r, rt,
           TOTAL(mt) OVER (PARTITION BY minute, failure_type) AS gm,
           TOTAL(rt) OVER (PARTITION BY minute, failure_type) AS gr
    FROM (
        SELECT (detected_at / 60000000) * 60000000 AS minute, failure_type,
               1 AS d, 0 AS m, 0 AS mt, 0 AS r, 0 AS rt
        FROM failures
        UNION ALL
        SELECT (remediated_at / 60000000) * 60000000, failure_type, 0, 1, remediate_us, 0, 0
        FROM failures WHERE remediated_at IS NOT NULL
        UNION ALL
        SELECT (recovered_at / 60000000) * 60000000, failure_type, 0, 0, 0, 1, recover_us
        FROM failures WHERE recovered_at IS NOT NULL
    )
)
GROUP BY minute, failure_type;

INSERT INTO attempt_minutely (minute, strategy, failure_type, decision, attempts)
SELECT (e.occurred_at / 60000000) * 60000000, e.strategy,
       COALESCE(e.failure_type, f.failure_type, ''),
       COALESCE(e.payload ->> '$.decision', ''), COUNT(*)
FROM events e LEFT JOIN failures f ON f.failure_id = e.failure_id AND f.position < e.position
WHERE e.event_type = 'healing_attempted' AND e.schema_version = 1 AND e.failure_id IS NOT NULL
  AND e.strategy IS NOT NULL
GROUP BY 1, 2, 3, 4;

INSERT INTO healing_minutely (minute, strategy, failure_type, results, successes,
                              duration_sum_ms)
SELECT (e.occurred_at / 60000000) * 60000000, e.strategy,
       COALESCE(e.failure_type, f.failure_type, ''),
       COUNT(*), SUM(e.success), SUM(MAX(0, COALESCE(e.duration_ms, 0)))
FROM events e LEFT JOIN failures f ON f.failure_id = e.failure_id AND f.position < e.position
WHERE e.event_type = 'healing_completed' AND e.schema_version = 1 AND e.failure_id IS NOT NULL
  AND e.strategy IS NOT NULL AND e.success IS NOT NULL
GROUP BY 1, 2, 3;

INSERT INTO agent_rollup (span, start, agent_id, detected)
SELECT s.span, (f.detected_at / s.span) * s.span, f.agent_id, COUNT(*)
FROM failures f, (SELECT 1000000 AS span UNION ALL SELECT 60000000 UNION ALL SELECT 3600000000
          UNION ALL SELECT 86400000000) s
WHERE f.agent_id IS NOT NULL
GROUP BY 1, 2, 3;

INSERT INTO ttr_histogram (span, start, kind, bucket, n)
SELECT span, start, kind, bucket, COUNT(*) FROM (
    SELECT s.span, (f.remediated_at / s.span) * s.span AS start, 'remediate' AS kind,
           f.remediate_bucket AS bucket
    FROM failures f, (SELECT 1000000 AS span UNION ALL SELECT 60000000 UNION ALL SELECT 3600000000
          UNION ALL SELECT 86400000000) s
    WHERE f.remediated_at IS NOT NULL
    UNION ALL
    SELECT s.span, (f.recovered_at / s.span) * s.span, 'recover', f.recover_bucket
    FROM failures f, (SELECT 1000000 AS span UNION ALL SELECT 60000000 UNION ALL SELECT 3600000000
          UNION ALL SELECT 86400000000) s
    WHERE f.recovered_at IS NOT NULL
)
GROUP BY 1, 2, 3, 4;

INSERT INTO recovery_pairs (span, detected, recovered, n)
SELECT s.span, (f.detected_at / s.span) * s.span, (f.recovered_at / s.span) * s.span, COUNT(*)
FROM failures f, (SELECT 1000000 AS span UNION ALL SELECT 60000000 UNION ALL SELECT 3600000000) s
WHERE f.recovered_at IS NOT NULL
GROUP BY 1, 2, 3;

-- The rollups by the second of migrations/V13.
INSERT INTO failure_secondly (second, failure_type, detected, remediated, remediate_us_sum,
                              recovered, recover_us_sum)
SELECT second, failure_type, SUM(d), SUM(m),
       CASE WHEN MAX(gm) >= 6.9e18 THEN 4611686018427387904
            ELSE MIN(SUM(CASE WHEN gm < 6.9e18 THEN mt ELSE 0 END), 4611686018427387904) END,
       SUM(r),
       CASE WHEN MAX(gr) >= 6.9e18 THEN 4611686018427387904
            ELSE MIN(SUM(CASE WHEN gr < 6.9e18 THEN rt ELSE 0 END), 4611686018427387904) END
FROM (
    SELECT second, failure_type, d, m, mt, r, rt,
           TOTAL(mt) OVER (PARTITION BY second, failure_type) AS gm,
           TOTAL(rt) OVER (PARTITION BY second, failure_type) AS gr
    FROM (
        SELECT (detected_at / 1000000) * 1000000 AS second, failure_type,
               1 AS d, 0 AS m, 0 AS mt, 0 AS r, 0 AS rt
        FROM failures
        UNION ALL
        SELECT (remediated_at / 1000000) * 1000000, failure_type, 0, 1, remediate_us, 0, 0
        FROM failures WHERE remediated_at IS NOT NULL
        UNION ALL
        SELECT (recovered_at / 1000000) * 1000000, failure_type, 0, 0, 0, 1, recover_us
        FROM failures WHERE recovered_at IS NOT NULL
    )
)
GROUP BY second, failure_type;

INSERT INTO attempt_secondly (second, strategy, failure_type, decision, attempts)
SELECT (e.occurred_at / 1000000) * 1000000, e.strategy,
       COALESCE(e.failure_type, f.failure_type, ''),
       COALESCE(e.payload ->> '$.decision', ''), COUNT(*)
FROM events e LEFT JOIN failures f ON f.failure_id = e.failure_id AND f.position < e.position
WHERE e.event_type = 'healing_attempted' AND e.schema_version = 1 AND e.failure_id IS NOT NULL
  AND e.strategy IS NOT NULL
GROUP BY 1, 2, 3, 4;

INSERT INTO healing_secondly (second, strategy, failure_type, results, successes,
                              duration_sum_ms)
SELECT (e.occurred_at / 1000000) * 1000000, e.strategy,
       COALESCE(e.failure_type, f.failure_type, ''),
       COUNT(*), SUM(e.success), SUM(MAX(0, COALESCE(e.duration_ms, 0)))
FROM events e LEFT JOIN failures f ON f.failure_id = e.failure_id AND f.position < e.position
WHERE e.event_type = 'healing_completed' AND e.schema_version = 1 AND e.failure_id IS NOT NULL
  AND e.strategy IS NOT NULL AND e.success IS NOT NULL
GROUP BY 1, 2, 3;
