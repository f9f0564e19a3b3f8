-- Disaster recovery: the state of each server (PRIMARY per site, RECOVERY per site pair).
CREATE TABLE dr_servers (
    uuid        TEXT PRIMARY KEY,
    status      TEXT NOT NULL,
    task_uuid   TEXT,
    test_start  BIGINT,
    test_task   TEXT,
    updated     BIGINT NOT NULL
);
