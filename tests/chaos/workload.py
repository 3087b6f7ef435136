"""The bank workload: people registered through the edge, funded by an operator, then
many concurrent clients moving money between them over REST and gRPC.

Each client acts for one person and their EUR wallet (several clients share a
person) and, until told to stop, picks a
seeded mix of single transfers (to a wallet id or by email), batches of transfers,
top-ups from a sandbox card and balance reads. A share of the money calls is sent
twice at once with the same idempotency key (one over REST, one over gRPC), another
share first with a timeout too short to see the answer, then again with the same key.
Every call is recorded in the History, whatever it was told.
"""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc
import httpx
from google.rpc import error_details_pb2, status_pb2

from services.catalogue import USER
from services.localmesh.mesh import Mesh
from tests.chaos.history import (
    INDETERMINATE_CODES,
    INDETERMINATE_HTTP,
    SERVER_ERROR_CODES,
    Attempt,
    History,
    Intent,
    ItemResult,
    Outcome,
)
from wallet.transaction.v1 import transaction_service_pb2 as pb
from wallet.transaction.v1 import transaction_service_pb2_grpc
from wallet.type.v1 import money_pb2

if TYPE_CHECKING:  # the generated stubs type the grpc.aio flavour under this name only
    from wallet.transaction.v1.transaction_service_pb2_grpc import TransactionServiceAsyncStub

PASSWORD = "correct horse battery"
CURRENCY = "EUR"
PATIENT_TIMEOUT = 10.0  # seconds a client waits for an answer (the edge gives up at 15)
GRPC_CHANNELS = 4
_CODE_NAMES = {code.value[0]: code.name for code in grpc.StatusCode}
# Server errors that are a definite, stored answer, not a fault: a top-up refused at once
# because the provider's circuit breaker was open ("nothing was charged"; the same key
# replays it, see the README's Payments section).
DEFINITE_REASONS = frozenset({"PROVIDER_UNAVAILABLE"})


@dataclass(frozen=True)
class Person:
    index: int
    user_id: str
    email: str
    token: str
    wallet_id: str

    @property
    def rest_auth(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.token}"}

    @property
    def grpc_auth(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.token}"),)


@dataclass(frozen=True)
class Mix:
    """Shares of each kind of call, and of the re-sends."""

    by_email: float = 0.2
    batch: float = 0.2
    top_up: float = 0.15
    read: float = 0.1
    # The rest are single transfers to a wallet id.
    twin: float = 0.1  # sent twice at once, same key
    impatient: float = 0.1  # first sent with a tiny timeout, then again
    overdraw: float = 0.02  # transfers larger than any balance (must be refused)
    think: float = 0.05  # most seconds a client pauses between calls


# --- seeding, through the edge -----------------------------------------------------


# Registrations at once: each costs the user service two argon2 hashes, which a busy
# machine makes slow enough for the edge's timeout.
SEED_CONCURRENCY = 2


async def seed_people(mesh: Mesh, count: int, funding: int, tag: str) -> tuple[list[Person], int]:
    """Register and log in `count` people and an operator, open a wallet for each
    person and credit it `funding` by an operator adjustment. Returns the people and
    the total credited."""
    async with httpx.AsyncClient(base_url=mesh.edge_url, timeout=60) as rest:
        _, operator_email = await _register(rest, f"chaos-operator-{tag}@example.com")
        # grant-admin is a process of its own: it runs while the people register.
        granted = asyncio.create_task(
            asyncio.to_thread(mesh.run_command, USER, "grant-admin", operator_email, timeout=120)
        )
        gate = asyncio.Semaphore(SEED_CONCURRENCY)

        async def person(index: int) -> tuple[int, str, str, str, str]:
            async with gate:
                user_id, email = await _register(rest, f"chaos-{tag}-{index}@example.com")
                token = await _login(rest, email)
                opened = await rest.post(
                    "/v1/wallets",
                    json={"currency": CURRENCY},
                    headers={
                        "authorization": f"Bearer {token}",
                        "idempotency-key": f"open-{email}",
                    },
                )
                _expect_ok(opened)
                return index, user_id, email, token, str(opened.json()["wallet"]["wallet_id"])

        opened = await asyncio.gather(*(person(index) for index in range(count)))
        result = await granted
        if result.returncode != 0:
            raise RuntimeError(f"grant-admin failed: {result.stderr}")
        operator_token = await _login(rest, operator_email)  # the role is in a new token
        people = [Person(*fields) for fields in opened]

        async def fund(person: Person) -> None:
            async with gate:
                credited = await rest.post(
                    f"/v1/wallets/{person.wallet_id}:adjust",
                    json={
                        "request_id": f"fund-{person.email}",
                        "amount": {"currency": CURRENCY, "amount": funding},
                        "reason": "chaos funding",
                    },
                    headers={"authorization": f"Bearer {operator_token}"},
                )
                _expect_ok(credited)

        await asyncio.gather(*(fund(p) for p in people))
    return people, funding * count


