"""The built-in sandbox provider: Stripe-style test payment methods, configurable
latency and failures, and asynchronous signed webhooks — a provider to develop and
test against without one on the network.

Its own records live in the `sandbox_payments` table (what a real provider keeps on
its servers), so every gateway instance sees the same sandbox, and it honours
idempotency keys like Stripe: the same key never charges twice.

Test payment methods (charges):
    pm_card_visa, tok_visa          succeeds
    pm_card_chargeDeclined          fails: card_declined
    pm_card_chargeDeclinedInsufficientFunds
                                    fails: insufficient_funds
    pm_card_delayed                 pending; succeeds after the webhook delay, then a
                                    webhook says so
    pm_card_timeout                 the charge is taken, but every answer hangs until
                                    the webhook delay has passed (the caller times
                                    out), then a webhook says it succeeded
    pm_card_unstable                answers HTTP-500-style failures to the first two
                                    calls for a key, then succeeds (charged once)
Payout destinations: anything succeeds, except ba_sandbox_fails (fails:
account_closed) and ba_sandbox_delayed (pending, then a webhook).
A sustained outage is switched on for every instance with the Redis key
`sandbox:outage` (any value; the tests use it), and `failure_rate` makes that share of
calls fail before they are processed; the Redis key `sandbox:failure-rate` (a number
from 0 to 1) overrides it for every instance while it exists (the fault-injection
suite, tests/chaos, sets it with an expiry). Both keys are read in one round trip per
call, bounded: if Redis does not answer, the switches count as off for a second.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import random
import time
import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import httpx
from psycopg import AsyncConnection
from psycopg.rows import dict_row
from redis.asyncio import Redis
from redis.exceptions import RedisError

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
from services.runtime.db import DriverPool

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "sandbox-signature"
SIGNATURE_TOLERANCE_SECONDS = 300
OUTAGE_KEY = "sandbox:outage"
FAILURE_RATE_KEY = "sandbox:failure-rate"
# The switches are a test double's controls: a slow or lost Redis must not make the
# "provider" slow or failing (a real one does not depend on our Redis). One bounded read
# per call; after a failed read the switches count as off for a while.
SWITCH_READ_TIMEOUT = 0.25
SWITCH_COOLDOWN = 1.0

# Test payment method (lower case) -> (status, failure code, message, settles later).
_CHARGE_CARDS = {
    "pm_card_visa": ("succeeded", "", "", False),
    "tok_visa": ("succeeded", "", "", False),
    "pm_card_mastercard": ("succeeded", "", "", False),
    "pm_card_unstable": ("succeeded", "", "", False),
    "pm_card_chargedeclined": ("failed", "card_declined", "Your card was declined.", False),
    "pm_card_chargedeclinedinsufficientfunds": (
        "failed",
        "insufficient_funds",
        "Your card has insufficient funds.",
        False,
    ),
    "pm_card_delayed": ("pending", "", "", True),
    "pm_card_timeout": ("succeeded", "", "", True),
}
_UNSTABLE_FAILURES = 2


def sign(secret: str, body: bytes, timestamp: int | None = None) -> str:
    """The `Sandbox-Signature` header of a body: `t=<unix time>,v1=<hex HMAC-SHA256 of
    "t.body">`, Stripe's scheme."""
    stamp = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(secret.encode(), f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={stamp},v1={digest}"


def verify(secret: str, body: bytes, header: str | None, now: float | None = None) -> None:
    if not header:
        raise WebhookSignatureInvalid("no signature header")
    parts = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    stamp_text = parts.get("t", "")
    # ASCII digits only: int() would also take other scripts' digits, signs and spaces.
    if not (stamp_text.isascii() and stamp_text.isdigit()):
        raise WebhookSignatureInvalid("malformed signature header")
    stamp = int(stamp_text)
    expected = sign(secret, body, stamp).split("v1=", 1)[1]
    if not hmac.compare_digest(expected, parts.get("v1", "")):
        raise WebhookSignatureInvalid("signature does not match")
    if abs((time.time() if now is None else now) - stamp) > SIGNATURE_TOLERANCE_SECONDS:
        raise WebhookSignatureInvalid("signature timestamp outside the tolerance")


def event_body(event_id: str, kind: PaymentKind, payment_id: str, row: Mapping[str, Any]) -> bytes:
    """A sandbox webhook's JSON body (also what tests build to deliver their own)."""
    return json.dumps(
        {
            "id": event_id,
            "type": f"{kind.value}.{row['status']}",
            "created": int(time.time()),
            "data": {
                "payment_id": payment_id,
                "kind": kind.value,
                "reference": row["reference"],
                "status": row["status"],
                "failure_code": row.get("failure_code", ""),
                "failure_message": row.get("failure_message", ""),
            },
        },
        separators=(",", ":"),
    ).encode()


class SandboxProvider:
    def __init__(
        self,
        pool: DriverPool,
        redis: Redis,
        *,
        webhook_url: str | None,
        webhook_secret: str,
        webhook_delay: float = 2.0,
        latency: float = 0.0,
        failure_rate: float = 0.0,
    ) -> None:
        self._pool = pool
        self._redis = redis
        self._webhook_url = webhook_url
        self._secret = webhook_secret
        self._delay = webhook_delay
        self._latency = latency
        self._failure_rate = failure_rate
        self._deliveries: set[asyncio.Task[None]] = set()
        self._switches_off_until = 0.0  # time.monotonic() until which Redis is not read
        self._http = httpx.AsyncClient(timeout=5.0)

    @property
    def name(self) -> str:
        return "sandbox"

    async def aclose(self) -> None:
        for task in self._deliveries:
            task.cancel()
        await self._http.aclose()

    # --- the provider's API -------------------------------------------------------------

    async def create_charge(self, request: ChargeRequest) -> ProviderPayment:
        method = request.payment_method.lower()
        if method not in _CHARGE_CARDS:
            raise ProviderRejected(f"No such PaymentMethod: '{request.payment_method}'")
        status, code, message, delayed = _CHARGE_CARDS[method]
        row = await self._create(
            request.payment_id,
            PaymentKind.CHARGE,
            request.amount,
            request.currency,
            method,
            status,
            code,
            message,
            delayed=delayed,
        )
        if method == "pm_card_unstable" and row["calls"] <= _UNSTABLE_FAILURES:
            raise ProviderUnavailable("sandbox: HTTP 500 (unstable card)")
        return await self._answer(row)

    async def create_payout(self, request: PayoutRequest) -> ProviderPayment:
        destination = request.destination
        if destination == "ba_sandbox_fails":
            status, code, message = "failed", "account_closed", "The bank account is closed."
        elif destination == "ba_sandbox_delayed":
            status, code, message = "pending", "", ""
        else:
            status, code, message = "succeeded", "", ""
        row = await self._create(
            request.payment_id,
            PaymentKind.PAYOUT,
            request.amount,
            request.currency,
            destination,
            status,
            code,
            message,
            delayed=status == "pending",
        )
        return await self._answer(row)

    async def refund(self, request: RefundRequest) -> ProviderPayment:
        async with self._pool.connection() as connection:
            charge = await _fetch(
                connection,
                "SELECT * FROM sandbox_payments WHERE reference = %(ref)s AND kind = 'charge'",
                {"ref": request.charge_reference},
            )
        if charge is None or charge["status"] != "succeeded":
            raise ProviderRejected(f"No such charge: '{request.charge_reference}'")
        row = await self._create(
            request.payment_id,
            PaymentKind.REFUND,
            request.amount,
            request.currency,
            request.charge_reference,
            "succeeded",
            "",
            "",
            delayed=False,
        )
        return await self._answer(row)

    async def retrieve(self, kind: PaymentKind, reference: str) -> ProviderPayment:
        await self._weather()
        row = await self._current(reference)
        if row is None:
            raise ProviderRejected(f"No such {kind.value}: '{reference}'")
        return await self._answer(row)

    async def parse_webhook(self, body: bytes, headers: Mapping[str, str]) -> WebhookEvent | None:
        verify(self._secret, body, headers.get(SIGNATURE_HEADER))
        try:
            event = json.loads(body)
            data = event["data"]
            return WebhookEvent(
                event_id=str(event["id"]),
                kind=PaymentKind(data["kind"]),
                payment_id=str(data["payment_id"]),
                payment=ProviderPayment(
                    reference=str(data["reference"]),
                    status=PaymentStatus(data["status"]),
                    failure_code=str(data.get("failure_code", "")),
                    failure_message=str(data.get("failure_message", "")),
                ),
            )
        except (ValueError, KeyError, TypeError) as error:
            raise WebhookSignatureInvalid("signed, but not a sandbox event") from error

    # --- behind the API -------------------------------------------------------------------

    async def _weather(self) -> None:
        """Latency, random failures and the outage switch, before any processing."""
        if self._latency:
            await asyncio.sleep(self._latency)
        outage, rate = await self._switches()
        if outage is not None:
            raise ProviderUnavailable("sandbox: HTTP 503 (outage)")
        failure_rate = _failure_rate(rate, self._failure_rate)
        if failure_rate and random.random() < failure_rate:  # noqa: S311
            raise ProviderUnavailable("sandbox: HTTP 500 (random failure)")

    async def _switches(self) -> tuple[bytes | str | None, bytes | str | None]:
        """The outage and failure-rate switches, (None, None) when Redis cannot say."""
        if time.monotonic() < self._switches_off_until:
            return None, None
        try:
            async with asyncio.timeout(SWITCH_READ_TIMEOUT):
                outage, rate = await self._redis.mget(OUTAGE_KEY, FAILURE_RATE_KEY)
        except (RedisError, OSError, TimeoutError):
            self._switches_off_until = time.monotonic() + SWITCH_COOLDOWN
            return None, None
        return outage, rate

    async def _create(
        self,
        key: str,
        kind: PaymentKind,
        amount: int,
        currency: str,
        instrument: str,
        status: str,
        code: str,
        message: str,
        *,
        delayed: bool,
    ) -> dict[str, Any]:
        await self._weather()
        async with self._pool.connection() as connection:
            row = await _fetch(
                connection,
                """INSERT INTO sandbox_payments AS s (idempotency_key, reference, kind, amount,
                        currency, instrument, status, failure_code, failure_message, settle_at)
                   VALUES (%(key)s, %(ref)s, %(kind)s, %(amount)s, %(currency)s, %(instrument)s,
                           %(status)s, %(code)s, %(message)s,
                           CASE WHEN %(delayed)s
                                THEN now() + make_interval(secs => %(delay)s) END)
                   ON CONFLICT (idempotency_key) DO UPDATE SET calls = s.calls + 1
                   RETURNING *, (xmax = 0) AS inserted""",
                {
                    "key": key,
                    "ref": f"sbx_{kind.value[:2]}_{uuid.uuid4().hex[:20]}",
                    "kind": kind.value,
                    "amount": amount,
                    "currency": currency,
                    "instrument": instrument,
                    "status": status,
                    "code": code,
                    "message": message,
                    "delayed": delayed,
                    "delay": self._delay,
                },
            )
        assert row is not None
        if row["inserted"] and row["settle_at"] is not None:
            self._schedule_webhook(kind, key, row["reference"], row["settle_at"])
        return row

    async def _answer(self, row: dict[str, Any]) -> ProviderPayment:
        # The timeout card: every answer hangs until it settles (the caller gives up).
        if row["instrument"] == "pm_card_timeout" and row["settle_at"] is not None:
            wait = (row["settle_at"] - datetime.now(row["settle_at"].tzinfo)).total_seconds()
            if wait > 0:
                await asyncio.sleep(wait)
        return ProviderPayment(
            reference=row["reference"],
            status=PaymentStatus(row["status"]),
            failure_code=row["failure_code"],
            failure_message=row["failure_message"],
        )

    async def _current(self, reference: str) -> dict[str, Any] | None:
        """A payment as it is now: a delayed one whose time has come succeeds first
        (for every instance), in the same statement."""
        async with self._pool.connection() as connection:
            return await _fetch(
                connection,
                """WITH settled AS (
                       UPDATE sandbox_payments SET status = 'succeeded'
                        WHERE reference = %(ref)s AND status = 'pending' AND settle_at <= now()
                       RETURNING *)
                   SELECT * FROM settled
                   UNION ALL
                   SELECT * FROM sandbox_payments
                    WHERE reference = %(ref)s AND NOT EXISTS (SELECT FROM settled)""",
                {"ref": reference},
            )

    def _schedule_webhook(
        self, kind: PaymentKind, key: str, reference: str, settle_at: datetime
    ) -> None:
        if not self._webhook_url:
            return
        task = asyncio.get_running_loop().create_task(
            self._deliver_later(kind, key, reference, settle_at)
        )
        self._deliveries.add(task)
        task.add_done_callback(self._deliveries.discard)

    async def _deliver_later(
        self, kind: PaymentKind, key: str, reference: str, settle_at: datetime
    ) -> None:
        assert self._webhook_url is not None
        wait = (settle_at - datetime.now(settle_at.tzinfo)).total_seconds()
        await asyncio.sleep(max(0.0, wait))
        row = await self._current(reference)
        if row is None:
            return
        body = event_body(f"evt_{uuid.uuid4().hex[:24]}", kind, key, row)
        for attempt in range(5):  # providers retry deliveries that are not 2xx
            try:
                response = await self._http.post(
                    self._webhook_url,
                    content=body,
                    headers={
                        "content-type": "application/json",
                        SIGNATURE_HEADER: sign(self._secret, body),
                    },
                )
                if response.status_code < 300:
                    return
                log.warning("sandbox webhook refused", extra={"status": response.status_code})
            except httpx.HTTPError as error:
                log.warning("sandbox webhook not delivered", extra={"error": str(error)})
            await asyncio.sleep(0.5 * 2**attempt)


def _failure_rate(switch: bytes | str | None, configured: float) -> float:
    """The rate of the `sandbox:failure-rate` switch when it is set to a number from 0 to
    1, else the configured one (a malformed switch must not stop the sandbox)."""
    if switch is None:
        return configured
    try:
        rate = float(switch)
    except ValueError:
        log.warning("ignoring a malformed %s: %r", FAILURE_RATE_KEY, switch)
        return configured
    return rate if 0.0 <= rate <= 1.0 else configured


async def _fetch(
    connection: AsyncConnection[Any], sql: str, params: Mapping[str, Any]
) -> dict[str, Any] | None:
    async with connection.cursor(row_factory=dict_row) as cursor:
        await cursor.execute(sql, params)
        return await cursor.fetchone()
