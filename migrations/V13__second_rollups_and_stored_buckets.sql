-- Rollups by the second, and the histogram bucket of each time computed once, when it is
-- written: so that a window whose edges hold a burst of failures (the current minute, where a
-- fleet's latest failures are healed) costs what a quiet one does.
--
-- V12 cut a window into whole days, hours and minutes and read the partial minutes at its
-- edges row by row, bucketing each time to remediate or recover with an SQL expression. A
-- burst healed within the last minute (10,000 results) was then read one row at a time. Here:
--
-- - `failure_secondly`, `attempt_secondly`, `healing_secondly`: V12's minute rollups by the
--   second, and the second as a further span (1,000,000 microseconds) of `agent_rollup`,
--   `ttr_histogram` and `recovery_pairs`: only the partial seconds at a window's edges are
--   read row by row (src/analytics/mod.rs, `Pieces::cut`);
-- - `failures.remediate_bucket`, `failures.recover_bucket`: the histogram bucket of the time
--   to remediate and to recover (src/analytics/hist.rs), set with the time itself, which the
--   histogram rows and the row-by-row edges read instead of computing it.
--
-- The second rollups hold at most one row per key and second, and at most one per event that
-- writes them: their size grows with time, or with the failures when those are sparser than
-- one a second.
--
-- The triggers of V12 are recreated with these statements added (same conditions, same
-- statements before them); src/analytics/rebuild.sql has the set-based equivalents. A log
-- upgraded to this version gets them filled below from the read models and the events (and,
-- for archived events, from `archived_facts`).

CREATE TABLE failure_secondly (
    second              INTEGER NOT NULL,
    failure_type        TEXT    NOT NULL,
    detected            INTEGER NOT NULL DEFAULT 0,
    remediated          INTEGER NOT NULL DEFAULT 0,
    remediate_us_sum    INTEGER NOT NULL DEFAULT 0,
    recovered           INTEGER NOT NULL DEFAULT 0,
    recover_us_sum      INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (second, failure_type)
) STRICT, WITHOUT ROWID;

CREATE TABLE attempt_secondly (
    second              INTEGER NOT NULL,
    strategy            TEXT    NOT NULL,
    failure_type        TEXT    NOT NULL,
    decision            TEXT    NOT NULL,
    attempts            INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (second, strategy, failure_type, decision)
) STRICT, WITHOUT ROWID;

CREATE TABLE healing_secondly (
    second              INTEGER NOT NULL,
    strategy            TEXT    NOT NULL,
    failure_type        TEXT    NOT NULL,
    results             INTEGER NOT NULL DEFAULT 0,
    successes           INTEGER NOT NULL DEFAULT 0,
    duration_sum_ms     INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (second, strategy, failure_type)
) STRICT, WITHOUT ROWID;

ALTER TABLE failures ADD COLUMN remediate_bucket INTEGER;
ALTER TABLE failures ADD COLUMN recover_bucket INTEGER;

-- ----- the upgraded log's events -------------------------------------------------------------

UPDATE failures SET remediate_bucket = (SELECT CASE WHEN x < 128 THEN x ELSE e * 64 + (x >> (e - 6)) - 64 END FROM (
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
    FROM (SELECT remediate_us AS x)))
WHERE remediated_at IS NOT NULL;

UPDATE failures SET recover_bucket = (SELECT CASE WHEN x < 128 THEN x ELSE e * 64 + (x >> (e - 6)) - 64 END FROM (
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
    FROM (SELECT recover_us AS x)))
WHERE recovered_at IS NOT NULL;

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
SELECT second, strategy, failure_type, decision, COUNT(*) FROM (
    SELECT (e.occurred_at / 1000000) * 1000000 AS second, e.strategy,
           COALESCE(e.failure_type, f.failure_type, '') AS failure_type,
           COALESCE(e.payload ->> '$.decision', '') AS decision
    FROM events e LEFT JOIN failures f ON f.failure_id = e.failure_id AND f.position < e.position
    WHERE e.event_type = 'healing_attempted' AND e.schema_version = 1
      AND e.failure_id IS NOT NULL AND e.strategy IS NOT NULL
    UNION ALL
    SELECT (occurred_at / 1000000) * 1000000, strategy, failure_type, decision
    FROM archived_facts WHERE event_type = 'healing_attempted'
)
GROUP BY 1, 2, 3, 4;

INSERT INTO healing_secondly (second, strategy, failure_type, results, successes,
                              duration_sum_ms)
SELECT second, strategy, failure_type, COUNT(*), SUM(success), SUM(duration_ms) FROM (
    SELECT (e.occurred_at / 1000000) * 1000000 AS second, e.strategy,
           COALESCE(e.failure_type, f.failure_type, '') AS failure_type, e.success,
           MAX(0, COALESCE(e.duration_ms, 0)) AS duration_ms
    FROM events e LEFT JOIN failures f ON f.failure_id = e.failure_id AND f.position < e.position
    WHERE e.event_type = 'healing_completed' AND e.schema_version = 1
      AND e.failure_id IS NOT NULL AND e.strategy IS NOT NULL AND e.success IS NOT NULL
    UNION ALL
    SELECT (occurred_at / 1000000) * 1000000, strategy, failure_type, success, duration_ms
    FROM archived_facts WHERE event_type = 'healing_completed'
)
GROUP BY 1, 2, 3;

INSERT INTO agent_rollup (span, start, agent_id, detected)
SELECT 1000000, (detected_at / 1000000) * 1000000, agent_id, COUNT(*)
FROM failures WHERE agent_id IS NOT NULL
GROUP BY 2, 3;

INSERT INTO ttr_histogram (span, start, kind, bucket, n)
SELECT 1000000, start, kind, bucket, COUNT(*) FROM (
    SELECT (remediated_at / 1000000) * 1000000 AS start, 'remediate' AS kind,
           remediate_bucket AS bucket
    FROM failures WHERE remediated_at IS NOT NULL
    UNION ALL
    SELECT (recovered_at / 1000000) * 1000000, 'recover', recover_bucket
    FROM failures WHERE recovered_at IS NOT NULL
)
GROUP BY 2, 3, 4;

INSERT INTO recovery_pairs (span, detected, recovered, n)
SELECT 1000000, (detected_at / 1000000) * 1000000, (recovered_at / 1000000) * 1000000, COUNT(*)
FROM failures WHERE recovered_at IS NOT NULL
GROUP BY 2, 3;

-- ----- incremental maintenance ---------------------------------------------------------------

DROP TRIGGER rm_failure_detected;
DROP TRIGGER rm_healing_attempted;
DROP TRIGGER rm_healing_completed;
DROP TRIGGER rm_failure_resolved;
DROP TRIGGER rm_failure_recovered;

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
    INSERT INTO failure_minutely (minute, failure_type, detected)
    SELECT (detected_at / 60000000) * 60000000, failure_type, 1
    FROM failures WHERE position = NEW.position
    ON CONFLICT (minute, failure_type) DO UPDATE SET detected = detected + 1;
    INSERT INTO failure_secondly (second, failure_type, detected)
    SELECT (detected_at / 1000000) * 1000000, failure_type, 1
    FROM failures WHERE position = NEW.position
    ON CONFLICT (second, failure_type) DO UPDATE SET detected = detected + 1;
    INSERT INTO agent_rollup (span, start, agent_id, detected)
    SELECT s.span, (f.detected_at / s.span) * s.span, f.agent_id, 1
    FROM failures f, (SELECT 1000000 AS span UNION ALL SELECT 60000000 UNION ALL SELECT 3600000000
          UNION ALL SELECT 86400000000) s
    WHERE f.position = NEW.position AND f.agent_id IS NOT NULL
    ON CONFLICT (span, start, agent_id) DO UPDATE SET detected = detected + 1;
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
    INSERT INTO attempt_minutely (minute, strategy, failure_type, decision, attempts)
    VALUES ((NEW.occurred_at / 60000000) * 60000000, NEW.strategy,
            COALESCE(NEW.failure_type,
                     (SELECT failure_type FROM failures WHERE failure_id = NEW.failure_id), ''),
            COALESCE(NEW.payload ->> '$.decision', ''), 1)
    ON CONFLICT (minute, strategy, failure_type, decision) DO UPDATE SET attempts = attempts + 1;
    INSERT INTO attempt_secondly (second, strategy, failure_type, decision, attempts)
    VALUES ((NEW.occurred_at / 1000000) * 1000000, NEW.strategy,
            COALESCE(NEW.failure_type,
                     (SELECT failure_type FROM failures WHERE failure_id = NEW.failure_id), ''),
            COALESCE(NEW.payload ->> '$.decision', ''), 1)
    ON CONFLICT (second, strategy, failure_type, decision) DO UPDATE SET attempts = attempts + 1;
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
    INSERT INTO healing_minutely (minute, strategy, failure_type, results, successes,
                                  duration_sum_ms)
    VALUES ((NEW.occurred_at / 60000000) * 60000000, NEW.strategy,
            COALESCE(NEW.failure_type,
                     (SELECT failure_type FROM failures WHERE failure_id = NEW.failure_id), ''),
            1, NEW.success, MAX(0, COALESCE(NEW.duration_ms, 0)))
    ON CONFLICT (minute, strategy, failure_type) DO UPDATE
    SET results = results + 1, successes = successes + excluded.successes,
        duration_sum_ms = duration_sum_ms + excluded.duration_sum_ms;
    INSERT INTO healing_secondly (second, strategy, failure_type, results, successes,
                                  duration_sum_ms)
    VALUES ((NEW.occurred_at / 1000000) * 1000000, NEW.strategy,
            COALESCE(NEW.failure_type,
                     (SELECT failure_type FROM failures WHERE failure_id = NEW.failure_id), ''),
            1, NEW.success, MAX(0, COALESCE(NEW.duration_ms, 0)))
    ON CONFLICT (second, strategy, failure_type) DO UPDATE
    SET results = results + 1, successes = successes + excluded.successes,
        duration_sum_ms = duration_sum_ms + excluded.duration_sum_ms;
END;

-- The first remediation counts (by position, after the detection).
CREATE TRIGGER rm_failure_resolved AFTER INSERT ON events
WHEN NEW.event_type = 'failure_resolved' AND NEW.schema_version = 1
     AND NEW.failure_id IS NOT NULL
BEGIN
    UPDATE failures
    SET remediated_position = NEW.position, remediated_at = NEW.occurred_at,
        remediated_by = NEW.strategy, remediate_us = MAX(0, NEW.occurred_at - detected_at),
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
          FROM (SELECT MAX(0, NEW.occurred_at - failures.detected_at) AS x)))
    WHERE failure_id = NEW.failure_id AND remediated_at IS NULL;
    INSERT INTO failure_hourly (hour, failure_type, remediated, remediate_us_sum)
    SELECT (remediated_at / 3600000000) * 3600000000, failure_type, 1, remediate_us
    FROM failures WHERE failure_id = NEW.failure_id AND remediated_position = NEW.position
    ON CONFLICT (hour, failure_type) DO UPDATE
    SET remediated = remediated + 1,
        remediate_us_sum = MIN(remediate_us_sum + excluded.remediate_us_sum,
                               4611686018427387904);
    INSERT INTO failure_minutely (minute, failure_type, remediated, remediate_us_sum)
    SELECT (remediated_at / 60000000) * 60000000, failure_type, 1, remediate_us
    FROM failures WHERE failure_id = NEW.failure_id AND remediated_position = NEW.position
    ON CONFLICT (minute, failure_type) DO UPDATE
    SET remediated = remediated + 1,
        remediate_us_sum = MIN(remediate_us_sum + excluded.remediate_us_sum,
                               4611686018427387904);
    INSERT INTO failure_secondly (second, failure_type, remediated, remediate_us_sum)
    SELECT (remediated_at / 1000000) * 1000000, failure_type, 1, remediate_us
    FROM failures WHERE failure_id = NEW.failure_id AND remediated_position = NEW.position
    ON CONFLICT (second, failure_type) DO UPDATE
    SET remediated = remediated + 1,
        remediate_us_sum = MIN(remediate_us_sum + excluded.remediate_us_sum,
                               4611686018427387904);
    INSERT INTO ttr_histogram (span, start, kind, bucket, n)
    SELECT s.span, (f.remediated_at / s.span) * s.span, 'remediate', f.remediate_bucket, 1
    FROM failures f, (SELECT 1000000 AS span UNION ALL SELECT 60000000 UNION ALL SELECT 3600000000
          UNION ALL SELECT 86400000000) s
    WHERE f.failure_id = NEW.failure_id AND f.remediated_position = NEW.position
    ON CONFLICT (span, start, kind, bucket) DO UPDATE SET n = n + 1;
