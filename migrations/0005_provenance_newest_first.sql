-- Verification reads the newest records' payloads (at most 100,000) to judge them directly
-- against an upload's audio; this index keeps that read from sorting the whole table.
CREATE INDEX provenance_records_created_at ON provenance_records (created_at DESC);
