-- No query reads events by failure type alone: the analytics read a failure's type from the
-- `failures` read model (by failure type and detection time through `failures_by_type`), and
-- the per-event queries that filter on an event's failure type also name its strategy and
-- time, which `events_by_strategy` serves. The index cost every append that carries a failure
-- type (most events a heal writes) one more B-tree insert: about 1 to 1.5 of 20 microseconds
-- of SQLite's work per event. `IF EXISTS`: a database whose index was dropped by hand upgrades
-- the same way.

DROP INDEX IF EXISTS events_by_failure_type;
