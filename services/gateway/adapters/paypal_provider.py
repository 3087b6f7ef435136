"""PayPal behind the gateway's `PaymentProvider` port, over PayPal's REST API.

Client library: plain `httpx.AsyncClient` against PayPal's documented wire format, for
every call. PayPal's official `paypal-server-sdk` (2.4.0) was evaluated and not used:
- it cannot be pointed at a base URL by configuration: its `Environment` enum has only
  PRODUCTION and SANDBOX, whose URLs are hard-coded in `Configuration.environments`;
  reaching a local server would mean patching that class table or overriding an
  internal method, i.e. monkeypatching the library;
- it covers Orders and Payments but neither Payouts nor webhook verification, so a
  second HTTP client with its own OAuth token handling would be needed anyway;
- it is synchronous (requests, through apimatic-core): every call would take a worker
  thread, and its timeouts and retries are configured apart from ours.
One async client, one token cache and one error mapping for all seven endpoints is less
code than the SDK plus the gaps, and the tests exercise exactly what production runs.

What the calls are:
- OAuth2 client credentials (`POST /v1/oauth2/token`, Basic auth); the token is cached
  until `token_refresh_margin` seconds before `expires_in`, and fetched again once if an
  API call answers 401 (revoked or expired early).
- A charge captures an order the payer has already approved (its id is the payment
  token): the order is read first and its amount, currency and `custom_id` must match
  the request, so that a token approved for 1 EUR cannot top a wallet up by 100 EUR;
  then `POST /v2/checkout/orders/{id}/capture` with `PayPal-Request-Id` = payment_id
  (PayPal replays the stored answer to a repeated id: nothing is captured twice). The
  `custom_id` can only be set when the order is created (by the checkout), so it is
  checked here, and read back from the capture. The charge's reference is the capture
  id, which refunds and `GET /v2/payments/captures/{id}` need.
- A payout is a one-item batch with `sender_batch_id` = payment_id (PayPal refuses a
  reused one for 30 days) and `PayPal-Request-Id` = payment_id. If PayPal no longer
  remembers the request id but the batch exists, it answers 400 with a HATEOAS link to
  the original batch: that batch is read (and its sender_batch_id checked) and returned.
- A refund is `POST /v2/payments/captures/{capture_id}/refund` with `PayPal-Request-Id`
  and `custom_id` = the refund's payment_id (which its webhooks carry back).
- Webhooks are verified with `POST /v1/notifications/verify-webhook-signature`. The
  raw delivered body is embedded byte for byte as `webhook_event`: PayPal's signature
  covers a CRC32 of the body as delivered, so a re-serialised event can fail to verify.

Amounts: integer minor units (ISO 4217 exponents: JPY 0, most 2, KWD 3, see
`services.runtime.money`) become PayPal's decimal strings. PayPal takes HUF, TWD and JPY in whole
units only: an amount with a fraction in those is refused before any call.

Errors follow the port's contract: network errors, timeouts, HTTP 5xx and 429 raise
`ProviderUnavailable`; other refusals raise `ProviderRejected`; declines (HTTP 422 with
a payer- or funds-side issue, failed payout items, failed refunds) are FAILED results
whose failure_code is PayPal's issue, lower-cased. No message carries the client secret
or a token.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

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
from services.runtime.money import CURRENCY_EXPONENTS, format_decimal

log = logging.getLogger(__name__)

JsonObject = dict[str, Any]

# Currencies PayPal accepts in whole units only ("does not support decimals").
_WHOLE_UNITS_AT_PAYPAL = frozenset({"HUF", "JPY", "TWD"})

# HTTP 422 issues on an order capture that are the payer's or the money's, not ours: a
# FAILED charge, not an error. Other 422 issues (a currency the account cannot take, a
# malformed amount) are ProviderRejected.
_CAPTURE_DECLINES = frozenset(
    {
        "INSTRUMENT_DECLINED",
        "PAYER_ACTION_REQUIRED",
        "INSUFFICIENT_FUNDS",
        "TRANSACTION_REFUSED",
        "PAYER_CANNOT_PAY",
        "PAYER_ACCOUNT_LOCKED_OR_CLOSED",
        "PAYER_ACCOUNT_RESTRICTED",
        "PAYEE_BLOCKED_TRANSACTION",
        "TRANSACTION_BLOCKED_BY_PAYEE",
        "TRANSACTION_LIMIT_EXCEEDED",
        "TRANSACTION_RECEIVING_LIMIT_EXCEEDED",
        "MAX_NUMBER_OF_PAYMENT_ATTEMPTS_EXCEEDED",
        "REDIRECT_PAYER_FOR_ALTERNATE_FUNDING",
        "COMPLIANCE_VIOLATION",
        "ORDER_NOT_APPROVED",
        "ORDER_ALREADY_CAPTURED",
        "CARD_EXPIRED",
        "CARD_CLOSED",
    }
)
_REFUND_DECLINES = frozenset(
    {
        "CAPTURE_FULLY_REFUNDED",
        "REFUND_AMOUNT_EXCEEDED",
        "REFUND_TIME_LIMIT_EXCEEDED",
        "REFUND_FAILED_INSUFFICIENT_FUNDS",
        "INSUFFICIENT_FUNDS",
        "TRANSACTION_DISPUTED",
        "REFUND_NOT_ALLOWED",
        "PARTIAL_REFUND_NOT_ALLOWED",
        "MAX_NUMBER_OF_REFUNDS_EXCEEDED",
        "PENDING_CAPTURE",
        "CAPTURE_DISPUTED_PARTIAL_REFUND_NOT_ALLOWED",
        "REFUND_NOT_PERMITTED_DUE_TO_CHARGEBACK",
    }
)
# Payouts name the problem in the error's `name` (HTTP 422).
_PAYOUT_DECLINES = frozenset(
    {
        "INSUFFICIENT_FUNDS",
        "RECEIVER_UNREGISTERED",
        "RECEIVER_ACCOUNT_LOCKED",
        "RECEIVER_COUNTRY_NOT_ALLOWED",
        "RECEIVER_STATE_RESTRICTED",
        "RECEIVER_YOUTH_ACCOUNT",
        "RECEIVING_LIMIT_EXCEEDED",
        "REGULATORY_BLOCKED",
        "RISK_DECLINE",
        "TRANSACTION_LIMIT_EXCEEDED",
    }
)

_CAPTURE_STATUS = {
    "COMPLETED": PaymentStatus.SUCCEEDED,
    "PARTIALLY_REFUNDED": PaymentStatus.SUCCEEDED,  # the charge itself went through
    "REFUNDED": PaymentStatus.SUCCEEDED,
    "PENDING": PaymentStatus.PENDING,
    "DECLINED": PaymentStatus.FAILED,
    "FAILED": PaymentStatus.FAILED,
}
_REFUND_STATUS = {
    "COMPLETED": PaymentStatus.SUCCEEDED,
    "PENDING": PaymentStatus.PENDING,
    "FAILED": PaymentStatus.FAILED,
    "CANCELLED": PaymentStatus.FAILED,
}
_PAYOUT_ITEM_STATUS = {
    "SUCCESS": PaymentStatus.SUCCEEDED,
    "NEW": PaymentStatus.PENDING,
    "PENDING": PaymentStatus.PENDING,
    "PROCESSING": PaymentStatus.PENDING,
    "UNCLAIMED": PaymentStatus.PENDING,  # PayPal holds it until the receiver signs up
    "ONHOLD": PaymentStatus.PENDING,
    "FAILED": PaymentStatus.FAILED,
    "DENIED": PaymentStatus.FAILED,
    "RETURNED": PaymentStatus.FAILED,
    "BLOCKED": PaymentStatus.FAILED,
    "REFUNDED": PaymentStatus.FAILED,
    "REVERSED": PaymentStatus.FAILED,
    "CANCELED": PaymentStatus.FAILED,
}
_PAYOUT_BATCH_STATUS = {
    "SUCCESS": PaymentStatus.SUCCEEDED,
    "PENDING": PaymentStatus.PENDING,
    "PROCESSING": PaymentStatus.PENDING,
    "DENIED": PaymentStatus.FAILED,
    "CANCELED": PaymentStatus.FAILED,
}

_CHARGE_EVENTS = {
    "PAYMENT.CAPTURE.COMPLETED": PaymentStatus.SUCCEEDED,
    "PAYMENT.CAPTURE.PENDING": PaymentStatus.PENDING,
    "PAYMENT.CAPTURE.DENIED": PaymentStatus.FAILED,
    "PAYMENT.CAPTURE.DECLINED": PaymentStatus.FAILED,
}
_REFUND_EVENTS = {
    "PAYMENT.CAPTURE.REFUNDED": PaymentStatus.SUCCEEDED,
    "PAYMENT.REFUND.PENDING": PaymentStatus.PENDING,
    "PAYMENT.REFUND.FAILED": PaymentStatus.FAILED,
}

_WEBHOOK_HEADERS = (
    "paypal-transmission-id",
    "paypal-transmission-time",
    "paypal-cert-url",
    "paypal-auth-algo",
    "paypal-transmission-sig",
)
_PAYOUT_LINK = re.compile(r"^(?:.*)/v1/payments/payouts/(?P<batch_id>[A-Za-z0-9_-]+)$")


def paypal_value(amount: int, currency: str) -> str:
    """Minor units → PayPal's decimal string: 1050 EUR → "10.50", 500 JPY → "500",
    1234 KWD → "1.234", 150000 HUF → "1500" (PayPal takes HUF in whole forints)."""
    if amount <= 0:
        raise ProviderRejected(f"paypal: amount must be positive, got {amount}")
    if currency in _WHOLE_UNITS_AT_PAYPAL:
        units, fraction = divmod(amount, 10 ** CURRENCY_EXPONENTS.get(currency, 2))
        if fraction:
            raise ProviderRejected(
                f"paypal: {currency} is taken in whole units only; {amount} minor units has "
                "a fraction"
            )
        return str(units)
    return format_decimal(amount, currency)


def _obj(value: object, key: str) -> JsonObject:
    inner = value.get(key) if isinstance(value, dict) else None
    return inner if isinstance(inner, dict) else {}


def _list(value: object, key: str) -> list[Any]:
    inner = value.get(key) if isinstance(value, dict) else None
    return inner if isinstance(inner, list) else []


def _str(value: object, key: str) -> str:
    inner = value.get(key) if isinstance(value, dict) else None
    return inner if isinstance(inner, str) else ""


# PayPal's documented `value` pattern. Decimal() alone would also take other scripts'
# digits, exponents, "NaN" and "sNaN" (which raises when compared).
_PAYPAL_VALUE = re.compile(r"-?[0-9]+|-?[0-9]*\.[0-9]+")


def _decimal(value: str) -> Decimal | None:
    if not _PAYPAL_VALUE.fullmatch(value):
        return None
    try:
        return Decimal(value)
    except InvalidOperation:
        return None


@dataclass(frozen=True)
class _PayPalError:
    """PayPal's error envelope (`name`, `message`, `debug_id`, `details[].issue`,
    `links`), or the OAuth one (`error`, `error_description`)."""

    status: int
    name: str
    message: str
    debug_id: str
    details: tuple[JsonObject, ...]
    links: tuple[JsonObject, ...]

    @classmethod
    def of(cls, response: httpx.Response) -> _PayPalError:
        try:
            payload = response.json()
        except ValueError:
            payload = {}
        if not isinstance(payload, dict):
            payload = {}
        details = tuple(d for d in _list(payload, "details") if isinstance(d, dict))
        links = tuple(link for link in _list(payload, "links") if isinstance(link, dict))
        return cls(
            status=response.status_code,
            name=_str(payload, "name") or _str(payload, "error"),
            message=_str(payload, "message") or _str(payload, "error_description"),
            debug_id=_str(payload, "debug_id") or response.headers.get("paypal-debug-id", ""),
            details=details,
            links=links,
        )

    @property
    def issue(self) -> str:
        """The first detail's issue ("INSTRUMENT_DECLINED"), "" if none."""
        return next((_str(d, "issue") for d in self.details if _str(d, "issue")), "")

    @property
    def description(self) -> str:
        return next((_str(d, "description") for d in self.details if _str(d, "description")), "")

    def describe(self, operation: str) -> str:
        text = f"paypal {operation}: HTTP {self.status}"
        if self.name:
            text += f" {self.name}"
        if self.issue:
            text += f" [{self.issue}]"
        if self.message:
            text += f": {self.message[:200]}"
        if self.debug_id:
            text += f" (debug_id {self.debug_id})"
        return text


