-- The Assistants API: assistants, threads (internal conversations), messages, runs and run
-- steps. OpenAI's wire ids are kept as they appear on the wire (asst_, msg_, run_, step_);
-- a thread_<hex> maps 1:1 to an internal conv_<hex> through api_thread_aliases, and the
-- internal id never leaves the gateway.
--
-- One active run per conversation is a partial unique index (run_active_conversation_idx):
-- the lock holds across processes, and every way a run ends (completed, failed, cancelled,
-- expired, incomplete) releases it by leaving the indexed states.

CREATE TABLE assistant (
    seq            BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
    id             TEXT PRIMARY KEY,
    developer_id   TEXT NOT NULL REFERENCES developer (id),
    name           TEXT CHECK (length(name) <= 256),
    description    TEXT CHECK (length(description) <= 512),
    instructions   TEXT CHECK (length(instructions) <= 256000),
    -- A model reference (fc:, slot:, match:), resolved again at every run.
    model          TEXT NOT NULL,
    tools          JSONB NOT NULL DEFAULT '[]',
    tool_resources JSONB,
    -- Sampling parameters (not money): floats as OpenAI has them.
    temperature    DOUBLE PRECISION,
    top_p          DOUBLE PRECISION,
    -- NULL is "auto".
    response_format JSONB,
    metadata       JSONB NOT NULL DEFAULT '{}',
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- Soft delete: runs keep naming the assistant they ran.
    deleted_at     TIMESTAMPTZ
);

CREATE INDEX assistant_developer_seq_idx ON assistant (developer_id, seq)
WHERE deleted_at IS NULL;

