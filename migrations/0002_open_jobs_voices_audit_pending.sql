-- Voices as the deployment's processes found them on disk: the API and every worker
-- register theirs when they start, and GET /v1/voices lists this table.
ALTER TABLE voices ADD COLUMN quality text;

-- Open (queued or running) jobs per tenant. The API admits a job by raising it, in the
-- job's own transaction, only while it is under the tenant's limit (one row update, not a
-- count under a lock); the trigger lowers it when a job leaves queued/running.
ALTER TABLE tenants ADD COLUMN open_jobs integer NOT NULL DEFAULT 0 CHECK (open_jobs >= 0);
UPDATE tenants t SET open_jobs = (
    SELECT count(*) FROM jobs j WHERE j.tenant_id = t.id AND j.status IN ('queued', 'running'));

CREATE FUNCTION jobs_release_open_slot() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE tenants SET open_jobs = open_jobs - 1 WHERE id = NEW.tenant_id;
    RETURN NULL;
END
$$;

CREATE TRIGGER jobs_finished AFTER UPDATE OF status ON jobs FOR EACH ROW
    WHEN (OLD.status IN ('queued', 'running') AND NEW.status NOT IN ('queued', 'running'))
    EXECUTE FUNCTION jobs_release_open_slot();

-- Audit events as written by the transactions they describe, before the chainer moves
-- them, in id order, into the hash chain (audit_events). Writing here takes no lock.
CREATE TABLE audit_pending (
    id           bigserial PRIMARY KEY,
    at           timestamptz NOT NULL,
    request_id   text NOT NULL,
    actor_key_id uuid,
    tenant_id    uuid,
    action       text NOT NULL,
    target       text NOT NULL,
    details      text NOT NULL
);
