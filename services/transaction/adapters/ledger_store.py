"""The ledger in PostgreSQL: each movement of money is one call of a database
function (services/transaction/sql/), i.e. one round trip and one
transaction; reads are plain queries. Straight through psycopg's pool, in
autocommit: this is the hot path, and SQLAlchemy's layers cost more CPU per call
than the round trip itself (measured with `make bench`).

Every statement here is safe to run twice, so each is retried on a fresh
connection when its connection is lost (a PostgreSQL restart): reads; movements,
which carry their idempotency key (a retry of one that committed before the
connection died returns the stored result: one transaction, never two); and the
sweeps without a key, which act on the database's current state only
(`ledger_settle_external` settles a pending payment once, `ledger_expire_holds`
expires what is due, `ledger_claim_due_external` pushes back a look).

Each call goes to the database of the shard it concerns (adapters/shards.py): a
caller's own wallets, keys and history to their home shard's; a call about a hold or
a transaction to the database its id names; sweeps, the reconciler's queue and the
audit to every database. A movement between wallets of two databases is not built yet
(issue 14: the saga); it is refused, before anything is written."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, cast

import psycopg

from services.runtime.db import DriverPool, driver_conninfo
from services.runtime.money import Money
from services.transaction.adapters.codec import (
    hold_from_json,
    result_from_json,
    transaction_from_json,
    wallet_from_json,
)
from services.transaction.adapters.ledger_databases import LedgerDatabases, ShardPool
from services.transaction.adapters.ledger_sql import (
    SHOWN_ID,
    TRANSACTION_BY_ID,
    TRANSACTION_JSON_SQL,
    WALLET_JSON_SQL,
    fetch_one,
    fetch_rows,
)
from services.transaction.adapters.leg_samples import sample_legs
from services.transaction.adapters.saga import LegCourier, LegSettings, ignore_leg
from services.transaction.adapters.shards import ShardMap
from services.transaction.adapters.transfer_groups import (
    TRANSFER_SQL,
    TransferGroups,
    ignore_group,
)
from services.transaction.domain.audit_across import across_databases
from services.transaction.domain.model import (
    BalanceAt,
    HistoryCursor,
    HistoryFilter,
    Hold,
    IdempotencyKey,
    LedgerOutcome,
    LedgerResult,
    Transaction,
    TransactionStatus,
    TransactionType,
    Wallet,
    WalletStatus,
)
from services.transaction.domain.ports import AuditFinding, DueExternal, TransferItem

# Composed from the constant fragments above only; every value is a bind parameter.
# The caller's history: for each of their wallets, the newest matching rows as
# source and as destination (each branch walks its own index), merged, then cut
# to one page. A plain "source IN (...) OR destination IN (...)" scans the table.
_HISTORY_BRANCH = f"""
        (SELECT t.id, t.created_at, {SHOWN_ID} AS shown_id FROM transactions t
          WHERE t.{{side}}_account_id = w.id
            AND (CAST(:type AS text) IS NULL OR t.type = CAST(:type AS text))
            AND (CAST(:status AS text) IS NULL OR t.status = CAST(:status AS text))
            AND (CAST(:start AS timestamptz) IS NULL OR t.created_at >= CAST(:start AS timestamptz))
            AND (CAST(:end AS timestamptz) IS NULL OR t.created_at < CAST(:end AS timestamptz))
            AND (CAST(:after_time AS timestamptz) IS NULL
                 OR (t.created_at, {SHOWN_ID})
                    < (CAST(:after_time AS timestamptz), CAST(:after_id AS uuid)))
          ORDER BY t.created_at DESC, {SHOWN_ID} DESC
          LIMIT :limit)"""

_HISTORY = f"""
    SELECT {TRANSACTION_JSON_SQL} AS doc
      FROM (SELECT DISTINCT hit.id, hit.created_at, hit.shown_id
              FROM accounts w
              CROSS JOIN LATERAL ({_HISTORY_BRANCH.format(side="source")}
                                  UNION ALL {_HISTORY_BRANCH.format(side="destination")}) hit
             WHERE w.owner_id = CAST(:owner AS uuid)
               AND (CAST(:wallet AS uuid) IS NULL OR w.id = CAST(:wallet AS uuid))
             ORDER BY hit.created_at DESC, hit.shown_id DESC
             LIMIT :limit) page
      JOIN transactions t ON t.id = page.id
      LEFT JOIN accounts sa ON sa.id = t.source_account_id
      LEFT JOIN accounts da ON da.id = t.destination_account_id
     ORDER BY page.created_at DESC, page.shown_id DESC
    """


_WALLET_BY_ID = f"SELECT {WALLET_JSON_SQL} FROM accounts a WHERE a.id = CAST(:id AS uuid)"
# A wallet's balance at an instant: its last posting made by then (one lookup of
# postings_account_created_idx, revision 0008), and the holds active then (a hold's row
# changes once, when it ends: its updated_at is when it stopped holding).
BALANCE_AT_SQL = (
    f"SELECT json_build_object('wallet', {WALLET_JSON_SQL},"
    " 'balance', coalesce((SELECT p.balance_after FROM postings AS p"
    "   WHERE p.account_id = a.id AND p.created_at <= CAST(:at AS timestamptz)"
    "   ORDER BY p.created_at DESC, p.account_version DESC LIMIT 1), 0),"
    " 'held', coalesce((SELECT sum(h.amount) FROM holds AS h"
    "   WHERE h.account_id = a.id AND h.created_at <= CAST(:at AS timestamptz)"
    "     AND (h.status = 'active' OR h.updated_at > CAST(:at AS timestamptz))), 0))"
    " FROM accounts a WHERE a.id = CAST(:id AS uuid) AND a.kind = 'user_wallet'"
)
_WALLETS_OF_OWNER = (
    f"SELECT {WALLET_JSON_SQL} FROM accounts a"
    " WHERE a.owner_id = CAST(:owner AS uuid) ORDER BY a.created_at, a.id"
)
_WALLET_OF_OWNER = (
    f"SELECT {WALLET_JSON_SQL} FROM accounts a"
    " WHERE a.owner_id = CAST(:owner AS uuid) AND a.currency = :currency"
)


# A transaction as a leg: which, its other leg, its payer's wallet, its status.
_LEG_OF = """SELECT leg, counterpart_id::text AS counterpart_id, status,
    CASE WHEN leg = 'debit' THEN source_account_id ELSE counterparty_account_id END::text
        AS payer
    FROM transactions WHERE id = CAST(:id AS uuid)"""


def _key_params(owner_id: str, key: IdempotencyKey) -> dict[str, Any]:
    return {"owner": owner_id, "key": key.key, "hash": key.request_hash}


# The leg arguments of a movement within one database: none.
_WITHIN_ONE_DATABASE: dict[str, Any] = {"payee": None, "first_attempt": None}


def held_shards(database_url: str) -> frozenset[int]:
    """The logical shards a database holds (none: it holds none yet)."""
    with psycopg.connect(driver_conninfo(database_url), autocommit=True) as connection:
        row = connection.execute("SELECT ledger_held_shards()").fetchone()
    return frozenset(row[0] if row else ())


def claim_shards(database_url: str, shards: frozenset[int]) -> frozenset[int]:
    """Has a database that holds no shards yet hold these; what it holds."""
    with psycopg.connect(driver_conninfo(database_url), autocommit=True) as connection:
        row = connection.execute("SELECT ledger_claim_shards(%s)", (sorted(shards),)).fetchone()
    return frozenset(row[0] if row else ())


# What a call answers when a row it names is not in the database it went to (which the
# shard may just have left).
_NOT_FOUND = frozenset(
    {
        LedgerOutcome.WALLET_NOT_FOUND,
        LedgerOutcome.DESTINATION_NOT_FOUND,
        LedgerOutcome.HOLD_NOT_FOUND,
        LedgerOutcome.TRANSACTION_NOT_FOUND,
    }
)


def _document(answer: Any) -> dict[str, Any]:
    """A ledger function's answer (jsonb: a dict already; json text: parsed)."""
    assert answer is not None, "every ledger function returns a result"
    return cast(dict[str, Any], answer if isinstance(answer, dict) else json.loads(answer))


