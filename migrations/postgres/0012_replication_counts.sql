-- Completions and failures counted per site, kind and second instead of one row an event: the
-- Backbeat metrics' 24-hour totals read at most a day of seconds, however many orders ran.
CREATE TABLE replication_counts (
    site   TEXT NOT NULL,
    kind   TEXT NOT NULL,
    second BIGINT NOT NULL,
    count  BIGINT NOT NULL,
    bytes  BIGINT NOT NULL,
    PRIMARY KEY (site, kind, second)
);
CREATE INDEX replication_counts_kind ON replication_counts (kind, second);
INSERT INTO replication_counts (site, kind, second, count, bytes)
    SELECT site, kind, at / 1000, COUNT(*), SUM(bytes) FROM replication_events
    GROUP BY site, kind, at / 1000;
DROP TABLE replication_events;
