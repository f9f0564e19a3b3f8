-- Each order remembers the object version it was queued for (the objects row in the same
-- transaction) and that version's last-modified, so a failed operation names its own version
-- (not whatever the name holds when it fails) and Backbeat's LastModified is the object's.
ALTER TABLE outbox ADD COLUMN version_id TEXT NOT NULL DEFAULT '';
ALTER TABLE outbox ADD COLUMN modified BIGINT;

-- One failed entry per operation: a DELETE and a CREATE of the same version/name both stay.
CREATE TABLE failed_ops_v7 (
    id          BIGSERIAL PRIMARY KEY,
    op_id       TEXT NOT NULL,
    site        TEXT NOT NULL,
    client_id   TEXT NOT NULL,
    bucket      TEXT NOT NULL,
    object      TEXT NOT NULL DEFAULT '',
    version_id  TEXT NOT NULL DEFAULT '',
    size        BIGINT,
    hash        TEXT,
    action      TEXT NOT NULL,
    attempts    BIGINT NOT NULL,
    error       TEXT,
    failed_at   BIGINT NOT NULL,
    modified    BIGINT,
    UNIQUE (bucket, object, version_id, action, site)
);
INSERT INTO failed_ops_v7 (id, op_id, site, client_id, bucket, object, version_id, size, hash, action, attempts, error, failed_at, modified)
    SELECT id, op_id, site, client_id, bucket, object, version_id, size, hash, action, attempts, error, failed_at, failed_at FROM failed_ops;
DROP TABLE failed_ops;
ALTER TABLE failed_ops_v7 RENAME TO failed_ops;
CREATE INDEX failed_ops_site ON failed_ops (site, id);
CREATE INDEX failed_ops_object ON failed_ops (bucket, object);
