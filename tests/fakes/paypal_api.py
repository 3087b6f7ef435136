"""A local PayPal REST API, speaking PayPal's documented wire format, for the PayPal
connector's tests: the connector is pointed at it by its `api_base` setting, exactly as
it is pointed at api-m.paypal.com in production, so what is tested is the real HTTP.

Endpoints (only these): OAuth2 client credentials (`POST /v1/oauth2/token`), Orders v2
capture (`POST /v2/checkout/orders/{id}/capture`, `GET /v2/checkout/orders/{id}`),
Payments v2 (`GET /v2/payments/captures/{id}`, `POST /v2/payments/captures/{id}/refund`,
`GET /v2/payments/refunds/{id}`), Payouts v1 (`POST /v1/payments/payouts`,
`GET /v1/payments/payouts/{id}`) and webhook signature verification
(`POST /v1/notifications/verify-webhook-signature`).

What it models because the connector depends on it:
- every API call needs `Authorization: Bearer <a token it issued>` (401 `invalid_token`
  otherwise), tokens come from Basic-authenticated client credentials;
- PayPal's error envelope `{"name", "message", "debug_id", "details": [{"issue", ...}]}`;
- `PayPal-Request-Id` idempotency: a repeated id gets the stored answer (200 instead of
  201, as PayPal documents) and nothing is done twice;
- payouts are unique per `sender_batch_id`: a reused one is refused with HTTP 400
  USER_BUSINESS_ERROR carrying a HATEOAS link to the original batch, as PayPal documents;
- webhook verification is computed over the *raw bytes* of `webhook_event` in the
  verification request (PayPal's signature covers a CRC32 of the delivered body, so an
  event that was re-serialised does not verify), with the fake's own key standing in for
  PayPal's certificate: `sign_webhook(body)` produces the headers a delivery carries.

Test controls: `approved_order(...)` (orders are created by the payer's checkout, not by
the connector), `existing_payout(...)`, `settle_capture(...)`, `revoke_tokens()`,
`forget_request_ids()`, `fail_next(n, status)` (answers without processing),
`outage(on)` (connections closed without an answer), `stall_next(n)` (holds a request
until `release()`), and `counters` / `requests` to assert on.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import json
import secrets
import string
import sys
import threading
import uuid
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Literal
from urllib.parse import urlsplit

Outcome = Literal["complete", "pending", "declined", "capture_declined"]

JsonObject = dict[str, Any]

# Digits after the decimal point PayPal accepts per currency (HUF and TWD are whole
# numbers at PayPal although ISO gives them two); anything else: 2.
_DECIMALS = {"JPY": 0, "HUF": 0, "TWD": 0, "KRW": 0, "ISK": 0}
_DECIMALS |= {code: 3 for code in ("BHD", "JOD", "KWD", "OMR", "TND")}

# The fake's default application credentials and webhook id.
CLIENT_ID = "fake-client-id"
CLIENT_SECRET = "fake-client-secret"
WEBHOOK_ID = "8PT597110X687430LKGECATA"

_AUTH_ALGO = "SHA256withRSA"

# Payout item status → the webhook PayPal sends for it.
_ITEM_EVENTS = {
    "SUCCESS": "PAYMENT.PAYOUTS-ITEM.SUCCEEDED",
    "FAILED": "PAYMENT.PAYOUTS-ITEM.FAILED",
    "UNCLAIMED": "PAYMENT.PAYOUTS-ITEM.UNCLAIMED",
    "RETURNED": "PAYMENT.PAYOUTS-ITEM.RETURNED",
    "BLOCKED": "PAYMENT.PAYOUTS-ITEM.BLOCKED",
}


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the fake received it (header names lower-case)."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass(frozen=True)
class _Response:
    status: int
    body: bytes = b""
    drop: bool = False  # close the connection without answering


@dataclass
class _Order:
    id: str
    value: str
    currency: str
    custom_id: str
    outcome: Outcome
    decline_issue: str
    status: str = "APPROVED"
    capture_id: str = ""


@dataclass
class _Failure:
    status: int
    path: str


@dataclass
class _State:
    tokens: set[str] = field(default_factory=set)
    orders: dict[str, _Order] = field(default_factory=dict)
    captures: dict[str, JsonObject] = field(default_factory=dict)
    refunded: dict[str, Decimal] = field(default_factory=dict)  # capture id → refunded
    refunds: dict[str, JsonObject] = field(default_factory=dict)
    payouts: dict[str, JsonObject] = field(default_factory=dict)  # batch id → batch
    batch_ids: dict[str, str] = field(default_factory=dict)  # sender_batch_id → batch id
    replays: dict[tuple[str, str], _Response] = field(default_factory=dict)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _dumps(payload: JsonObject) -> bytes:
    return json.dumps(payload).encode()


def _error(
    status: int,
    name: str,
    message: str,
    *,
    issue: str = "",
    description: str = "",
    field: str = "",
    links: list[JsonObject] | None = None,
) -> _Response:
    """PayPal's error envelope."""
    payload: JsonObject = {"name": name, "message": message, "debug_id": secrets.token_hex(7)}
    if issue or field:
        detail: JsonObject = {"issue": issue, "description": description or message}
        if field:
            detail |= {"field": field, "location": "body"}
        payload["details"] = [detail]
    if links:
        payload["links"] = links
    return _Response(status, _dumps(payload))


