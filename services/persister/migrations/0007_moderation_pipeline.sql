-- The moderation pipeline: quarantine (a shadow ban), revocation, flags, and the reason of
-- every moderation event (README, Moderation).

-- Set by the persister from quarantine / release events, like `banned` (same `moderated_at`).
ALTER TABLE users ADD COLUMN quarantined boolean NOT NULL DEFAULT false;
CREATE INDEX users_quarantined ON users (user_id) WHERE quarantined;

-- A moderation event's reason, the revocation it names (revoke) or the flag (dismiss).
ALTER TABLE score_events ADD COLUMN reason text;
ALTER TABLE score_events ADD COLUMN revocation text;
ALTER TABLE score_events ADD COLUMN flag bigint;
-- The revocation that removed this score event's points; NULL while it counts. Events are
-- never deleted: totals, archives and `reconcile` count only `revoked_by IS NULL`.
ALTER TABLE score_events ADD COLUMN revoked_by text;

-- A user's moderation history (GET /api/admin/audit), newest first.
CREATE INDEX score_events_moderation ON score_events (user_id, created_at DESC)
    WHERE type <> 'score';
-- The flag rules' rolling windows: every score event since a time.
CREATE INDEX score_events_recent ON score_events (created_at) WHERE type = 'score';

-- One row per revocation, written once in the transaction that marks its events.
CREATE TABLE revocations (
    revocation_id text PRIMARY KEY,
    user_id       text NOT NULL,
    since         timestamptz NOT NULL,
    until         timestamptz NOT NULL,
    -- The user's arrival counter when the revocation began: later events are never revoked.
    up_to_seq     bigint NOT NULL,
    events        integer NOT NULL,
    points        bigint NOT NULL,
    -- What Redis applies: per board ("all" or "<board_id>=<period_id>") the points removed
    -- and the arrival counter of the user's last remaining event there (0: none remain).
    boards        jsonb NOT NULL,
    reason        text NOT NULL,
    moderator     text NOT NULL,
    request_id    text,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX revocations_user ON revocations (user_id, created_at DESC);

-- An archived period is never rewritten: a revocation that touches one records here what
-- it removed from the user's archived score, and the archive shows it.
CREATE TABLE archive_corrections (
    board_id      text NOT NULL,
    period        text NOT NULL,
    revocation_id text NOT NULL REFERENCES revocations,
    user_id       text NOT NULL,
    points        bigint NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (board_id, period, revocation_id)
);

-- Anomaly flags (services.persister.flags): at most one open flag per user and rule.
CREATE TABLE user_flags (
    flag_id        bigserial PRIMARY KEY,
    user_id        text NOT NULL,
    rule           text NOT NULL,
    window_seconds integer NOT NULL,
    observed       bigint NOT NULL,
    threshold      bigint NOT NULL,
    first_seen     timestamptz NOT NULL,
    last_seen      timestamptz NOT NULL,
    state          text NOT NULL DEFAULT 'open'
        CHECK (state IN ('open', 'dismissed', 'actioned')),
    decided_by     text,
    decided_at     timestamptz,
    decision       text
);
CREATE UNIQUE INDEX user_flags_one_open ON user_flags (user_id, rule) WHERE state = 'open';
CREATE INDEX user_flags_by_state ON user_flags (state, last_seen DESC);
