-- Processes that wait on a job learn of its progress from Postgres notifications instead of
-- asking again and again: an assembler following a job's segments, and API requests that
-- wait for a job to finish (`Prefer: wait`). Triggers send them, so every path that finishes
-- a segment or a job (workers, the sweeper, cancellation, an operator's SQL) is covered.
-- A notification is delivered when its transaction commits, and never for a rolled-back one.
-- The payload is the job's id.

CREATE FUNCTION voxproof_notify_segment_done() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('voxproof_segment_done', NEW.job_id::text);
    RETURN NULL;
END
$$;

CREATE TRIGGER segments_notify_done
    AFTER UPDATE OF status ON segments
    FOR EACH ROW
    WHEN (NEW.status = 'done' AND OLD.status IS DISTINCT FROM 'done')
    EXECUTE FUNCTION voxproof_notify_segment_done();

CREATE FUNCTION voxproof_notify_job_finished() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('voxproof_job_finished', NEW.id::text);
    RETURN NULL;
END
$$;

CREATE TRIGGER jobs_notify_finished
    AFTER UPDATE OF status ON jobs
    FOR EACH ROW
    WHEN (NEW.status IN ('succeeded', 'failed', 'cancelled') AND OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION voxproof_notify_job_finished();
