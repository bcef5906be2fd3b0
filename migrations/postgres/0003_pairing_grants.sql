-- A pairing code can be minted for a user (a new device of theirs) by an admin or the
-- operator; a code minted for nobody creates a new user and never grants an existing one.
ALTER TABLE pairing_codes ADD COLUMN user_id TEXT;
ALTER TABLE pairing_codes ADD COLUMN is_admin BOOLEAN NOT NULL DEFAULT FALSE;
