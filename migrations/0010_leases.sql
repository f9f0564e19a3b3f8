-- Leases of the singletons (definition scheduler, reaper, RPO sampler...): at most one node
-- of a site runs each at a time; its holder renews `expires` (ms) while it runs, and another
-- node takes it over once it lapses. With SQLite there is one node, but the code is the same.
CREATE TABLE leases (
    name    TEXT PRIMARY KEY,
    holder  TEXT NOT NULL,
    expires BIGINT NOT NULL
);

-- Tasks are claimed by one node with a lease (renewed while the task runs).
ALTER TABLE tasks ADD COLUMN claimed_by TEXT;
ALTER TABLE tasks ADD COLUMN claimed_until BIGINT;
