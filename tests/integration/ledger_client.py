"""The test client of the ledger's SQL functions, shared by every test of them: each call
the way the transaction service makes it (psycopg, one statement, an idempotency key and a
request hash per mutating call), plus the reads a test needs to check what was written."""

from __future__ import annotations

import hashlib
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

# Every table a ledger function writes (emptied between tests; compared by snapshot()).
TABLES = (
    "accounts",
    "holds",
    "transactions",
    "postings",
    "idempotency_keys",
    "external_payments",
    "ledger_outbox",
    "ledger_refused_legs",
)

# The operator (an admin's id) that funds wallets by adjustment.
OPERATOR = uuid.UUID("00000000-0000-0000-0000-00000000000f")
PROVIDER = "sandbox"

Result = dict[str, Any]


def empty_ledger(conninfo: str) -> None:
    """TRUNCATE is refused by triggers; a superuser in replica mode fires none."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("SET session_replication_role = replica")
        conn.execute("TRUNCATE " + ", ".join(TABLES))


def request_hash(*parts: object) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()


class LedgerClient:
    """Calls the ledger's functions the way the service does; every mutating call takes a
    fresh idempotency key unless given one, and a request hash derived from its arguments."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn

    def call(self, function: str, *args: object) -> Any:
        statement = sql.SQL("SELECT {}({})").format(
            sql.Identifier(function), sql.SQL(", ").join(sql.Placeholder() * len(args))
        )
        row = self.conn.execute(statement, args).fetchone()
        assert row is not None
        return row[0]

    def mutate(
        self,
        function: str,
        owner: uuid.UUID,
        *args: object,
        key: str | None = None,
        unhashed: int = 0,
    ) -> Result:
        """Calls `function`; the last `unhashed` arguments (a clock) are not the request."""
        key = key if key is not None else str(uuid.uuid4())
        hashed = args[: len(args) - unhashed]
        result: Result = self.call(function, owner, key, request_hash(function, *hashed), *args)
        return result

    def create_wallet(self, owner: uuid.UUID, currency: str = "EUR", **kw: Any) -> Result:
        return self.mutate("ledger_create_wallet", owner, currency, **kw)

    def new_wallet(self, owner: uuid.UUID, currency: str = "EUR") -> str:
        """A wallet that must be created: its id."""
        result = self.create_wallet(owner, currency)
        assert result["outcome"] == "ok", result
        wallet_id: str = result["wallet"]["id"]
        return wallet_id

    def transfer(
        self,
        owner: uuid.UUID,
        source: str,
        destination: str,
        amount: int,
        currency: str = "EUR",
        memo: str | None = None,
        metadata: dict[str, Any] | None = None,
        **kw: Any,
    ) -> Result:
        return self.mutate(
            "ledger_transfer",
            owner,
            uuid.UUID(source),
            uuid.UUID(destination),
            amount,
            currency,
            memo,
            Jsonb(metadata or {}),
            **kw,
        )

    def create_hold(
        self,
        owner: uuid.UUID,
        wallet: str,
        merchant_wallet: str,
        amount: int,
        currency: str = "EUR",
        expires_at: datetime | None = None,
        memo: str | None = None,
        **kw: Any,
    ) -> Result:
        expires_at = expires_at or datetime.now(UTC) + timedelta(hours=1)
        return self.mutate(
            "ledger_create_hold",
            owner,
            uuid.UUID(wallet),
            uuid.UUID(merchant_wallet),
            amount,
            currency,
            expires_at,
            memo,
            **kw,
        )

    def capture_hold(
        self,
        owner: uuid.UUID,
        hold: str,
        amount: int | None,
        now: datetime | None = None,
        **kw: Any,
    ) -> Result:
        now = now or datetime.now(UTC)
        return self.mutate(
            "ledger_capture_hold", owner, uuid.UUID(hold), amount, now, unhashed=1, **kw
        )

    def void_hold(self, owner: uuid.UUID, hold: str, **kw: Any) -> Result:
        return self.mutate("ledger_void_hold", owner, uuid.UUID(hold), **kw)

    def expire_holds(self, now: datetime, limit: int = 100) -> int:
        """How many holds were released (one row per hold, with its payer)."""
        rows = self.conn.execute(
            "SELECT hold_id, account_id, owner_id FROM ledger_expire_holds(%s, %s)", (now, limit)
        ).fetchall()
        return len(rows)

    def refund(
        self,
        owner: uuid.UUID,
        transaction: str,
        amount: int | None,
        reason: str | None = "refund",
        is_admin: bool = False,
        **kw: Any,
    ) -> Result:
        return self.mutate(
            "ledger_refund", owner, uuid.UUID(transaction), amount, reason, is_admin, **kw
        )

    def adjust(
        self,
        actor: uuid.UUID,
        wallet: str,
        amount: int,
        currency: str = "EUR",
        reason: str = "adjustment",
        **kw: Any,
    ) -> Result:
        return self.mutate(
            "ledger_adjust", actor, uuid.UUID(wallet), amount, currency, reason, **kw
        )

    def set_status(
        self, actor: uuid.UUID, wallet: str, status: str, reason: str = "ops", **kw: Any
    ) -> Result:
        return self.mutate(
            "ledger_set_wallet_status", actor, uuid.UUID(wallet), status, reason, **kw
        )

    def close_wallet(self, owner: uuid.UUID, wallet: str, **kw: Any) -> Result:
        return self.mutate("ledger_close_wallet", owner, uuid.UUID(wallet), **kw)

    # --- top-ups and withdrawals (external payments) ------------------------------------

    def begin(
        self,
        owner: uuid.UUID,
        kind: str,
        wallet: str,
        amount: int,
        currency: str = "EUR",
        *,
        instrument: str = "pm_card_visa",
        provider: str = PROVIDER,
        first_check_at: datetime | None = None,
        key: str | None = None,
        hash_extra: object = None,
    ) -> Result:
        """ledger_begin_external; the first check time is not part of the request hash."""
        key = key if key is not None else str(uuid.uuid4())
        first_check_at = first_check_at or datetime.now(UTC) + timedelta(minutes=5)
        digest = request_hash(kind, wallet, amount, currency, provider, instrument, hash_extra)
        result: Result = self.call(
            "ledger_begin_external",
            owner,
            key,
            digest,
            kind,
            uuid.UUID(wallet),
            amount,
            currency,
            provider,
            instrument,
            first_check_at,
        )
        return result

    def top_up(self, owner: uuid.UUID, wallet: str, amount: int, **kw: Any) -> Result:
        return self.begin(owner, "top_up", wallet, amount, **kw)

    def withdraw(self, owner: uuid.UUID, wallet: str, amount: int, **kw: Any) -> Result:
        return self.begin(owner, "withdrawal", wallet, amount, instrument="ba_123", **kw)

    def settle(
        self,
        transaction: str,
        succeeded: bool,
        code: str | None = None,
        message: str | None = None,
    ) -> Result:
        result: Result = self.call(
            "ledger_settle_external", uuid.UUID(transaction), succeeded, code, message
        )
        return result

    def claim(
        self, now: datetime, limit: int = 100, base: float = 10.0, cap: float = 3600.0
    ) -> list[dict[str, Any]]:
        cursor = self.conn.execute(
            "SELECT to_jsonb(c) FROM ledger_claim_due_external(%s, %s, %s, %s) AS c",
            (now, limit, base, cap),
        )
        return [row[0] for row in cursor.fetchall()]

    # --- reading -------------------------------------------------------------------------

    def scalar(self, query: str, *args: object) -> Any:
        row = self.conn.execute(query, args).fetchone()
        assert row is not None
        return row[0]

    def account(self, account_id: str) -> dict[str, Any]:
        cursor = self.conn.execute(
            "SELECT to_jsonb(a) FROM accounts AS a WHERE id = %s", (account_id,)
        )
        row = cursor.fetchone()
        assert row is not None
        account: dict[str, Any] = row[0]
        return account

    def balance(self, account_id: str) -> int:
        return int(self.account(account_id)["balance"])

    def money(self, account_id: str) -> tuple[int, int]:
        """(balance, held)."""
        account = self.account(account_id)
        return int(account["balance"]), int(account["held"])

    def settlement(self, wallet: str, currency: str = "EUR") -> str:
        """The settlement account of `currency` on `wallet`'s shard."""
        return str(
            self.scalar(
                "SELECT id FROM accounts WHERE kind = 'settlement' AND currency = %s"
                " AND ledger_shard_of(id) = ledger_shard_of(%s)",
                currency,
                wallet,
            )
        )

    def transaction(self, transaction_id: str) -> dict[str, Any]:
        txn: dict[str, Any] = self.scalar(
            "SELECT to_jsonb(t) FROM transactions AS t WHERE id = %s", transaction_id
        )
        return txn

    def external(self, transaction_id: str) -> dict[str, Any]:
        row: dict[str, Any] = self.scalar(
            "SELECT to_jsonb(e) FROM external_payments AS e WHERE transaction_id = %s",
            transaction_id,
        )
        return row

    def postings(self, transaction_id: str) -> list[tuple[str, int]]:
        rows = self.conn.execute(
            "SELECT account_id::text, amount FROM postings WHERE transaction_id = %s"
            " ORDER BY amount",
            (transaction_id,),
        ).fetchall()
        return [(account, int(amount)) for account, amount in rows]

    def audit(self) -> list[tuple[str, str, str, str]]:
        return self.conn.execute("SELECT * FROM ledger_audit()").fetchall()

    def snapshot(self) -> dict[str, Any]:
        """Everything a call could write, to show that a refusal wrote nothing."""
        state: dict[str, Any] = {
            table: self.conn.execute(
                sql.SQL(
                    "SELECT coalesce(jsonb_agg(to_jsonb(t) ORDER BY t::text), '[]') FROM {} t"
                ).format(sql.Identifier(table))
            ).fetchone()
            for table in TABLES
        }
        state["receipt_seq"] = self.conn.execute(
            "SELECT last_value, is_called FROM receipt_number_seq"
        ).fetchone()
        return state


