"""Where the ledger's data lives: 256 logical shards over one or more PostgreSQL databases.

The one module that knows. A user's home shard is the last byte of their id (the user
service makes random UUIDs); every id the ledger makes carries its shard the same way
(`sql/0006_shards/shards.sql`), so a wallet, transaction or hold id says where its row
is without a lookup. Which database holds which logical shards is configuration: the
databases in order (`TRANSACTION_DATABASE_URL`, several separated by spaces), each
first holding a contiguous range of the 256 unless `TRANSACTION_SHARD_RANGES` says
otherwise. That is only the first split: each database records what it holds
(`ledger_shards`, claimed by the first `migrate`), and from then on the databases say
where the shards are. The service reads it from them at start, after every relay pass
and when a write finds its shard gone (moved to another database of the list by
`python -m services.transaction move-shard`: adapters/shard_move.py).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from services.runtime.config import env, env_optional

D = TypeVar("D")
E = TypeVar("E")
LOGICAL_SHARDS = 256
_RANGE = re.compile(r"^(\d+)(?:-(\d+))?$")


class ShardMapError(ValueError):
    """The configured map does not hold every logical shard exactly once, or a database
    holds other shards than the map says."""


def shard_of(id_: str) -> int:
    """The logical shard an id names (its last byte): a user's home shard, the shard of a
    wallet, transaction or hold."""
    return uuid.UUID(id_).bytes[15]


def first_split(databases: int) -> list[frozenset[int]]:
    """The 256 shards in contiguous ranges, database i holding [256 i / n, 256 (i+1) / n)."""
    if databases < 1:
        raise ShardMapError("a ledger needs at least one database")
    return [
        frozenset(range(LOGICAL_SHARDS * i // databases, LOGICAL_SHARDS * (i + 1) // databases))
        for i in range(databases)
    ]


def parse_ranges(text: str) -> frozenset[int]:
    """'0-99,130' → {0, …, 99, 130}."""
    shards: set[int] = set()
    for part in filter(None, (p.strip() for p in text.split(","))):
        match = _RANGE.match(part)
        if not match:
            raise ShardMapError(f"{part!r} is not a shard or a range of shards (as in 0-127)")
        low = int(match[1])
        high = int(match[2]) if match[2] else low
        if not 0 <= low <= high < LOGICAL_SHARDS:
            raise ShardMapError(f"{part!r}: shards are 0 to {LOGICAL_SHARDS - 1}, low to high")
        shards.update(range(low, high + 1))
    return frozenset(shards)


def format_ranges(shards: frozenset[int] | Sequence[int]) -> str:
    """{0, …, 99, 130} → '0-99,130'."""
    runs: list[list[int]] = []
    for shard in sorted(shards):
        if runs and shard == runs[-1][1] + 1:
            runs[-1][1] = shard
        else:
            runs.append([shard, shard])
    return ",".join(str(low) if low == high else f"{low}-{high}" for low, high in runs)


@dataclass(frozen=True)
class ShardConfig:
    """The databases of the ledger, each with the logical shards it holds."""

    database_urls: tuple[str, ...]
    shards: tuple[frozenset[int], ...]

    @classmethod
    def parse(cls, database_urls: str, shard_ranges: str = "") -> ShardConfig:
        urls = tuple(database_urls.split())
        if not shard_ranges.strip():
            return cls(urls, tuple(first_split(len(urls))))
        ranges = tuple(parse_ranges(r) for r in shard_ranges.split())
        if len(ranges) != len(urls):
            raise ShardMapError(
                f"{len(ranges)} shard ranges for {len(urls)} databases: give one per database"
            )
        return cls(urls, ranges)

    @classmethod
    def from_env(cls, prefix: str) -> ShardConfig:
        """From `<prefix>DATABASE_URL` (one or several, separated by spaces) and the
        optional `<prefix>SHARD_RANGES`."""
        return cls.parse(env(prefix, "DATABASE_URL"), env_optional(prefix, "SHARD_RANGES") or "")


class ShardMap(Generic[D]):
    """Logical shard → the handle (a pool, a URL) of the database that holds it. The
    databases are fixed; which shards each holds follows the databases themselves
    (`regroup`, when a shard has moved)."""

    def __init__(self, databases: Sequence[D], shards: Sequence[frozenset[int]]) -> None:
        self._databases = tuple(databases)
        self.regroup(shards)

    def regroup(self, shards: Sequence[frozenset[int]]) -> None:
        """Each database now holds these shards (ShardMapError, and the map as it was,
        unless every shard is held exactly once)."""
        if len(self._databases) != len(shards):
            raise ShardMapError("one set of shards per database")
        owner: dict[int, int] = {}
        for index, held in enumerate(shards):
            for shard in held:
                if shard in owner:
                    raise ShardMapError(
                        f"shard {shard} is in databases {owner[shard] + 1} and {index + 1}"
                    )
                owner[shard] = index
        missing = frozenset(range(LOGICAL_SHARDS)) - owner.keys()
        if missing:
            raise ShardMapError(f"no database holds shards {format_ranges(missing)}")
        # One assignment: a call routed meanwhile sees the old map or the new one.
        self._held = (
            tuple(shards),
            tuple(self._databases[owner[s]] for s in range(LOGICAL_SHARDS)),
        )

    @classmethod
    def of(cls, config: ShardConfig, open_database: Callable[[str], D]) -> ShardMap[D]:
        return cls([open_database(url) for url in config.database_urls], config.shards)

    def for_id(self, id_: str) -> D:
        """The database of the shard this id names (a user's: their home database)."""
        return self._held[1][shard_of(id_)]

    def for_shard(self, shard: int) -> D:
        """The database that holds this logical shard."""
        return self._held[1][shard]

    def same_database(self, *ids: str) -> bool:
        by_shard = self._held[1]
        first = by_shard[shard_of(ids[0])]
        return all(by_shard[shard_of(i)] is first for i in ids[1:])

    def databases(self) -> tuple[D, ...]:
        return self._databases

    def held(self) -> tuple[tuple[D, frozenset[int]], ...]:
        """Each database with the logical shards it holds."""
        return tuple(zip(self._databases, self._held[0], strict=True))

    def map(self, convert: Callable[[D], E]) -> ShardMap[E]:
        """The same map over other handles (a pool → a retrying pool)."""
        return ShardMap([convert(d) for d in self._databases], self._held[0])
