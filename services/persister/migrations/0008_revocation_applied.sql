-- When Redis applied a revocation (NULL: recorded in PostgreSQL but not yet applied there).
-- The score API applies any unapplied revocation of a user before it starts another.

ALTER TABLE revocations ADD COLUMN applied_at timestamptz;
