-- User analytics (GET /api/admin/stats).

-- Refusals the score API answered, per UTC hour and problem reason. The API counts them in
-- Redis ({tag}:refusals:<hour>); the persister copies the current and the previous hour here,
-- the count set to Redis's value (idempotent).
CREATE TABLE refusal_counts (
    hour   timestamptz NOT NULL,
    reason text NOT NULL,
    count  bigint NOT NULL,
    PRIMARY KEY (hour, reason)
);

-- When the user's first award was stored (kept by the persister's upsert: the earliest). A
-- new user of a window is an active one whose first award falls in it: this column and its
-- index answer that for the few new users, instead of a look-up per active user.
ALTER TABLE users ADD COLUMN first_award_at timestamptz;
UPDATE users u SET first_award_at = f.first
FROM (SELECT user_id, min(created_at) AS first FROM score_events WHERE type = 'score'
      GROUP BY user_id) f
WHERE u.user_id = f.user_id;
CREATE INDEX users_first_award ON users (first_award_at) WHERE first_award_at IS NOT NULL;
