"""Thousands of funded wallets in seconds, and an access token for each owner.

Going through the API would cost minutes (and the rate limiter would count it); the
wallets are made with the ledger's own functions instead (`ledger_create_wallet`,
`ledger_adjust`), so every row, posting and idempotency key is exactly what the service
would have written and the audit after the run checks them like any other. Owners are ids
we generate: the transaction service checks a token's signature and revocation, not that
its user exists.

`bench_wallets (n, wallet_id, owner_id)` numbers the wallets 1..N for pgbench, in each
database of the ledger (each owner's wallet in the database of their home shard).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import psycopg

from services.user.adapters.tokens import JwtIssuer, SigningKey
from services.user.domain.model import Role

CURRENCY = "EUR"
# Enough that no wallet runs dry whatever the run's length (transfers move 1 cent).
FUNDING = 1_000_000_000
# One transaction per batch: each function call takes an advisory lock, held until
# commit, and the shared lock table has room for a few thousand.
BATCH = 500
TOKEN_SECONDS = 3 * 3600
USER_ROLES = frozenset({Role.USER})  # what a registered person's token carries


@dataclass(frozen=True)
class SeededWallet:
    n: int
    wallet_id: str
    owner_id: str
    token: str


def owners_on(shards: frozenset[int], count: int) -> list[str]:
    """`count` new owner ids whose home shard (the last byte) is one of `shards`."""
    ordered = sorted(shards)
    return [
        str(uuid.UUID(bytes=uuid.uuid4().bytes[:15] + bytes([ordered[i % len(ordered)]])))
        for i in range(count)
    ]


def seed_wallets(conninfo: str, count: int, shards: frozenset[int]) -> list[SeededWallet]:
    """Create and fund `count` wallets in the database `conninfo`, one per new owner whose
    home shard is one of `shards` (those the database holds); return them in n order."""
    operator = str(uuid.uuid4())
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS bench_wallets ("
            " n int PRIMARY KEY, wallet_id uuid NOT NULL, owner_id uuid NOT NULL)"
        )
        start = conn.execute("SELECT coalesce(max(n), 0) FROM bench_wallets").fetchone()
        first = int(start[0]) + 1 if start else 1
        owners = owners_on(shards, count)
        for low in range(first, first + count, BATCH):
            high = min(low + BATCH, first + count) - 1
            with conn.transaction():
                conn.execute(
                    "INSERT INTO bench_wallets (n, wallet_id, owner_id)"
                    " SELECT n, (ledger_create_wallet(owner, 'bench-open-' || n, 'bench', %s)"
                    "            -> 'wallet' ->> 'id')::uuid, owner"
                    "   FROM unnest(%s::int[], %s::uuid[]) AS o (n, owner)",
                    (
                        CURRENCY,
                        list(range(low, high + 1)),
                        owners[low - first : high - first + 1],
                    ),
                )
                outcomes = conn.execute(
                    "SELECT ledger_adjust(%s, 'bench-fund-' || n, 'bench', wallet_id, %s, %s,"
                    "                     'benchmark funding') ->> 'outcome'"
                    "  FROM bench_wallets WHERE n BETWEEN %s AND %s",
                    (operator, FUNDING, CURRENCY, low, high),
                ).fetchall()
                refused = {row[0] for row in outcomes} - {"ok"}
                if refused:
                    raise RuntimeError(f"funding the seeded wallets failed: {refused}")
        rows = conn.execute(
            "SELECT n, wallet_id::text, owner_id::text FROM bench_wallets WHERE n >= %s ORDER BY n",
            (first,),
        ).fetchall()
    return [SeededWallet(n, wallet, owner, "") for n, wallet, owner in rows]


def mint_tokens(signing_key_path: Path, wallets: list[SeededWallet]) -> list[SeededWallet]:
    """One access token per owner, signed with the mesh's key (as the user service would)."""
    issuer = JwtIssuer(
        SigningKey.from_pem_file(signing_key_path),
        issuer="wallet-mesh",
        audience="wallet-mesh",
        lifetime_seconds=TOKEN_SECONDS,
    )
    now = datetime.now(UTC)
    return [
        SeededWallet(w.n, w.wallet_id, w.owner_id, issuer.issue(w.owner_id, USER_ROLES, now).token)
        for w in wallets
    ]
