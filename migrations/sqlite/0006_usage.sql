-- What turns cost. `cost_nanos` is in billionths of the prices' currency (exact sums); NULL
-- when the model has no prices. The ledger keeps each user's spending by model call (a turn's
-- step, numbered by its assistant message's seq), written as each call ends whatever becomes
-- of the turn, and outlives sessions: deleting a session does not give its spending back.
ALTER TABLE turns ADD COLUMN cached_tokens INTEGER NOT NULL DEFAULT 0;
ALTER TABLE turns ADD COLUMN cost_nanos INTEGER;

CREATE TABLE usage_records (
    id                 INTEGER PRIMARY KEY AUTOINCREMENT,
    turn_id            TEXT NOT NULL,
    step               INTEGER NOT NULL,
    model              TEXT NOT NULL,
    user_id            TEXT NOT NULL,
    prompt_tokens      INTEGER NOT NULL,
    completion_tokens  INTEGER NOT NULL,
    cached_tokens      INTEGER NOT NULL,
    cost_nanos         INTEGER,
    created_at         INTEGER NOT NULL
);
CREATE UNIQUE INDEX usage_by_step ON usage_records (turn_id, step);
CREATE INDEX usage_by_user ON usage_records (user_id, created_at);
CREATE INDEX usage_by_time ON usage_records (created_at);
