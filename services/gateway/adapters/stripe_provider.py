"""Stripe behind the gateway's `PaymentProvider`, through the official SDK's async client.

The SDK does the wire format, the signatures and the error classes; this adapter only
translates. Its retries are off (`max_network_retries=0`): the gateway owns the retry
policy and the circuit breaker, and retries with the same idempotency key (our
payment id), so a call that timed out after Stripe acted is replayed, never repeated.
Responses are read as plain dicts (`to_dict()`), so a field missing from an object is a
default rather than an AttributeError.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

import stripe
from stripe.params import PaymentIntentCreateParams, PayoutCreateParams, RefundCreateParams

from services.gateway.domain.providers import (
    ChargeRequest,
    PaymentKind,
    PaymentStatus,
    PayoutRequest,
    ProviderPayment,
    ProviderRejected,
    ProviderUnavailable,
    RefundRequest,
    WebhookEvent,
    WebhookSignatureInvalid,
)

DEFAULT_API_BASE = "https://api.stripe.com"

_INTENT_FAILED = frozenset({"canceled", "requires_payment_method"})
_PAYOUT_FAILED = frozenset({"failed", "canceled"})
_REFUND_FAILED = frozenset({"failed", "canceled"})

_WEBHOOK_KINDS: Mapping[str, PaymentKind] = {
    "payment_intent.succeeded": PaymentKind.CHARGE,
    "payment_intent.payment_failed": PaymentKind.CHARGE,
    "payment_intent.processing": PaymentKind.CHARGE,
    "payment_intent.canceled": PaymentKind.CHARGE,
    "payout.paid": PaymentKind.PAYOUT,
    "payout.failed": PaymentKind.PAYOUT,
    "payout.canceled": PaymentKind.PAYOUT,
    "refund.updated": PaymentKind.REFUND,
    "refund.failed": PaymentKind.REFUND,
    "charge.refund.updated": PaymentKind.REFUND,  # its data.object is the refund
}

# Any Stripe secret or restricted key that an error message might echo back.
_KEY_PATTERN = re.compile(r"\b(?:sk|rk)_(?:test|live)_[A-Za-z0-9*]+")


class _StripeResource(Protocol):
    def to_dict(self, recursive: bool = ..., for_json: bool = ...) -> dict[str, Any]: ...


class StripeProvider:
    """Stripe PaymentIntents (charges), Payouts and Refunds; webhooks verified by the SDK."""

    def __init__(
        self,
        api_key: str,
        webhook_secret: str,
        api_base: str = DEFAULT_API_BASE,
        timeout_seconds: float = 10.0,
    ) -> None:
        self._api_key = api_key
        self._webhook_secret = webhook_secret
        self._http = stripe.HTTPXClient(timeout=timeout_seconds)
        self._client = stripe.StripeClient(
            api_key,
            base_addresses={"api": api_base.rstrip("/")},
            http_client=self._http,
            max_network_retries=0,
        )

    @property
    def name(self) -> str:
        return "stripe"

    async def aclose(self) -> None:
        """Close the HTTP connection pool (on the gateway's shutdown)."""
        await self._http.close_async()  # type: ignore[no-untyped-call]  # untyped in the SDK

    async def create_charge(self, request: ChargeRequest) -> ProviderPayment:
        params: PaymentIntentCreateParams = {
            "amount": request.amount,
            "currency": request.currency.lower(),
            "payment_method": request.payment_method,
            "confirm": True,
            # Server-side confirmation: nobody is there to follow a redirect.
            "automatic_payment_methods": {"enabled": True, "allow_redirects": "never"},
            "metadata": {"payment_id": request.payment_id},
        }
        if request.description:
            params["description"] = request.description
        create = self._client.v1.payment_intents.create_async
        return await self._call(
            lambda: create(params, {"idempotency_key": request.payment_id}), _charge_payment
        )

    async def create_payout(self, request: PayoutRequest) -> ProviderPayment:
        params: PayoutCreateParams = {
            "amount": request.amount,
            "currency": request.currency.lower(),
            "destination": request.destination,
            "metadata": {"payment_id": request.payment_id},
        }
        if request.description:
            params["description"] = request.description
        create = self._client.v1.payouts.create_async
        return await self._call(
            lambda: create(params, {"idempotency_key": request.payment_id}), _payout_payment
        )

    async def refund(self, request: RefundRequest) -> ProviderPayment:
        if not request.charge_reference:
            raise ProviderRejected("stripe: a refund needs the charge's payment intent id")
        params: RefundCreateParams = {
            "payment_intent": request.charge_reference,
            "amount": request.amount,
            "metadata": {"payment_id": request.payment_id},
        }
        create = self._client.v1.refunds.create_async
        return await self._call(
            lambda: create(params, {"idempotency_key": request.payment_id}), _refund_payment
        )

    async def retrieve(self, kind: PaymentKind, reference: str) -> ProviderPayment:
        # An empty id would turn "GET /v1/payouts/{id}" into the list endpoint.
        if not reference:
            raise ProviderRejected(f"stripe: no reference to look up the {kind}")
        v1 = self._client.v1
        if kind is PaymentKind.CHARGE:
            return await self._call(
                lambda: v1.payment_intents.retrieve_async(reference), _charge_payment
            )
        if kind is PaymentKind.PAYOUT:
            return await self._call(lambda: v1.payouts.retrieve_async(reference), _payout_payment)
        return await self._call(lambda: v1.refunds.retrieve_async(reference), _refund_payment)

    async def parse_webhook(self, body: bytes, headers: Mapping[str, str]) -> WebhookEvent | None:
        signature = headers.get("stripe-signature")  # names arrive lower case
        try:
            event = self._client.construct_event(body, signature, self._webhook_secret)
        except stripe.SignatureVerificationError as err:
            raise WebhookSignatureInvalid(f"stripe: {err.user_message}") from err
        except ValueError as err:  # the signature held but the body is not a Stripe event
            raise WebhookSignatureInvalid("stripe: the webhook body is not an event") from err
        data = event.to_dict()
        kind = _WEBHOOK_KINDS.get(str(data.get("type", "")))
        wrapper = data.get("data")
        obj = wrapper.get("object") if isinstance(wrapper, dict) else None
        if kind is None or not isinstance(obj, dict):
            return None
        metadata = obj.get("metadata")
        payment_id = metadata.get("payment_id") if isinstance(metadata, dict) else None
        if not isinstance(payment_id, str) or not payment_id:
            return None  # not one of ours (a payment made outside the gateway)
        read = {
            PaymentKind.CHARGE: _charge_payment,
            PaymentKind.PAYOUT: _payout_payment,
            PaymentKind.REFUND: _refund_payment,
        }[kind]
        return WebhookEvent(
            event_id=str(data.get("id", "")),
            kind=kind,
            payment_id=payment_id,
            payment=read(obj),
        )

    async def _call(
        self,
        send: Callable[[], Awaitable[_StripeResource]],
        read: Callable[[Mapping[str, Any]], ProviderPayment],
    ) -> ProviderPayment:
        try:
            resource = await send()
        except stripe.CardError as err:
            return _declined(err)
        except stripe.StripeError as err:
            raise self._translate(err) from err
        return read(resource.to_dict())

    def _translate(self, err: stripe.StripeError) -> ProviderUnavailable | ProviderRejected:
        status = err.http_status
        message = self._redact(
            f"stripe: {type(err).__name__} (HTTP {status or '-'}"
            f"{', ' + err.code if err.code else ''}): {err.user_message or ''}"
        )
        if isinstance(err, stripe.APIConnectionError | stripe.RateLimitError | stripe.APIError):
            return ProviderUnavailable(message)
        if isinstance(
            err,
            stripe.InvalidRequestError
            | stripe.IdempotencyError
            | stripe.AuthenticationError
            | stripe.PermissionError,
        ):
            return ProviderRejected(message)
        if status is None or status >= 500 or status == 429:
            return ProviderUnavailable(message)
        return ProviderRejected(message)

    def _redact(self, text: str) -> str:
        if self._api_key:
            text = text.replace(self._api_key, "[redacted]")
        return _KEY_PATTERN.sub("[redacted]", text)


def _text(obj: Mapping[str, Any], key: str) -> str:
    value = obj.get(key)
    return value if isinstance(value, str) else ""


def _charge_payment(intent: Mapping[str, Any]) -> ProviderPayment:
    reference, status = _text(intent, "id"), _text(intent, "status")
    if status == "succeeded":
        return ProviderPayment(reference, PaymentStatus.SUCCEEDED)
    if status in _INTENT_FAILED:
        error = intent.get("last_payment_error")
        if isinstance(error, dict) and error:
            code = _text(error, "decline_code") or _text(error, "code") or status
            return ProviderPayment(reference, PaymentStatus.FAILED, code, _text(error, "message"))
        code = _text(intent, "cancellation_reason") or status
        return ProviderPayment(reference, PaymentStatus.FAILED, code)
    # processing, requires_action, requires_capture, or a status newer than this code:
    # not final, a webhook or a later lookup settles it.
    return ProviderPayment(reference, PaymentStatus.PENDING)


def _payout_payment(payout: Mapping[str, Any]) -> ProviderPayment:
    reference, status = _text(payout, "id"), _text(payout, "status")
    if status == "paid":
        return ProviderPayment(reference, PaymentStatus.SUCCEEDED)
    if status in _PAYOUT_FAILED:
        code = _text(payout, "failure_code") or status
        return ProviderPayment(
            reference, PaymentStatus.FAILED, code, _text(payout, "failure_message")
        )
    return ProviderPayment(reference, PaymentStatus.PENDING)  # pending, in_transit


def _refund_payment(refund: Mapping[str, Any]) -> ProviderPayment:
    reference, status = _text(refund, "id"), _text(refund, "status")
    if status == "succeeded":
        return ProviderPayment(reference, PaymentStatus.SUCCEEDED)
    if status in _REFUND_FAILED:
        code = _text(refund, "failure_reason") or status
        return ProviderPayment(reference, PaymentStatus.FAILED, code)
    return ProviderPayment(reference, PaymentStatus.PENDING)  # pending, requires_action


def _declined(err: stripe.CardError) -> ProviderPayment:
    """A 402 is Stripe's answer, not a failure to get one: the payment failed."""
    body = err.json_body if isinstance(err.json_body, dict) else {}
    error = body.get("error")
    error = error if isinstance(error, dict) else {}
    intent = error.get("payment_intent")
    reference = _text(intent, "id") if isinstance(intent, dict) else ""
    code = _text(error, "decline_code") or _text(error, "code") or err.code or "card_declined"
    return ProviderPayment(reference, PaymentStatus.FAILED, code, _text(error, "message"))
