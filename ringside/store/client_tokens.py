"""SQL for client tokens: the generated signing key, revocation epochs and what verifying a
token needs to know about its developer, key and customer."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from ringside.store.bridge import Database


@dataclass(frozen=True)
class TokenSubject:
    """A token's developer, minting key and customer, as they stand now."""

    tier: str
    markup_percent: Decimal | None
    rate_multiplier: Decimal
    key_revoked: bool
    customer_external_id: str | None
    customer_deleted: bool
    epoch: int


# Two processes starting at once both try: the singleton key keeps the first one's row.
_INSERT_KEY = """
    INSERT INTO client_token_key (kid, secret) VALUES ($1, $2)
        ON CONFLICT (singleton) DO NOTHING"""

_SELECT_KEY = "SELECT kid, secret FROM client_token_key WHERE singleton"

_SELECT_EPOCH = "SELECT COALESCE((SELECT epoch FROM client_token_epoch WHERE customer_id = $1), 0)"

_BUMP_EPOCH = """
    INSERT INTO client_token_epoch (customer_id, epoch) VALUES ($1, 1)
        ON CONFLICT (customer_id)
        DO UPDATE SET epoch = client_token_epoch.epoch + 1, revoked_at = now()
 RETURNING epoch"""

_SELECT_SUBJECT = """
    SELECT d.tier, d.markup_percent, d.rate_multiplier,
           k.revoked_at IS NOT NULL AS key_revoked,
           c.external_id AS customer_external_id,
           c.deleted_at IS NOT NULL AS customer_deleted,
           COALESCE(e.epoch, 0) AS epoch
      FROM api_key AS k
      JOIN developer AS d ON d.id = k.developer_id
      JOIN customer AS c ON c.developer_id = d.id AND c.id = $3
      LEFT JOIN client_token_epoch AS e ON e.customer_id = c.id
     WHERE k.id = $1 AND k.developer_id = $2"""


async def ensure_generated_key(db: Database, kid: str, secret: str) -> tuple[str, str]:
    """The shared generated key: this one if no process stored one before."""
    await db.execute(_INSERT_KEY, kid, secret)
    row = await db.fetchrow(_SELECT_KEY)
    assert row is not None
    return str(row["kid"]), str(row["secret"])


async def select_epoch(db: Database, customer_id: str) -> int:
    return int(await db.fetchval(_SELECT_EPOCH, customer_id))


async def bump_epoch(db: Database, customer_id: str) -> int:
    return int(await db.fetchval(_BUMP_EPOCH, customer_id))


async def select_subject(
    db: Database, *, key_id: str, developer_id: str, customer_id: str
) -> TokenSubject | None:
    row = await db.fetchrow(_SELECT_SUBJECT, key_id, developer_id, customer_id)
    return None if row is None else TokenSubject(**dict(row))
