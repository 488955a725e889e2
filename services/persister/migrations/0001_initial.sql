-- The long-term record: every accepted score event once, and each user's running total.

CREATE TABLE users (
    user_id    text PRIMARY KEY,
    name       text NOT NULL,
    score      bigint NOT NULL DEFAULT 0,
    -- seq of the user's latest event: the tie-break that `persister rebuild` restores.
    last_seq   bigint NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE score_events (
    event_id        text PRIMARY KEY,
    stream_id       text NOT NULL,
    seq             bigint NOT NULL,
    type            text NOT NULL,
    user_id         text NOT NULL,
    name            text NOT NULL,
    action          text NOT NULL,
    points          bigint NOT NULL,
    score_after     bigint NOT NULL,
    idempotency_key text NOT NULL,
    client_ip       text NOT NULL,
    request_id      text,
    user_agent      text,
    jti             text,
    iss             text,
    created_at      timestamptz NOT NULL,
    persisted_at    timestamptz NOT NULL DEFAULT now()
);

-- A user's history by time.
CREATE INDEX score_events_user_created ON score_events (user_id, created_at, seq);

-- Per stream and consumer group: every entry with a smaller id is in this database (or was
-- dead-lettered). Used to recreate a lost consumer group at the right place.
CREATE TABLE stream_checkpoints (
    stream         text NOT NULL,
    consumer_group text NOT NULL,
    persisted_below text NOT NULL,
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (stream, consumer_group)
);
