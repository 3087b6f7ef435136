"""Top-ups and withdrawals: money in from and out to payment providers, through the
payment-gateway service.

A top-up first reserves a *pending* ledger transaction (idempotent on the caller's
key); its id is the payment's id at the gateway and the provider's idempotency key.
The credit is posted when the gateway says the charge succeeded — in the answer to
the charge, after a webhook (the gateway's notice), or when the reconciler asks
again — whichever comes first; the ledger settles a transaction once
(`ledger_settle_external`), so the others change nothing. A withdrawal holds the
amount first, then pays out, then posts the debit or releases the hold.

Plain Python: no gRPC, no SQL.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from services.runtime.auth import Caller
from services.runtime.errors import (
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    Unavailable,
    ViolationCollector,
)
from services.runtime.money import Money
from services.transaction.domain.commands import TopUpRequest, WithdrawalRequest
from services.transaction.domain.ledger import (
    accepted,
    check_amount,
    check_key,
    invalidate_for,
)
from services.transaction.domain.model import (
    LedgerOutcome,
    Posted,
    Transaction,
    TransactionStatus,
    TransactionType,
)
from services.transaction.domain.ports import (
    Clock,
    DueExternal,
    GatewayPayment,
    GatewayRejected,
    GatewayUnavailable,
    LedgerCache,
    LedgerStore,
    PaymentGateway,
    PaymentOutcome,
)

log = logging.getLogger(__name__)

# The failure code of a payment its provider never received (also named in the
# ledger's ledger_release_unsent_external).
PROVIDER_UNAVAILABLE = "provider_unavailable"
# Looks after which a payment still pending is logged as an error, for an operator
# (with the exponential backoff capped at 5 minutes: about an hour and a half).
STUCK_AFTER_CHECKS = 20
_PROVIDER_NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")

# (transaction type, "posted" | "failed", how: "sync" | "webhook" | "reconciler")
SettledObserver = Callable[[TransactionType, str, str], None]


@dataclass(frozen=True)
class ReconcilerSettings:
    # First look at a pending payment this long after it was made (the answer,
    # or a webhook, usually comes first), then exponentially less often.
    first_check_after: float = 10.0
    max_check_interval: float = 300.0
    batch: int = 50
    # How long a claim keeps other instances off a payment: at least one gateway
    # deadline, the length of a pass (its payments are driven at once).
    lease: float = 10.0


class Funding:
    def __init__(
        self,
        store: LedgerStore,
        cache: LedgerCache,
        gateway: PaymentGateway,
        clock: Clock,
        *,
        default_provider: str = "sandbox",
        reconciler: ReconcilerSettings | None = None,
        observe: SettledObserver = lambda kind, result, path: None,
    ) -> None:
        self._store = store
        self._cache = cache
        self._gateway = gateway
        self._clock = clock
        self._default_provider = default_provider
        self._reconciler = reconciler or ReconcilerSettings()
        self._observe = observe

    # --- the caller's requests ---------------------------------------------------------

    async def top_up(self, caller: Caller, request: TopUpRequest) -> Posted:
        return await self._external(
            TransactionType.TOP_UP,
            caller.user_id,
            request,
            request.payment_method,
            "payment_method",
        )

    async def withdraw(self, caller: Caller, request: WithdrawalRequest) -> Posted:
        return await self._external(
            TransactionType.WITHDRAWAL,
            caller.user_id,
            request,
            request.destination,
            "destination",
        )

    async def _external(
        self,
        kind: TransactionType,
        owner_id: str,
        request: TopUpRequest | WithdrawalRequest,
        instrument: str,
        instrument_field: str,
    ) -> Posted:
        """A top-up or a withdrawal; `instrument` is where the money comes from or goes
        to, as the provider knows it (a token), sent in the field `instrument_field`."""
        key = request.key
        errors = ViolationCollector()
        check_key(key, errors)
        wallet_id = errors.uuid(request.wallet_id, "wallet_id")
        money = check_amount(request.amount, errors)
        instrument = instrument.strip()
        if not instrument:
            errors.add(instrument_field, "is required: a provider token (card data never)")
        elif len(instrument) > 255:
            errors.add(instrument_field, "must be at most 255 characters")
        provider = request.provider.strip() or self._default_provider
        if not _PROVIDER_NAME.match(provider):
            errors.add("provider", "must be a provider name such as sandbox, stripe or paypal")
        errors.raise_if_any()
        assert money is not None
        first_check = self._clock.now() + timedelta(seconds=self._reconciler.first_check_after)
        for _ in range(2):
            result = accepted(
                await self._store.begin_external(
                    owner_id, key, kind, wallet_id, money, provider, instrument, first_check
                )
            )
            assert result.transaction is not None
            transaction = result.transaction
            replayed = result.outcome is LedgerOutcome.REPLAYED
            if not replayed:
                break
            # The stored answer is the reservation: what is it now? If it failed with
            # nothing sent (the provider unavailable, answered 503), this retry of it
            # tries again, under the same key; once.
            transaction = await self._store.transaction(transaction.id) or transaction
            if not (
                _failed_unsent(transaction)
                and await self._store.release_unsent_external(owner_id, key, kind, wallet_id)
            ):
                break
        if not replayed:
            await invalidate_for(self._cache, transaction)
        if transaction.status is TransactionStatus.PENDING:
            transaction = await self._drive(transaction, instrument, "sync")
        return Posted(_answer(transaction), replayed=replayed)

    # --- settling ------------------------------------------------------------------------

    async def payment_updated(self, payment_id: str) -> bool:
        """The gateway's notice that a payment changed: ask it, settle. True if this
        call settled the transaction."""
        errors = ViolationCollector()
        payment_id = errors.uuid(payment_id, "payment_id")
        errors.raise_if_any()
        transaction = await self._store.transaction(payment_id)
        if transaction is None or transaction.type not in (
            TransactionType.TOP_UP,
            TransactionType.WITHDRAWAL,
        ):
            raise NotFound("no top-up or withdrawal with this id", reason="PAYMENT_NOT_FOUND")
        if transaction.status is not TransactionStatus.PENDING:
            return False
        try:
            payment = await self._gateway.payment(payment_id)
        except GatewayUnavailable as error:
            raise Unavailable("the payment gateway did not answer") from error
        if payment is None:
            return False
        _, settled = await self._apply(transaction, payment, "webhook")
        return settled

    async def reconcile(self) -> int:
        """One pass of the reconciler over the pending payments that are due: each is
        driven again at the gateway (same id, so never a second payment) and settled
        if it is final. Returns how many it settled. The claimed ones are driven at
        once, so a pass lasts about one gateway deadline, less than the claim's lease."""
        settings = self._reconciler
        due = await self._store.claim_due_external(
            self._clock.now(),
            settings.batch,
            max(settings.first_check_after, settings.lease),
            settings.max_check_interval,
        )
        outcomes = await asyncio.gather(*(self._reconcile_one(item) for item in due))
        settled = sum(outcomes)
        if due:
            log.info("reconciler pass", extra={"due": len(due), "settled": settled})
        return settled

    async def _reconcile_one(self, item: DueExternal) -> bool:
        transaction = await self._store.transaction(item.transaction_id)
        if transaction is None or transaction.status is not TransactionStatus.PENDING:
            return False
        try:
            payment = await self._call_gateway(item)
        except GatewayRejected as refusal:
            settled = await self._refused(transaction, refusal, "reconciler")
            return settled.status is not TransactionStatus.PENDING
        except GatewayUnavailable as error:
            log.info(
                "reconciler: gateway could not answer yet",
                extra={"transaction_id": item.transaction_id, "error": str(error)},
            )
            return False
        except Exception:
            log.exception("reconciler: could not drive a payment")
            return False
        _, did_settle = await self._apply(transaction, payment, "reconciler")
        if not did_settle and item.checks >= STUCK_AFTER_CHECKS:
            log.error(
                "payment still pending after many checks: needs an operator",
                extra={"transaction_id": item.transaction_id, "checks": item.checks},
            )
        return did_settle

    async def backlog(self) -> tuple[int, float]:
        return await self._store.external_backlog(self._clock.now())

    async def _drive(self, transaction: Transaction, instrument: str, path: str) -> Transaction:
        item = DueExternal(
            transaction.id,
            transaction.type,
            transaction.payment_provider,
            instrument,
            transaction.amount,
            transaction.currency,
            0,
            transaction.created_at,
        )
        try:
            payment = await self._call_gateway(item)
        except GatewayRejected as refusal:
            settled = await self._refused(transaction, refusal, path)
            if settled.status is TransactionStatus.FAILED and refusal.violations:
                raise InvalidArgument(
                    [FieldViolation(field, why) for field, why in refusal.violations]
                ) from refusal
            return settled
        except GatewayUnavailable:
            # It may know more than it could say: a payment it failed because its
            # provider was down and never reached (then this answers UNAVAILABLE).
            try:
                known = await self._gateway.payment(transaction.id)
            except GatewayUnavailable:
                known = None
            if known is None or known.status is PaymentOutcome.PENDING:
                return transaction  # pending: a webhook or the reconciler will settle it
            payment = known
        settled, _ = await self._apply(transaction, payment, path)
        return settled

    async def _refused(
        self, transaction: Transaction, refusal: GatewayRejected, path: str
    ) -> Transaction:
        """The gateway refused the request before writing anything: nothing was sent,
        so the transaction fails. (Unless the gateway has the payment after all: then
        it stays pending, for an operator, as failing it could lose money.)"""
        try:
            known = await self._gateway.payment(transaction.id)
        except GatewayUnavailable:
            return transaction
        if known is not None:
            log.error(
                "gateway refused a payment it has; kept pending",
                extra={"transaction_id": transaction.id, "error": str(refusal)},
            )
            return transaction
        refused = GatewayPayment(
            transaction.id, PaymentOutcome.FAILED, "invalid_payment_request", str(refusal)
        )
        settled, _ = await self._apply(transaction, refused, path)
        return settled

    async def _call_gateway(self, item: DueExternal) -> GatewayPayment:
        money = Money(item.currency, item.amount)
        if item.kind is TransactionType.TOP_UP:
            return await self._gateway.charge(
                item.transaction_id, item.provider, money, item.instrument
            )
        return await self._gateway.payout(
            item.transaction_id, item.provider, money, item.instrument
        )

    async def _apply(
        self, transaction: Transaction, payment: GatewayPayment, path: str
    ) -> tuple[Transaction, bool]:
        if payment.status is PaymentOutcome.PENDING:
            return transaction, False
        succeeded = payment.status is PaymentOutcome.SUCCEEDED
        result = await self._store.settle_external(
            transaction.id, succeeded, payment.failure_code or "failed", payment.failure_message
        )
        if result.transaction is None:
            return transaction, False
        if result.outcome is not LedgerOutcome.SETTLED:
            # Settled already — perhaps by this very call, whose first answer was lost
            # (a retry on a fresh connection): invalidate anyway, or a cached balance
            # could outlive the settlement until it expires.
            await invalidate_for(self._cache, result.transaction)
            return result.transaction, False
        self._observe(transaction.type, "posted" if succeeded else "failed", path)
        log.info(
            "payment settled",
            extra={
                "transaction_id": transaction.id,
                "path": path,
                "result": "posted" if succeeded else "failed",
            },
        )
        await invalidate_for(self._cache, result.transaction)
        return result.transaction, True


def _failed_unsent(transaction: Transaction) -> bool:
    """Failed because the provider was unavailable: nothing was sent to it."""
    return (
        transaction.status is TransactionStatus.FAILED
        and transaction.failure_code == PROVIDER_UNAVAILABLE
    )


def _answer(transaction: Transaction) -> Transaction:
    """A posted or pending one is the answer; a failed one is refused with its reason."""
    if transaction.status is not TransactionStatus.FAILED:
        return transaction
    what = "top-up" if transaction.type is TransactionType.TOP_UP else "withdrawal"
    code = transaction.failure_code or "failed"
    if code == PROVIDER_UNAVAILABLE:
        moved = "charged" if what == "top-up" else "paid out"
        raise Unavailable(
            f"the payment provider is unavailable; nothing was {moved}"
            f" (transaction {transaction.id}); try again later (the same request, with"
            " the same idempotency key, tries again)",
            reason="PROVIDER_UNAVAILABLE",
        )
    detail = transaction.failure_message or code.replace("_", " ")
    raise FailedPrecondition(
        f"the {what} failed: {detail} (transaction {transaction.id}); no money moved",
        reason=code.upper()[:63],
    )