CREATE TABLE conversation (
    seq            BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
    id             TEXT PRIMARY KEY,
    developer_id   TEXT NOT NULL REFERENCES developer (id),
    -- The customer the thread was created for (FC-Customer, user, or a client token's);
    -- NULL: the developer's own. A client token reaches only its customer's conversations.
    customer_id    TEXT REFERENCES customer (id),
    tool_resources JSONB,
    metadata       JSONB NOT NULL DEFAULT '{}',
    -- Live messages (at most 5,000) and the next message's ordinal, both moved by one
    -- conditional UPDATE of this row, so concurrent posts cannot overshoot and get a stable
    -- order.
    message_count  INTEGER NOT NULL DEFAULT 0 CHECK (message_count BETWEEN 0 AND 5000),
    next_ordinal   INTEGER NOT NULL DEFAULT 0 CHECK (next_ordinal >= 0),
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    deleted_at     TIMESTAMPTZ
);

-- GET /v1/threads?source_thread_id=... finds a migrated thread.
CREATE INDEX conversation_source_thread_idx
ON conversation (developer_id, (metadata ->> 'source_thread_id'))
WHERE deleted_at IS NULL AND metadata ? 'source_thread_id';

CREATE TABLE api_thread_aliases (
    thread_id       TEXT PRIMARY KEY,
    conversation_id TEXT NOT NULL UNIQUE REFERENCES conversation (id)
);

CREATE TABLE thread_message (
    seq                BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
    id                 TEXT PRIMARY KEY,
    conversation_id    TEXT NOT NULL REFERENCES conversation (id),
    -- The order of the thread (the list's keyset key), from conversation.next_ordinal.
    ordinal            INTEGER NOT NULL,
    role               TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
    -- OpenAI's content parts, as on the wire.
    content            JSONB NOT NULL,
    attachments        JSONB,
    assistant_id       TEXT,
    run_id             TEXT,
    status             TEXT NOT NULL DEFAULT 'completed'
                       CHECK (status IN ('in_progress', 'incomplete', 'completed')),
    incomplete_details JSONB,
    metadata           JSONB NOT NULL DEFAULT '{}',
    created_at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    completed_at       TIMESTAMPTZ,
    incomplete_at      TIMESTAMPTZ,
    UNIQUE (conversation_id, ordinal)
);

CREATE TABLE run (
    seq                   BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
    id                    TEXT PRIMARY KEY,
    developer_id          TEXT NOT NULL REFERENCES developer (id),
    conversation_id       TEXT NOT NULL REFERENCES conversation (id),
    assistant_id          TEXT NOT NULL,
    customer_id           TEXT REFERENCES customer (id),
    -- The key that created the run: later model calls of the run (after tool outputs) are
    -- billed to it.
    api_key_id            TEXT NOT NULL REFERENCES api_key (id),
    status                TEXT NOT NULL
                          CHECK (status IN ('queued', 'in_progress', 'requires_action',
                                            'cancelling', 'cancelled', 'failed', 'completed',
                                            'incomplete', 'expired')),
    model                 TEXT NOT NULL,
    instructions          TEXT NOT NULL DEFAULT '',
    tools                 JSONB NOT NULL DEFAULT '[]',
    tool_resources        JSONB,
    temperature           DOUBLE PRECISION,
    top_p                 DOUBLE PRECISION,
    max_prompt_tokens     INTEGER CHECK (max_prompt_tokens >= 256),
    max_completion_tokens INTEGER CHECK (max_completion_tokens >= 16),
    truncation_strategy   JSONB NOT NULL DEFAULT '{"type": "auto", "last_messages": null}',
    -- "auto" | "none" | "required" | {"type": "function", "function": {"name": ...}}
    tool_choice           JSONB NOT NULL DEFAULT '"auto"',
    parallel_tool_calls   BOOLEAN NOT NULL DEFAULT true,
    response_format       JSONB,
    metadata              JSONB NOT NULL DEFAULT '{}',
    required_action       JSONB,
    last_error            JSONB,
    incomplete_details    JSONB,
    -- Summed over the run's model calls.
    prompt_tokens         INTEGER NOT NULL DEFAULT 0,
    completion_tokens     INTEGER NOT NULL DEFAULT 0,
    -- The process executing the run right now (NULL while queued elsewhere or waiting for
    -- tool outputs); a cancel is signalled with NOTIFY ringside_run_cancel, '<run id>'.
    process_id            TEXT,
    created_at            TIMESTAMPTZ NOT NULL DEFAULT now(),
    started_at            TIMESTAMPTZ,
    expires_at            TIMESTAMPTZ NOT NULL,
    cancelled_at          TIMESTAMPTZ,
    failed_at             TIMESTAMPTZ,
    completed_at          TIMESTAMPTZ
);

CREATE UNIQUE INDEX run_active_conversation_idx ON run (conversation_id)
WHERE status IN ('queued', 'in_progress', 'requires_action', 'cancelling');
CREATE INDEX run_conversation_seq_idx ON run (conversation_id, seq);
-- The sweeper's scan: overdue active runs.
CREATE INDEX run_expiry_idx ON run (expires_at)
WHERE status IN ('queued', 'in_progress', 'requires_action', 'cancelling');

CREATE TABLE run_step (
    seq               BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
    id                TEXT PRIMARY KEY,
    run_id            TEXT NOT NULL REFERENCES run (id),
    type              TEXT NOT NULL CHECK (type IN ('message_creation', 'tool_calls')),
    status            TEXT NOT NULL
                      CHECK (status IN ('in_progress', 'cancelled', 'failed', 'completed',
                                        'expired')),
    step_details      JSONB NOT NULL,
    last_error        JSONB,
    -- The model call this step came from: usage_event.request_id (one usage event per model
    -- call, grouped by run through this column).
    request_id        TEXT,
    prompt_tokens     INTEGER,
    completion_tokens INTEGER,
    metadata          JSONB NOT NULL DEFAULT '{}',
    created_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    cancelled_at      TIMESTAMPTZ,
    failed_at         TIMESTAMPTZ,
    completed_at      TIMESTAMPTZ,
    expired_at        TIMESTAMPTZ
);

CREATE INDEX run_step_run_seq_idx ON run_step (run_id, seq);
CREATE INDEX run_step_request_idx ON run_step (request_id) WHERE request_id IS NOT NULL;
