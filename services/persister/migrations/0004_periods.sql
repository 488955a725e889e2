-- Event version 2: the periods of the periodic boards a score event counted in,
-- `<board_id>=<period_id>` separated by spaces (NULL for version-1 events).

ALTER TABLE score_events ADD COLUMN periods text;
