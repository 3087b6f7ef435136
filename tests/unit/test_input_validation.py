"""The runtime's one text rule: every string of every request, nested, repeated and
in maps, is refused with a control character, naming the field's full path."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from google.protobuf import field_mask_pb2, struct_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from services.runtime.server import service_interceptors
from services.runtime.validation import REFUSED_CHARACTERS, map_entry_path, text_violations
from wallet.transaction.v1 import transaction_service_pb2 as pb
from wallet.type.v1 import money_pb2
from wallet.user.v1 import user_service_pb2 as user_pb

C0 = [chr(code) for code in range(0x20)]
C1 = [chr(code) for code in range(0x80, 0xA0)]
REFUSED = [*C0, "\x7f", *C1, "\u2028", "\u2029"]
# Printable text of many scripts, and the format characters emoji and RTL text need.
ALLOWED = [
    " ",
    "~",
    "\xa0",  # no-break space: the first character after C1
    "é",
    "ß",
    "Привет",
    "مرحبا",
    "你好",
    "👩\u200d💻",  # a zero-width joiner inside an emoji sequence
    "\u200f",  # right-to-left mark
    "\ufeff",
]


def fields(message: object) -> dict[str, str]:
    return {v.field: v.description for v in text_violations(message)}  # type: ignore[arg-type]


@pytest.mark.parametrize("char", REFUSED, ids=lambda c: f"U+{ord(c):04X}")
def test_every_control_character_is_refused(char: str) -> None:
    found = fields(pb.CreateTransferRequest(memo=f"lunch{char}money"))
    assert list(found) == ["memo"]
    assert f"U+{ord(char):04X} at position 5" in found["memo"]


@pytest.mark.parametrize("text", ALLOWED)
def test_printable_text_of_any_script_is_allowed(text: str) -> None:
    assert fields(pb.CreateTransferRequest(memo=text, metadata={text: text})) == {}


def test_the_refused_set_is_exactly_cc_and_the_unicode_line_separators() -> None:
    refused = {chr(code) for code in range(0x110000) if REFUSED_CHARACTERS.match(chr(code))}
    assert refused == set(REFUSED)


def test_nested_repeated_and_map_paths() -> None:
    request = pb.BatchCreateTransfersRequest(
        requests=[
            pb.CreateTransferRequest(memo="fine", metadata={"k": "fine"}),
            pb.CreateTransferRequest(
                request_id="id\x00",
                amount=money_pb2.Money(currency="EUR", decimal="1.00\n"),
                metadata={"order": "A\x00B", "bad\x01key": "fine"},
            ),
        ]
    )
    found = fields(request)
    assert set(found) == {
        "requests[1].request_id",
        "requests[1].amount.decimal",
        "requests[1].metadata[order]",
        "requests[1].metadata[bad\\u0001key]",
    }
    assert found["requests[1].metadata[bad\\u0001key]"].startswith("the key ")
    assert not found["requests[1].metadata[order]"].startswith("the key ")


def test_repeated_strings_and_well_known_types() -> None:
    request = user_pb.UpdateUserRequest(
        user=user_pb.User(display_name="Ada\x1b[31m"),
        update_mask=field_mask_pb2.FieldMask(paths=["display_name", "email\x00"]),
    )
    assert set(fields(request)) == {"user.display_name", "update_mask.paths[1]"}


def test_recursive_types_and_maps_of_messages() -> None:
    inner = struct_pb2.Struct()
    inner.update({"note": "x\x00", "list": ["ok", "bad\x07"]})
    outer = struct_pb2.Struct()
    outer.fields["inner"].struct_value.CopyFrom(inner)
    assert set(fields(outer)) == {
        "fields[inner].struct_value.fields[note].string_value",
        "fields[inner].struct_value.fields[list].list_value.values[1].string_value",
    }


def test_a_clean_request_has_no_violations() -> None:
    request = pb.CreateTransferRequest(
        request_id="r-1",
        source_wallet_id="0b8e4c3a-8d5f-4c1e-9a77-2f5d1b3c4e6a",
        recipient_email="bob@example.com",
        amount=money_pb2.Money(currency="EUR", decimal="1.00"),
        memo="coffee ☕",
        metadata={"order": "A-1234"},
    )
    assert fields(request) == {}


def test_map_entry_paths_stay_printable() -> None:
    assert map_entry_path("metadata", "k") == "metadata[k]"
    assert map_entry_path("metadata", "a\x00b") == "metadata[a\\u0000b]"
    assert map_entry_path("labels", 7) == "labels[7]"


# --- the interceptor, in a real server ------------------------------------------------

SERVICE = "wallet.transaction.v1.TransactionService"
METHOD = f"/{SERVICE}/CreateTransfer"


class Recorder:
    def __init__(self) -> None:
        self.calls = 0

    async def create_transfer(
        self, request: pb.CreateTransferRequest, context: object
    ) -> pb.CreateTransferResponse:
        self.calls += 1
        return pb.CreateTransferResponse()


@pytest.fixture
async def served() -> AsyncIterator[tuple[grpc.aio.Channel, Recorder]]:
    recorder = Recorder()
    # No token verifier: a call that reached authentication would be UNAUTHENTICATED.
    server = grpc.aio.server(interceptors=service_interceptors(None, SERVICE, ()))
    handler = grpc.unary_unary_rpc_method_handler(
        recorder.create_transfer,
        request_deserializer=pb.CreateTransferRequest.FromString,
        response_serializer=pb.CreateTransferResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(SERVICE, {"CreateTransfer": handler}),)
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield channel, recorder
    await server.stop(None)


def create_transfer(channel: grpc.aio.Channel) -> grpc.aio.UnaryUnaryMultiCallable:  # type: ignore[type-arg]
    return channel.unary_unary(
        METHOD,
        request_serializer=pb.CreateTransferRequest.SerializeToString,
        response_deserializer=pb.CreateTransferResponse.FromString,
    )


async def test_refused_before_authentication_naming_every_field(
    served: tuple[grpc.aio.Channel, Recorder],
) -> None:
    channel, recorder = served
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await create_transfer(channel)(
            pb.CreateTransferRequest(memo="a\x00", metadata={"k": "\r"}), timeout=10
        )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(refused.value)  # type: ignore[arg-type]
    assert status is not None
    bad_request = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(bad_request)
    assert {v.field for v in bad_request.field_violations} == {"memo", "metadata[k]"}
    assert recorder.calls == 0


async def test_clean_requests_go_on_to_authentication(
    served: tuple[grpc.aio.Channel, Recorder],
) -> None:
    channel, recorder = served
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await create_transfer(channel)(pb.CreateTransferRequest(memo="fine"), timeout=10)
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert recorder.calls == 0
