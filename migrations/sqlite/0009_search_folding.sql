-- The search folds accents on PostgreSQL as it does here (migrations/postgres/0009): SQLite's
-- FTS5 `unicode61` tokenizer already takes diacritics off (`café` finds `cafe`), so there is
-- nothing to change; the file keeps both stores' migrations numbered alike.
SELECT 1;
