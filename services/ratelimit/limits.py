"""The rate-limit classes: which descriptor entry names a bucket, how fast the bucket
refills, how big it is, and what the edge does when the limiter cannot answer.

Read by this service (to decide) and by the launcher (to render which Envoy routes fail
closed), so the two never disagree: hence plain Python here, no gRPC and no Redis. The
file is validated strictly at start-up; a typo in a money limit must stop the process,
not silently leave a class unlimited.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar

# PyYAML ships no type information.
import yaml  # type: ignore[import-untyped]

# The descriptor entry that names the class; the contract with the Envoy config.
CLASS_ENTRY = "class"
# requests_per_unit and limit_remaining are uint32 in Envoy's RLS protocol.
MAX_COUNT = 2**32 - 1
# Class names end up in Redis keys (`rl:v1:<class>:<value>`) and in the Envoy config.
_CLASS_NAME = re.compile(r"[A-Za-z0-9_-]+")
_Choice = TypeVar("_Choice", bound=StrEnum)


class LimitsError(ValueError):
    """The limits file is missing, unreadable or invalid; the message says where."""


class Per(StrEnum):
    """The time unit of `requests`: the refill rate is requests per unit."""

    SECOND = "second"
    MINUTE = "minute"
    HOUR = "hour"

    @property
    def seconds(self) -> int:
        return _SECONDS[self.value]


_SECONDS = {"second": 1, "minute": 60, "hour": 3600}


class DescriptorKey(StrEnum):
    """The descriptor entries Envoy sends that can name a bucket."""

    USER = "user"  # the JWT subject, on authenticated calls
    # The caller's IP, on anonymous calls: Envoy's remote_address action names it so.
    REMOTE_ADDRESS = "remote_address"


class FailureMode(StrEnum):
    """What the edge does with a call when this service or Redis cannot answer."""

    OPEN = "open"  # let the call through
    CLOSED = "closed"  # refuse it


@dataclass(frozen=True)
class ClassLimit:
    """One class of calls: a token bucket per distinct value of its `key` entry."""

    name: str
    key: DescriptorKey
    requests: int
    per: Per
    burst: int
    failure_mode: FailureMode

    @property
    def rate_per_second(self) -> float:
        """Tokens added to a bucket per second."""
        return self.requests / self.per.seconds

    @property
    def refill_seconds(self) -> float:
        """Time for an empty bucket to fill up."""
        return self.burst / self.rate_per_second

    @property
    def fails_closed(self) -> bool:
        return self.failure_mode is FailureMode.CLOSED


@dataclass(frozen=True)
class Match:
    """A descriptor that names a bucket: the class and the value of its key entry."""

    limit: ClassLimit
    key_value: str


@dataclass(frozen=True)
class Unmatched:
    """A descriptor that is not ours to limit. `reason` names no user or address, so
    it can be logged, and it takes few distinct values, so it can be logged once."""

    reason: str


@dataclass(frozen=True)
class Limits:
    """The parsed limits file."""

    domain: str
    classes: Mapping[str, ClassLimit]

    def fail_closed_classes(self) -> frozenset[str]:
        """Names of the classes whose calls the edge refuses when the limiter is down."""
        return frozenset(name for name, limit in self.classes.items() if limit.fails_closed)

    def match(self, domain: str, entries: Sequence[tuple[str, str]]) -> Match | Unmatched:
        """Finds the bucket a descriptor (its `(key, value)` entries) draws from.

        The class comes from the `class` entry and the bucket from the entry named by
        the class's `key`; entries are looked up by key, so their order does not matter.
        """
        if domain != self.domain:
            return Unmatched(f"domain {domain!r} is not {self.domain!r}")
        values: dict[str, str] = {}
        for key, value in entries:
            values.setdefault(key, value)
        class_name = values.get(CLASS_ENTRY)
        if not class_name:
            return Unmatched(f"descriptor has no {CLASS_ENTRY!r} entry")
        limit = self.classes.get(class_name)
        if limit is None:
            return Unmatched(f"unknown class {class_name!r}")
        key_value = values.get(limit.key)
        if not key_value:
            # An empty value would put every such caller in one shared bucket.
            return Unmatched(f"class {class_name!r}: descriptor has no {limit.key.value!r} entry")
        return Match(limit, key_value)


def load_limits(path: str | Path) -> Limits:
    """Reads and validates a limits file; raises `LimitsError` naming the problems."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise LimitsError(f"{path}: cannot read the limits file: {error}") from error
    return parse_limits(text, source=str(path))


