-- Orders carry a time (ms): a CREATE the creation of its version, a DELETE when the delete
-- happened at its origin (NULL: an order from an older peer). A site remembers the latest
-- delete of each name (a tombstone, with that time), so a CREATE of a version created before
-- it that arrives after the DELETE (from a third site) is superseded instead of re-creating it.
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
