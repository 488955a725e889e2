-- Per periodic board: every period that ended before `since` is archived (or began before the
-- persister first saw the board). Archiving resumes from here after any downtime.

CREATE TABLE board_archive_state (
    board_id text PRIMARY KEY,
    since    timestamptz NOT NULL
);
