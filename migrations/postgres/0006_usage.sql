-- What turns cost. `cost_nanos` is in billionths of the prices' currency (exact sums); NULL
-- when the model has no prices. The ledger keeps each user's spending by model call (a turn's
-- step, numbered by its assistant message's seq), written as each call ends whatever becomes
-- of the turn, and outlives sessions: deleting a session does not give its spending back.
ALTER TABLE turns ADD COLUMN cached_tokens BIGINT NOT NULL DEFAULT 0;
ALTER TABLE turns ADD COLUMN cost_nanos BIGINT;

CREATE TABLE usage_records (
    id                 BIGSERIAL PRIMARY KEY,
    turn_id            TEXT NOT NULL,
    step               BIGINT NOT NULL,
    model              TEXT NOT NULL,
    user_id            TEXT NOT NULL,
    prompt_tokens      BIGINT NOT NULL,
    completion_tokens  BIGINT NOT NULL,
    cached_tokens      BIGINT NOT NULL,
    cost_nanos         BIGINT,
    created_at         BIGINT NOT NULL
);
CREATE UNIQUE INDEX usage_by_step ON usage_records (turn_id, step);
CREATE INDEX usage_by_user ON usage_records (user_id, created_at);
CREATE INDEX usage_by_time ON usage_records (created_at);
