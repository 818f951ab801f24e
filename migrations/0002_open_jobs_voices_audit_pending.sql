-- Voices as the deployment's processes found them on disk: the API and every worker
-- register theirs when they start, and GET /v1/voices lists this table.
ALTER TABLE voices ADD COLUMN quality text;

-- Open (queued or running) jobs per tenant, for the per-tenant limit. The API reserves a
-- slot in a statement of its own (the row is locked only for that statement, so admissions
-- do not queue behind each other's transactions) and gives it back if the job is not
-- written; a trigger frees it when the job leaves queued/running; the sweeper corrects a
-- count left wrong by a crash between reservation and commit (only for tenants with no
-- reservation in the last minutes, so no request in flight is miscounted). A table of its
-- own: every job insert key-share locks its tenants row (the foreign key), and updating that
-- same row under load piles up multixacts.
CREATE TABLE tenant_open_jobs (
    tenant_id   uuid PRIMARY KEY REFERENCES tenants (id) ON DELETE CASCADE,
    open_jobs   integer NOT NULL CHECK (open_jobs >= 0),
    reserved_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO tenant_open_jobs (tenant_id, open_jobs)
    SELECT tenant_id, count(*) FROM jobs WHERE status IN ('queued', 'running') GROUP BY tenant_id;

-- One statement, so the counter row is locked only inside the server: the commit that
-- releases it needs no round trip to the client, and does not wait for the WAL flush (a
-- reservation lost in a database crash only leaves the count low until the sweeper's check).
CREATE FUNCTION reserve_open_job(tenant uuid, job_limit integer) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    reserved integer;
BEGIN
    PERFORM set_config('synchronous_commit', 'off', true);
    INSERT INTO tenant_open_jobs AS t (tenant_id, open_jobs) VALUES (tenant, 1)
    ON CONFLICT (tenant_id) DO UPDATE SET open_jobs = t.open_jobs + 1, reserved_at = now()
        WHERE t.open_jobs < job_limit
    RETURNING open_jobs INTO reserved;
    RETURN reserved IS NOT NULL;
END
$$;

CREATE FUNCTION jobs_release_open_slot() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE tenant_open_jobs SET open_jobs = greatest(open_jobs - 1, 0)
    WHERE tenant_id = NEW.tenant_id;
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

-- Small job sources (the uploaded document as received) are kept here, in the job's own
-- transaction; larger ones go to object storage under jobs.source_key (NULL when here).
ALTER TABLE jobs ALTER COLUMN source_key DROP NOT NULL;
CREATE TABLE job_sources (
    job_id uuid PRIMARY KEY REFERENCES jobs (id) ON DELETE CASCADE,
    body   bytea NOT NULL
);
