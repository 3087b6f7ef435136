"""What the gateway needs from a payment provider, whoever it is.

Every provider (the built-in sandbox, Stripe, PayPal) is an adapter behind this one
interface; the gateway's logic (retries, circuit breaker, state, webhooks) never knows
which one it talks to. Amounts are integers in minor units, currencies ISO 4217 codes.

Error contract, which the retry policy and the circuit breaker rely on:
- a *business* outcome (a declined card, an unknown payout destination) is a result,
  `ProviderPayment(status=FAILED, failure_code=...)`, never an exception: the provider
  worked, and nothing should be retried;
- `ProviderUnavailable` is a failure of the provider or of the way to it (HTTP 5xx, 429,
  connection refused or reset, a timeout): the call may be retried with the same
  idempotency key, and it counts against the provider's circuit breaker;
- `ProviderRejected` is a request the provider refused as malformed or unauthorised
  (HTTP 400/401/403/404 that is not a decline): a bug or a misconfiguration, never retried;
- `WebhookSignatureInvalid`: a webhook whose signature does not verify.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol


class PaymentKind(StrEnum):
    CHARGE = "charge"  # money in: a card (or PayPal account) pays a top-up
    PAYOUT = "payout"  # money out: a withdrawal to a bank account, card or PayPal account
    REFUND = "refund"  # money back to the payer of a charge


class PaymentStatus(StrEnum):
    PENDING = "pending"  # accepted, not final yet (a webhook or a later lookup will say)
    SUCCEEDED = "succeeded"
    FAILED = "failed"


@dataclass(frozen=True)
class ChargeRequest:
    payment_id: str  # ours (a UUID); the provider's idempotency key and metadata
    amount: int  # minor units, > 0
    currency: str  # "EUR"
    payment_method: str  # a provider token ("pm_card_visa", a PayPal order id...)
    description: str = ""


@dataclass(frozen=True)
class PayoutRequest:
    payment_id: str
    amount: int
    currency: str
    destination: str  # a provider token for a bank account, card or PayPal receiver
    description: str = ""


@dataclass(frozen=True)
class RefundRequest:
    payment_id: str  # the refund's own id (idempotency key)
    charge_reference: str  # the provider's reference of the charge being refunded
    amount: int
    currency: str


@dataclass(frozen=True)
class ProviderPayment:
    """What the provider says about one payment."""

    reference: str  # the provider's id ("pi_...", a PayPal capture id...); "" if none yet
    status: PaymentStatus
    failure_code: str = ""  # machine-readable ("card_declined", "insufficient_funds")
    failure_message: str = ""  # for people; never card data


@dataclass(frozen=True)
class WebhookEvent:
    """A verified webhook, reduced to what the gateway acts on."""

    event_id: str  # the provider's event id: deliveries of one event share it
    kind: PaymentKind
    payment_id: str  # ours, carried in the payment's metadata / custom id
    payment: ProviderPayment


class ProviderError(Exception):
    """A provider call that did not produce an answer about the payment."""

    retryable: bool = False


class ProviderUnavailable(ProviderError):
    """5xx, 429, network error or timeout: retry with the same idempotency key."""

    retryable = True


class ProviderRejected(ProviderError):
    """The provider refused the request itself (malformed, unauthorised): never retried."""


class WebhookSignatureInvalid(Exception):
    """The webhook's signature (or its timestamp) does not verify."""


class PaymentProvider(Protocol):
    """One payment provider. Every call is idempotent on `payment_id`: calling again
    with the same request returns the same payment and never charges or pays twice."""

    @property
    def name(self) -> str:  # "sandbox", "stripe", "paypal": the webhook path's {provider}
        ...

    async def create_charge(self, request: ChargeRequest) -> ProviderPayment: ...

    async def create_payout(self, request: PayoutRequest) -> ProviderPayment: ...

    async def refund(self, request: RefundRequest) -> ProviderPayment: ...

    async def retrieve(self, kind: PaymentKind, reference: str) -> ProviderPayment:
        """The current state of a payment the provider already gave a reference for."""
        ...

    async def parse_webhook(self, body: bytes, headers: Mapping[str, str]) -> WebhookEvent | None:
        """Verify a webhook delivery (raw body, lower-case header names) and read it.
        None: a genuine event the gateway does not act on. Raises
        WebhookSignatureInvalid if it is not genuine."""
        ...
