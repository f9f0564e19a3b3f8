-- The task engine (every asynchronous job), replication definitions and transfer reports.

CREATE TABLE tasks (
    uuid             TEXT PRIMARY KEY,
    instance         BIGINT NOT NULL,
    kind             TEXT NOT NULL,
    action_id        TEXT NOT NULL,
    node_ref         TEXT NOT NULL,
    status           TEXT NOT NULL,
    created          BIGINT NOT NULL,
    started          BIGINT,
    ended            BIGINT,
    objects_done     BIGINT NOT NULL DEFAULT 0,
    objects_total    BIGINT NOT NULL DEFAULT 0,
    bytes_done       BIGINT NOT NULL DEFAULT 0,
    bytes_total      BIGINT NOT NULL DEFAULT 0,
    failure          TEXT,
    cancel_requested BIGINT NOT NULL DEFAULT 0,
    params           TEXT NOT NULL DEFAULT '{}',
    result           TEXT
);
CREATE INDEX tasks_status ON tasks (status);
CREATE INDEX tasks_action ON tasks (action_id);

CREATE TABLE replication_definitions (
    name            TEXT PRIMARY KEY,
    id              TEXT NOT NULL UNIQUE,
    description     TEXT NOT NULL,
    payload         TEXT NOT NULL,
    enabled         BIGINT NOT NULL,
    target          TEXT NOT NULL,
    schedule_start  BIGINT,
    interval_period TEXT,
    interval_count  BIGINT,
    next_due        BIGINT,
    last_task       TEXT,
    local_report    TEXT,
    remote_report   TEXT,
    created         BIGINT NOT NULL
);

CREATE TABLE transfer_reports (
    id         TEXT PRIMARY KEY,
    kind       TEXT NOT NULL,
    definition TEXT NOT NULL,
    task       TEXT NOT NULL,
    target     TEXT NOT NULL,
    created    BIGINT NOT NULL
);

CREATE TABLE transfer_report_entries (
    seq     BIGSERIAL PRIMARY KEY,
    report  TEXT NOT NULL,
    outcome TEXT NOT NULL,
    bucket  TEXT NOT NULL,
    object  TEXT NOT NULL,
    size    BIGINT NOT NULL,
    detail  TEXT
);
CREATE INDEX transfer_report_entries_report ON transfer_report_entries (report, seq);
