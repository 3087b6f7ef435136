"""The shard map: which database holds which of the 256 logical shards, and how an id
names its shard (the last byte, as the SQL reads it)."""

from __future__ import annotations

import uuid

import pytest

from services.transaction.adapters.shards import (
    LOGICAL_SHARDS,
    ShardConfig,
    ShardMap,
    ShardMapError,
    first_split,
    format_ranges,
    parse_ranges,
    shard_of,
)


def on_shard(shard: int) -> str:
    return str(uuid.UUID(bytes=uuid.uuid4().bytes[:15] + bytes([shard])))


def test_an_id_names_its_shard_in_its_last_byte() -> None:
    assert shard_of("0b9f3c2e-7d41-4a8e-9c55-1f2e3d4c5bfa") == 0xFA
    assert all(shard_of(on_shard(s)) == s for s in (0, 1, 127, 255))
    assert shard_of("0B9F3C2E-7D41-4A8E-9C55-1F2E3D4C5B07") == 7  # any spelling of a UUID
    with pytest.raises(ValueError, match="badly formed"):
        shard_of("not-a-uuid")


def test_the_first_split_gives_each_database_a_contiguous_range() -> None:
    assert [format_ranges(s) for s in first_split(1)] == ["0-255"]
    assert [format_ranges(s) for s in first_split(2)] == ["0-127", "128-255"]
    assert [format_ranges(s) for s in first_split(3)] == ["0-84", "85-169", "170-255"]
    with pytest.raises(ShardMapError, match="at least one database"):
        first_split(0)


def test_ranges_are_read_and_written_the_same_way() -> None:
    assert parse_ranges("0-3, 9,200-201") == {0, 1, 2, 3, 9, 200, 201}
    assert format_ranges(parse_ranges("130,0-99,5")) == "0-99,130"
    for bad, why in (("3-1", "low to high"), ("256", "0 to 255"), ("a-b", "not a shard")):
        with pytest.raises(ShardMapError, match=why):
            parse_ranges(bad)


def test_the_map_routes_each_id_to_the_database_of_its_shard() -> None:
    shards = ShardMap(["a", "b"], first_split(2))
    assert shards.for_id(on_shard(0)) == "a"
    assert shards.for_id(on_shard(127)) == "a"
    assert shards.for_id(on_shard(128)) == "b"
    assert shards.same_database(on_shard(1), on_shard(100))
    assert not shards.same_database(on_shard(1), on_shard(200))
    assert shards.map(str.upper).for_id(on_shard(255)) == "B"
    assert shards.databases() == ("a", "b")


def test_a_map_must_hold_every_shard_exactly_once() -> None:
    with pytest.raises(ShardMapError, match="no database holds shards 128-255"):
        ShardMap(["a"], [frozenset(range(128))])
    with pytest.raises(ShardMapError, match="shard 5 is in databases 1 and 2"):
        ShardMap(["a", "b"], [frozenset(range(LOGICAL_SHARDS)), frozenset({5})])


def test_configuration_lists_databases_and_optionally_their_ranges() -> None:
    one = ShardConfig.parse("postgresql+psycopg://x/ledger")
    assert one.shards == (frozenset(range(256)),)
    two = ShardConfig.parse("postgresql://a/l  postgresql://b/l", "0-99,200-255 100-199")
    assert two.database_urls == ("postgresql://a/l", "postgresql://b/l")
    assert [format_ranges(s) for s in two.shards] == ["0-99,200-255", "100-199"]
    with pytest.raises(ShardMapError, match="1 shard ranges for 2 databases"):
        ShardConfig.parse("postgresql://a/l postgresql://b/l", "0-255")
