-- A user's sessions in order: pinned ones first (and never pruned), archived ones out of
-- the list, in a list of their own.
ALTER TABLE sessions ADD COLUMN pinned BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE sessions ADD COLUMN archived BOOLEAN NOT NULL DEFAULT FALSE;
CREATE INDEX sessions_listed ON sessions (user_id, archived, pinned DESC, updated_at DESC, pk DESC);

-- Searching what users and the agent said (tool output is left out): words as they are
-- (the `simple` configuration: no language's stemming, as SQLite's index does).
CREATE INDEX messages_search ON messages USING GIN (to_tsvector('simple', content))
    WHERE role IN ('user', 'assistant');
