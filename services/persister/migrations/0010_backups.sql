-- One row per successful `python -m services.persister backup`: the persister publishes
-- max(finished_at) as persister_last_backup_timestamp_seconds, which the BackupTooOld alert
-- watches. The row is written after the dump, so a backup never contains its own row.
CREATE TABLE backup_runs (
    finished_at timestamptz NOT NULL DEFAULT now(),
    path        text NOT NULL,
    sha256      text NOT NULL,
    bytes       bigint NOT NULL
);

CREATE INDEX backup_runs_finished_at ON backup_runs (finished_at);
