"""The gateway's payments in PostgreSQL, through a psycopg pool (autocommit;
explicit transactions where two statements must agree).

Every method is safe to run twice, so each is retried on a fresh connection when
its connection is lost (a PostgreSQL restart; services/runtime/db.py): reads; the
inserts, keyed by the payment id (ON CONFLICT, or checked under the charge's lock
for refunds: a second run finds the first one's row); the conditional updates of a
pending payment (a second run finds it already changed and answers it as it is);
a webhook event, recorded once by its id. Two answers can differ from the first
run's after a commit whose reply was lost, both on the safe side: `start_attempt`
counts one attempt more (more attempts only make the gateway keep a payment
pending rather than fail it), and `record`/`apply_event` say "unchanged" (the
ledger then learns the outcome from its reconciler instead of the notice)."""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row

from services.gateway.domain.model import NewPayment, Payment
from services.gateway.domain.providers import PaymentKind, PaymentStatus, ProviderPayment
from services.runtime.db import DriverPool, RetryingPool

_COLUMNS = """id::text, kind, provider, status, amount, currency::text, instrument, description,
    reference, failure_code, failure_message, charge_payment_id::text, attempts, created_at,
    updated_at"""

_INSERT = f"""
    INSERT INTO payments (id, kind, provider, amount, currency, instrument, description,
                          charge_payment_id)
    VALUES (%(id)s, %(kind)s, %(provider)s, %(amount)s, %(currency)s, %(instrument)s,
            %(description)s, %(charge_payment_id)s)
    ON CONFLICT (id) DO NOTHING
    RETURNING {_COLUMNS}"""

# Only a pending payment takes an answer; the reference is kept once known.
_RECORD = f"""
    UPDATE payments
       SET status = %(status)s,
           reference = CASE WHEN %(reference)s <> '' THEN %(reference)s ELSE reference END,
           failure_code = %(failure_code)s,
           failure_message = %(failure_message)s,
           updated_at = now()
     WHERE id = %(id)s AND status = 'pending'
    RETURNING {_COLUMNS}"""


