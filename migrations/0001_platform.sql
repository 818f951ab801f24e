-- The platform's state. Postgres is the source of truth; Redis only carries work.

CREATE TABLE tenants (
    id                  uuid PRIMARY KEY,
    slug                text NOT NULL UNIQUE CHECK (slug ~ '^[a-z0-9][a-z0-9-]{0,62}$'),
    max_concurrent_jobs integer NOT NULL DEFAULT 8 CHECK (max_concurrent_jobs > 0),
    created_at          timestamptz NOT NULL DEFAULT now()
);

-- Keys are shown once; only a SHA-256 of the secret is kept. `prefix` is the public,
-- non-secret part that lets an operator tell keys apart in logs and the audit trail.
CREATE TABLE api_keys (
    id          uuid PRIMARY KEY,
    tenant_id   uuid NOT NULL REFERENCES tenants (id),
    role        text NOT NULL CHECK (role IN ('admin', 'member')),
    prefix      text NOT NULL UNIQUE,
    secret_hash bytea NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);

-- Voices the workers can render, with the digest of the model file so content-addressed
-- segment keys change when a model file changes.
CREATE TABLE voices (
    name         text PRIMARY KEY,
    language     text NOT NULL,
    sample_rate  integer NOT NULL,
    speakers     jsonb NOT NULL DEFAULT '[]',
    model_sha256 text NOT NULL,
    updated_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE jobs (
    id               uuid PRIMARY KEY,
    tenant_id        uuid NOT NULL REFERENCES tenants (id),
    created_by_key   uuid REFERENCES api_keys (id),
    status           text NOT NULL CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    priority         text NOT NULL CHECK (priority IN ('interactive', 'bulk')),
    voice            text NOT NULL,
    model_sha256     text NOT NULL,
    input_format     text NOT NULL,
    output_format    text NOT NULL,
    options          jsonb NOT NULL,
    source_key       text NOT NULL,
    source_sha256    text NOT NULL,
    source_bytes     bigint NOT NULL,
    idempotency_key  text,
    request_sha256   text,
    segments_total   integer NOT NULL,
    segments_done    integer NOT NULL DEFAULT 0,
    audio_seconds    double precision,
    error_code       text,
    error_message    text,
    -- Set in the same transaction that completes the last segment; the assembler holds a
    -- lease so exactly one assembly runs at a time, and a dead assembler's lease runs out.
    assembly_ready_at  timestamptz,
    assembly_worker    text,
    assembly_lease_until timestamptz,
    assembly_attempts  integer NOT NULL DEFAULT 0,
    created_at       timestamptz NOT NULL DEFAULT now(),
    started_at       timestamptz,
    finished_at      timestamptz
);
CREATE UNIQUE INDEX jobs_idempotency ON jobs (tenant_id, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX jobs_tenant_created ON jobs (tenant_id, created_at DESC, id DESC);
CREATE INDEX jobs_active ON jobs (status) WHERE status IN ('queued', 'running');

CREATE TABLE segments (
    job_id        uuid NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    index         integer NOT NULL,
    -- The document items this segment speaks (sentences, pauses, chapter starts), as JSON.
    items         jsonb NOT NULL,
    sentences     integer NOT NULL,
    -- Content address of the rendered PCM: voice model digest + settings + text.
    content_key   text NOT NULL,
    status        text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'running', 'done', 'failed', 'cancelled')),
    -- Attempts charged against the retry cap (a clean hand-back is not charged).
    attempts      integer NOT NULL DEFAULT 0,
    -- Every claim, never decremented: names queue messages so each retry is a new one.
    claims        integer NOT NULL DEFAULT 0,
    not_before    timestamptz NOT NULL DEFAULT now(),
    enqueued_at   timestamptz,
    worker        text,
    lease_until   timestamptz,
    last_error    text,
    samples       bigint,
    finished_at   timestamptz,
    PRIMARY KEY (job_id, index)
);
CREATE INDEX segments_open ON segments (status, not_before) WHERE status IN ('pending', 'running');

CREATE TABLE artifacts (
    job_id       uuid NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    name         text NOT NULL,
    kind         text NOT NULL CHECK (kind IN ('audio', 'subtitles', 'marks', 'chapter_audio')),
    storage_key  text NOT NULL,
    bytes        bigint NOT NULL,
    content_type text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (job_id, name)
);

-- Tamper-evident: each row's hash covers its own fields and the previous row's hash.
-- Rows are written under an advisory lock so `seq` has no gaps and the chain no forks.
CREATE TABLE audit_events (
    seq          bigint PRIMARY KEY,
    at           timestamptz NOT NULL,
    request_id   text NOT NULL,
    actor_key_id uuid,
    tenant_id    uuid,
    action       text NOT NULL,
    target       text NOT NULL,
    details      text NOT NULL,
    prev_hash    bytea NOT NULL,
    hash         bytea NOT NULL
);