async def _register(rest: httpx.AsyncClient, email: str) -> tuple[str, str]:
    created = await rest.post(
        "/v1/users", json={"email": email, "password": PASSWORD, "display_name": "Chaos"}
    )
    _expect_ok(created)
    return str(created.json()["user"]["user_id"]), email


async def _login(rest: httpx.AsyncClient, email: str) -> str:
    login = await rest.post("/v1/auth/login", json={"email": email, "password": PASSWORD})
    _expect_ok(login)
    return str(login.json()["access_token"])


def _expect_ok(response: httpx.Response) -> None:
    if response.status_code != 200:
        raise RuntimeError(
            f"seeding: {response.request.method} {response.request.url.path} answered "
            f"{response.status_code}: {response.text[:300]}"
        )


# --- calls -------------------------------------------------------------------------

# A call of one intent or one batch: (api, patience in seconds) -> what it was told.
Call = Callable[[str, float], Awaitable[tuple[Outcome, str, str, dict[str, ItemResult]]]]


class Bank:
    """Makes the calls of the workload, over REST or gRPC, and records each attempt."""

    def __init__(self, mesh: Mesh, history: History, rest: httpx.AsyncClient) -> None:
        self.history = history
        self.rest = rest
        self._channels = [
            grpc.aio.insecure_channel(mesh.edge_grpc_target) for _ in range(GRPC_CHANNELS)
        ]
        self._stubs = [
            transaction_service_pb2_grpc.TransactionServiceStub(c) for c in self._channels
        ]
        self._next_stub = itertools.cycle(self._stubs)
        # Every money call made, by its first key, for the checker's re-sends:
        # (client, op, keys, api of the first send, the call).
        self.calls: dict[str, tuple[int, str, list[str], str, Call]] = {}

    async def aclose(self) -> None:
        for channel in self._channels:
            await channel.close(None)

    def stub(self) -> TransactionServiceAsyncStub:
        return next(self._next_stub)

    async def attempt(
        self,
        client: int,
        op: str,
        keys: list[str],
        send: str,
        api: str,
        patience: float,
        call: Call,
    ) -> Attempt:
        """Make `call` once over `api`, waiting at most `patience` seconds for its answer."""
        record = Attempt(client, op, api, keys, send, self.history.clock.now(), patience)
        self.history.attempts.append(record)
        try:
            record.outcome, record.status, record.detail, record.results = await call(api, patience)
        finally:
            record.end = self.history.clock.now()
        return record

    # Each returns a Call for one intent (or one batch of intents).

    def transfer(self, person: Person, intents: list[Intent], by_email: dict[str, str]) -> Call:
        """One CreateTransfer (len(intents) == 1) or a BatchCreateTransfers."""

        def body(intent: Intent) -> dict[str, Any]:
            destination = (
                {"recipient_email": by_email[intent.key]}
                if intent.key in by_email
                else {"destination_wallet_id": intent.destination_wallet_id}
            )
            return {
                "request_id": intent.key,
                "source_wallet_id": intent.source_wallet_id,
                **destination,
                "amount": {"currency": CURRENCY, "amount": intent.amount},
                "metadata": {"chaos_key": intent.key},
            }

        def message(intent: Intent) -> pb.CreateTransferRequest:
            fields = body(intent)
            fields["amount"] = money_pb2.Money(currency=CURRENCY, amount=intent.amount)
            return pb.CreateTransferRequest(**fields)

        single = len(intents) == 1

        async def call(
            api: str, patience: float
        ) -> tuple[Outcome, str, str, dict[str, ItemResult]]:
            keys = [i.key for i in intents]
            if api == "rest":
                path, payload = (
                    ("/v1/transfers", body(intents[0]))
                    if single
                    else ("/v1/transfers:batchCreate", {"requests": [body(i) for i in intents]})
                )

                async def rest_call() -> httpx.Response:
                    return await self.rest.post(
                        path, json=payload, headers=person.rest_auth, timeout=patience
                    )

                response, outcome, status, detail = await _rest(rest_call)
                if response is None or outcome is not Outcome.OK:
                    return outcome, status, detail, _all(keys, outcome, status)
                answer = response.json()
                if single:
                    return outcome, status, "", {keys[0]: _rest_item(answer["transaction"])}
                return (
                    outcome,
                    status,
                    "",
                    {
                        key: _rest_batch_item(result)
                        for key, result in zip(keys, answer["results"], strict=True)
                    },
                )
            stub = self.stub()
            if single:
                reply, outcome, status, detail = await _grpc(
                    stub.CreateTransfer(
                        message(intents[0]), metadata=person.grpc_auth, timeout=patience
                    )
                )
                if not isinstance(reply, pb.CreateTransferResponse):
                    return outcome, status, detail, _all(keys, outcome, status)
                return outcome, status, "", {keys[0]: _grpc_item(reply.transaction)}
            batch = pb.BatchCreateTransfersRequest(requests=[message(i) for i in intents])
            reply, outcome, status, detail = await _grpc(
                stub.BatchCreateTransfers(batch, metadata=person.grpc_auth, timeout=patience)
            )
            if not isinstance(reply, pb.BatchCreateTransfersResponse):
                return outcome, status, detail, _all(keys, outcome, status)
            return (
                outcome,
                status,
                "",
                {
                    key: _grpc_batch_item(result)
                    for key, result in zip(keys, reply.results, strict=True)
                },
            )

        return call

    def top_up(self, person: Person, intent: Intent) -> Call:
        async def call(
            api: str, patience: float
        ) -> tuple[Outcome, str, str, dict[str, ItemResult]]:
            assert intent.payment_method is not None
            if api == "rest":

                async def rest_call() -> httpx.Response:
                    return await self.rest.post(
                        f"/v1/wallets/{person.wallet_id}:top-up",
                        json={
                            "request_id": intent.key,
                            "amount": {"currency": CURRENCY, "amount": intent.amount},
                            "payment_method": intent.payment_method,
                        },
                        headers=person.rest_auth,
                        timeout=patience,
                    )

                response, outcome, status, detail = await _rest(rest_call)
                if response is None or outcome is not Outcome.OK:
                    return outcome, status, detail, _all([intent.key], outcome, status)
                return outcome, status, "", {intent.key: _rest_item(response.json()["transaction"])}
            request = pb.TopUpWalletRequest(
                wallet_id=person.wallet_id,
                request_id=intent.key,
                amount=money_pb2.Money(currency=CURRENCY, amount=intent.amount),
                payment_method=intent.payment_method,
            )
            reply, outcome, status, detail = await _grpc(
                self.stub().TopUpWallet(request, metadata=person.grpc_auth, timeout=patience)
            )
            if not isinstance(reply, pb.TopUpWalletResponse):
                return outcome, status, detail, _all([intent.key], outcome, status)
            return outcome, status, "", {intent.key: _grpc_item(reply.transaction)}

        return call

    def read(self, person: Person) -> Call:
        async def call(
            api: str, patience: float
        ) -> tuple[Outcome, str, str, dict[str, ItemResult]]:
            if api == "rest":

                async def rest_call() -> httpx.Response:
                    return await self.rest.get(
                        f"/v1/wallets/{person.wallet_id}",
                        headers=person.rest_auth,
                        timeout=patience,
                    )

                _, outcome, status, detail = await _rest(rest_call)
                return outcome, status, detail, {}
            request = pb.GetWalletRequest(wallet_id=person.wallet_id)
            _, outcome, status, detail = await _grpc(
                self.stub().GetWallet(request, metadata=person.grpc_auth, timeout=patience)
            )
            return outcome, status, detail, {}

        return call


