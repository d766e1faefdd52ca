-- Stream ids compare byte for byte, whatever the database's collation. The store reads
-- streams by prefix as a range (`stream_id >= 'strategy-' AND stream_id < 'strategy.'`: a
-- healer's catch-up of other processes' decisions, the archived strategy streams, the
-- preventions), which holds only in an order where a prefix sorts before every id it starts:
-- under a collation that ignores punctuation (glibc's en_US.UTF-8, a common default) the
-- dash and the dot weigh nothing and `strategy-CircuitBreaker-a` sorts after `strategy.`,
-- so catch-ups would read none of another healer's decisions. SQLite compares them bytewise.
ALTER TABLE events ALTER COLUMN stream_id TYPE TEXT COLLATE "C";
ALTER TABLE archived_streams ALTER COLUMN stream_id TYPE TEXT COLLATE "C";
ALTER TABLE strategy_snapshots ALTER COLUMN stream_id TYPE TEXT COLLATE "C";
