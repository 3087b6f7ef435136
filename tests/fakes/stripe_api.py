"""A local server that speaks Stripe's documented wire format, for what StripeProvider uses.

The connector is tested through the official SDK, unpatched, pointed here by its base
URL; so this server has to be strict where Stripe is strict (form-encoded bodies in
bracket notation, Bearer auth, the error envelope and its HTTP statuses, Idempotency-Key
semantics) or the tests would pass against a Stripe that does not exist.

Endpoints: POST/GET /v1/payment_intents, /v1/payouts, /v1/refunds. Test payment methods
as Stripe documents them (`pm_card_visa`, `pm_card_chargeDeclined`,
`pm_card_chargeDeclinedInsufficientFunds`), plus `pm_card_processing` (answers
`processing`, as some sandbox methods do). Payout destinations `ba_...`/`card_...` are
paid at once; `ba_fails` fails with `account_closed`. Failure injection: `fail_next`,
`outage`, `stall_next`; `settle` moves an object on as Stripe would later; `event` and
`sign_webhook` build a signed webhook delivery.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import re
import secrets
import string
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

API_VERSION = "2026-10-28.endive"
DEFAULT_WEBHOOK_SECRET = "whsec_fake_stripe_webhook_secret"

SUCCEEDING_PAYMENT_METHODS = frozenset({"pm_card_visa", "pm_card_mastercard", "pm_card_amex"})
PROCESSING_PAYMENT_METHOD = "pm_card_processing"
DECLINES: Mapping[str, tuple[str, str]] = {  # payment method -> (decline_code, message)
    "pm_card_chargeDeclined": ("generic_decline", "Your card was declined."),
    "pm_card_chargeDeclinedInsufficientFunds": (
        "insufficient_funds",
        "Your card has insufficient funds.",
    ),
}
FAILING_PAYOUT_DESTINATION = "ba_fails"
SUPPORTED_CURRENCIES = frozenset(
    {"usd", "eur", "gbp", "chf", "jpy", "cad", "aud", "sek", "nok", "dkk", "pln", "czk"}
)

_PAYMENT_INTENT_PARAMS = frozenset(
    {
        "amount",
        "automatic_payment_methods",
        "capture_method",
        "confirm",
        "currency",
        "customer",
        "description",
        "expand",
        "metadata",
        "off_session",
        "payment_method",
        "payment_method_types",
        "receipt_email",
        "return_url",
        "statement_descriptor",
    }
)
_PAYOUT_PARAMS = frozenset(
    {
        "amount",
        "currency",
        "description",
        "destination",
        "expand",
        "metadata",
        "method",
        "source_type",
        "statement_descriptor",
    }
)
_REFUND_PARAMS = frozenset(
    {"amount", "charge", "expand", "instructions_email", "metadata", "payment_intent", "reason"}
)
_KEY_SYNTAX = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])*)$")
_ID_ALPHABET = string.ascii_letters + string.digits


@dataclass(frozen=True)
class RecordedRequest:
    """One request as it reached the server, and the status it was answered with
    (0: the connection was dropped)."""

    method: str
    path: str
    headers: Mapping[str, str]  # lower-case names
    form: Mapping[str, str]  # the flat form fields as sent: "metadata[payment_id]" -> "..."
    status: int
    replayed: bool = False


@dataclass(frozen=True)
class _Response:
    status: int
    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class _Stored:
    """A response kept for an Idempotency-Key, with what it was a response to."""

    path: str
    fingerprint: tuple[tuple[str, str], ...]
    response: _Response
    request_id: str


class _StripeFailure(Exception):
    def __init__(self, status: int, error: dict[str, Any]) -> None:
        super().__init__(error.get("message", ""))
        self.status = status
        self.error = error


def _new_id(prefix: str) -> str:
    return f"{prefix}_{''.join(secrets.choice(_ID_ALPHABET) for _ in range(24))}"


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _invalid(
    message: str, param: str | None = None, code: str | None = None, status: int = 400
) -> _StripeFailure:
    error: dict[str, Any] = {"type": "invalid_request_error", "message": message}
    if param is not None:
        error["param"] = param
    if code is not None:
        error["code"] = code
        error["doc_url"] = f"https://docs.stripe.com/error-codes/{code.replace('_', '-')}"
    return _StripeFailure(status, error)


def _idempotency_error(message: str) -> _StripeFailure:
    return _StripeFailure(400, {"type": "idempotency_error", "message": message})


def _missing(resource: str, object_id: str, param: str, status: int = 400) -> _StripeFailure:
    return _invalid(f"No such {resource}: '{object_id}'", param, "resource_missing", status)


def _unflatten(pairs: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """Stripe's bracket notation to nested values: `metadata[k]=v` -> {"metadata": {"k": v}},
    `payment_method_types[0]=card` -> {"payment_method_types": ["card"]}."""
    root: dict[str, Any] = {}
    for key, value in pairs:
        match = _KEY_SYNTAX.match(key)
        if match is None:
            raise _invalid(f"Invalid parameter name: {key}", key)
        path = [match.group(1), *re.findall(r"\[([^\[\]]*)\]", match.group(2))]
        node = root
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise _invalid(f"Invalid object: {path[0]} is not a hash", path[0])
            node = child
        if isinstance(node.get(path[-1]), dict):
            raise _invalid(f"Invalid {path[0]}: a hash and a value at once", path[0])
        node[path[-1]] = value
    return {key: _lists(value) for key, value in root.items()}


def _lists(value: Any) -> Any:
    if not isinstance(value, dict):
        return value
    if value and all(key.isdigit() for key in value):
        return [_lists(value[key]) for key in sorted(value, key=int)]
    return {key: _lists(item) for key, item in value.items()}


def _check_known(params: Mapping[str, Any], allowed: frozenset[str]) -> None:
    for name in params:
        if name not in allowed:
            raise _invalid(f"Received unknown parameter: {name}", name)


def _required(params: Mapping[str, Any], name: str) -> Any:
    if name not in params or params[name] == "":
        raise _invalid(f"Missing required param: {name}.", name, "parameter_missing")
    return params[name]


def _integer(params: Mapping[str, Any], name: str) -> int:
    raw = _required(params, name)
    if not isinstance(raw, str) or not re.fullmatch(r"-?\d+", raw):
        raise _invalid(f"Invalid integer: {raw}", name, "parameter_invalid_integer")
    value = int(raw)
    if value < 1:
        raise _invalid(
            "This value must be greater than or equal to 1.", name, "parameter_invalid_integer"
        )
    return value


def _boolean(params: Mapping[str, Any], name: str, default: bool = False) -> bool:
    raw = params.get(name)
    if raw is None:
        return default
    if raw not in ("true", "false"):
        raise _invalid(f"Invalid boolean: {raw}", name)
    return bool(raw == "true")


def _currency(params: Mapping[str, Any]) -> str:
    raw = _required(params, "currency")
    currency = raw.lower() if isinstance(raw, str) else ""
    if currency not in SUPPORTED_CURRENCIES:
        raise _invalid(
            f"Invalid currency: {raw}. Stripe currently supports these currencies: "
            + ", ".join(sorted(SUPPORTED_CURRENCIES)),
            "currency",
        )
    return currency


def _metadata(params: Mapping[str, Any]) -> dict[str, str]:
    raw = params.get("metadata", {})
    if raw == "":
        return {}
    if not isinstance(raw, dict) or not all(isinstance(v, str) for v in raw.values()):
        raise _invalid("Invalid object", "metadata")
    return dict(raw)


class FakeStripe:
    """The server and its state. Use as a context manager, or start() / stop().

    Every public attribute is safe to read from the test once the SDK call returned."""

    def __init__(
        self, api_key: str | None = None, webhook_secret: str = DEFAULT_WEBHOOK_SECRET
    ) -> None:
        self.api_key = api_key  # None: any "sk_test_..." key is accepted
        self.webhook_secret = webhook_secret
        self.payment_intents: dict[str, dict[str, Any]] = {}
        self.payouts: dict[str, dict[str, Any]] = {}
        self.refunds: dict[str, dict[str, Any]] = {}
        self.requests: list[RecordedRequest] = []
        self.idempotent_replays = 0
        self._refunded: dict[str, int] = {}  # payment intent id -> amount refunded
        self._idempotency: dict[tuple[str, str], _Stored] = {}
        self._lock = threading.Lock()
        self._fail_budget = 0
        self._fail_status = 500
        self._outage = False
        self._stall_budget = 0
        self._release = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle --------------------------------------------------------------------

    def start(self) -> FakeStripe:
        self._server = _Server(self)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.02},  # how long stop() waits for the loop to notice
            name="fake-stripe",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._release.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join()
        self._server = self._thread = None

    def __enter__(self) -> FakeStripe:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """The base URL to configure the SDK with ("api" base address)."""
        if self._server is None:
            raise RuntimeError("the fake Stripe server is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    # -- what the tests look at -------------------------------------------------------

    @property
    def payment_intents_created(self) -> int:
        return len(self.payment_intents)

    @property
    def payouts_created(self) -> int:
        return len(self.payouts)

    @property
    def refunds_created(self) -> int:
        return len(self.refunds)

    def requests_to(self, method: str, path: str) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.method == method and r.path == path]

    # -- failure injection ------------------------------------------------------------

    def fail_next(self, n: int, status: int = 500) -> None:
        """The next n requests get `status` with an `api_error` envelope, unprocessed."""
        with self._lock:
            self._fail_budget, self._fail_status = n, status

    def outage(self, on: bool) -> None:
        """While on, every connection is dropped without an answer (like a reset)."""
        with self._lock:
            self._outage = on

    def stall_next(self, n: int) -> None:
        """The next n requests are processed, but their answer is held until release():
        the client times out after Stripe acted, which is what idempotency keys are for."""
        with self._lock:
            self._stall_budget = n
            self._release.clear()

    def release(self) -> None:
        self._release.set()

    def settle(self, object_id: str, status: str, **fields: Any) -> dict[str, Any]:
        """Move a stored payment intent, payout or refund on, as Stripe would later."""
        with self._lock:
            for store in (self.payment_intents, self.payouts, self.refunds):
                if object_id in store:
                    obj = store[object_id]
                    obj.update(fields, status=status)
                    if obj["object"] == "payment_intent" and status == "succeeded":
                        obj["amount_received"] = obj["amount"]
                    return copy.deepcopy(obj)
        raise KeyError(object_id)

    # -- webhooks ---------------------------------------------------------------------

    def event(
        self, event_type: str, obj: Mapping[str, Any], *, event_id: str | None = None
    ) -> bytes:
        """A webhook body, shaped like Stripe's snapshot `event` object."""
        return _json(
            {
                "id": event_id or _new_id("evt"),
                "object": "event",
                "api_version": API_VERSION,
                "created": int(time.time()),
                "data": {"object": dict(obj)},
                "livemode": False,
                "pending_webhooks": 1,
                "request": {"id": None, "idempotency_key": None},
                "type": event_type,
            }
        )

    def sign_webhook(
        self, payload: bytes, *, timestamp: int | None = None, secret: str | None = None
    ) -> str:
        """A `Stripe-Signature` header: t=<unix>,v1=<hex HMAC-SHA256 of "t.payload">."""
        moment = int(time.time()) if timestamp is None else timestamp
        key = (self.webhook_secret if secret is None else secret).encode()
        digest = hmac.new(key, f"{moment}.".encode() + payload, hashlib.sha256).hexdigest()
        return f"t={moment},v1={digest}"

    # -- the API ----------------------------------------------------------------------

    def _dispatch(
        self, method: str, target: str, headers: Mapping[str, str], raw: bytes
    ) -> tuple[_Response | None, bool]:
        """The answer to one request (None: drop the connection), and whether to stall it."""
        url = urlsplit(target)
        path = url.path
        body = raw.decode("utf-8", "replace") if method == "POST" else url.query
        pairs = parse_qsl(body, keep_blank_values=True)
        with self._lock:
            response, replayed, stall = self._answer(method, path, headers, pairs)
            self.requests.append(
                RecordedRequest(
                    method,
                    path,
                    dict(headers),
                    dict(pairs),
                    response.status if response else 0,
                    replayed,
                )
            )
            return response, stall

    def _answer(
        self,
        method: str,
        path: str,
        headers: Mapping[str, str],
        pairs: list[tuple[str, str]],
    ) -> tuple[_Response | None, bool, bool]:
        if self._outage:
            return None, False, False
        if self._fail_budget > 0:
            self._fail_budget -= 1
            return self._injected_failure(self._fail_status), False, False
        stall = self._stall_budget > 0
        if stall:
            self._stall_budget -= 1
        request_id = _new_id("req")
        try:
            api_key = self._authenticate(headers.get("authorization", ""))
        except _StripeFailure as failure:
            return self._error_response(failure, request_id), False, stall
        idempotency_key = headers.get("idempotency-key", "") if method == "POST" else ""
        fingerprint = tuple(sorted(pairs))
        if idempotency_key:
            stored = self._idempotency.get((api_key, idempotency_key))
            if stored is not None:
                if stored.path != path:
                    mismatch = _idempotency_error(
                        "Keys for idempotent requests can only be used for the same endpoint "
                        f"they were first used for ('{stored.path}' vs '{path}'). Try using a "
                        f"key other than '{idempotency_key}' if you meant to execute a "
                        "different request."
                    )
                    return self._error_response(mismatch, request_id), False, stall
                if stored.fingerprint != fingerprint:
                    mismatch = _idempotency_error(
                        "Keys for idempotent requests can only be used with the same "
                        "parameters they were first used with. Try using a key other than "
                        f"'{idempotency_key}' if you meant to execute a different request."
                    )
                    return self._error_response(mismatch, request_id), False, stall
                self.idempotent_replays += 1
                replay = _Response(
                    stored.response.status,
                    stored.response.body,
                    {
                        **stored.response.headers,
                        "Request-Id": request_id,
                        "Original-Request": stored.request_id,
                        "Idempotent-Replayed": "true",
                    },
                )
                return replay, True, stall
        try:
            status, obj = self._route(method, path, _unflatten(pairs))
            response = _Response(status, _json(obj), {"Request-Id": request_id})
        except _StripeFailure as failure:
            response = self._error_response(failure, request_id)
        if idempotency_key:
            response = _Response(
                response.status,
                response.body,
                {**response.headers, "Idempotency-Key": idempotency_key},
            )
            # As Stripe: a result is kept once the endpoint began executing (a success or
            # a decline), not for a request refused by validation.
            if response.status < 400 or response.status == 402:
                self._idempotency[(api_key, idempotency_key)] = _Stored(
                    path, fingerprint, response, request_id
                )
        return response, False, stall

    def _authenticate(self, authorization: str) -> str:
        scheme, _, key = authorization.partition(" ")
        if scheme != "Bearer" or not key:
            raise _invalid(
                "You did not provide an API key. You need to provide your API key in the "
                "Authorization header, using Bearer auth (e.g. 'Authorization: Bearer "
                "YOUR_SECRET_KEY').",
                status=401,
            )
        if not key.startswith("sk_test_") or (self.api_key is not None and key != self.api_key):
            raise _invalid(f"Invalid API Key provided: {key[:8]}****{key[-4:]}", status=401)
        return key

    def _injected_failure(self, status: int) -> _Response:
        error: dict[str, Any] = {
            "type": "api_error",
            "message": "An unknown error occurred (injected by the fake).",
        }
        if status == 429:
            error["code"] = "rate_limit"
            error["message"] = "Too many requests hit the API too quickly."
        return _Response(status, _json({"error": error}), {"Request-Id": _new_id("req")})

    @staticmethod
    def _error_response(failure: _StripeFailure, request_id: str) -> _Response:
        error = {
            **failure.error,
            "request_log_url": f"https://dashboard.stripe.com/logs/{request_id}",
        }
        return _Response(failure.status, _json({"error": error}), {"Request-Id": request_id})

    def _route(self, method: str, path: str, params: dict[str, Any]) -> tuple[int, Any]:
        if method == "POST" and path == "/v1/payment_intents":
            return self._create_payment_intent(params)
        if method == "POST" and path == "/v1/payouts":
            return 200, self._create_payout(params)
        if method == "POST" and path == "/v1/refunds":
            return 200, self._create_refund(params)
        match = re.fullmatch(r"/v1/(payment_intents|payouts|refunds)/([^/]+)", path)
        if method == "GET" and match is not None:
            collection, object_id = match.groups()
            store, resource, param = {
                "payment_intents": (self.payment_intents, "payment_intent", "intent"),
                "payouts": (self.payouts, "payout", "payout"),
                "refunds": (self.refunds, "refund", "refund"),
            }[collection]
            if object_id not in store:
                raise _missing(resource, object_id, param, status=404)
            return 200, store[object_id]
        raise _invalid(f"Unrecognized request URL ({method}: {path}).", status=404)

    def _create_payment_intent(self, params: dict[str, Any]) -> tuple[int, Any]:
        _check_known(params, _PAYMENT_INTENT_PARAMS)
        amount = _integer(params, "amount")
        currency = _currency(params)
        metadata = _metadata(params)
        confirm = _boolean(params, "confirm")
        requested_method = params.get("payment_method")
        payment_method = requested_method if isinstance(requested_method, str) else None
        payment_method = payment_method or None
        types = params.get("payment_method_types")
        automatic = params.get("automatic_payment_methods")
        automatic = automatic if isinstance(automatic, dict) else {}
        automatic_enabled = _boolean(automatic, "enabled", default=types is None)
        if confirm and payment_method is None:
            raise _invalid(
                "You cannot confirm this PaymentIntent because it's missing a payment method.",
                code="payment_intent_unexpected_state",
            )
        if (
            confirm
            and automatic_enabled
            and automatic.get("allow_redirects") != "never"
            and not params.get("return_url")
        ):
            raise _invalid(
                "This PaymentIntent is configured to accept payment methods enabled in your "
                "Dashboard. Because some of these payment methods might redirect your "
                "customer off of your page, you must provide a `return_url`. If you don't "
                "want to accept redirect-based payment methods, set "
                "`automatic_payment_methods[enabled]` to `true` and "
                "`automatic_payment_methods[allow_redirects]` to `never` when creating "
                "Setup Intents and Payment Intents."
            )
        if payment_method is not None and not (
            payment_method in SUCCEEDING_PAYMENT_METHODS
            or payment_method == PROCESSING_PAYMENT_METHOD
            or payment_method in DECLINES
        ):
            raise _missing("PaymentMethod", payment_method, "payment_method")
        intent_id = _new_id("pi")
        intent: dict[str, Any] = {
            "id": intent_id,
            "object": "payment_intent",
            "amount": amount,
            "amount_capturable": 0,
            "amount_received": 0,
            "automatic_payment_methods": (
                {"enabled": True, "allow_redirects": automatic.get("allow_redirects", "always")}
                if automatic_enabled
                else None
            ),
            "cancellation_reason": None,
            "capture_method": params.get("capture_method", "automatic_async"),
            "client_secret": f"{intent_id}_secret_{_new_id('s')[2:]}",
            "confirmation_method": "automatic",
            "created": int(time.time()),
            "currency": currency,
            "customer": params.get("customer"),
            "description": params.get("description"),
            "last_payment_error": None,
            "latest_charge": None,
            "livemode": False,
            "metadata": metadata,
            "next_action": None,
            "payment_method": payment_method,
            "payment_method_types": types if isinstance(types, list) else ["card"],
            "status": "requires_confirmation" if payment_method else "requires_payment_method",
        }
        self.payment_intents[intent_id] = intent
        if not confirm:
            return 200, intent
        charge_id = _new_id("ch")
        intent["latest_charge"] = charge_id
        decline = DECLINES.get(payment_method or "")
        if decline is not None:
            decline_code, message = decline
            error: dict[str, Any] = {
                "type": "card_error",
                "code": "card_declined",
                "decline_code": decline_code,
                "message": message,
                "charge": charge_id,
                "doc_url": "https://docs.stripe.com/error-codes/card-declined",
                "payment_method": {"id": payment_method, "object": "payment_method"},
            }
            intent.update(status="requires_payment_method", last_payment_error=error)
            raise _StripeFailure(402, {**error, "payment_intent": intent})
        if payment_method == PROCESSING_PAYMENT_METHOD:
            intent["status"] = "processing"
        else:
            intent.update(status="succeeded", amount_received=amount)
        return 200, intent

    def _create_payout(self, params: dict[str, Any]) -> dict[str, Any]:
        _check_known(params, _PAYOUT_PARAMS)
        amount = _integer(params, "amount")
        currency = _currency(params)
        metadata = _metadata(params)
        destination = str(params.get("destination") or "ba_default")
        if not destination.startswith(("ba_", "card_")):
            raise _missing("external account", destination, "destination")
        failed = destination == FAILING_PAYOUT_DESTINATION
        payout_id = _new_id("po")
        now = int(time.time())
        payout: dict[str, Any] = {
            "id": payout_id,
            "object": "payout",
            "amount": amount,
            "arrival_date": now + 86_400,
            "automatic": False,
            "balance_transaction": _new_id("txn"),
            "created": now,
            "currency": currency,
            "description": params.get("description"),
            "destination": destination,
            "failure_balance_transaction": _new_id("txn") if failed else None,
            "failure_code": "account_closed" if failed else None,
            "failure_message": "The bank account has been closed." if failed else None,
            "livemode": False,
            "metadata": metadata,
            "method": params.get("method", "standard"),
            "source_type": params.get("source_type", "card"),
            "statement_descriptor": params.get("statement_descriptor"),
            "status": "failed" if failed else "paid",
            "type": "card" if destination.startswith("card_") else "bank_account",
        }
        self.payouts[payout_id] = payout
        return payout

    def _create_refund(self, params: dict[str, Any]) -> dict[str, Any]:
        _check_known(params, _REFUND_PARAMS)
        intent_id = params.get("payment_intent")
        if not intent_id:
            raise _invalid(
                "One of the following params should be provided for this request: "
                "payment_intent or charge."
            )
        intent = self.payment_intents.get(intent_id)
        if intent is None:
            raise _missing("payment_intent", intent_id, "payment_intent")
        if intent["status"] != "succeeded":
            raise _invalid(
                f"This PaymentIntent ({intent_id}) does not have a successful charge to refund.",
                "payment_intent",
            )
        metadata = _metadata(params)
        remaining = intent["amount"] - self._refunded.get(intent_id, 0)
        if remaining <= 0:
            raise _invalid(
                f"Charge {intent['latest_charge']} has already been refunded.",
                code="charge_already_refunded",
            )
        amount = _integer(params, "amount") if "amount" in params else remaining
        if amount > remaining:
            raise _invalid(
                f"Refund amount ({amount}) is greater than unrefunded amount on charge "
                f"({remaining})",
                "amount",
                "amount_too_large",
            )
        self._refunded[intent_id] = self._refunded.get(intent_id, 0) + amount
        refund_id = _new_id("re")
        refund: dict[str, Any] = {
            "id": refund_id,
            "object": "refund",
            "amount": amount,
            "balance_transaction": _new_id("txn"),
            "charge": intent["latest_charge"],
            "created": int(time.time()),
            "currency": intent["currency"],
            "destination_details": None,
            "failure_reason": None,
            "metadata": metadata,
            "payment_intent": intent_id,
            "reason": params.get("reason"),
            "receipt_number": None,
            "source_transfer_reversal": None,
            "status": "succeeded",
            "transfer_reversal": None,
        }
        self.refunds[refund_id] = refund
        return refund


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, fake: FakeStripe) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.fake = fake


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"  # keep-alive, as the SDK's pooled client expects

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the tests assert on `FakeStripe.requests` instead."""

    def _serve(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        headers = {name.lower(): value for name, value in self.headers.items()}
        fake = self.server.fake
        response, stall = fake._dispatch(method, self.path, headers, raw)
        if response is None:
            self.close_connection = True  # no answer at all: the client sees a reset
            return
        if stall and not fake._release.wait(timeout=30):
            self.close_connection = True
            return
        try:
            self.send_response(response.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(response.body)))
            self.send_header("Stripe-Version", headers.get("stripe-version", API_VERSION))
            for name, value in response.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(response.body)
        except OSError:  # the client gave up (it timed out while the answer was held)
            self.close_connection = True
