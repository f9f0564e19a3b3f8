-- Disaster recovery: when each server was first seen, when its production failover started
-- (failback verifies what was written since), and the outcome of its last test failover.
ALTER TABLE dr_servers ADD COLUMN created BIGINT;
ALTER TABLE dr_servers ADD COLUMN failover_start BIGINT;
ALTER TABLE dr_servers ADD COLUMN test_ok BIGINT;
ALTER TABLE dr_servers ADD COLUMN test_summary TEXT;