async def _rest(
    send: Callable[[], Awaitable[httpx.Response]],
) -> tuple[httpx.Response | None, Outcome, str, str]:
    try:
        response = await send()
    except httpx.TimeoutException as error:
        return None, Outcome.UNKNOWN, "timeout", type(error).__name__
    except httpx.TransportError as error:
        return None, Outcome.UNKNOWN, "connection", f"{type(error).__name__}: {error}"
    code = response.status_code
    if code == 200:
        return response, Outcome.OK, "200", ""
    outcome = Outcome.FAILED if code >= 500 or code in INDETERMINATE_HTTP else Outcome.REFUSED
    if _rest_reasons(response) & DEFINITE_REASONS:
        outcome = Outcome.REFUSED
    return response, outcome, str(code), response.text[:300]


def _rest_reasons(response: httpx.Response) -> set[str]:
    try:
        details = response.json().get("details", [])
    except ValueError:
        return set()
    return {str(d["reason"]) for d in details if isinstance(d, dict) and "reason" in d}


async def _grpc(call: Awaitable[Any]) -> tuple[Any, Outcome, str, str]:
    try:
        reply = await call
    except grpc.aio.AioRpcError as error:
        name = error.code().name
        if name == "DEADLINE_EXCEEDED":
            return None, Outcome.UNKNOWN, name, str(error.details())
        failed = name in SERVER_ERROR_CODES or name in INDETERMINATE_CODES
        if _grpc_reasons(error) & DEFINITE_REASONS:
            failed = False
        return None, Outcome.FAILED if failed else Outcome.REFUSED, name, str(error.details())
    return reply, Outcome.OK, "OK", ""


