-- Proof of action on the event: the redeemed ticket, how long the action took (ticket start
-- to award, in milliseconds), and the trusted reporter (a game server's token subject) that
-- awarded the points on the user's behalf. NULL for events written before tickets existed.

ALTER TABLE score_events ADD COLUMN ticket text;
ALTER TABLE score_events ADD COLUMN duration_ms bigint;
ALTER TABLE score_events ADD COLUMN reporter text;
