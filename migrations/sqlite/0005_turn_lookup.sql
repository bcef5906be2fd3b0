-- A turn looked up by its id (the Responses API, AG-UI resumes) reads its own messages and
-- tool calls, not its whole session's.
CREATE INDEX messages_by_turn ON messages (session_pk, turn_id);
CREATE INDEX tool_calls_by_turn ON tool_calls (session_pk, turn_id);