def _grpc_reasons(error: grpc.aio.AioRpcError) -> set[str]:
    """The google.rpc.ErrorInfo reasons of a gRPC error's rich status."""
    metadata: Any = error.trailing_metadata() or ()
    raw = [value for key, value in metadata if key == "grpc-status-details-bin"]
    if not raw or not isinstance(raw[0], bytes):
        return set()
    reasons: set[str] = set()
    for detail in status_pb2.Status.FromString(raw[0]).details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            reasons.add(info.reason)
    return reasons


def _all(keys: list[str], outcome: Outcome, status: str) -> dict[str, ItemResult]:
    return {key: ItemResult(outcome, status) for key in keys}


def _rest_item(transaction: dict[str, Any]) -> ItemResult:
    return ItemResult(
        Outcome.OK, "200", str(transaction["transaction_id"]), str(transaction["status"])
    )


def _rest_batch_item(result: dict[str, Any]) -> ItemResult:
    if "transaction" in result:
        return _rest_item(result["transaction"])
    return _item_error(int(result["error"].get("code", 2)))


def _grpc_item(transaction: pb.Transaction) -> ItemResult:
    return ItemResult(
        Outcome.OK,
        "OK",
        transaction.transaction_id,
        pb.TransactionStatus.Name(transaction.status),
    )


def _grpc_batch_item(result: pb.TransferResult) -> ItemResult:
    if result.WhichOneof("result") == "transaction":
        return _grpc_item(result.transaction)
    return _item_error(result.error.code)


def _item_error(code: int) -> ItemResult:
    name = _CODE_NAMES.get(code, str(code))
    failed = name in SERVER_ERROR_CODES or name in INDETERMINATE_CODES
    return ItemResult(Outcome.FAILED if failed else Outcome.REFUSED, name)


