-- The Rucio replica catalogue. Each site keeps one row per copy it holds (kept in step by
-- writes, replication, deletion and repair) and the rows it learned about its peers' copies
-- from replication outcomes. Times are milliseconds since the epoch.

-- state: A AVAILABLE, U UNAVAILABLE, C COPYING, B BEING_DELETED, D BAD, T TEMPORARY_UNAVAILABLE.
-- tombstone: when the reaper may delete the copy (0 = OBSOLETE, as soon as possible).
-- verified_at: last time the bytes were re-read and found good (suspicious declarations made
-- before it no longer count).
CREATE TABLE replicas (
    bucket        TEXT NOT NULL,
    name          TEXT NOT NULL,
    site          TEXT NOT NULL,
    state         TEXT NOT NULL,
    bytes         BIGINT NOT NULL DEFAULT 0,
    sha256        TEXT,
    adler32       TEXT,
    tombstone     BIGINT,
    lock_cnt      BIGINT NOT NULL DEFAULT 0,
    error_message TEXT,
    verified_at   BIGINT,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL,
    accessed_at   BIGINT,
    PRIMARY KEY (bucket, name, site)
);
CREATE INDEX replicas_site ON replicas (site, bucket, name);
CREATE INDEX replicas_tombstone ON replicas (site, tombstone);

-- Declarations and their outcome (Rucio bad_replicas). state: B BAD (repair queued),
-- S SUSPICIOUS, T TEMPORARY_UNAVAILABLE (until expires_at), R RECOVERED, L LOST, D DELETED.
-- A B row is the durable repair queue: attempts and next_attempt drive the healer.
CREATE TABLE bad_replicas (
    id           BIGSERIAL PRIMARY KEY,
    bucket       TEXT NOT NULL,
    name         TEXT NOT NULL,
    site         TEXT NOT NULL,
    state        TEXT NOT NULL,
    reason       TEXT,
    expires_at   BIGINT,
    attempts     BIGINT NOT NULL DEFAULT 0,
    next_attempt BIGINT,
    last_error   TEXT,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL
);
CREATE INDEX bad_replicas_replica ON bad_replicas (bucket, name, site, state);
CREATE INDEX bad_replicas_due ON bad_replicas (site, state, next_attempt);

-- Where the scrubber's current pass is, so a restart continues it.
CREATE TABLE scrub_cursor (
    id           BIGINT PRIMARY KEY CHECK (id = 1),
    bucket       TEXT NOT NULL,
    name         TEXT NOT NULL,
    pass         BIGINT NOT NULL,
    pass_started BIGINT NOT NULL
);
