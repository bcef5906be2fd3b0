-- The search index holds messages once they are settled: an answer still streaming is
-- indexed when it ends (complete, interrupted or failed), not at each flush of its partial
-- text, which rewrote its words in the index every second of every running answer.
-- Streaming messages leave the index (with the content they were indexed with, as an
-- external-content FTS5 table requires), then the triggers skip them.
INSERT INTO messages_fts (messages_fts, rowid, content)
    SELECT 'delete', id, content FROM messages
    WHERE role IN ('user', 'assistant') AND status = 'streaming';
DROP TRIGGER messages_fts_insert;
DROP TRIGGER messages_fts_delete;
DROP TRIGGER messages_fts_update;
CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages
WHEN new.role IN ('user', 'assistant') AND new.status <> 'streaming' BEGIN
    INSERT INTO messages_fts (rowid, content) VALUES (new.id, new.content);
END;
CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages
WHEN old.role IN ('user', 'assistant') AND old.status <> 'streaming' BEGIN
    INSERT INTO messages_fts (messages_fts, rowid, content) VALUES ('delete', old.id, old.content);
END;
CREATE TRIGGER messages_fts_update AFTER UPDATE OF content, status ON messages
WHEN new.role IN ('user', 'assistant')
    AND (old.status <> 'streaming' OR new.status <> 'streaming') BEGIN
    INSERT INTO messages_fts (messages_fts, rowid, content)
        SELECT 'delete', old.id, old.content WHERE old.status <> 'streaming';
    INSERT INTO messages_fts (rowid, content)
        SELECT new.id, new.content WHERE new.status <> 'streaming';
END;