class PayPalProvider:
    """PayPal as a `PaymentProvider` (see the module docstring for the calls made)."""

    def __init__(
        self,
        client_id: str,
        client_secret: str,
        webhook_id: str,
        api_base: str,
        timeout_seconds: float = 10.0,
        *,
        token_refresh_margin: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not api_base.startswith(("https://", "http://")):
            raise ValueError(f"api_base must be an http(s) URL, got {api_base!r}")
        self._client_id = client_id
        self._client_secret = client_secret
        self._webhook_id = webhook_id
        self._timeout = timeout_seconds
        self._refresh_margin = token_refresh_margin
        self._clock = clock
        self._http = httpx.AsyncClient(
            base_url=api_base.rstrip("/"),
            timeout=httpx.Timeout(timeout_seconds),
            headers={"Accept": "application/json", "User-Agent": "wallet-mesh-gateway"},
        )
        self._token = ""
        self._token_expires = 0.0
        self._token_lock = asyncio.Lock()

    @property
    def name(self) -> str:
        return "paypal"

    async def aclose(self) -> None:
        await self._http.aclose()

    # -- the port ------------------------------------------------------------------

    async def create_charge(self, request: ChargeRequest) -> ProviderPayment:
        order_id = request.payment_method.strip()
        if not order_id:
            raise ProviderRejected("paypal charge: no PayPal order id as the payment method")
        value = paypal_value(request.amount, request.currency)
        order_path = f"/v2/checkout/orders/{quote(order_id, safe='')}"

        order = await self._json_call("order lookup", "GET", order_path)
        mismatch = self._order_mismatch(order, request, value)
        if mismatch:
            return ProviderPayment("", PaymentStatus.FAILED, "order_mismatch", mismatch)

        response = await self._call(
            "capture",
            "POST",
            f"{order_path}/capture",
            body=b"{}",
            request_id=request.payment_id,
            representation=True,
        )
        if response.is_success:
            capture = self._capture_of(self._json("capture", response))
            if capture is None:
                # Retrying is safe: the same PayPal-Request-Id replays this capture.
                raise ProviderUnavailable("paypal capture: the answer carries no capture")
            custom_id = _str(capture, "custom_id")
            if custom_id and custom_id != request.payment_id:
                log.warning(
                    "paypal capture %s carries custom_id %s, not payment %s",
                    _str(capture, "id"),
                    custom_id,
                    request.payment_id,
                )
            return self._capture_payment(capture)
        error = _PayPalError.of(response)
        if response.status_code == 422 and error.issue == "ORDER_ALREADY_CAPTURED":
            return await self._already_captured(order_path, request.payment_id, error)
        if response.status_code == 422 and error.issue in _CAPTURE_DECLINES:
            return self._declined(error)
        raise ProviderRejected(error.describe("capture"))

    async def create_payout(self, request: PayoutRequest) -> ProviderPayment:
        receiver = request.destination.strip()
        if not receiver:
            raise ProviderRejected("paypal payout: no receiver as the destination")
        recipient_type = "EMAIL" if "@" in receiver else "PAYPAL_ID"
        item: JsonObject = {
            "recipient_type": recipient_type,
            # Payouts v1 names the currency `currency` (Orders v2: `currency_code`).
            "amount": {
                "value": paypal_value(request.amount, request.currency),
                "currency": request.currency,
            },
            "receiver": receiver,
            "sender_item_id": request.payment_id,
        }
        if request.description:
            item["note"] = request.description[:1000]
        payload = {
            "sender_batch_header": {
                "sender_batch_id": request.payment_id,
                "recipient_type": recipient_type,
                "email_subject": "You have a payout",
            },
            "items": [item],
        }
        response = await self._call(
            "payout",
            "POST",
            "/v1/payments/payouts",
            body=json.dumps(payload).encode(),
            request_id=request.payment_id,
        )
        if response.is_success:
            return self._payout_payment(self._json("payout", response))
        error = _PayPalError.of(response)
        if self._is_duplicate_batch(error):
            return await self._existing_payout(error, request.payment_id)
        if response.status_code == 422 and error.name in _PAYOUT_DECLINES:
            return ProviderPayment(
                "", PaymentStatus.FAILED, error.name.lower(), error.message or error.name
            )
        raise ProviderRejected(error.describe("payout"))

    async def refund(self, request: RefundRequest) -> ProviderPayment:
        capture_id = request.charge_reference.strip()
        if not capture_id:
            raise ProviderRejected("paypal refund: no capture id to refund")
        payload = {
            "amount": {
                "value": paypal_value(request.amount, request.currency),
                "currency_code": request.currency,
            },
            "custom_id": request.payment_id,
        }
        response = await self._call(
            "refund",
            "POST",
            f"/v2/payments/captures/{quote(capture_id, safe='')}/refund",
            body=json.dumps(payload).encode(),
            request_id=request.payment_id,
            representation=True,
        )
        if response.is_success:
            return self._refund_payment(self._json("refund", response))
        error = _PayPalError.of(response)
        if response.status_code == 422 and error.issue in _REFUND_DECLINES:
            return self._declined(error)
        raise ProviderRejected(error.describe("refund"))

    async def retrieve(self, kind: PaymentKind, reference: str) -> ProviderPayment:
        if not reference:
            raise ProviderRejected(f"paypal {kind} lookup: no reference")
        segment = quote(reference, safe="")
        if kind == PaymentKind.CHARGE:
            capture = await self._json_call(
                "capture lookup", "GET", f"/v2/payments/captures/{segment}"
            )
            return self._capture_payment(capture)
        if kind == PaymentKind.REFUND:
            refund = await self._json_call(
                "refund lookup", "GET", f"/v2/payments/refunds/{segment}"
            )
            return self._refund_payment(refund)
        if kind == PaymentKind.PAYOUT:
            batch = await self._json_call("payout lookup", "GET", f"/v1/payments/payouts/{segment}")
            return self._payout_payment(batch)

    async def parse_webhook(self, body: bytes, headers: Mapping[str, str]) -> WebhookEvent | None:
        """Verified by PayPal's verification API before anything in it is believed."""
        # Header names arrive lower case (the PaymentProvider contract).
        missing = [name for name in _WEBHOOK_HEADERS if not headers.get(name)]
        if missing:
            raise WebhookSignatureInvalid(f"paypal webhook: missing {', '.join(missing)}")
        try:
            text = body.decode("utf-8")
            event = json.loads(text)
        except ValueError as exc:  # UnicodeDecodeError is a ValueError
            raise WebhookSignatureInvalid("paypal webhook: the body is not JSON") from exc
        if not isinstance(event, dict):
            raise WebhookSignatureInvalid("paypal webhook: the body is not a JSON object")

        envelope = json.dumps(
            {
                "auth_algo": headers["paypal-auth-algo"],
                "cert_url": headers["paypal-cert-url"],
                "transmission_id": headers["paypal-transmission-id"],
                "transmission_sig": headers["paypal-transmission-sig"],
                "transmission_time": headers["paypal-transmission-time"],
                "webhook_id": self._webhook_id,
            }
        )
        # The event goes in as delivered, byte for byte (see the module docstring).
        verification = f'{envelope[:-1]}, "webhook_event": {text}}}'.encode()
        response = await self._call(
            "webhook verification",
            "POST",
            "/v1/notifications/verify-webhook-signature",
            body=verification,
        )
        if response.status_code in (400, 422):
            # PayPal refused the transmission data itself: not a verifiable delivery.
            raise WebhookSignatureInvalid(
                _PayPalError.of(response).describe("webhook verification")
            )
        if not response.is_success:
            raise ProviderRejected(_PayPalError.of(response).describe("webhook verification"))
        status = _str(self._json("webhook verification", response), "verification_status")
        if status != "SUCCESS":
            raise WebhookSignatureInvalid(
                f"paypal webhook: the signature does not verify ({status or 'no status'})"
            )
        return await self._read_event(event)

    # -- webhooks --------------------------------------------------------------------

    async def _read_event(self, event: JsonObject) -> WebhookEvent | None:
        event_id = _str(event, "id")
        event_type = _str(event, "event_type")
        resource = _obj(event, "resource")
        subject = self._event_subject(event_type, resource)
        if subject is None:
            return None
        kind, payment_id = subject
        if not payment_id or not event_id:
            log.warning(
                "paypal webhook %s (%s) names none of our payments; ignored", event_id, event_type
            )
            return None
        if kind is PaymentKind.CHARGE:
            payment = self._charge_event(event_type, resource)
        elif kind is PaymentKind.REFUND:
            payment = self._refund_payment(resource, default=_REFUND_EVENTS[event_type])
        elif event_type.startswith("PAYMENT.PAYOUTS-ITEM."):
            payment = self._payout_item_payment(resource)
        elif event_type.endswith(".SUCCESS"):
            # A finished batch says nothing of its one item (it may have failed, or be
            # unclaimed): the item's state is read from PayPal.
            batch_id = _str(_obj(resource, "batch_header"), "payout_batch_id")
            payment = await self.retrieve(PaymentKind.PAYOUT, batch_id)
        else:
            payment = self._payout_payment(resource)  # DENIED: nothing was paid
        return WebhookEvent(event_id=event_id, kind=kind, payment_id=payment_id, payment=payment)

    @staticmethod
    def _event_subject(event_type: str, resource: JsonObject) -> tuple[PaymentKind, str] | None:
        """Which kind of payment an event is about, and our payment id from it; None for
        events the gateway does not act on."""
        if event_type in _CHARGE_EVENTS:
            return PaymentKind.CHARGE, _str(resource, "custom_id")
        if event_type in _REFUND_EVENTS:
            return PaymentKind.REFUND, _str(resource, "custom_id") or _str(resource, "invoice_id")
        if event_type.startswith("PAYMENT.PAYOUTS-ITEM."):
            item = _obj(resource, "payout_item")
            payment_id = _str(resource, "sender_batch_id") or _str(item, "sender_item_id")
            return PaymentKind.PAYOUT, payment_id
        if event_type in ("PAYMENT.PAYOUTSBATCH.SUCCESS", "PAYMENT.PAYOUTSBATCH.DENIED"):
            header = _obj(_obj(resource, "batch_header"), "sender_batch_header")
            return PaymentKind.PAYOUT, _str(header, "sender_batch_id")
        return None

    def _charge_event(self, event_type: str, capture: JsonObject) -> ProviderPayment:
        status = _CHARGE_EVENTS[event_type]
        reference = _str(capture, "id")
        if status is not PaymentStatus.FAILED:
            return ProviderPayment(reference, status)
        reason = _str(_obj(capture, "status_details"), "reason") or event_type.rsplit(".", 1)[1]
        return ProviderPayment(reference, status, reason.lower(), f"PayPal: {event_type}")

    # -- mapping PayPal's resources ------------------------------------------------------

    @staticmethod
    def _order_mismatch(order: JsonObject, request: ChargeRequest, value: str) -> str:
        """Why the approved order cannot pay this charge, "" if it can."""
        units = [unit for unit in _list(order, "purchase_units") if isinstance(unit, dict)]
        total = Decimal(0)
        for unit in units:
            amount = _obj(unit, "amount")
            unit_value = _decimal(_str(amount, "value"))
            if _str(amount, "currency_code") != request.currency or unit_value is None:
                return f"the PayPal order is not in {request.currency}"
            total += unit_value
            custom_id = _str(unit, "custom_id")
            if custom_id and custom_id != request.payment_id:
                return "the PayPal order was created for another payment"
        if not units or total != _decimal(value):
            return f"the PayPal order is not for {value} {request.currency}"
        return ""

    @staticmethod
    def _capture_of(order: JsonObject) -> JsonObject | None:
        for unit in _list(order, "purchase_units"):
            for capture in _list(_obj(unit, "payments"), "captures"):
                if isinstance(capture, dict) and _str(capture, "id"):
                    return capture
        return None

    async def _already_captured(
        self, order_path: str, payment_id: str, error: _PayPalError
    ) -> ProviderPayment:
        """The order was captured by a call whose PayPal-Request-Id PayPal no longer
        remembers: the capture is ours only if it carries our payment id."""
        order = await self._json_call("order lookup", "GET", order_path)
        for unit in _list(order, "purchase_units"):
            for capture in _list(_obj(unit, "payments"), "captures"):
                if isinstance(capture, dict) and _str(capture, "custom_id") == payment_id:
                    return self._capture_payment(capture)
        return self._declined(error)

    @staticmethod
    def _declined(error: _PayPalError) -> ProviderPayment:
        return ProviderPayment(
            "",
            PaymentStatus.FAILED,
            error.issue.lower(),
            error.description or error.message or error.issue,
        )

    @staticmethod
    def _capture_payment(capture: JsonObject) -> ProviderPayment:
        reference = _str(capture, "id")
        paypal_status = _str(capture, "status")
        status = _CAPTURE_STATUS.get(paypal_status)
        if status is None:
            log.warning("paypal capture %s has unknown status %r", reference, paypal_status)
            return ProviderPayment(reference, PaymentStatus.PENDING)
        if status is not PaymentStatus.FAILED:
            return ProviderPayment(reference, status)
        reason = _str(_obj(capture, "status_details"), "reason") or paypal_status
        return ProviderPayment(reference, status, reason.lower(), f"PayPal capture {paypal_status}")

    @staticmethod
    def _refund_payment(
        refund: JsonObject, default: PaymentStatus = PaymentStatus.PENDING
    ) -> ProviderPayment:
        reference = _str(refund, "id")
        paypal_status = _str(refund, "status")
        status = _REFUND_STATUS.get(paypal_status, default)
        if status is not PaymentStatus.FAILED:
            return ProviderPayment(reference, status)
        reason = _str(_obj(refund, "status_details"), "reason") or paypal_status or "failed"
        return ProviderPayment(reference, status, reason.lower(), f"PayPal refund {paypal_status}")

    @classmethod
    def _payout_payment(cls, batch: JsonObject) -> ProviderPayment:
        """A one-item batch: its item's status when PayPal shows it (a finished batch may
        hold a failed item), the batch's otherwise."""
        header = _obj(batch, "batch_header")
        reference = _str(header, "payout_batch_id")
        items = [item for item in _list(batch, "items") if isinstance(item, dict)]
        if items:
            item_payment = cls._payout_item_payment(items[0])
            return ProviderPayment(
                reference or item_payment.reference,
                item_payment.status,
                item_payment.failure_code,
                item_payment.failure_message,
            )
        batch_status = _str(header, "batch_status")
        status = _PAYOUT_BATCH_STATUS.get(batch_status, PaymentStatus.PENDING)
        if status is PaymentStatus.FAILED:
            return ProviderPayment(
                reference, status, batch_status.lower(), f"PayPal payout batch {batch_status}"
            )
        return ProviderPayment(reference, status)

    @staticmethod
    def _payout_item_payment(item: JsonObject) -> ProviderPayment:
        reference = _str(item, "payout_batch_id")
        item_status = _str(item, "transaction_status")
        status = _PAYOUT_ITEM_STATUS.get(item_status, PaymentStatus.PENDING)
        if status is not PaymentStatus.FAILED:
            return ProviderPayment(reference, status)
        errors = _obj(item, "errors")
        code = _str(errors, "name") or item_status
        message = _str(errors, "message") or f"PayPal payout item {item_status}"
        return ProviderPayment(reference, status, code.lower(), message)

    @staticmethod
    def _is_duplicate_batch(error: _PayPalError) -> bool:
        """PayPal's answer to a sender_batch_id used in the last 30 days: HTTP 400 whose
        details name SENDER_BATCH_ID (USER_BUSINESS_ERROR, "Batch with given
        sender_batch_id already exists"), with a link to the original batch."""
        if error.status != 400:
            return False
        texts = [error.message]
        for detail in error.details:
            texts += [_str(detail, "field"), _str(detail, "issue")]
        return any("sender_batch_id" in text.lower() for text in texts)

    async def _existing_payout(self, error: _PayPalError, payment_id: str) -> ProviderPayment:
        for link in error.links:
            match = _PAYOUT_LINK.match(urlsplit(_str(link, "href")).path)
            if match is None:
                continue
            batch = await self._json_call(
                "payout lookup", "GET", f"/v1/payments/payouts/{match['batch_id']}"
            )
            header = _obj(batch, "batch_header")
            if _str(_obj(header, "sender_batch_header"), "sender_batch_id") != payment_id:
                raise ProviderRejected(
                    f"paypal payout: the batch PayPal points to for {payment_id} is another one"
                )
            return self._payout_payment(batch)
        raise ProviderRejected(
            error.describe("payout") + " (a duplicate sender_batch_id, without a link to it)"
        )

    # -- HTTP ------------------------------------------------------------------------------

    async def _json_call(self, operation: str, method: str, path: str) -> JsonObject:
        response = await self._call(operation, method, path)
        if not response.is_success:
            raise ProviderRejected(_PayPalError.of(response).describe(operation))
        return self._json(operation, response)

    async def _call(
        self,
        operation: str,
        method: str,
        path: str,
        *,
        body: bytes | None = None,
        request_id: str = "",
        representation: bool = False,
    ) -> httpx.Response:
        """One authenticated API call. Raises ProviderUnavailable for what may be
        retried (network, timeout, 5xx, 429) and ProviderRejected for a 401 that a fresh
        token does not cure; returns every other answer to the caller to read."""
        headers: dict[str, str] = {}
        if body is not None:
            headers["Content-Type"] = "application/json"
        if request_id:
            headers["PayPal-Request-Id"] = request_id
        if representation:
            headers["Prefer"] = "return=representation"
        for attempt in (1, 2):
            token = await self._access_token()
            headers["Authorization"] = f"Bearer {token}"
            response = await self._send(operation, method, path, body, headers)
            if response.status_code != 401 or attempt == 2:
                break
            self._forget_token(token)  # revoked or expired early: one fresh token
        status = response.status_code
        if status == 429 or status >= 500:
            raise ProviderUnavailable(_PayPalError.of(response).describe(operation))
        if status == 401:
            raise ProviderRejected(
                _PayPalError.of(response).describe(operation) + " (with a fresh access token)"
            )
        return response

    async def _send(
        self,
        operation: str,
        method: str,
        path: str,
        body: bytes | None,
        headers: Mapping[str, str],
        auth: httpx.Auth | None = None,
    ) -> httpx.Response:
        try:
            return await self._http.request(
                method, path, content=body, headers=headers, auth=auth or httpx.USE_CLIENT_DEFAULT
            )
        except httpx.TimeoutException as exc:
            raise ProviderUnavailable(
                f"paypal {operation}: no answer within {self._timeout}s ({type(exc).__name__})"
            ) from exc
        except httpx.TransportError as exc:
            raise ProviderUnavailable(
                f"paypal {operation}: {type(exc).__name__}: {str(exc)[:200]}"
            ) from exc

    @staticmethod
    def _json(operation: str, response: httpx.Response) -> JsonObject:
        try:
            payload = response.json()
        except ValueError as exc:
            # A 2xx PayPal did not finish saying: retrying with the same key is safe.
            raise ProviderUnavailable(
                f"paypal {operation}: HTTP {response.status_code} with a body that is not JSON"
            ) from exc
        if not isinstance(payload, dict):
            raise ProviderUnavailable(f"paypal {operation}: the answer is not a JSON object")
        return payload

    # -- OAuth2 ----------------------------------------------------------------------------

    async def _access_token(self) -> str:
        if self._token and self._clock() < self._token_expires:
            return self._token
        async with self._token_lock:  # one fetch for concurrent callers
            if not (self._token and self._clock() < self._token_expires):
                self._token, self._token_expires = await self._fetch_token()
            return self._token

    def _forget_token(self, token: str) -> None:
        if self._token == token:
            self._token = ""

    async def _fetch_token(self) -> tuple[str, float]:
        fetched_at = self._clock()
        response = await self._send(
            "oauth2 token",
            "POST",
            "/v1/oauth2/token",
            b"grant_type=client_credentials",
            {"Content-Type": "application/x-www-form-urlencoded"},
            auth=httpx.BasicAuth(self._client_id, self._client_secret),
        )
        status = response.status_code
        if status == 429 or status >= 500:
            raise ProviderUnavailable(_PayPalError.of(response).describe("oauth2 token"))
        if not response.is_success:
            raise ProviderRejected(
                _PayPalError.of(response).describe("oauth2 token")
                + " (check the PayPal client id and secret)"
            )
        payload = self._json("oauth2 token", response)
        token = _str(payload, "access_token")
        expires_in = payload.get("expires_in")
        if not token or not isinstance(expires_in, int) or expires_in <= 0:
            raise ProviderUnavailable("paypal oauth2 token: the answer has no usable token")
        margin = min(self._refresh_margin, expires_in / 2)
        return token, fetched_at + expires_in - margin
