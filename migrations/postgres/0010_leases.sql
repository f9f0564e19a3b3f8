-- PostgreSQL twin of migrations/0010_leases.sql, plus the cache notifications.
CREATE TABLE leases (
    name    TEXT PRIMARY KEY,
    holder  TEXT NOT NULL,
    expires BIGINT NOT NULL
);

ALTER TABLE tasks ADD COLUMN claimed_by TEXT;
ALTER TABLE tasks ADD COLUMN claimed_until BIGINT;

-- Every change of a row the nodes' metadata caches hold is notified on `mirrorgate_cache`, in
-- the transaction that makes it (delivered when, and only if, it commits), as the JSON array
-- that `Change::from_payload` reads (src/meta/cache.rs, src/meta/notify.rs).
-- Arguments: the change's letter, then the columns that name it.
CREATE FUNCTION mirrorgate_notify_cache() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    row_json JSONB;
    payload JSONB;
BEGIN
    IF TG_OP = 'DELETE' THEN row_json := to_jsonb(OLD); ELSE row_json := to_jsonb(NEW); END IF;
    payload := jsonb_build_array(TG_ARGV[0]);
    FOR i IN 1 .. TG_NARGS - 1 LOOP
        payload := payload || jsonb_build_array(row_json ->> TG_ARGV[i]);
    END LOOP;
    PERFORM pg_notify('mirrorgate_cache', payload::text);
    RETURN NULL;
END
$$;

CREATE TRIGGER buckets_notify AFTER INSERT OR UPDATE OR DELETE ON buckets
    FOR EACH ROW EXECUTE FUNCTION mirrorgate_notify_cache('B', 'name');
CREATE TRIGGER ownerships_notify AFTER INSERT OR UPDATE OR DELETE ON ownerships
    FOR EACH ROW EXECUTE FUNCTION mirrorgate_notify_cache('R', 'client_id', 'bucket');
CREATE TRIGGER objects_notify AFTER INSERT OR UPDATE OR DELETE ON objects
    FOR EACH ROW EXECUTE FUNCTION mirrorgate_notify_cache('O', 'bucket', 'name');
CREATE TRIGGER replication_status_notify AFTER INSERT OR UPDATE OR DELETE ON replication_status
    FOR EACH ROW EXECUTE FUNCTION mirrorgate_notify_cache('O', 'bucket', 'object');
CREATE TRIGGER replicas_notify AFTER INSERT OR UPDATE OR DELETE ON replicas
    FOR EACH ROW EXECUTE FUNCTION mirrorgate_notify_cache('O', 'bucket', 'name');
-- The topology: each node reads its peers again (the payload names no row).
CREATE TRIGGER topologies_notify AFTER INSERT OR UPDATE OR DELETE ON topologies
    FOR EACH ROW EXECUTE FUNCTION mirrorgate_notify_cache('T');
