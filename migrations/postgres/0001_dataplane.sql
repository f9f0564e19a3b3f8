-- PostgreSQL twin of migrations/0001_dataplane.sql: same tables, BIGINT for every integer the code reads as i64.
-- Buckets, objects, ownerships and topology of one site.
CREATE TABLE buckets (
    name       TEXT PRIMARY KEY,
    id         TEXT NOT NULL,
    client_id  TEXT NOT NULL,
    site       TEXT NOT NULL,
    creation   BIGINT NOT NULL,
    expires    BIGINT,
    status     TEXT NOT NULL
);

CREATE TABLE objects (
    bucket     TEXT NOT NULL,
    name       TEXT NOT NULL,
    id         TEXT NOT NULL,
    site       TEXT NOT NULL,
    hash       TEXT,
    status     TEXT NOT NULL,
    creation   BIGINT NOT NULL,
    expires    BIGINT,
    size       BIGINT NOT NULL DEFAULT 0,
    metadata   TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY (bucket, name)
);
CREATE INDEX objects_status ON objects (status);

CREATE TABLE ownerships (
    client_id  TEXT NOT NULL,
    bucket     TEXT NOT NULL,
    rights     BIGINT NOT NULL,
    PRIMARY KEY (client_id, bucket)
);

CREATE TABLE topologies (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    uri        TEXT NOT NULL,
    status     TEXT NOT NULL
);
