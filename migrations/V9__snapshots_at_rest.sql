-- Snapshots a restore can trust.
--
-- A state at rest (it decides as a new one would) needs no snapshot, and its snapshot is
-- deleted; except when its stream's earliest events are archived: a fold could not rebuild it
-- then, so its snapshot is kept, marked `at_rest`. A restore reads only the snapshots not at
-- rest (through the partial index), so restore time follows the states in use, not every
-- archived key.
ALTER TABLE strategy_snapshots ADD COLUMN at_rest INTEGER NOT NULL DEFAULT 0
    CHECK (at_rest IN (0, 1));

CREATE INDEX strategy_snapshots_in_use ON strategy_snapshots (strategy) WHERE at_rest = 0;

-- Per strategy, how many snapshots not at rest healstore's checkpoints left: each checkpoint
-- moves it by what its own writes changed (never by counting the table), so a restore that
-- finds fewer knows a snapshot went missing behind healstore's back, and folds that
-- strategy's streams again from the log instead of taking the missing state for one at rest.
-- NULL: not known (counted by the next checkpoint).
ALTER TABLE strategy_checkpoints ADD COLUMN snapshots INTEGER CHECK (snapshots >= 0);

UPDATE strategy_checkpoints
SET snapshots = (SELECT count(*) FROM strategy_snapshots s
                 WHERE s.strategy = strategy_checkpoints.strategy);
