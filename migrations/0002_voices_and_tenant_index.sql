-- Voices as the deployment's processes found them on disk: the API and every worker
-- register theirs when they start, and GET /v1/voices lists this table.
ALTER TABLE voices ADD COLUMN quality text;

-- The per-tenant concurrent-job check counts only that tenant's open jobs.
CREATE INDEX jobs_active_by_tenant ON jobs (tenant_id) WHERE status IN ('queued', 'running');
