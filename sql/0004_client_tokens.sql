-- Client tokens (browser JWTs, signed by the gateway; nothing is stored per token).

-- The signing key generated when RINGSIDE_CLIENT_TOKEN_KEYS is unset: one row, created by the
-- first process that needs it, so every web process signs and verifies with the same key.
CREATE TABLE client_token_key (
    singleton  BOOLEAN PRIMARY KEY DEFAULT true CHECK (singleton),
    kid        TEXT NOT NULL,
    secret     TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Revoking a customer's client tokens bumps its epoch. A token carries the epoch it was minted
-- in and is refused once the customer's epoch has moved past it (no row: epoch 0).
CREATE TABLE client_token_epoch (
    customer_id TEXT PRIMARY KEY REFERENCES customer (id),
    epoch       BIGINT NOT NULL CHECK (epoch > 0),
    revoked_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
