-- One writer per session: the node holding a session's lease runs its turns and numbers
-- its events. lease_fence goes up on every acquisition and is checked by every write of a
-- turn, so a node that lost the lease cannot write. lease_until is epoch ms.
ALTER TABLE sessions ADD COLUMN lease_node TEXT;
ALTER TABLE sessions ADD COLUMN lease_until INTEGER NOT NULL DEFAULT 0;
ALTER TABLE sessions ADD COLUMN lease_fence INTEGER NOT NULL DEFAULT 0;
CREATE INDEX sessions_leased ON sessions (lease_node, lease_until) WHERE lease_node IS NOT NULL;
