-- Parley's schema: normalized, append-only per message. Mirrors migrations/sqlite/0001:
-- BIGSERIAL for SQLite's INTEGER PRIMARY KEY AUTOINCREMENT, BIGINT for counts, seqs and
-- epoch-ms timestamps, BOOLEAN for flags.
CREATE TABLE users (
    id          TEXT PRIMARY KEY,
    is_admin    BOOLEAN NOT NULL DEFAULT FALSE,
    created_at  BIGINT NOT NULL
);

CREATE TABLE sessions (
    pk             BIGSERIAL PRIMARY KEY,
    user_id        TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    id             TEXT NOT NULL,
    name           TEXT,
    state          TEXT NOT NULL DEFAULT 'idle',
    message_count  BIGINT NOT NULL DEFAULT 0,
    -- Upper bound of the event sequence numbers handed out, so seq never goes back.
    last_seq       BIGINT NOT NULL DEFAULT 0,
    created_at     BIGINT NOT NULL,
    updated_at     BIGINT NOT NULL,
    UNIQUE (user_id, id)
);
CREATE INDEX sessions_by_recency ON sessions (user_id, updated_at DESC, pk DESC);

CREATE TABLE turns (
    id                 TEXT PRIMARY KEY,
    session_pk         BIGINT NOT NULL REFERENCES sessions(pk) ON DELETE CASCADE,
    status             TEXT NOT NULL,
    error_code         TEXT,
    error_message      TEXT,
    model              TEXT,
    prompt_tokens      BIGINT NOT NULL DEFAULT 0,
    completion_tokens  BIGINT NOT NULL DEFAULT 0,
    total_tokens       BIGINT NOT NULL DEFAULT 0,
    created_at         BIGINT NOT NULL,
    started_at         BIGINT,
    finished_at        BIGINT,
    duration_ms        BIGINT
);
CREATE INDEX turns_by_session ON turns (session_pk, created_at);
CREATE INDEX turns_unfinished ON turns (status) WHERE status IN ('queued', 'running');

CREATE TABLE messages (
    id            BIGSERIAL PRIMARY KEY,
    session_pk    BIGINT NOT NULL REFERENCES sessions(pk) ON DELETE CASCADE,
    seq           BIGINT NOT NULL,
    -- The seq of the turn's user message: conversation order is (turn_seq, seq), since a
    -- queued user message is stored (and numbered) before the answer to the turn before it.
    turn_seq      BIGINT NOT NULL,
    turn_id       TEXT,
    role          TEXT NOT NULL,
    content       TEXT NOT NULL DEFAULT '',
    reasoning     TEXT,
    tool_calls    TEXT,
    tool_call_id  TEXT,
    tool_name     TEXT,
    status        TEXT NOT NULL DEFAULT 'complete',
    created_at    BIGINT NOT NULL
);
CREATE INDEX messages_in_order ON messages (session_pk, turn_seq, seq);
CREATE UNIQUE INDEX messages_by_seq ON messages (session_pk, seq);
CREATE INDEX messages_streaming ON messages (status) WHERE status = 'streaming';

CREATE TABLE tool_calls (
    pk           BIGSERIAL PRIMARY KEY,
    session_pk   BIGINT NOT NULL REFERENCES sessions(pk) ON DELETE CASCADE,
    turn_id      TEXT NOT NULL,
    call_id      TEXT NOT NULL,
    name         TEXT NOT NULL,
    args         TEXT NOT NULL,
    output       TEXT,
    is_error     BOOLEAN NOT NULL DEFAULT FALSE,
    status       TEXT NOT NULL,
    started_at   BIGINT NOT NULL,
    duration_ms  BIGINT
);
CREATE INDEX tool_calls_by_session ON tool_calls (session_pk, pk);
CREATE INDEX tool_calls_running ON tool_calls (status) WHERE status = 'running';