# --- the clients -------------------------------------------------------------------


async def run_clients(
    bank: Bank,
    people: list[Person],
    clients: int,
    seed: int,
    mix: Mix,
    keep_going: Callable[[], bool],
) -> None:
    """`clients` clients, client n acting for person n mod len(people) (several clients
    share a wallet, as a person's phone and laptop do), until `keep_going()` says stop."""
    await asyncio.gather(
        *(
            _client(
                bank,
                client,
                people[client % len(people)],
                people,
                random.Random(f"{seed}-{client}"),
                mix,
                keep_going,
            )
            for client in range(clients)
        )
    )


async def _client(
    bank: Bank,
    client: int,
    me: Person,
    people: list[Person],
    rng: random.Random,
    mix: Mix,
    keep_going: Callable[[], bool],
) -> None:
    others = [p for p in people if p is not me]
    history = bank.history
    for n in itertools.count():
        if not keep_going():
            return
        key = f"c{client}-{n}"
        api = rng.choice(("rest", "grpc"))
        pick = rng.random()
        by_email: dict[str, str] = {}
        if pick < mix.read:
            await bank.attempt(client, "read", [], "first", api, PATIENT_TIMEOUT, bank.read(me))
            await asyncio.sleep(rng.uniform(0, mix.think))
            continue
        if pick < mix.read + mix.top_up:
            method = rng.choices(
                ("pm_card_visa", "pm_card_delayed", "pm_card_chargeDeclined"), (8, 1, 1)
            )[0]
            intent = Intent(
                key,
                client,
                "top_up",
                me.user_id,
                None,
                me.wallet_id,
                rng.randint(100, 5_000),
                payment_method=method,
            )
            intents = [intent]
            op, call = "top_up", bank.top_up(me, intent)
        elif pick < mix.read + mix.top_up + mix.batch:
            count = min(rng.randint(2, 4), len(others))
            intents = [
                Intent(
                    f"{key}-{item}",
                    client,
                    "batch_item",
                    me.user_id,
                    me.wallet_id,
                    recipient.wallet_id,
                    _transfer_amount(rng, mix),
                    batch_id=key,
                )
                for item, recipient in enumerate(rng.sample(others, count))
            ]
            op, call = "batch", bank.transfer(me, intents, by_email)
        else:
            recipient = rng.choice(others)
            op = (
                "transfer_by_email"
                if pick < mix.read + mix.top_up + mix.batch + mix.by_email
                else "transfer"
            )
            intent = Intent(
                key,
                client,
                op,
                me.user_id,
                me.wallet_id,
                recipient.wallet_id,
                _transfer_amount(rng, mix),
            )
            if op == "transfer_by_email":
                by_email[key] = recipient.email
            intents = [intent]
            call = bank.transfer(me, intents, by_email)
        for intent in intents:
            history.add_intent(intent)
        keys = [i.key for i in intents]
        bank.calls[keys[0]] = (client, op, keys, api, call)
        resend = rng.random()
        if resend < mix.twin:
            other_api = "grpc" if api == "rest" else "rest"
            await asyncio.gather(
                bank.attempt(client, op, keys, "first", api, PATIENT_TIMEOUT, call),
                bank.attempt(client, op, keys, "twin", other_api, PATIENT_TIMEOUT, call),
            )
        elif resend < mix.twin + mix.impatient:
            first = await bank.attempt(client, op, keys, "first", api, rng.uniform(0.02, 0.3), call)
            if first.outcome is not Outcome.OK:
                await bank.attempt(client, op, keys, "after_timeout", api, PATIENT_TIMEOUT, call)
        else:
            await bank.attempt(client, op, keys, "first", api, PATIENT_TIMEOUT, call)
        await asyncio.sleep(rng.uniform(0, mix.think))


def _transfer_amount(rng: random.Random, mix: Mix) -> int:
    if rng.random() < mix.overdraw:
        return 10_000_000  # more than any wallet holds: refused, never booked
    return rng.randint(1, 500)
