-- Periodic boards: each ended period's final standings, written once (board_periods_closed
-- marks a period whose archive is complete; both are written in one transaction).

CREATE TABLE board_archives (
    board_id   text NOT NULL,
    period     text NOT NULL,
    rank       integer NOT NULL,
    user_id    text NOT NULL,
    name       text NOT NULL,
    score      bigint NOT NULL,
    -- When the user reached that score: their last event in the period.
    reached_at timestamptz NOT NULL,
    PRIMARY KEY (board_id, period, rank)
);

CREATE TABLE board_periods_closed (
    board_id    text NOT NULL,
    period      text NOT NULL,
    starts_at   timestamptz NOT NULL,
    ends_at     timestamptz NOT NULL,
    entries     integer NOT NULL,
    archived_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (board_id, period)
);

-- The events of one period, found by their periods (event version 2).
CREATE INDEX score_events_periods ON score_events USING gin (string_to_array(periods, ' '));
