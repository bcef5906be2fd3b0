-- Turns form a tree: editing an earlier message or regenerating an answer starts a new
-- turn beside the old one, which is kept. A turn's user message (the row whose seq is its
-- turn_seq) names the turn it follows by that turn's turn_seq, 0 for none; other rows
-- leave it NULL. The session's current branch ends at its newest turn.
ALTER TABLE messages ADD COLUMN parent_turn INTEGER;
-- What was stored before is one branch: each turn follows the one before it.
UPDATE messages SET parent_turn = COALESCE((SELECT MAX(m.turn_seq) FROM messages m
    WHERE m.session_pk = messages.session_pk AND m.turn_seq < messages.turn_seq), 0)
WHERE seq = turn_seq;
CREATE INDEX messages_by_parent ON messages (session_pk, parent_turn)
    WHERE parent_turn IS NOT NULL;
