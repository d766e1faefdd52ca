-- Circuit transitions as a read model: one row per `circuit_transitioned` event, so that
-- circuit analytics need no JSON and keep the periods whose events were archived. Kept by a
-- trigger in the same transaction as the events, rebuilt with the others.

CREATE TABLE circuit_transitions (
    position            INTEGER PRIMARY KEY,
    strategy            TEXT    NOT NULL,
    circuit             TEXT    NOT NULL,
    agent_id            TEXT,
    from_state          TEXT    NOT NULL,
    to_state            TEXT    NOT NULL,
    at                  INTEGER NOT NULL
) STRICT;

CREATE INDEX circuit_transitions_by_time ON circuit_transitions (at, position);
CREATE INDEX circuit_transitions_by_circuit ON circuit_transitions (strategy, circuit, at);

CREATE TRIGGER rm_circuit_transitioned AFTER INSERT ON events
WHEN NEW.event_type = 'circuit_transitioned'
     AND NEW.payload ->> '$.circuit' IS NOT NULL AND NEW.payload ->> '$.to' IS NOT NULL
BEGIN
    INSERT INTO circuit_transitions (position, strategy, circuit, agent_id, from_state,
                                     to_state, at)
    VALUES (NEW.position, COALESCE(NEW.strategy, ''), NEW.payload ->> '$.circuit', NEW.agent_id,
            COALESCE(NEW.payload ->> '$.from', 'closed'), NEW.payload ->> '$.to',
            NEW.occurred_at);
END;

INSERT INTO circuit_transitions (position, strategy, circuit, agent_id, from_state, to_state, at)
SELECT position, COALESCE(strategy, ''), payload ->> '$.circuit', agent_id,
       COALESCE(payload ->> '$.from', 'closed'), payload ->> '$.to', occurred_at
FROM events
WHERE event_type = 'circuit_transitioned'
  AND payload ->> '$.circuit' IS NOT NULL AND payload ->> '$.to' IS NOT NULL;
