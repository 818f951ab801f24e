-- Provenance records: what a watermark payload points back to. One per job (all of a job's
-- files carry the same mark); the id is random so that it says nothing about volume.
CREATE TABLE provenance_records (
    record_id          bigint PRIMARY KEY CHECK (record_id BETWEEN 0 AND 4294967295),
    watermark          text NOT NULL,
    job_id             uuid UNIQUE REFERENCES jobs (id) ON DELETE SET NULL,
    tenant_id          uuid,
    voice              text NOT NULL,
    voice_model_sha256 text NOT NULL,
    input_sha256       text NOT NULL,
    created_at         timestamptz NOT NULL DEFAULT now()
);

-- An Opus file's C2PA manifest travels beside it as its own artifact.
ALTER TABLE artifacts DROP CONSTRAINT artifacts_kind_check;
ALTER TABLE artifacts ADD CONSTRAINT artifacts_kind_check
    CHECK (kind IN ('audio', 'subtitles', 'marks', 'chapter_audio', 'manifest'));
