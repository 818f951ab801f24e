-- How many times a job's assembly has been claimed. The queue message of a re-queued assembly
-- is named after it, like a segment's after `segments.claims`: `assembly_attempts` goes back
-- down when a stopping worker hands the assembly back, so a name built from it could repeat
-- one Redis still holds, and the re-queue would be dropped as a duplicate.
ALTER TABLE jobs ADD COLUMN assembly_claims integer NOT NULL DEFAULT 0;
