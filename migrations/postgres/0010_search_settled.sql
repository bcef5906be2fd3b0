-- The search index holds messages once they are settled, as SQLite's does (its 0010): an
-- answer still streaming is indexed when it ends, not at each flush of its partial text.
DROP INDEX messages_search;
CREATE INDEX messages_search ON messages USING GIN (to_tsvector('simple', parley_fold(content)))
    WHERE role IN ('user', 'assistant') AND status <> 'streaming';
