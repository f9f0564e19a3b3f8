-- Orders carry the creation time (ms) of the version they create or delete (NULL: an order
-- queued or received before this, or from an older peer), and a site remembers the newest
-- version it deleted of each name (a tombstone), so a CREATE of that version or an older one
-- that arrives after the DELETE (from a third site) is superseded instead of re-creating it.
-- Tombstones are pruned after max_order_age_secs (no order older than that is still applied).
ALTER TABLE outbox ADD COLUMN version_time BIGINT;
ALTER TABLE inbox ADD COLUMN version_time BIGINT;
CREATE TABLE tombstones (
    bucket       TEXT NOT NULL,
    name         TEXT NOT NULL,
    hash         TEXT NOT NULL,
    version_time BIGINT NOT NULL,
    recorded     BIGINT NOT NULL,
    PRIMARY KEY (bucket, name)
);
CREATE INDEX tombstones_recorded ON tombstones (recorded);
