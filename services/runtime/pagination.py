"""Opaque page tokens (AIP-132, AIP-158): a keyset cursor — the last item's
timestamp and id — that only this deployment can make, for one query only.

A token is base64url(cursor ‖ tag): `cursor` is a serialized
wallet.type.v1.PageCursor and `tag` its HMAC-SHA256 under the deployment's page
key. The cursor's `filter_hash` is a keyed hash of the list request without its
`page_token` and `page_size`, of the request's type and of the caller: a token is
good for the next page of the same list, same filters, same caller, and nothing
else (the page size may change between pages). A forged, altered or foreign token
is INVALID_ARGUMENT on `page_token`, and so is one whose cursor is not a
(timestamp, UUID) pair — nothing of a token reaches SQL unchecked.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import secrets
import uuid
from datetime import UTC, datetime, timedelta

from google.protobuf.message import DecodeError, Message

from services.runtime.auth import ServiceCredential
from services.runtime.errors import InvalidArgument
from wallet.type.v1 import page_pb2

log = logging.getLogger(__name__)

FIELD = "page_token"
# What HKDF derives the page key for, from the mesh's service credential.
KEY_PURPOSE = "wallet-mesh page tokens v1"
# Longer than any token this module makes (about 150 characters): not worth decoding.
MAX_TOKEN_LENGTH = 512
_TAG_BYTES = hashlib.sha256().digest_size
_FILTER_HASH_BYTES = 16
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_NOT_OURS = "is not a token returned by this list"
_OTHER_QUERY = (
    "was returned for a different query: send the filters of the first page again, "
    "or no page_token to start over"
)


class PageTokens:
    """Makes and reads the page tokens of a deployment (one key for every instance
    of every service, so any instance reads what another made)."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError("a page-token key needs at least 16 bytes")
        self._key = key

    @classmethod
    def for_mesh(cls, credential: ServiceCredential) -> PageTokens:
        """Keyed from the mesh's service credential (HKDF). Without one, a random key:
        tokens then only work at the instance that made them, until it restarts."""
        key = credential.derive_key(KEY_PURPOSE)
        if key is None:
            log.warning("no service credential: page tokens are only valid at this instance")
            key = secrets.token_bytes(32)
        return cls(key)

    def encode(self, after: tuple[datetime, str] | None, query: Message, caller_id: str) -> str:
        """The token for the page after the item (created_at, id) of `query`, the list
        request `caller_id` sent; "" for no more pages."""
        if after is None:
            return ""
        created_at, item_id = after
        cursor = page_pb2.PageCursor(
            after_sort_key=(created_at - _EPOCH) // _MICROSECOND,
            after_id=item_id,
            filter_hash=self.query_hash(query, caller_id),
        ).SerializeToString(deterministic=True)
        return base64.urlsafe_b64encode(cursor + self._tag(cursor)).decode().rstrip("=")

    def decode(self, token: str, query: Message, caller_id: str) -> tuple[datetime, str] | None:
        """(created_at, id) of the last item of the previous page; None for the first
        page. Anything but a token made by `encode` for this query and caller is
        INVALID_ARGUMENT on `page_token`."""
        if not token:
            return None
        cursor = self._verified_cursor(token)
        if not hmac.compare_digest(cursor.filter_hash, self.query_hash(query, caller_id)):
            raise InvalidArgument.single(FIELD, _OTHER_QUERY)
        try:
            item_id = str(uuid.UUID(cursor.after_id))
            created_at = _EPOCH + cursor.after_sort_key * _MICROSECOND
        except (ValueError, OverflowError) as error:
            raise InvalidArgument.single(FIELD, _NOT_OURS) from error
        return created_at, item_id

    def _verified_cursor(self, token: str) -> page_pb2.PageCursor:
        try:
            if len(token) > MAX_TOKEN_LENGTH:
                raise ValueError("too long")
            # validate=True: characters outside the alphabet are an error, not skipped.
            raw = base64.b64decode(token + "=" * (-len(token) % 4), altchars=b"-_", validate=True)
            cursor, tag = raw[:-_TAG_BYTES], raw[-_TAG_BYTES:]
            if not cursor or not hmac.compare_digest(tag, self._tag(cursor)):
                raise ValueError("not signed with this deployment's key")
            return page_pb2.PageCursor.FromString(cursor)
        except (binascii.Error, DecodeError, ValueError) as error:
            raise InvalidArgument.single(FIELD, _NOT_OURS) from error

    def _tag(self, cursor: bytes) -> bytes:
        return hmac.digest(self._key, b"page-cursor\0" + cursor, "sha256")

    def query_hash(self, query: Message, caller_id: str) -> str:
        """What identifies the query `caller_id` sent, whichever page it asks for (its
        filters, not its page size or token): what each of its page tokens carries."""
        filters = type(query)()
        filters.CopyFrom(query)
        for name in ("page_token", "page_size"):
            if name in filters.DESCRIPTOR.fields_by_name:
                filters.ClearField(name)
        digest = hmac.digest(
            self._key,
            b"\0".join(
                (
                    b"filters",
                    query.DESCRIPTOR.full_name.encode(),
                    caller_id.encode(),
                    filters.SerializeToString(deterministic=True),
                )
            ),
            "sha256",
        )
        return base64.urlsafe_b64encode(digest[:_FILTER_HASH_BYTES]).decode().rstrip("=")