def _outcomes(document: Any) -> list[dict[str, Any]]:
    """A batch's answer: one outcome per transfer."""
    return cast(
        list[dict[str, Any]], document if isinstance(document, list) else json.loads(document)
    )


# The movements that can be two legs in two databases (the others stay in one).
_LEG_TYPES = frozenset({TransactionType.TRANSFER, TransactionType.PAYMENT, TransactionType.REFUND})


class SqlLedgerStore:
    def __init__(
        self,
        databases: ShardMap[DriverPool],
        legs: LegSettings | None = None,
        observe_leg: Callable[[str, str], None] = ignore_leg,
        transfer_groups: int = 0,
        observe_group: Callable[[int], None] = ignore_group,
    ) -> None:
        # Autocommit connections: each ledger function commits by itself, with no
        # BEGIN/COMMIT round trips around it.
        self._databases = LedgerDatabases(databases)
        self._shards = self._databases.shards
        self._legs = LegCourier(self._databases, legs or LegSettings(), observe_leg)
        # Single transfers in groups, `transfer_groups` calls in flight per database
        # (0: each its own call).
        self._groups = (
            {
                database: TransferGroups(database, transfer_groups, observe_group)
                for database in self._shards.databases()
            }
            if transfer_groups
            else {}
        )

    @property
    def legs(self) -> LegCourier:
        """The courier of movements between databases (its relay runs in every
        instance)."""
        return self._legs

    async def refresh_shards(self) -> None:
        """Routes by what the databases hold now (ShardMapError unless they hold every
        shard once)."""
        await self._databases.refresh()

    def _of(self, id_: str) -> ShardPool:
        return self._shards.for_id(id_)

    async def _ledger(
        self,
        near_id: str,
        sql: str,
        params: dict[str, Any],
        routed: int | None = None,
    ) -> dict[str, Any]:
        """A ledger function's answer, from the database of near_id's shard. One that
        found no wallet, hold or transaction there (or failed) is checked: if that
        database holds other shards than the map gave it, or shards moved since the call
        was `routed` (the count of moves when it decided which database each of its
        wallets is in), ShardGone: a fault the caller retries."""
        document = await self._checked(
            near_id,
            lambda database: fetch_one(database, sql, params),
            routed,
            lambda document: _document(document).get("outcome") in _NOT_FOUND,
        )
        return _document(document)

    async def _checked(
        self,
        near_id: str,
        fetch: Callable[[ShardPool], Awaitable[Any]],
        routed: int | None,
        found_nothing: Callable[[Any], bool],
    ) -> Any:
        """What `fetch` reads from the database of near_id's shard; ShardGone if it
        `found_nothing` (or failed) while that database holds other shards than the map
        gave it, or shards moved since the call was routed."""
        routed = self._databases.moves if routed is None else routed
        database = self._of(near_id)
        try:
            answer = await fetch(database)
        except psycopg.OperationalError:
            raise
        except psycopg.DatabaseError:
            # A function that met rows of a shard half gone (a stale map) may fail where
            # it would refuse: a fault then, not a bug.
            await self._databases.confirm_held(database, routed)
            raise
        if found_nothing(answer):
            await self._databases.confirm_held(database, routed)
        return answer

    async def _call(
        self,
        near_id: str,
        sql: str,
        params: dict[str, Any],
        routed: int | None = None,
    ) -> LedgerResult:
        return result_from_json(await self._ledger(near_id, sql, params, routed))

    async def create_wallet(
        self, owner_id: str, key: IdempotencyKey, currency: str
    ) -> LedgerResult:
        return await self._call(
            owner_id,
            "SELECT ledger_create_wallet(CAST(:owner AS uuid), :key, :hash, :currency)",
            {**_key_params(owner_id, key), "currency": currency},
        )

    async def transfer(
        self,
        owner_id: str,
        key: IdempotencyKey,
        source_wallet_id: str,
        destination_wallet_id: str,
        money: Money,
        memo: str,
        metadata: dict[str, str],
    ) -> LedgerResult:
        routed = self._databases.moves
        if not self._shards.same_database(owner_id, source_wallet_id):
            # A user's wallets are on their home shard: this one is not theirs.
            return LedgerResult(outcome=LedgerOutcome.WALLET_NOT_FOUND)
        try:
            leg = await self._leg_to(owner_id, destination_wallet_id)
        except Exception as error:
            return await self._stored_or(error, owner_id, owner_id, key)
        if leg is None:
            return LedgerResult(outcome=LedgerOutcome.DESTINATION_NOT_FOUND)
        params: dict[str, Any] = {
            **_key_params(owner_id, key),
            "source": source_wallet_id,
            "destination": destination_wallet_id,
            "amount": money.amount,
            "currency": money.currency,
            "memo": memo,
            "metadata": json.dumps(metadata),
            **leg,
        }
        document = await self._checked(
            owner_id,
            lambda database: self._transfer_in(database, params),
            routed,
            lambda document: _document(document).get("outcome") in _NOT_FOUND,
        )
        return await self._answered(_document(document))

    async def _transfer_in(self, database: ShardPool, params: dict[str, Any]) -> Any:
        """ledger_transfer's answer: in a group with the others waiting for that
        database (adapters/transfer_groups.py), or alone."""
        groups = self._groups.get(database)
        if groups is None:
            return await fetch_one(database, TRANSFER_SQL, params)
        return await groups.transfer(params)

    async def _leg_to(self, near_id: str, wallet_id: str) -> dict[str, Any] | None:
        """The arguments for a movement from near_id's database to the wallet: for a
        wallet of another database, the payee as that database has it and when the relay
        may first try its credit leg; none for a wallet of the same one. None if there
        is no such wallet there."""
        if self._shards.same_database(near_id, wallet_id):
            return _WITHIN_ONE_DATABASE
        payee = await self._legs.payee(wallet_id)
        if payee is None:
            return None
        return {
            "payee": json.dumps(payee),
            "first_attempt": self._legs.first_attempt_at(datetime.now(UTC)),
        }

    async def _stored_or(
        self, error: Exception, near_id: str, owner_id: str, key: IdempotencyKey
    ) -> LedgerResult:
        """When the other database cannot be reached: the stored answer of this request,
        if it was made before (a retry needs nothing from there), from the database its
        key is kept in (near_id's); else the error."""
        stored = await self._replay_in(near_id, owner_id, key)
        if stored is None:
            raise error
        return stored

    async def _answered(self, document: dict[str, Any]) -> LedgerResult:
        """A movement's answer, after (a while) delivering its credit leg if it has one
        on its way to another database (a replayed answer: as it stands now)."""
        return await self._delivered(result_from_json(document), document.get("credit_leg"))

    async def _delivered(
        self, result: LedgerResult, credit_leg: dict[str, Any] | None = None
    ) -> LedgerResult:
        """A movement whose debit leg is on its way to another database, as it stands
        after waiting (a while) for its delivery; any other result as it is."""
        transaction = result.transaction
        if transaction is None or transaction.status is not TransactionStatus.PENDING:
            return result
        if transaction.type not in _LEG_TYPES:
            return result  # a top-up or withdrawal: its provider settles it
        settled = await self._legs.deliver_within(transaction.id, credit_leg)
        if settled is None and credit_leg is None:
            # Settled by someone else meanwhile, or still on its way: as it is now.
            settled = await self.transaction(transaction.id)
        return result if settled is None else replace(result, transaction=settled)

    async def transfer_batch(self, owner_id: str, items: list[TransferItem]) -> list[LedgerResult]:
        routed = self._databases.moves
        # Each destination of another database, as it has it (None: no such wallet
        # there, which the batch answers for that transfer).
        elsewhere = sorted(
            {
                item.destination_wallet_id
                for item in items
                if not self._shards.same_database(owner_id, item.destination_wallet_id)
            }
        )
        payees = dict(
            zip(
                elsewhere,
                await asyncio.gather(*(self._legs.payee(wallet) for wallet in elsewhere)),
                strict=True,
            )
        )
        payload = [
            {
                "key": item.key.key,
                "hash": item.key.request_hash,
                "source": item.source_wallet_id,
                "destination": item.destination_wallet_id,
                "amount": item.money.amount,
                "currency": item.money.currency,
                "memo": item.memo,
                "metadata": item.metadata,
            }
            | (
                {"payee": payees[item.destination_wallet_id]}
                if payees.get(item.destination_wallet_id)
                else {}
            )
            for item in items
        ]
        batch = {
            "owner": owner_id,
            "items": json.dumps(payload),
            "first_attempt": self._legs.first_attempt_at(datetime.now(UTC)),
        }
        document = await self._checked(
            owner_id,
            lambda database: fetch_one(
                database,
                "SELECT ledger_transfer_batch(CAST(:owner AS uuid), CAST(:items AS jsonb),"
                " CAST(:first_attempt AS timestamptz))",
                batch,
            ),
            routed,
            lambda document: any(
                outcome.get("outcome") in _NOT_FOUND for outcome in _outcomes(document)
            ),
        )
        outcomes = _outcomes(document)
        # The legs to other databases delivered side by side, each within the wait.
        return list(await asyncio.gather(*(self._answered(outcome) for outcome in outcomes)))

    async def create_hold(
        self,
        owner_id: str,
        key: IdempotencyKey,
        wallet_id: str,
        merchant_wallet_id: str,
        money: Money,
        expires_at: datetime,
        memo: str,
    ) -> LedgerResult:
        routed = self._databases.moves
        if not self._shards.same_database(owner_id, wallet_id):
            return LedgerResult(outcome=LedgerOutcome.WALLET_NOT_FOUND)
        leg = await self._leg_to(owner_id, merchant_wallet_id)
        if leg is None:
            return LedgerResult(outcome=LedgerOutcome.DESTINATION_NOT_FOUND)
        return await self._call(
            owner_id,
            "SELECT ledger_create_hold(CAST(:owner AS uuid), :key, :hash, CAST(:wallet AS uuid),"
            " CAST(:merchant AS uuid), :amount, :currency, :expires_at, :memo,"
            " CAST(:payee AS jsonb))",
            {
                **_key_params(owner_id, key),
                "wallet": wallet_id,
                "merchant": merchant_wallet_id,
                "amount": money.amount,
                "currency": money.currency,
                "expires_at": expires_at,
                "memo": memo,
                "payee": leg["payee"],
            },
            routed=routed,
        )

    async def capture_hold(
        self, owner_id: str, key: IdempotencyKey, hold_id: str, amount: int | None, now: datetime
    ) -> LedgerResult:
        routed = self._databases.moves
        leg = _WITHIN_ONE_DATABASE
        if not self._shards.same_database(owner_id, hold_id):
            # The merchant (the caller, if anyone may capture) is of another database
            # than the hold: the capture is a leg to the hold's merchant wallet.
            hold = await self.hold(hold_id)
            if hold is None:
                return LedgerResult(outcome=LedgerOutcome.HOLD_NOT_FOUND)
            try:
                to_merchant = await self._leg_to(hold_id, hold.merchant_wallet_id)
            except Exception as error:
                return await self._stored_or(error, hold_id, owner_id, key)
            if to_merchant is None:
                return LedgerResult(outcome=LedgerOutcome.NOT_OWNER)
            leg = to_merchant
        document = await self._ledger(
            hold_id,
            "SELECT ledger_capture_hold(CAST(:owner AS uuid), :key, :hash, CAST(:hold AS uuid),"
            " CAST(:amount AS bigint), :now, CAST(:payee AS jsonb),"
            " CAST(:first_attempt AS timestamptz))",
            {**_key_params(owner_id, key), "hold": hold_id, "amount": amount, "now": now, **leg},
            routed=routed,
        )
        return await self._answered(document)

    async def void_hold(self, owner_id: str, key: IdempotencyKey, hold_id: str) -> LedgerResult:
        return await self._call(
            hold_id,
            "SELECT ledger_void_hold(CAST(:owner AS uuid), :key, :hash, CAST(:hold AS uuid))",
            {**_key_params(owner_id, key), "hold": hold_id},
        )

    async def refund(
        self,
        owner_id: str,
        key: IdempotencyKey,
        transaction_id: str,
        amount: int | None,
        reason: str,
        is_admin: bool,
    ) -> LedgerResult:
        routed = self._databases.moves
        leg = _WITHIN_ONE_DATABASE
        on_its_way = False
        if len(self._shards.databases()) > 1:
            rows = await self._databases.found(
                transaction_id,
                lambda database: fetch_rows(database, _LEG_OF, {"id": transaction_id}),
            )
            named = rows[0] if rows else None
            if (
                named
                and named.leg
                and not self._shards.same_database(transaction_id, named.counterpart_id)
            ):
                # A movement between two databases: refunded from the payee's, on its
                # credit leg, back through the saga to the payer's wallet.
                if named.leg == "debit" and named.status == "failed":
                    return LedgerResult(outcome=LedgerOutcome.NOT_REFUNDABLE)
                # (A debit leg still pending may be credited already, its settling late:
                # the credit leg's database knows.)
                on_its_way = named.leg == "debit" and named.status == "pending"
                credit_id = transaction_id if named.leg == "credit" else named.counterpart_id
                try:
                    to_payer = await self._leg_to(credit_id, named.payer)
                except Exception as error:
                    return await self._stored_or(error, credit_id, owner_id, key)
                if to_payer is None:
                    return LedgerResult(outcome=LedgerOutcome.DESTINATION_NOT_FOUND)
                transaction_id, leg = credit_id, to_payer
        document = await self._ledger(
            transaction_id,
            "SELECT ledger_refund(CAST(:owner AS uuid), :key, :hash, CAST(:txn AS uuid),"
            " CAST(:amount AS bigint), :reason, :is_admin, CAST(:payee AS jsonb),"
            " CAST(:first_attempt AS timestamptz))",
            {
                **_key_params(owner_id, key),
                "txn": transaction_id,
                "amount": amount,
                "reason": reason,
                "is_admin": is_admin,
                **leg,
            },
            routed=routed,
        )
        refunded = await self._answered(document)
        if on_its_way and refunded.outcome is LedgerOutcome.TRANSACTION_NOT_FOUND:
            # Not credited yet: nothing to refund until it arrives.
            return LedgerResult(outcome=LedgerOutcome.NOT_REFUNDABLE)
        return refunded

    async def adjust(
        self, owner_id: str, key: IdempotencyKey, wallet_id: str, money: Money, reason: str
    ) -> LedgerResult:
        return await self._call(
            wallet_id,
            "SELECT ledger_adjust(CAST(:owner AS uuid), :key, :hash, CAST(:wallet AS uuid),"
            " :amount, :currency, :reason)",
            {
                **_key_params(owner_id, key),
                "wallet": wallet_id,
                "amount": money.amount,
                "currency": money.currency,
                "reason": reason,
            },
        )

    async def set_wallet_status(
        self, owner_id: str, key: IdempotencyKey, wallet_id: str, status: WalletStatus, reason: str
    ) -> LedgerResult:
        return await self._call(
            wallet_id,
            "SELECT ledger_set_wallet_status(CAST(:owner AS uuid), :key, :hash,"
            " CAST(:wallet AS uuid), :status, :reason)",
            {
                **_key_params(owner_id, key),
                "wallet": wallet_id,
                "status": status.value,
                "reason": reason,
            },
        )

    async def close_wallet(
        self, owner_id: str, key: IdempotencyKey, wallet_id: str
    ) -> LedgerResult:
        return await self._call(
            owner_id,
            "SELECT ledger_close_wallet(CAST(:owner AS uuid), :key, :hash, CAST(:wallet AS uuid))",
            {**_key_params(owner_id, key), "wallet": wallet_id},
        )

    async def begin_external(
        self,
        owner_id: str,
        key: IdempotencyKey,
        kind: TransactionType,
        wallet_id: str,
        money: Money,
        provider: str,
        instrument: str,
        first_check_at: datetime,
    ) -> LedgerResult:
        return await self._call(
            owner_id,
            "SELECT ledger_begin_external(CAST(:owner AS uuid), :key, :hash, :type,"
            " CAST(:wallet AS uuid), :amount, :currency, :provider, :instrument, :first_check)",
            {
                **_key_params(owner_id, key),
                "type": kind.value,
                "wallet": wallet_id,
                "amount": money.amount,
                "currency": money.currency,
                "provider": provider,
                "instrument": instrument,
                "first_check": first_check_at,
            },
        )

    async def release_unsent_external(
        self, owner_id: str, key: IdempotencyKey, kind: TransactionType, wallet_id: str
    ) -> bool:
        released = await self._checked(
            owner_id,
            lambda database: fetch_one(
                database,
                "SELECT ledger_release_unsent_external(CAST(:owner AS uuid), :key, :hash, :type)",
                {**_key_params(owner_id, key), "type": kind.value},
            ),
            None,
            lambda released: not released,
        )
        return bool(released)

    async def settle_external(
        self, transaction_id: str, succeeded: bool, failure_code: str, failure_message: str
    ) -> LedgerResult:
        return await self._call(
            transaction_id,
            "SELECT ledger_settle_external(CAST(:txn AS uuid), :succeeded, :code, :message)",
            {
                "txn": transaction_id,
                "succeeded": succeeded,
                "code": failure_code or None,
                "message": failure_message or None,
            },
        )

    async def claim_due_external(
        self, now: datetime, limit: int, base_seconds: float, max_seconds: float
    ) -> list[DueExternal]:
        rows = [
            row
            for database in self._shards.databases()
            for row in await fetch_rows(
                database,
                "SELECT * FROM ledger_claim_due_external(:now, :limit, :base, :max)",
                {"now": now, "limit": limit, "base": base_seconds, "max": max_seconds},
            )
        ]
        return [
            DueExternal(
                transaction_id=str(row.transaction_id),
                kind=TransactionType(row.type),
                provider=row.provider,
                instrument=row.instrument,
                amount=row.amount,
                currency=row.currency,
                checks=row.checks,
                created_at=row.created_at,
            )
            for row in rows
        ]

    async def external_backlog(self, now: datetime) -> tuple[int, float]:
        pending, oldest = 0, 0.0
        for database in self._shards.databases():
            rows = await fetch_rows(
                database,
                "SELECT count(*) AS n, coalesce(extract(epoch FROM :now - min(created_at)), 0)"
                " AS age FROM external_payments WHERE pending",
                {"now": now},
            )
            pending, oldest = pending + int(rows[0].n), max(oldest, float(rows[0].age))
        return pending, oldest

    async def replay(self, owner_id: str, key: IdempotencyKey) -> LedgerResult | None:
        return await self._replay_in(owner_id, owner_id, key)

    async def _replay_in(
        self, near_id: str, owner_id: str, key: IdempotencyKey
    ) -> LedgerResult | None:
        """The stored answer of this request, from the database its key is kept in
        (near_id's)."""
        rows = await self._databases.found(
            near_id,
            lambda database: fetch_rows(
                database,
                "SELECT operation, request_hash, result FROM idempotency_keys"
                " WHERE owner_id = CAST(:owner AS uuid) AND idempotency_key = :key",
                {"owner": owner_id, "key": key.key},
            ),
        )
        if not rows:
            return None
        row = rows[0]
        # The hash covers the operation (the RPC's name) and the request; the stored
        # operation is the SQL function's own word for it.
        if row.request_hash != key.request_hash:
            return LedgerResult(outcome=LedgerOutcome.KEY_MISMATCH)
        # A movement stored while on its way to another database: where it is now.
        return await self._delivered(result_from_json(row.result, outcome=LedgerOutcome.REPLAYED))

    async def wallet(self, wallet_id: str) -> Wallet | None:
        document = await self._databases.found(
            wallet_id, lambda database: fetch_one(database, _WALLET_BY_ID, {"id": wallet_id})
        )
        return wallet_from_json(document) if document else None

    async def balance_at(self, wallet_id: str, at: datetime) -> BalanceAt | None:
        document = await self._databases.found(
            wallet_id,
            lambda database: fetch_one(database, BALANCE_AT_SQL, {"id": wallet_id, "at": at}),
        )
        if not document:
            return None
        return BalanceAt(
            wallet_from_json(document["wallet"]),
            at,
            int(document["balance"]),
            int(document["held"]),
        )

    async def wallets_of(self, owner_id: str) -> list[Wallet]:
        rows = await self._databases.found(
            owner_id, lambda database: fetch_rows(database, _WALLETS_OF_OWNER, {"owner": owner_id})
        )
        return [wallet_from_json(row[0]) for row in rows]

    async def wallet_of(self, owner_id: str, currency: str) -> Wallet | None:
        document = await self._databases.found(
            owner_id,
            lambda database: fetch_one(
                database, _WALLET_OF_OWNER, {"owner": owner_id, "currency": currency}
            ),
        )
        return wallet_from_json(document) if document else None

    async def transaction(self, transaction_id: str) -> Transaction | None:
        document = await self._databases.found(
            transaction_id,
            lambda database: fetch_one(database, TRANSACTION_BY_ID, {"id": transaction_id}),
        )
        return transaction_from_json(document) if document else None

    async def hold(self, hold_id: str) -> Hold | None:
        document = await self._databases.found(
            hold_id,
            lambda database: fetch_one(
                database,
                "SELECT json_build_object('id', h.id, 'account_id', h.account_id,"
                " 'merchant_account_id', h.merchant_account_id, 'currency', h.currency,"
                " 'amount', h.amount, 'captured_amount', h.captured_amount, 'status', h.status,"
                " 'expires_at', h.expires_at, 'memo', h.memo,"
                " 'capture_transaction_id', h.capture_transaction_id, 'created_by', h.created_by,"
                " 'created_at', h.created_at) FROM holds h WHERE h.id = CAST(:id AS uuid)",
                {"id": hold_id},
            ),
        )
        return hold_from_json(document) if document else None

    async def history(
        self, owner_id: str, filters: HistoryFilter, after: HistoryCursor | None, limit: int
    ) -> list[Transaction]:
        params = {
            "owner": owner_id,
            "wallet": filters.wallet_id,
            "type": filters.type.value if filters.type else None,
            "status": filters.status.value if filters.status else None,
            "start": filters.start,
            "end": filters.end,
            "after_time": after.created_at if after else None,
            "after_id": after.transaction_id if after else None,
            "limit": limit,
        }
        rows = await self._databases.found(
            owner_id, lambda database: fetch_rows(database, _HISTORY, params)
        )
        return [transaction_from_json(row[0]) for row in rows]

    async def expire_holds(self, now: datetime, limit: int) -> list[tuple[str, str]]:
        rows = [
            row
            for database in self._shards.databases()
            for row in await fetch_rows(
                database,
                "SELECT account_id, owner_id FROM ledger_expire_holds(:now, :limit)",
                {"now": now, "limit": limit},
            )
        ]
        return [(str(row.account_id), str(row.owner_id)) for row in rows]

    async def audit(self) -> list[AuditFinding]:
        """Every database's invariants (a subject names its database when there are
        several), then those of the movements between them."""
        findings = []
        databases = self._shards.databases()
        for number, database in enumerate(databases, start=1):
            where = f"database {number}: " if len(databases) > 1 else ""
            rows = await fetch_rows(database, "SELECT * FROM ledger_audit()", {})
            findings += [
                AuditFinding(r.check_name, where + r.subject, r.expected, r.actual) for r in rows
            ]
        if len(databases) > 1:
            # Two rounds, one database after the other (domain/audit_across.py says why).
            first = [await sample_legs(database) for database in databases]
            second = [await sample_legs(database) for database in databases]
            held = [shards for _, shards in self._shards.held()]
            findings += across_databases(held, first, second)
        return findings