def parse_limits(text: str, *, source: str = "<limits>") -> Limits:
    """Parses and validates the YAML text of a limits file (no I/O)."""
    try:
        document = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as error:
        raise LimitsError(f"{source}: not valid YAML: {error}") from error
    problems: list[str] = []
    limits = _limits(document, problems)
    if problems or limits is None:
        raise LimitsError(f"{source}: invalid limits:\n" + "\n".join(f"  - {p}" for p in problems))
    return limits


_FIELDS = ("key", "requests", "per", "burst", "failure_mode")


def _limits(document: Any, problems: list[str]) -> Limits | None:
    if not isinstance(document, dict):
        problems.append("the file must be a mapping with 'domain' and 'classes'")
        return None
    for unknown in sorted(set(map(str, document)) - {"domain", "classes"}):
        problems.append(f"unknown top-level field {unknown!r} (expected 'domain', 'classes')")
    domain = document.get("domain")
    if not isinstance(domain, str) or not domain:
        problems.append("'domain' must be a non-empty string")
    raw_classes = document.get("classes")
    if not isinstance(raw_classes, dict) or not raw_classes:
        problems.append("'classes' must be a non-empty mapping of class name to limit")
        return None
    classes: dict[str, ClassLimit] = {}
    for name, fields in raw_classes.items():
        limit = _class_limit(name, fields, problems)
        if limit is not None:
            classes[limit.name] = limit
    if problems or not isinstance(domain, str):
        return None
    return Limits(domain=domain, classes=MappingProxyType(classes))


def _class_limit(name: Any, fields: Any, problems: list[str]) -> ClassLimit | None:
    if not isinstance(name, str) or not _CLASS_NAME.fullmatch(name):
        problems.append(f"class {name!r}: names are letters, digits, '_' and '-'")
        return None
    where = f"class {name!r}"
    if not isinstance(fields, dict):
        problems.append(f"{where}: must be a mapping with fields {', '.join(_FIELDS)}")
        return None
    for unknown in sorted(set(map(str, fields)) - set(_FIELDS)):
        problems.append(f"{where}: unknown field {unknown!r} (expected {', '.join(_FIELDS)})")
    for missing in (f for f in _FIELDS if fields.get(f) is None):  # `burst:` is null
        problems.append(f"{where}: missing field {missing!r}")
    key = _choice(DescriptorKey, fields, "key", where, problems)
    per = _choice(Per, fields, "per", where, problems)
    mode = _choice(FailureMode, fields, "failure_mode", where, problems)
    requests = _count(fields, "requests", where, problems)
    burst = _count(fields, "burst", where, problems)
    if key is None or per is None or mode is None or requests is None or burst is None:
        return None
    return ClassLimit(name, key, requests, per, burst, mode)


def _choice(
    kind: type[_Choice], fields: dict[Any, Any], field: str, where: str, problems: list[str]
) -> _Choice | None:
    value = fields.get(field)
    if value is None:
        return None  # reported as missing
    if isinstance(value, str):
        try:
            return kind(value)
        except ValueError:
            pass
    allowed = ", ".join(member.value for member in kind)
    problems.append(f"{where}, field {field!r}: {value!r} is not one of {allowed}")
    return None


def _count(fields: dict[Any, Any], field: str, where: str, problems: list[str]) -> int | None:
    value = fields.get(field)
    if value is None:
        return None  # reported as missing
    # bool is an int to Python, and YAML reads `yes` as True.
    if type(value) is not int or not 0 < value <= MAX_COUNT:
        problems.append(
            f"{where}, field {field!r}: {value!r} is not a whole number from 1 to {MAX_COUNT}"
        )
        return None
    return value


class _StrictLoader(yaml.SafeLoader):  # type: ignore[misc]
    """PyYAML's SafeLoader, except that a key given twice in one mapping is an error:
    PyYAML would silently keep the last one, and a second `money:` entry could quietly
    replace the first."""


_MERGE_TAG = "tag:yaml.org,2002:merge"


def _construct_mapping(loader: Any, node: Any) -> Any:
    seen: set[object] = set()
    for key_node, _ in node.value:
        if key_node.tag == _MERGE_TAG:  # `<<: *anchor` merges are not keys
            continue
        key = loader.construct_object(key_node, deep=True)
        if isinstance(key, str | int) and key in seen:
            line = key_node.start_mark.line + 1
            raise yaml.constructor.ConstructorError(
                None, None, f"line {line}: {key!r} is given twice", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=True)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
