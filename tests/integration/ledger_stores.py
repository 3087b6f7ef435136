"""What the tests of the ledger's store on several databases share: ids on a chosen
logical shard, fresh idempotency keys, funded wallets."""

from __future__ import annotations

import uuid

from services.runtime.money import Money
from services.transaction.adapters.ledger_store import SqlLedgerStore
from services.transaction.domain.model import IdempotencyKey, LedgerOutcome

# The operator who funds the tests' wallets (adjustments need one).
OPERATOR = str(uuid.uuid4())


def on_shard(shard: int) -> str:
    """A new id (a user's) whose home shard is `shard`: its last byte."""
    return str(uuid.UUID(bytes=uuid.uuid4().bytes[:15] + bytes([shard])))


def key() -> IdempotencyKey:
    return IdempotencyKey(str(uuid.uuid4()), uuid.uuid4().hex)


async def funded(store: SqlLedgerStore, owner: str, amount: int) -> str:
    """A new EUR wallet of `owner` holding `amount`."""
    made = await store.create_wallet(owner, key(), "EUR")
    assert made.wallet is not None
    if amount:
        adjusted = await store.adjust(OPERATOR, key(), made.wallet.id, Money("EUR", amount), "")
        assert adjusted.outcome is LedgerOutcome.OK
    return made.wallet.id
