"""One rule for every text field a client sends: no control characters.

A NUL reaches PostgreSQL as an error (text cannot hold it), and other control
characters forge lines in logs and receipts or hide in identifiers. So the
boundary refuses them in every string of every request — nested messages,
repeated fields, map keys and values — before authentication or any handler
runs, with one INVALID_ARGUMENT that names every bad field.

Refused: Unicode category Cc (C0 U+0000-U+001F, which includes tab, line feed and
carriage return; DEL U+007F; C1 U+0080-U+009F) and the line and paragraph
separators U+2028/U+2029. Every text field of the API is one line (memos and
reasons are printed on receipts), so no field is an exception. Bytes fields are
not text and are not looked at.

Which fields of a message type are strings is worked out once per type; a call
costs a few microseconds (see `text_violations`).
"""

from __future__ import annotations

import logging
import operator
import re
from collections.abc import Callable, Iterator
from typing import Any, cast

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from grpc_status import rpc_status

from services.runtime.errors import FieldViolation, InvalidArgument
from services.runtime.interceptors import Behavior, Context, WrappingInterceptor, status_for

log = logging.getLogger(__name__)

REFUSED_CHARACTERS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_SEARCH = REFUSED_CHARACTERS.search
_TEXT = FieldDescriptor.TYPE_STRING
_MESSAGE = FieldDescriptor.TYPE_MESSAGE


def control_character_problem(text: str) -> str | None:
    """Why `text` is refused, None if it is not."""
    found = REFUSED_CHARACTERS.search(text)
    if found is None:
        return None
    return (
        f"must not contain control characters (U+{ord(found[0]):04X} at position {found.start()})"
    )


def map_entry_path(field: str, key: object) -> str:
    """The path of one entry of a map field: `metadata[k]` (control characters of a
    key are written as \\uXXXX, so the path itself stays printable)."""
    shown = REFUSED_CHARACTERS.sub(lambda m: f"\\u{ord(m[0]):04x}", str(key))
    return f"{field}[{shown}]"


class _Plan:
    """Where the text of one message type is: its string fields, and the message
    fields that can lead to more. Built once per type; recursive types share plans."""

    __slots__ = (
        "maps",
        "messages",
        "repeated_messages",
        "repeated_strings",
        "strings",
        "strings_of",
    )

    def __init__(self) -> None:
        self.strings: tuple[str, ...] = ()
        # The values of `strings`, as a tuple, in one call.
        self.strings_of: Callable[[Any], tuple[str, ...]] = lambda message: ()
        self.repeated_strings: tuple[str, ...] = ()
        self.messages: tuple[tuple[str, _Plan], ...] = ()
        self.repeated_messages: tuple[tuple[str, _Plan], ...] = ()
        # (field, key is text, value is text, the value's plan if it is a message)
        self.maps: tuple[tuple[str, bool, bool, _Plan | None], ...] = ()


_PLANS: dict[Descriptor, _Plan] = {}


def _message_type(field: FieldDescriptor) -> Descriptor:
    assert field.message_type is not None, field.full_name
    return field.message_type


def _holds_text(descriptor: Descriptor, path: frozenset[str] = frozenset()) -> bool:
    """Whether any string can be reached from a message of this type (`path`: the
    types being looked at, so a recursive type ends the search instead of looping)."""
    if descriptor.full_name in path:
        return False
    inner = path | {descriptor.full_name}
    return any(
        field.type == _TEXT or (field.type == _MESSAGE and _holds_text(_message_type(field), inner))
        for field in descriptor.fields
    )


def _plan_for(descriptor: Descriptor) -> _Plan:
    plan = _PLANS.get(descriptor)
    if plan is not None:
        return plan
    plan = _PLANS[descriptor] = _Plan()
    strings: list[str] = []
    repeated_strings: list[str] = []
    messages: list[tuple[str, _Plan]] = []
    repeated_messages: list[tuple[str, _Plan]] = []
    maps: list[tuple[str, bool, bool, _Plan | None]] = []
    for field in descriptor.fields:
        if field.type == _TEXT:
            (repeated_strings if field.is_repeated else strings).append(field.name)
            continue
        if field.type != _MESSAGE or not _holds_text(inner := _message_type(field)):
            continue
        if inner.GetOptions().map_entry:
            key, value = inner.fields_by_name["key"], inner.fields_by_name["value"]
            value_plan = _plan_for(_message_type(value)) if value.type == _MESSAGE else None
            maps.append((field.name, key.type == _TEXT, value.type == _TEXT, value_plan))
        elif field.is_repeated:
            repeated_messages.append((field.name, _plan_for(inner)))
        else:
            messages.append((field.name, _plan_for(inner)))
    plan.strings, plan.repeated_strings = tuple(strings), tuple(repeated_strings)
    if len(strings) == 1:
        only = strings[0]
        plan.strings_of = lambda message: (getattr(message, only),)
    elif strings:
        plan.strings_of = operator.attrgetter(*strings)
    plan.messages, plan.repeated_messages = tuple(messages), tuple(repeated_messages)
    plan.maps = tuple(maps)
    return plan


