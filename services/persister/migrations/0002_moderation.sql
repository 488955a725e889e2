-- Bans: who banned (the administrator's token subject) on the event, the state on the user.

ALTER TABLE score_events ADD COLUMN moderator text;

ALTER TABLE users ADD COLUMN banned boolean NOT NULL DEFAULT false;
-- Time of the moderation event that set `banned`: a late redelivery of an older ban or
-- unban never overrides a newer one.
ALTER TABLE users ADD COLUMN moderated_at timestamptz;

CREATE INDEX users_banned ON users (user_id) WHERE banned;