def _payment(row: dict[str, Any]) -> Payment:
    return Payment(
        id=row["id"],
        kind=PaymentKind(row["kind"]),
        provider=row["provider"],
        status=PaymentStatus(row["status"]),
        amount=row["amount"],
        currency=row["currency"],
        instrument=row["instrument"],
        description=row["description"],
        reference=row["reference"],
        failure_code=row["failure_code"],
        failure_message=row["failure_message"],
        charge_payment_id=row["charge_payment_id"],
        attempts=row["attempts"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def _insert_params(payment: NewPayment) -> dict[str, Any]:
    return {
        "id": payment.id,
        "kind": payment.kind.value,
        "provider": payment.provider,
        "amount": payment.amount,
        "currency": payment.currency,
        "instrument": payment.instrument,
        "description": payment.description,
        "charge_payment_id": payment.charge_payment_id,
    }


def _answer_params(payment_id: str, answer: ProviderPayment) -> dict[str, Any]:
    failed = answer.status is PaymentStatus.FAILED
    return {
        "id": payment_id,
        "status": answer.status.value,
        "reference": answer.reference[:255],
        "failure_code": (answer.failure_code or "failed")[:100] if failed else "",
        "failure_message": answer.failure_message[:500] if failed else "",
    }


class SqlPaymentStore:
    def __init__(self, pool: DriverPool) -> None:
        self._pool = RetryingPool(pool)

    async def _one(self, connection: AsyncConnection[Any], sql: str, params: Any) -> Payment | None:
        async with connection.cursor(row_factory=dict_row) as cursor:
            await cursor.execute(sql, params)
            row = await cursor.fetchone()
        return _payment(row) if row is not None else None

    async def create(self, payment: NewPayment) -> tuple[Payment, bool]:
        return await self._pool.run(lambda connection: self._create(connection, payment))

    async def _create(
        self, connection: AsyncConnection[Any], payment: NewPayment
    ) -> tuple[Payment, bool]:
        created = await self._one(connection, _INSERT, _insert_params(payment))
        if created is not None:
            return created, True
        existing = await self._get(connection, payment.id)
        assert existing is not None
        return existing, False

    async def _get(self, connection: AsyncConnection[Any], payment_id: str) -> Payment | None:
        return await self._one(
            connection, f"SELECT {_COLUMNS} FROM payments WHERE id = %(id)s", {"id": payment_id}
        )

    async def create_refund(self, refund: NewPayment) -> tuple[Payment | None, str]:
        return await self._pool.run(lambda connection: self._create_refund(connection, refund))

    async def _create_refund(
        self, connection: AsyncConnection[Any], refund: NewPayment
    ) -> tuple[Payment | None, str]:
        async with connection.transaction():
            existing = await self._get(connection, refund.id)
            if existing is not None:
                return existing, "exists"
            # The charge's row lock serialises refunds of one charge.
            charge = await self._one(
                connection,
                f"SELECT {_COLUMNS} FROM payments WHERE id = %(id)s AND kind = 'charge' FOR UPDATE",
                {"id": refund.charge_payment_id},
            )
            if charge is None:
                return None, "charge_not_found"
            # Again under the charge's lock: a concurrent call with this id may have
            # inserted it meanwhile.
            existing = await self._get(connection, refund.id)
            if existing is not None:
                return existing, "exists"
            if charge.status is not PaymentStatus.SUCCEEDED:
                return None, "charge_not_refundable"
            cursor = await connection.execute(
                "SELECT coalesce(sum(amount), 0) FROM payments"
                " WHERE charge_payment_id = %(id)s AND status <> 'failed'",
                {"id": charge.id},
            )
            row = await cursor.fetchone()
            refunded = int(row[0]) if row else 0
            if refund.amount > charge.amount - refunded:
                return None, "amount_exceeds_refundable"
            created = await self._one(connection, _INSERT, _insert_params(refund))
            assert created is not None  # the id is free: checked under the charge's lock
            return created, "ok"

    async def get(self, payment_id: str) -> Payment | None:
        return await self._pool.run(lambda connection: self._get(connection, payment_id))

    async def _update_pending(self, payment_id: str, sql: str, params: dict[str, Any]) -> Payment:
        """The payment after a conditional update of it; as it is if nothing changed."""

        async def work(connection: AsyncConnection[Any]) -> Payment:
            found = await self._one(connection, sql, params) or await self._get(
                connection, payment_id
            )
            assert found is not None
            return found

        return await self._pool.run(work)

    async def start_attempt(self, payment_id: str) -> Payment:
        return await self._update_pending(
            payment_id,
            f"""UPDATE payments SET attempts = attempts + 1, updated_at = now()
                 WHERE id = %(id)s AND status = 'pending' RETURNING {_COLUMNS}""",
            {"id": payment_id},
        )

    async def fail_unsent(self, payment_id: str, code: str, message: str) -> Payment:
        return await self._update_pending(
            payment_id,
            f"""UPDATE payments
                   SET status = 'failed', failure_code = %(code)s,
                       failure_message = %(message)s, updated_at = now()
                 WHERE id = %(id)s AND status = 'pending' AND attempts = 0
                RETURNING {_COLUMNS}""",
            {"id": payment_id, "code": code, "message": message},
        )

    async def switch_provider(self, payment_id: str, provider: str) -> Payment:
        return await self._update_pending(
            payment_id,
            f"""UPDATE payments SET provider = %(provider)s, updated_at = now()
                 WHERE id = %(id)s AND status = 'pending' AND attempts = 0
                RETURNING {_COLUMNS}""",
            {"id": payment_id, "provider": provider},
        )

    async def record(self, payment_id: str, answer: ProviderPayment) -> tuple[Payment, bool]:
        return await self._pool.run(lambda connection: self._record(connection, payment_id, answer))

    async def _record(
        self, connection: AsyncConnection[Any], payment_id: str, answer: ProviderPayment
    ) -> tuple[Payment, bool]:
        updated = await self._one(connection, _RECORD, _answer_params(payment_id, answer))
        if updated is not None:
            return updated, updated.status is not PaymentStatus.PENDING
        current = await self._get(connection, payment_id)
        assert current is not None
        return current, False

    async def apply_event(
        self,
        provider: str,
        event_id: str,
        kind: PaymentKind,
        payment_id: str,
        answer: ProviderPayment,
    ) -> tuple[Payment | None, bool]:
        async def work(connection: AsyncConnection[Any]) -> tuple[Payment | None, bool]:
            async with connection.transaction():
                return await self._apply_event(
                    connection, provider, event_id, kind, payment_id, answer
                )

        return await self._pool.run(work)

    async def _apply_event(
        self,
        connection: AsyncConnection[Any],
        provider: str,
        event_id: str,
        kind: PaymentKind,
        payment_id: str,
        answer: ProviderPayment,
    ) -> tuple[Payment | None, bool]:
        payment = await self._one(
            connection,
            f"SELECT {_COLUMNS} FROM payments WHERE id = %(id)s AND kind = %(kind)s"
            " AND provider = %(provider)s FOR UPDATE",
            {"id": payment_id, "kind": kind.value, "provider": provider},
        )
        cursor = await connection.execute(
            "INSERT INTO webhook_events (provider, event_id, payment_id)"
            " VALUES (%(provider)s, %(event_id)s, %(payment_id)s)"
            " ON CONFLICT DO NOTHING",
            {
                "provider": provider,
                "event_id": event_id,
                "payment_id": payment.id if payment else None,
            },
        )
        if payment is None or cursor.rowcount == 0:
            return payment, False
        if payment.final:
            return payment, False  # an older event, arriving late: nothing to do
        return await self._record(connection, payment.id, answer)

    async def pending_count(self) -> int:
        async def work(connection: AsyncConnection[Any]) -> int:
            cursor = await connection.execute(
                "SELECT count(*) FROM payments WHERE status = 'pending'"
            )
            row = await cursor.fetchone()
            return int(row[0]) if row else 0

        return await self._pool.run(work)
