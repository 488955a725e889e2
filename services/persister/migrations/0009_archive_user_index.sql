-- A user's entry in an archived period (rank look-ups, and where a user banned or
-- quarantined after the archive sat, to close the ranks up) without scanning the period.

CREATE INDEX board_archives_user ON board_archives (board_id, period, user_id);
