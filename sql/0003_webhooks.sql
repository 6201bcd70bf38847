-- Webhooks: endpoints a developer registers, and one delivery per event × endpoint that the
-- webhooks worker claims, sends and retries. webhook_event (0002) is the outbox.

CREATE TABLE webhook_endpoint (
    seq          BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
    id           TEXT PRIMARY KEY,
    developer_id TEXT NOT NULL REFERENCES developer (id),
    url          TEXT NOT NULL CHECK (length(url) BETWEEN 1 AND 2048),
    -- Event types, or '*' for all of them.
    events       TEXT [] NOT NULL,
    enabled      BOOLEAN NOT NULL DEFAULT true,
    description  TEXT,
    -- Kept in clear: the worker signs with it (the database is the trust boundary).
    secret       TEXT NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    deleted_at   TIMESTAMPTZ
);

CREATE INDEX webhook_endpoint_developer_seq_idx ON webhook_endpoint (developer_id, seq)
WHERE deleted_at IS NULL;

-- next_attempt_at is also the lease: a claim moves it forward by the lease, so the claim of a
-- worker that died becomes due again; attempts is the fencing token of the current claim.
CREATE TABLE webhook_delivery (
    seq             BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
    id              TEXT PRIMARY KEY,
    endpoint_id     TEXT NOT NULL REFERENCES webhook_endpoint (id),
    event_id        TEXT NOT NULL REFERENCES webhook_event (id),
    state           TEXT NOT NULL DEFAULT 'pending'
                    CHECK (state IN ('pending', 'delivering', 'succeeded', 'failed')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- Retries stop this long after retry_from (the event, or the last manual redelivery).
    retry_from      TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_status     INTEGER,
    last_latency_ms INTEGER,
    last_error      TEXT,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    finished_at     TIMESTAMPTZ,
    UNIQUE (event_id, endpoint_id)
);

CREATE INDEX webhook_delivery_due_idx ON webhook_delivery (next_attempt_at)
WHERE state IN ('pending', 'delivering');
CREATE INDEX webhook_delivery_endpoint_seq_idx ON webhook_delivery (endpoint_id, seq);

-- One row per attempt, written when it is claimed and completed when it ends (an attempt
-- whose worker died stays without finished_at).
CREATE TABLE webhook_attempt (
    delivery_id TEXT NOT NULL REFERENCES webhook_delivery (id),
    attempt     INTEGER NOT NULL,
    worker      TEXT NOT NULL,
    started_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    finished_at TIMESTAMPTZ,
    status_code INTEGER,
    latency_ms  INTEGER,
    error       TEXT,
    PRIMARY KEY (delivery_id, attempt)
);

-- Fan-out in the transaction that wrote the event: a delivery for every enabled endpoint of
-- the developer subscribed to the type. A ping names its one endpoint and is fanned out by
-- whoever wrote it.
CREATE FUNCTION ringside_webhook_fan_out() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.type <> 'webhook.ping' THEN
        INSERT INTO webhook_delivery (id, endpoint_id, event_id)
        SELECT ringside_new_id('whd'), e.id, NEW.id
          FROM webhook_endpoint AS e
         WHERE e.developer_id = NEW.developer_id AND e.deleted_at IS NULL AND e.enabled
           AND (NEW.type = ANY (e.events) OR '*' = ANY (e.events));
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER webhook_event_fan_out AFTER INSERT ON webhook_event
FOR EACH ROW EXECUTE FUNCTION ringside_webhook_fan_out();
