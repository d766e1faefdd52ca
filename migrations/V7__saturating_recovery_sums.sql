-- A failure's time to recover is the time between two events' times, which may lie up to ten
-- thousand years apart: about thirty such resolutions in one hour and failure type overflowed
-- failure_hourly.ttr_sum_us (a 64-bit integer), and the append that added the last one failed.
-- The sum now saturates at 2^62 microseconds (about 146,000 years): exact below that, never
-- failing, and never overflowing itself (one time to recover is below 2^59). The trigger of V6
-- is recreated with its schema_version condition; src/analytics/rebuild.sql computes the same
-- saturated sums; the queries add these sums as floating point (TOTAL), which cannot overflow.

DROP TRIGGER rm_failure_resolved;

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
    SET resolved = resolved + 1,
        ttr_sum_us = MIN(ttr_sum_us + excluded.ttr_sum_us, 4611686018427387904);
END;

-- Sums kept before this migration above the saturation point (they fit, but a rebuild would
-- saturate them) are saturated now.
UPDATE failure_hourly SET ttr_sum_us = 4611686018427387904
WHERE ttr_sum_us > 4611686018427387904;