def _unprocessable(issue: str, description: str) -> _Response:
    return _error(
        422,
        "UNPROCESSABLE_ENTITY",
        "The requested action could not be performed, semantically incorrect, or failed "
        "business validation.",
        issue=issue,
        description=description,
    )


def _not_found() -> _Response:
    return _error(
        404,
        "RESOURCE_NOT_FOUND",
        "The specified resource does not exist.",
        issue="INVALID_RESOURCE_ID",
        description="Specified resource ID does not exist. Please check the resource ID "
        "and try again.",
    )


def _invalid(field: str, description: str) -> _Response:
    return _error(
        400,
        "INVALID_REQUEST",
        "Request is not well-formed, syntactically incorrect, or violates schema.",
        issue="INVALID_PARAMETER_VALUE",
        description=description,
        field=field,
    )


def _injected(status: int) -> _Response:
    names = {
        429: ("RATE_LIMIT_REACHED", "Too many requests. Blocked due to rate limiting."),
        500: ("INTERNAL_SERVER_ERROR", "An internal server error has occurred."),
        503: ("SERVICE_UNAVAILABLE", "Service Unavailable."),
    }
    phrase = HTTPStatus(status).phrase
    name, message = names.get(status, (phrase.upper().replace(" ", "_"), phrase))
    return _error(status, name, message)


def _parse_value(value: object, currency: str) -> Decimal | None:
    """A PayPal amount value ("10.50"), checked against the currency's precision."""
    if not isinstance(value, str) or not currency:
        return None
    try:
        amount = Decimal(value)
    except InvalidOperation:
        return None
    if not amount.is_finite() or amount <= 0:
        return None
    digits = len(value.partition(".")[2])
    return amount if digits <= _DECIMALS.get(currency, 2) else None


def _raw_member(text: str, name: str) -> str | None:
    """The exact source text of a top-level member of a JSON object, or None."""
    decoder = json.JSONDecoder()
    blanks = " \t\r\n"

    def skip(index: int) -> int:
        while index < len(text) and text[index] in blanks:
            index += 1
        return index

    try:
        index = skip(0)
        if not text.startswith("{", index):
            return None
        index = skip(index + 1)
        while index < len(text) and text[index] != "}":
            key, index = decoder.raw_decode(text, index)
            index = skip(index)
            if not text.startswith(":", index):
                return None
            start = skip(index + 1)
            _, end = decoder.raw_decode(text, start)
            if key == name:
                return text[start:end]
            index = skip(end)
            if text.startswith(",", index):
                index = skip(index + 1)
    except ValueError:
        return None
    return None


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, fake: FakePayPal) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.fake = fake

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hung up (a timed-out call) is expected, not an error."""
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"  # keep-alive, as PayPal's edge does
    disable_nagle_algorithm = True  # headers and body leave at once, no ACK delay

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def _serve(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {name.lower(): value for name, value in self.headers.items()}
        response = self.server.fake.handle(method, self.path, headers, body)
        if response.drop:
            self.close_connection = True
            return
        self.send_response(response.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(response.body)))
        self.send_header("Paypal-Debug-Id", secrets.token_hex(7))
        self.end_headers()
        self.wfile.write(response.body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the tests assert on counters, not on access logs."""