def batch_item(
    source: str, destination: str, amount: int, key: str | None = None, currency: str = "EUR"
) -> dict[str, Any]:
    """An item as the service sends it; hashed like the single transfer's request."""
    key = key or str(uuid.uuid4())
    hashed = request_hash(
        "ledger_transfer",
        uuid.UUID(source),
        uuid.UUID(destination),
        amount,
        currency,
        None,
        Jsonb({}),
    )
    return {
        "key": key,
        "hash": hashed,
        "source": source,
        "destination": destination,
        "amount": amount,
        "currency": currency,
        "memo": None,
        "metadata": {},
    }


def transfer_batch(
    client: LedgerClient, owner: uuid.UUID, items: list[dict[str, Any]]
) -> list[Result]:
    results: list[Result] = client.call("ledger_transfer_batch", owner, Jsonb(items))
    return results


# The shard the tests of one shard's rules put everyone on (the last byte of a user id is
# their home shard); tests of movements between shards name their own.
HOME_SHARD = 7


def user(shard: int = HOME_SHARD) -> uuid.UUID:
    """A random user id whose home shard is `shard`."""
    return uuid.UUID(bytes=uuid.uuid4().bytes[:15] + bytes([shard]))


def funded_wallet(
    ledger: LedgerClient, owner: uuid.UUID, amount: int, currency: str = "EUR"
) -> str:
    """A new wallet of `owner` holding `amount`, adjusted in by the operator."""
    wallet_id = ledger.new_wallet(owner, currency)
    if amount:
        assert ledger.adjust(OPERATOR, wallet_id, amount, currency)["outcome"] == "ok"
    return wallet_id


def run_threads(count: int, target: Callable[[int], None]) -> list[BaseException]:
    errors: list[BaseException] = []

    def guarded(index: int) -> None:
        try:
            target(index)
        except BaseException as error:  # reported by the test
            errors.append(error)

    threads = [threading.Thread(target=guarded, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=240)
    assert not any(thread.is_alive() for thread in threads), "a thread hangs"
    return errors
