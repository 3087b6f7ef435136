"""Page tokens: signed by the deployment, bound to their query and caller; anything
else is INVALID_ARGUMENT on page_token and never reaches SQL."""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import UTC, datetime

import pytest

from services.runtime.auth import ServiceCredential
from services.runtime.errors import InvalidArgument
from services.runtime.pagination import KEY_PURPOSE, PageTokens
from wallet.transaction.v1 import transaction_service_pb2 as pb
from wallet.type.v1 import page_pb2
from wallet.user.v1 import user_service_pb2 as user_pb

KEY = b"k" * 32
ADA = "5b0f7d52-6c0e-4f3a-9d8e-1a2b3c4d5e6f"
BOB = "0c1d2e3f-4a5b-4c6d-8e7f-9a0b1c2d3e4f"
ITEM = "9a1b2c3d-4e5f-4a6b-8c7d-0e1f2a3b4c5d"
# The keyset cursor must come back exactly, to the microsecond.
WHEN = datetime(2026, 12, 2, 7, 30, 1, 999_999, tzinfo=UTC)
QUERY = pb.ListTransactionsRequest(page_size=2, type=pb.TRANSACTION_TYPE_TRANSFER)


def refused(tokens: PageTokens, token: str, query: object = QUERY, caller: str = ADA) -> str:
    with pytest.raises(InvalidArgument) as error:
        tokens.decode(token, query, caller)  # type: ignore[arg-type]
    [violation] = error.value.violations
    assert violation.field == "page_token"
    return violation.description


def unb64(token: str) -> bytes:
    return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def signed(cursor: page_pb2.PageCursor, key: bytes = KEY) -> str:
    """A token as this deployment would sign it, around any cursor (to show the
    decoder checks what is inside even a genuine signature)."""
    raw = cursor.SerializeToString()
    return b64(raw + hmac.digest(key, b"page-cursor\0" + raw, "sha256"))


def test_round_trip_exact_to_the_microsecond() -> None:
    tokens = PageTokens(KEY)
    token = tokens.encode((WHEN, ITEM), QUERY, ADA)
    assert tokens.decode(token, QUERY, ADA) == (WHEN, ITEM)
    assert tokens.encode(None, QUERY, ADA) == ""
    assert tokens.decode("", QUERY, ADA) is None


def test_the_page_size_may_change_between_pages() -> None:
    tokens = PageTokens(KEY)
    token = tokens.encode((WHEN, ITEM), QUERY, ADA)
    bigger = pb.ListTransactionsRequest(page_size=50, type=pb.TRANSACTION_TYPE_TRANSFER)
    assert tokens.decode(token, bigger, ADA) == (WHEN, ITEM)


def test_the_cursor_carries_the_filter_hash() -> None:
    token = PageTokens(KEY).encode((WHEN, ITEM), QUERY, ADA)
    cursor = page_pb2.PageCursor.FromString(unb64(token)[:-32])
    assert cursor.after_id == ITEM
    assert cursor.filter_hash


@pytest.mark.parametrize(
    "forged",
    [
        # An unsigned PageCursor, as the old tokens were, with a bad id or SQL in it.
        b64(page_pb2.PageCursor(after_sort_key=1, after_id="x").SerializeToString()),
        b64(page_pb2.PageCursor(after_sort_key=1, after_id="' OR 1=1--").SerializeToString()),
        "garbage!",
        "not base64 at all \u0000",
        "ÿÿÿÿ",
        "A" * 10_000,
        "AAAA",
    ],
)
def test_forged_tokens_are_refused(forged: str) -> None:
    assert "not a token returned by this list" in refused(PageTokens(KEY), forged)


def test_every_altered_byte_is_refused() -> None:
    tokens = PageTokens(KEY)
    raw = unb64(tokens.encode((WHEN, ITEM), QUERY, ADA))
    for index in range(len(raw)):
        altered = bytearray(raw)
        altered[index] ^= 0x01
        assert "not a token" in refused(tokens, b64(bytes(altered)))
    assert "not a token" in refused(tokens, b64(raw[:-1]))
    assert "not a token" in refused(tokens, b64(raw + b"\0"))


def test_a_token_of_another_deployment_is_refused() -> None:
    theirs = PageTokens(b"o" * 32).encode((WHEN, ITEM), QUERY, ADA)
    assert "not a token returned by this list" in refused(PageTokens(KEY), theirs)


@pytest.mark.parametrize(
    ("query", "caller"),
    [
        (pb.ListTransactionsRequest(type=pb.TRANSACTION_TYPE_REFUND), ADA),
        (pb.ListTransactionsRequest(type=pb.TRANSACTION_TYPE_TRANSFER, wallet_id=ITEM), ADA),
        (pb.ListTransactionsRequest(), ADA),
        (QUERY, BOB),  # someone else's query
        (user_pb.ListUsersRequest(page_size=2), ADA),  # another list altogether
    ],
)
def test_a_token_of_another_query_is_refused(query: object, caller: str) -> None:
    tokens = PageTokens(KEY)
    token = tokens.encode((WHEN, ITEM), QUERY, ADA)
    assert "different query" in refused(tokens, token, query, caller)


def test_a_signed_cursor_with_a_bad_id_or_time_is_still_refused() -> None:
    tokens = PageTokens(KEY)
    good = page_pb2.PageCursor.FromString(unb64(tokens.encode((WHEN, ITEM), QUERY, ADA))[:-32])
    for after_id, sort_key in [("x", 1), ("' OR 1=1--", 1), ("", 1), (ITEM, 2**62)]:
        cursor = page_pb2.PageCursor(
            after_sort_key=sort_key, after_id=after_id, filter_hash=good.filter_hash
        )
        assert "not a token" in refused(tokens, signed(cursor))


def test_the_mesh_key_is_derived_from_the_service_credential() -> None:
    secret = "mesh-secret-of-this-deployment"
    ours = PageTokens.for_mesh(ServiceCredential(secret))
    same_mesh = PageTokens.for_mesh(ServiceCredential(secret))
    other_mesh = PageTokens.for_mesh(ServiceCredential("another-mesh"))
    token = ours.encode((WHEN, ITEM), QUERY, ADA)
    assert same_mesh.decode(token, QUERY, ADA) == (WHEN, ITEM)
    assert "not a token" in refused(other_mesh, token)
    # Not the secret itself, nor its plain hash: a key of its own for this purpose.
    key = ServiceCredential(secret).derive_key(KEY_PURPOSE)
    assert key is not None
    assert len(key) == 32
    assert key not in (secret.encode(), hashlib.sha256(secret.encode()).digest())
    assert ServiceCredential(secret).derive_key("another purpose") != key


def test_without_a_credential_tokens_still_work_at_this_instance() -> None:
    tokens = PageTokens.for_mesh(ServiceCredential(None))
    token = tokens.encode((WHEN, ITEM), QUERY, ADA)
    assert tokens.decode(token, QUERY, ADA) == (WHEN, ITEM)
    assert "not a token" in refused(PageTokens.for_mesh(ServiceCredential(None)), token)