END;

-- The first recovery counts (by position, after the detection).
CREATE TRIGGER rm_failure_recovered AFTER INSERT ON events
WHEN NEW.event_type = 'failure_recovered' AND NEW.schema_version = 1
     AND NEW.failure_id IS NOT NULL
BEGIN
    UPDATE failures
    SET recovered_position = NEW.position, recovered_at = NEW.occurred_at,
        recovered_how = NEW.payload ->> '$.how',
        recover_us = MAX(0, NEW.occurred_at - detected_at),
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
          FROM (SELECT MAX(0, NEW.occurred_at - failures.detected_at) AS x)))
    WHERE failure_id = NEW.failure_id AND recovered_at IS NULL;
    INSERT INTO failure_hourly (hour, failure_type, recovered, recover_us_sum)
    SELECT (recovered_at / 3600000000) * 3600000000, failure_type, 1, recover_us
    FROM failures WHERE failure_id = NEW.failure_id AND recovered_position = NEW.position
    ON CONFLICT (hour, failure_type) DO UPDATE
    SET recovered = recovered + 1,
        recover_us_sum = MIN(recover_us_sum + excluded.recover_us_sum, 4611686018427387904);
    INSERT INTO failure_minutely (minute, failure_type, recovered, recover_us_sum)
    SELECT (recovered_at / 60000000) * 60000000, failure_type, 1, recover_us
    FROM failures WHERE failure_id = NEW.failure_id AND recovered_position = NEW.position
    ON CONFLICT (minute, failure_type) DO UPDATE
    SET recovered = recovered + 1,
        recover_us_sum = MIN(recover_us_sum + excluded.recover_us_sum, 4611686018427387904);
    INSERT INTO failure_secondly (second, failure_type, recovered, recover_us_sum)
    SELECT (recovered_at / 1000000) * 1000000, failure_type, 1, recover_us
    FROM failures WHERE failure_id = NEW.failure_id AND recovered_position = NEW.position
    ON CONFLICT (second, failure_type) DO UPDATE
    SET recovered = recovered + 1,
        recover_us_sum = MIN(recover_us_sum + excluded.recover_us_sum, 4611686018427387904);
    INSERT INTO ttr_histogram (span, start, kind, bucket, n)
    SELECT s.span, (f.recovered_at / s.span) * s.span, 'recover', f.recover_bucket, 1
    FROM failures f, (SELECT 1000000 AS span UNION ALL SELECT 60000000 UNION ALL SELECT 3600000000
          UNION ALL SELECT 86400000000) s
    WHERE f.failure_id = NEW.failure_id AND f.recovered_position = NEW.position
    ON CONFLICT (span, start, kind, bucket) DO UPDATE SET n = n + 1;
    INSERT INTO recovery_pairs (span, detected, recovered, n)
    SELECT s.span, (f.detected_at / s.span) * s.span, (f.recovered_at / s.span) * s.span, 1
    FROM failures f, (SELECT 1000000 AS span UNION ALL SELECT 60000000 UNION ALL SELECT 3600000000) s
    WHERE f.failure_id = NEW.failure_id AND f.recovered_position = NEW.position
    ON CONFLICT (span, detected, recovered) DO UPDATE SET n = n + 1;
END;