def _walk(message: Any, plan: _Plan, prefix: str) -> Iterator[FieldViolation]:
    for name in plan.strings:
        value = getattr(message, name)
        if value and (problem := control_character_problem(value)):
            yield FieldViolation(prefix + name, problem)
    for name in plan.repeated_strings:
        for index, value in enumerate(getattr(message, name)):
            if problem := control_character_problem(value):
                yield FieldViolation(f"{prefix}{name}[{index}]", problem)
    for name, inner in plan.messages:
        if message.HasField(name):
            yield from _walk(getattr(message, name), inner, f"{prefix}{name}.")
    for name, inner in plan.repeated_messages:
        for index, item in enumerate(getattr(message, name)):
            yield from _walk(item, inner, f"{prefix}{name}[{index}].")
    for name, key_is_text, value_is_text, value_plan in plan.maps:
        for key, value in getattr(message, name).items():
            path = map_entry_path(prefix + name, key)
            if key_is_text and (problem := control_character_problem(key)):
                yield FieldViolation(path, f"the key {problem}")
            if value_is_text and (problem := control_character_problem(value)):
                yield FieldViolation(path, problem)
            elif value_plan is not None:
                yield from _walk(value, value_plan, f"{path}.")


def _gather(message: Any, plan: _Plan, texts: list[str]) -> None:
    """Every string of `message`, into `texts`: the common case (nothing refused) is
    one regular-expression search over them all, then no paths are worked out."""
    if plan.strings:
        texts.extend(plan.strings_of(message))
    for name in plan.repeated_strings:
        texts.extend(getattr(message, name))
    for name, inner in plan.messages:
        if message.HasField(name):
            _gather(getattr(message, name), inner, texts)
    for name, inner in plan.repeated_messages:
        for item in getattr(message, name):
            _gather(item, inner, texts)
    for name, key_is_text, value_is_text, value_plan in plan.maps:
        entries = getattr(message, name)
        if not entries:  # cheaper than asking an empty map for its items
            continue
        for key, value in entries.items():
            if key_is_text:
                texts.append(key)
            if value_is_text:
                texts.append(value)
            elif value_plan is not None:
                _gather(value, value_plan, texts)


def text_violations(message: Message) -> list[FieldViolation]:
    """Every string of `message` that holds a refused character, by its field path
    (`memo`, `amount.decimal`, `requests[3].memo`, `metadata[k]`)."""
    plan = _plan_for(cast(Descriptor, message.DESCRIPTOR))
    texts: list[str] = []
    _gather(message, plan, texts)
    # One search for the whole request; the space between fields is an allowed character.
    if not _SEARCH(" ".join(texts)):
        return []
    return list(_walk(message, plan, ""))


class InputValidation(WrappingInterceptor):
    """Refuses a request with a control character in any text field, for the methods
    under `prefixes`, before the boundary's authentication and the handler. It tells
    an unauthenticated caller nothing but which of its own fields are bad."""

    def __init__(self, prefixes: tuple[str, ...]) -> None:
        super().__init__()
        self._prefixes = prefixes

    def wrap(self, method: str, behavior: Behavior) -> Behavior | None:
        if not method.startswith(self._prefixes):
            return None

        async def validated(request: Any, context: Context) -> Any:
            violations = text_violations(request)
            if violations:
                log.info(
                    "refused",
                    extra={
                        "rpc": method,
                        "code": "INVALID_ARGUMENT",
                        "fields": [v.field for v in violations],
                    },
                )
                status = rpc_status.to_status(status_for(InvalidArgument(violations)))
                await context.abort(status.code, status.details, status.trailing_metadata)
            return await behavior(request, context)

        return validated