class FakePayPal:
    """PayPal's REST API on 127.0.0.1 and a free port, in a daemon thread."""

    def __init__(
        self,
        client_id: str = CLIENT_ID,
        client_secret: str = CLIENT_SECRET,
        webhook_id: str = WEBHOOK_ID,
        token_ttl_seconds: int = 32400,
    ) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.webhook_id = webhook_id
        self.token_ttl_seconds = token_ttl_seconds
        self.refund_status = "COMPLETED"  # what the next refunds end as
        self.counters: Counter[str] = Counter()
        self.requests: list[RecordedRequest] = []
        self._state = _State()
        self._lock = threading.Lock()
        self._signing_key = secrets.token_bytes(32)  # stands in for PayPal's certificate
        self._failures: list[_Failure] = []
        self._outage = False
        self._stalls = 0
        self._released = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle --------------------------------------------------------------

    def start(self) -> FakePayPal:
        self._server = _Server(self)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},  # stop() returns within this
            name="fake-paypal",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._released.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None

    def __enter__(self) -> FakePayPal:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("the fake PayPal API is not started")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    # -- test controls -----------------------------------------------------------

    def approved_order(
        self,
        amount: str,
        currency: str,
        custom_id: str = "",
        outcome: Outcome = "complete",
        decline_issue: str = "INSTRUMENT_DECLINED",
    ) -> str:
        """An order the payer has approved (what the checkout leaves behind): its id is
        the payment token the gateway receives. `amount` is PayPal's decimal value."""
        if _parse_value(amount, currency) is None:
            raise ValueError(f"not a PayPal amount for {currency}: {amount!r}")
        with self._lock:
            order = _Order(self._new_id(), amount, currency, custom_id, outcome, decline_issue)
            self._state.orders[order.id] = order
            return order.id

    def capture_of(self, order_id: str) -> str:
        """The id of the order's capture, "" if it has none."""
        with self._lock:
            return self._state.orders[order_id].capture_id

    def capture(self, capture_id: str) -> JsonObject:
        with self._lock:
            return copy.deepcopy(self._state.captures[capture_id])

    def settle_capture(self, capture_id: str, status: str = "COMPLETED") -> None:
        """A pending capture's review finishes."""
        with self._lock:
            capture = self._state.captures[capture_id]
            capture["status"] = status
            capture.pop("status_details", None)
            capture["update_time"] = _now()

    def refund(self, refund_id: str) -> JsonObject:
        with self._lock:
            return copy.deepcopy(self._state.refunds[refund_id])

    def payout(self, batch_id: str) -> JsonObject:
        """A payout batch as `GET /v1/payments/payouts/{id}` shows it."""
        with self._lock:
            return copy.deepcopy(self._state.payouts[batch_id])

    @property
    def payout_count(self) -> int:
        with self._lock:
            return len(self._state.payouts)

    def existing_payout(
        self, sender_batch_id: str, receiver: str, value: str, currency: str
    ) -> str:
        """A payout made earlier, by a call whose PayPal-Request-Id PayPal no longer
        remembers (or that carried none): only its sender_batch_id identifies it."""
        with self._lock:
            header = {"sender_batch_id": sender_batch_id, "recipient_type": "EMAIL"}
            item = {
                "recipient_type": "EMAIL",
                "receiver": receiver,
                "amount": {"value": value, "currency": currency},
                "sender_item_id": sender_batch_id,
            }
            return self._create_batch(header, [item])

    def forget_request_ids(self) -> None:
        """PayPal's memory of PayPal-Request-Ids lapses (6 hours for orders)."""
        with self._lock:
            self._state.replays.clear()

    def revoke_tokens(self) -> None:
        """Every issued access token stops working (as when one expires early)."""
        with self._lock:
            self._state.tokens.clear()

    def fail_next(self, n: int = 1, status: int = 500, *, path: str = "") -> None:
        """The next n requests (whose path starts with `path`) get `status` with
        PayPal's error envelope, and are not processed."""
        with self._lock:
            self._failures.extend(_Failure(status, path) for _ in range(n))

    def outage(self, on: bool = True) -> None:
        """While on, every connection is closed without an answer."""
        with self._lock:
            self._outage = on

    def stall_next(self, n: int = 1) -> None:
        """The next n requests are held, unprocessed, until `release()` (or `stop()`),
        then answered 503: for client timeouts."""
        with self._lock:
            self._stalls += n
            self._released.clear()

    def release(self) -> None:
        self._released.set()

    def requests_to(self, path: str, method: str = "POST") -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.path == path and r.method == method]

    # -- webhooks ----------------------------------------------------------------

    @property
    def cert_url(self) -> str:
        return f"{self.base_url}/v1/notifications/certs/CERT-360caa42-fca2a594-7a8abba8"

    def sign_webhook(self, body: bytes, *, webhook_id: str | None = None) -> dict[str, str]:
        """The headers PayPal sends with a delivery of `body` to the webhook
        `webhook_id` (this fake's own by default)."""
        transmission_id = str(uuid.uuid1())
        transmission_time = _now()
        signature = self._signature(
            transmission_id, transmission_time, webhook_id or self.webhook_id, body
        )
        return {
            "paypal-transmission-id": transmission_id,
            "paypal-transmission-time": transmission_time,
            "paypal-cert-url": self.cert_url,
            "paypal-auth-algo": _AUTH_ALGO,
            "paypal-transmission-sig": signature,
        }

    def webhook_event(self, event_type: str, resource_type: str, resource: JsonObject) -> bytes:
        """A webhook body. Pretty-printed and with non-ASCII text, as PayPal's are not
        in any canonical form: only the raw bytes verify."""
        event = {
            "id": f"WH-{self._new_id()}-{self._new_id()}",
            "event_version": "1.0",
            "create_time": _now(),
            "resource_type": resource_type,
            "resource_version": "2.0",
            "event_type": event_type,
            "summary": f"{event_type} — notification",
            "resource": resource,
            "links": [
                {
                    "href": f"{self.base_url}/v1/notifications/webhooks-events/WH-0",
                    "rel": "self",
                    "method": "GET",
                }
            ],
        }
        return json.dumps(event, indent=2, ensure_ascii=False).encode()

    def capture_webhook(
        self, capture_id: str, event_type: str = "PAYMENT.CAPTURE.COMPLETED"
    ) -> bytes:
        return self.webhook_event(event_type, "capture", self.capture(capture_id))

    def refund_webhook(self, refund_id: str, event_type: str = "PAYMENT.CAPTURE.REFUNDED") -> bytes:
        return self.webhook_event(event_type, "refund", self.refund(refund_id))

    def payout_batch_webhook(
        self, batch_id: str, event_type: str = "PAYMENT.PAYOUTSBATCH.SUCCESS"
    ) -> bytes:
        batch = self.payout(batch_id)
        resource = {"batch_header": batch["batch_header"], "links": batch["links"]}
        return self.webhook_event(event_type, "payouts", resource)

    def payout_item_webhook(self, batch_id: str) -> bytes:
        item = self.payout(batch_id)["items"][0]
        event_type = _ITEM_EVENTS[item["transaction_status"]]
        return self.webhook_event(event_type, "payouts_item", item)

    def _signature(
        self, transmission_id: str, transmission_time: str, webhook_id: str, body: bytes
    ) -> str:
        message = f"{transmission_id}|{transmission_time}|{webhook_id}|{zlib.crc32(body)}"
        digest = hmac.new(self._signing_key, message.encode(), hashlib.sha256).digest()
        return base64.b64encode(digest).decode()

    # -- the server side -----------------------------------------------------------

    def handle(self, method: str, target: str, headers: dict[str, str], body: bytes) -> _Response:
        path = urlsplit(target).path
        with self._lock:
            self.requests.append(RecordedRequest(method, path, headers, body))
            self.counters["requests"] += 1
            if self._outage:
                self.counters["dropped"] += 1
                return _Response(0, drop=True)
            stalled = self._stalls > 0
            if stalled:
                self._stalls -= 1
                self.counters["stalled"] += 1
        if stalled:
            self._released.wait(timeout=30)
            return _injected(503)
        with self._lock:
            if self._failures and path.startswith(self._failures[0].path):
                failure = self._failures.pop(0)
                self.counters["injected_failures"] += 1
                return _injected(failure.status)
            return self._route(method, path, headers, body)

    def _route(self, method: str, path: str, headers: dict[str, str], body: bytes) -> _Response:
        if method == "POST" and path == "/v1/oauth2/token":
            return self._issue_token(headers, body)
        authorization = headers.get("authorization", "")
        scheme, _, token = authorization.partition(" ")
        if scheme != "Bearer" or token not in self._state.tokens:
            self.counters["unauthorized"] += 1
            payload = {
                "error": "invalid_token",
                "error_description": "Token signature verification failed",
            }
            return _Response(401, _dumps(payload))
        try:
            payload = json.loads(body) if body else {}
        except ValueError:
            return _error(
                400, "INVALID_REQUEST", "Request is not well-formed.", issue="MALFORMED_REQUEST"
            )
        if not isinstance(payload, dict):
            return _invalid("/", "The request body must be a JSON object.")
        minimal = "return=minimal" in headers.get("prefer", "")
        match method, path.strip("/").split("/"):
            case "POST", ["v2", "checkout", "orders", order_id, "capture"]:
                return self._idempotent(
                    path, headers, lambda: self._capture_order(order_id, minimal)
                )
            case "GET", ["v2", "checkout", "orders", order_id]:
                order = self._state.orders.get(order_id)
                return _Response(200, _dumps(self._order_json(order))) if order else _not_found()
            case "GET", ["v2", "payments", "captures", capture_id]:
                capture = self._state.captures.get(capture_id)
                return _Response(200, _dumps(capture)) if capture else _not_found()
            case "POST", ["v2", "payments", "captures", capture_id, "refund"]:
                return self._idempotent(
                    path, headers, lambda: self._refund(capture_id, payload, minimal)
                )
            case "GET", ["v2", "payments", "refunds", refund_id]:
                refund = self._state.refunds.get(refund_id)
                return _Response(200, _dumps(refund)) if refund else _not_found()
            case "POST", ["v1", "payments", "payouts"]:
                return self._idempotent(path, headers, lambda: self._payout(payload))
            case "GET", ["v1", "payments", "payouts", batch_id]:
                batch = self._state.payouts.get(batch_id)
                return _Response(200, _dumps(batch)) if batch else _not_found()
            case "POST", ["v1", "notifications", "verify-webhook-signature"]:
                return self._verify_webhook(payload, body)
        return _not_found()

    def _issue_token(self, headers: dict[str, str], body: bytes) -> _Response:
        self.counters["token_requests"] += 1
        scheme, _, encoded = headers.get("authorization", "").partition(" ")
        try:
            user, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except ValueError:
            user = password = ""
        expected = (self.client_id, self.client_secret)
        if scheme != "Basic" or not hmac.compare_digest(f"{user}:{password}", ":".join(expected)):
            payload = {
                "error": "invalid_client",
                "error_description": "Client Authentication failed",
            }
            return _Response(401, _dumps(payload))
        if body.decode(errors="replace") != "grant_type=client_credentials":
            payload = {"error": "unsupported_grant_type", "error_description": "Grant Type is NULL"}
            return _Response(400, _dumps(payload))
        token = "A21AA" + secrets.token_urlsafe(48)
        self._state.tokens.add(token)
        self.counters["tokens_issued"] += 1
        return _Response(
            200,
            _dumps(
                {
                    "scope": "https://uri.paypal.com/services/payments/payment "
                    "https://uri.paypal.com/payments/payouts",
                    "access_token": token,
                    "token_type": "Bearer",
                    "app_id": "APP-80W284485P519543T",
                    "expires_in": self.token_ttl_seconds,
                    "nonce": f"{_now()}{secrets.token_urlsafe(8)}",
                }
            ),
        )

    def _idempotent(
        self, path: str, headers: dict[str, str], process: Callable[[], _Response]
    ) -> _Response:
        """PayPal-Request-Id: a successful answer is stored and replayed (200 OK)."""
        request_id = headers.get("paypal-request-id", "")
        key = (path, request_id)
        if request_id and key in self._state.replays:
            self.counters["idempotent_replays"] += 1
            stored = self._state.replays[key]
            return _Response(200, stored.body)
        response = process()
        if request_id and 200 <= response.status < 300:
            self._state.replays[key] = response
        return response

    def _capture_order(self, order_id: str, minimal: bool) -> _Response:
        order = self._state.orders.get(order_id)
        if order is None:
            return _not_found()
        self.counters["capture_attempts"] += 1
        if order.status == "COMPLETED":
            return _unprocessable(
                "ORDER_ALREADY_CAPTURED",
                "Order already captured. If 'intent=CAPTURE' only "
                "one capture per order is allowed.",
            )
        if order.outcome == "declined":
            self.counters["capture_declines"] += 1
            return _unprocessable(
                order.decline_issue,
                "The instrument presented was either declined by the processor or bank, "
                "or it can't be used for this payment.",
            )
        capture_id = self._new_id()
        status = {"complete": "COMPLETED", "pending": "PENDING"}.get(order.outcome, "DECLINED")
        capture: JsonObject = {
            "id": capture_id,
            "status": status,
            "amount": {"currency_code": order.currency, "value": order.value},
            "final_capture": True,
            "seller_protection": {"status": "ELIGIBLE"},
            "create_time": _now(),
            "update_time": _now(),
            "supplementary_data": {"related_ids": {"order_id": order.id}},
            "links": self._capture_links(capture_id, order.id),
        }
        if order.custom_id:
            capture["custom_id"] = order.custom_id
        if status == "PENDING":
            capture["status_details"] = {"reason": "PENDING_REVIEW"}
        self._state.captures[capture_id] = capture
        self._state.refunded[capture_id] = Decimal(0)
        order.status = "COMPLETED"
        order.capture_id = capture_id
        self.counters["captures"] += 1
        representation = self._order_json(order)
        if minimal:
            representation = {k: representation[k] for k in ("id", "status", "links")}
        return _Response(201, _dumps(representation))

    def _order_json(self, order: _Order) -> JsonObject:
        unit: JsonObject = {
            "reference_id": "default",
            "amount": {"currency_code": order.currency, "value": order.value},
        }
        if order.custom_id:
            unit["custom_id"] = order.custom_id  # set by the checkout at creation
        if order.capture_id:
            unit["payments"] = {"captures": [self._state.captures[order.capture_id]]}
        return {
            "id": order.id,
            "intent": "CAPTURE",
            "status": order.status,
            "purchase_units": [unit],
            "payer": {"email_address": "buyer@example.com", "payer_id": "QYR5Z8XDVJNXQ"},
            "links": [
                {
                    "href": f"{self.base_url}/v2/checkout/orders/{order.id}",
                    "rel": "self",
                    "method": "GET",
                }
            ],
        }

    def _capture_links(self, capture_id: str, order_id: str) -> list[JsonObject]:
        base = f"{self.base_url}/v2"
        return [
            {"href": f"{base}/payments/captures/{capture_id}", "rel": "self", "method": "GET"},
            {
                "href": f"{base}/payments/captures/{capture_id}/refund",
                "rel": "refund",
                "method": "POST",
            },
            {"href": f"{base}/checkout/orders/{order_id}", "rel": "up", "method": "GET"},
        ]

    def _refund(self, capture_id: str, payload: JsonObject, minimal: bool) -> _Response:
        capture = self._state.captures.get(capture_id)
        if capture is None:
            return _not_found()
        self.counters["refund_attempts"] += 1
        captured = Decimal(capture["amount"]["value"])
        remaining = captured - self._state.refunded[capture_id]
        amount = payload.get("amount")
        if amount is None:
            currency, value = capture["amount"]["currency_code"], remaining
        else:
            currency = amount.get("currency_code", "") if isinstance(amount, dict) else ""
            parsed = _parse_value(
                amount.get("value") if isinstance(amount, dict) else None, currency
            )
            if parsed is None:
                return _invalid("/amount", "The refund amount is not a valid amount.")
            value = parsed
        if capture["status"] == "PENDING":
            return _unprocessable(
                "PENDING_CAPTURE", "Cannot initiate a refund as the capture is pending."
            )
        if capture["status"] == "REFUNDED":
            return _unprocessable(
                "CAPTURE_FULLY_REFUNDED", "The capture has already been fully refunded."
            )
        if capture["status"] not in ("COMPLETED", "PARTIALLY_REFUNDED"):
            return _unprocessable("REFUND_NOT_ALLOWED", "Refund cannot be issued for this capture.")
        if currency != capture["amount"]["currency_code"]:
            return _unprocessable(
                "REFUND_CAPTURE_CURRENCY_MISMATCH",
                "Refund must be in the same currency as the capture.",
            )
        if value > remaining:
            return _unprocessable(
                "REFUND_AMOUNT_EXCEEDED",
                "The refund amount must be less than or equal to "
                "the capture amount that has not yet been refunded.",
            )
        refund_id = self._new_id()
        refund: JsonObject = {
            "id": refund_id,
            "status": self.refund_status,
            "amount": {"currency_code": currency, "value": str(value)},
            "create_time": _now(),
            "update_time": _now(),
            "links": [
                {
                    "href": f"{self.base_url}/v2/payments/refunds/{refund_id}",
                    "rel": "self",
                    "method": "GET",
                },
                {
                    "href": f"{self.base_url}/v2/payments/captures/{capture_id}",
                    "rel": "up",
                    "method": "GET",
                },
            ],
        }
        for name in ("custom_id", "invoice_id", "note_to_payer"):
            if isinstance(payload.get(name), str):
                refund[name] = payload[name]
        if self.refund_status == "PENDING":
            refund["status_details"] = {"reason": "ECHECK"}
        self._state.refunds[refund_id] = refund
        if self.refund_status in ("COMPLETED", "PENDING"):
            self._state.refunded[capture_id] += value
            fully = self._state.refunded[capture_id] == captured
            capture["status"] = "REFUNDED" if fully else "PARTIALLY_REFUNDED"
        self.counters["refunds"] += 1
        if minimal:
            refund = {k: refund[k] for k in ("id", "status", "links")}
        return _Response(201, _dumps(refund))

    def _payout(self, payload: JsonObject) -> _Response:
        self.counters["payout_attempts"] += 1
        header = payload.get("sender_batch_header")
        if not isinstance(header, dict) or not header.get("sender_batch_id"):
            return _invalid("sender_batch_header.sender_batch_id", "A sender_batch_id is required.")
        items = payload.get("items")
        if not isinstance(items, list) or not items:
            return _invalid("items", "At least one payout item is required.")
        for index, item in enumerate(items):
            if not isinstance(item, dict):
                return _invalid(f"items[{index}]", "A payout item must be an object.")
            recipient_type = item.get("recipient_type") or header.get("recipient_type")
            receiver = item.get("receiver")
            amount = item.get("amount")
            if recipient_type not in ("EMAIL", "PHONE", "PAYPAL_ID") or not isinstance(
                receiver, str
            ):
                return _invalid(f"items[{index}].receiver", "Receiver is invalid or missing.")
            if recipient_type == "EMAIL" and "@" not in receiver:
                return _invalid(f"items[{index}].receiver", "Receiver is not an email.")
            currency = amount.get("currency", "") if isinstance(amount, dict) else ""
            value = amount.get("value") if isinstance(amount, dict) else None
            if _parse_value(value, currency) is None:
                return _invalid(f"items[{index}].amount", "Amount is invalid.")
        existing = self._state.batch_ids.get(str(header["sender_batch_id"]))
        if existing is not None:
            self.counters["duplicate_payouts"] += 1
            return _error(
                400,
                "USER_BUSINESS_ERROR",
                "User business error.",
                issue=f"Batch with given sender_batch_id already exists: "
                f"{header['sender_batch_id']}",
                field="SENDER_BATCH_ID",
                links=[self._batch_link(existing)],
            )
        batch_id = self._create_batch(header, items)
        batch = self._state.payouts[batch_id]
        answer = {
            "batch_header": {
                "payout_batch_id": batch_id,
                "batch_status": "PENDING",
                "sender_batch_header": batch["batch_header"]["sender_batch_header"],
            },
            "links": [self._batch_link(batch_id)],
        }
        return _Response(201, _dumps(answer))

    def _create_batch(self, header: JsonObject, items: list[JsonObject]) -> str:
        """Stores a batch already processed: POST answers PENDING as PayPal does, the
        items' outcome shows on GET. Receivers @fails.example are unregistered."""
        batch_id = self._new_id(13)
        processed = []
        total = Decimal(0)
        for item in items:
            item_id = self._new_id(13)
            failed = str(item["receiver"]).endswith("@fails.example")
            total += Decimal(item["amount"]["value"])
            processed_item: JsonObject = {
                "payout_item_id": item_id,
                "transaction_id": "" if failed else self._new_id(),
                "transaction_status": "FAILED" if failed else "SUCCESS",
                "payout_batch_id": batch_id,
                "sender_batch_id": header["sender_batch_id"],
                "payout_item_fee": {"currency": item["amount"]["currency"], "value": "0.00"},
                "payout_item": {
                    "recipient_type": item.get("recipient_type") or header.get("recipient_type"),
                    "amount": item["amount"],
                    "receiver": item["receiver"],
                    "sender_item_id": item.get("sender_item_id", ""),
                    "recipient_wallet": "PAYPAL",
                },
                "time_processed": _now(),
                "links": [
                    {
                        "href": f"{self.base_url}/v1/payments/payouts-item/{item_id}",
                        "rel": "item",
                        "method": "GET",
                    }
                ],
            }
            if failed:
                processed_item["errors"] = {
                    "name": "RECEIVER_UNREGISTERED",
                    "message": "Receiver is unregistered",
                    "details": [],
                }
            processed.append(processed_item)
        currency = items[0]["amount"]["currency"]
        self._state.payouts[batch_id] = {
            "batch_header": {
                "payout_batch_id": batch_id,
                "batch_status": "SUCCESS",
                "time_created": _now(),
                "time_completed": _now(),
                "sender_batch_header": copy.deepcopy(header),
                "amount": {"currency": currency, "value": str(total)},
                "fees": {"currency": currency, "value": "0.00"},
            },
            "items": processed,
            "links": [self._batch_link(batch_id)],
        }
        self._state.batch_ids[str(header["sender_batch_id"])] = batch_id
        self.counters["payouts"] += 1
        return batch_id

    def _batch_link(self, batch_id: str) -> JsonObject:
        return {
            "href": f"{self.base_url}/v1/payments/payouts/{batch_id}",
            "rel": "self",
            "method": "GET",
            "encType": "application/json",
        }

    def _verify_webhook(self, payload: JsonObject, body: bytes) -> _Response:
        self.counters["webhook_verifications"] += 1
        names = (
            "auth_algo",
            "cert_url",
            "transmission_id",
            "transmission_sig",
            "transmission_time",
            "webhook_id",
        )
        for name in names:
            if not isinstance(payload.get(name), str) or not payload[name]:
                return _invalid(name, f"{name} is required.")
        raw_event = _raw_member(body.decode(), "webhook_event")
        if raw_event is None or not isinstance(payload.get("webhook_event"), dict):
            return _invalid("webhook_event", "webhook_event is required.")
        expected = self._signature(
            payload["transmission_id"],
            payload["transmission_time"],
            payload["webhook_id"],
            raw_event.encode(),
        )
        genuine = (
            payload["webhook_id"] == self.webhook_id
            and payload["auth_algo"] == _AUTH_ALGO
            and payload["cert_url"] == self.cert_url
            and hmac.compare_digest(payload["transmission_sig"], expected)
        )
        if not genuine:
            self.counters["webhook_verifications_failed"] += 1
        status = "SUCCESS" if genuine else "FAILURE"
        return _Response(200, _dumps({"verification_status": status}))

    @staticmethod
    def _new_id(length: int = 17) -> str:
        alphabet = string.ascii_uppercase + string.digits
        return "".join(secrets.choice(alphabet) for _ in range(length))
