"""Opaque page tokens (AIP-132): a keyset cursor — the last item's timestamp and
id — serialized as wallet.type.v1.PageCursor and base64url-encoded."""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime

from google.protobuf.message import DecodeError

from services.runtime.errors import InvalidArgument
from wallet.type.v1 import page_pb2


def encode_page_token(after: tuple[datetime, str] | None) -> str:
    """The token for the page after the item (created_at, id); "" for no more pages."""
    if after is None:
        return ""
    created_at, item_id = after
    micros = int(created_at.timestamp() * 1_000_000)
    raw = page_pb2.PageCursor(after_sort_key=micros, after_id=item_id).SerializeToString()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_page_token(token: str) -> tuple[datetime, str] | None:
    """(created_at, id) of the last item of the previous page; None for the first
    page. A token this service did not make is INVALID_ARGUMENT on `page_token`."""
    if not token:
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        cursor = page_pb2.PageCursor.FromString(raw)
        if not cursor.after_id:
            raise ValueError("empty cursor")
        created_at = datetime.fromtimestamp(cursor.after_sort_key / 1_000_000, tz=UTC)
    except (binascii.Error, DecodeError, ValueError, OverflowError) as error:
        raise InvalidArgument.single(
            "page_token", "is not a token returned by this list"
        ) from error
    return created_at, cursor.after_id
