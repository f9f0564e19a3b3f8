-- Replication: the outbox (orders this site owes its peers), the inbox (orders received from
-- peers, applied by workers), per-object per-peer status, failed operations (Backbeat), pause
-- state per peer, and an event log for the Backbeat metrics windows.

-- Source side. state: QUEUED (to send) | SENT (the peer stored it; waiting for its outcome).
-- A row leaves the outbox when the peer reports DONE, or becomes a failed operation.
CREATE TABLE outbox (
    seq          BIGSERIAL PRIMARY KEY,
    op_id        TEXT NOT NULL,
    to_site      TEXT NOT NULL,
    client_id    TEXT NOT NULL,
    bucket       TEXT NOT NULL,
    object       TEXT,
    size         BIGINT,
    hash         TEXT,
    action       TEXT NOT NULL,
    state        TEXT NOT NULL,
    attempts     BIGINT NOT NULL DEFAULT 0,
    next_attempt BIGINT NOT NULL,
    last_error   TEXT,
    created      BIGINT NOT NULL,
    UNIQUE (op_id, to_site)
);
CREATE INDEX outbox_due ON outbox (to_site, state, next_attempt);

-- Receiving side. state: PENDING | PROCESSING | DONE | FAILED.
CREATE TABLE inbox (
    seq           BIGSERIAL PRIMARY KEY,
    op_id         TEXT NOT NULL UNIQUE,
    from_site     TEXT NOT NULL,
    client_id     TEXT NOT NULL,
    bucket        TEXT NOT NULL,
    object        TEXT,
    size          BIGINT,
    hash          TEXT,
    action        TEXT NOT NULL,
    state         TEXT NOT NULL,
    attempts      BIGINT NOT NULL DEFAULT 0,
    next_attempt  BIGINT NOT NULL,
    claimed_until BIGINT,
    last_error    TEXT,
    created       BIGINT NOT NULL,
    finished      BIGINT
);
CREATE INDEX inbox_due ON inbox (state, next_attempt);
CREATE INDEX inbox_object ON inbox (bucket, object, state);

-- Status of each object at each peer, at the source: PENDING, PROCESSING, COMPLETED, FAILED.
CREATE TABLE replication_status (
    bucket  TEXT NOT NULL,
    object  TEXT NOT NULL,
    site    TEXT NOT NULL,
    status  TEXT NOT NULL,
    updated BIGINT NOT NULL,
    PRIMARY KEY (bucket, object, site)
);

-- Copies received from a peer are REPLICA.
ALTER TABLE objects ADD COLUMN replica_of TEXT;

-- Orders that exhausted their attempts or failed permanently (the Backbeat failed list).
CREATE TABLE failed_ops (
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
    UNIQUE (bucket, object, version_id, site)
);
CREATE INDEX failed_ops_site ON failed_ops (site, id);

CREATE TABLE replication_pause (
    site      TEXT PRIMARY KEY,
    paused    BIGINT NOT NULL,
    resume_at BIGINT
);

-- kind: COMPLETED | FAILED; pruned after a day.
CREATE TABLE replication_events (
    at    BIGINT NOT NULL,
    site  TEXT NOT NULL,
    kind  TEXT NOT NULL,
    bytes BIGINT NOT NULL
);
CREATE INDEX replication_events_at ON replication_events (site, at);
