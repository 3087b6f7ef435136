"""Moving a logical shard to another database of the ledger, while the services run.

1. *Pause*: the move takes the shard's lock exclusive on the database that holds it
   (`ledger_pause_shard`). Every write of a shard's rows takes it shared
   (`ledger_require_shard`, from the triggers on accounts, transactions, holds,
   idempotency keys and refused legs), so the move waits for the writes in flight and
   new ones wait for the move. Reads go on.
2. *Copy*: the shard's rows, read in one snapshot taken after the pause (so with every
   write that got in before it), are written to the other database in one transaction,
   as they are (`session_replication_role = replica`: ids, receipt numbers and history
   untouched, no trigger), with the shard claimed there as 'arriving'. Row counts are
   compared before that commits. The other database's receipt-number sequence is moved
   past this one's (numbers are per database; the shard's numbers stay unique).
3. *Switch*: the first database lets the shard go (deletes its claim), the pause ends,
   the other database holds the shard, and the first deletes its rows of it. The writes
   that waited are refused (SQLSTATE 55000, UNAVAILABLE to their callers, who retry),
   and every instance of the service reads where the shards are again
   (adapters/ledger_databases.py) and sends the retries to the new database. (The rows
   are deleted after the pause: a writer that waited for it may hold row locks the
   deletes need, and it lets go of them only once refused.)

Stopped part-way (the tool killed, a database down), a move is finished by running it
again: a copy still 'arriving' while the first database holds the shard is thrown away
and made again (writes went on there); one the first database has let go is made the
holder; rows a database keeps of a shard it let go are deleted.
Needs a superuser (or a role allowed `session_replication_role`) on both databases.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import psycopg
from psycopg import sql

from services.runtime.db import driver_conninfo

# Which rows of each table are a logical shard's (every row is some shard's: ids carry
# their shard, a posting is its account's, a key is where its call wrote, an outbox row
# or an external payment its transaction's, a refused leg its payee wallet's).
ROWS_OF_SHARD = {
    "accounts": "ledger_shard_of(id)",
    "holds": "ledger_shard_of(id)",
    "transactions": "ledger_shard_of(id)",
    "postings": "ledger_shard_of(account_id)",
    "idempotency_keys": "shard",
    "external_payments": "ledger_shard_of(transaction_id)",
    "ledger_outbox": "ledger_shard_of(transaction_id)",
    "ledger_refused_legs": "ledger_shard_of(account_id)",
}
# Tables that are no shard's: the map itself and the migrations' own.
NOT_SHARDED = frozenset({"ledger_shards", "alembic_version"})
# A posting's id is a per-database sequence's (an order, named nowhere else): the copy
# takes the new database's, in the old order.
NEW_IDS = {"postings": "id"}
PAUSE_ATTEMPTS = 5


class ShardMoveError(RuntimeError):
    """The move cannot be made (or finished) as the databases stand."""


@dataclass(frozen=True)
class MoveReport:
    shard: int
    rows: dict[str, int]
    resumed: bool  # an earlier move's copy was finished (or made again)


def _connect(
    database_url: str, *, autocommit: bool = False
) -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(driver_conninfo(database_url), autocommit=autocommit)


@dataclass(frozen=True)
class Claim:
    """What a database records of a shard: 'held', 'arriving' or 'left' (None: never
    had it), and the move that last changed it."""

    state: str | None
    move: str | None


def _claim(connection: psycopg.Connection[tuple[object, ...]], shard: int) -> Claim:
    row = connection.execute(
        "SELECT state, move_id::text FROM ledger_shards WHERE shard = %s", (shard,)
    ).fetchone()
    connection.commit()
    return Claim(str(row[0]), str(row[1]) if row[1] else None) if row else Claim(None, None)


def claims(database_url: str, shard: int) -> Claim:
    with _connect(database_url) as connection:
        return _claim(connection, shard)


def _check_alike(
    source: psycopg.Connection[tuple[object, ...]], target: psycopg.Connection[tuple[object, ...]]
) -> None:
    versions = [
        c.execute("SELECT version_num FROM alembic_version").fetchone() for c in (source, target)
    ]
    if versions[0] != versions[1]:
        raise ShardMoveError(
            f"the databases are at revisions {versions[0]} and {versions[1]}: migrate both first"
        )
    tables = {
        str(name)
        for (name,) in source.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
        )
    }
    unknown = tables - ROWS_OF_SHARD.keys() - NOT_SHARDED
    if unknown:
        raise ShardMoveError(f"tables the move does not know the shard of: {sorted(unknown)}")
    for connection in (source, target):
        connection.commit()


def _columns(connection: psycopg.Connection[tuple[object, ...]], table: str) -> list[str]:
    rows = connection.execute(
        "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0"
        " AND NOT attisdropped ORDER BY attnum",
        (table,),
    ).fetchall()
    return [str(name) for (name,) in rows if name != NEW_IDS.get(table)]


def _of_shard(table: str, shard: int) -> sql.Composed:
    return sql.SQL("{} WHERE {} = {}").format(
        sql.Identifier(table), sql.SQL(ROWS_OF_SHARD[table]), sql.Literal(shard)
    )


def _delete_rows(connection: psycopg.Connection[tuple[object, ...]], shard: int) -> int:
    """The shard's rows gone from this database, in the open transaction (replica mode:
    the history guards would refuse the deletes, rightly, anywhere else); how many."""
    connection.execute("SET LOCAL session_replication_role = replica")
    deleted = 0
    for table in ROWS_OF_SHARD:
        cursor = connection.execute(sql.SQL("DELETE FROM {}").format(_of_shard(table, shard)))
        deleted += cursor.rowcount
    return deleted


def _copy(
    source: psycopg.Connection[tuple[object, ...]],
    target: psycopg.Connection[tuple[object, ...]],
    shard: int,
    move: str,
) -> dict[str, int]:
    """The shard's rows from source's snapshot into target's open transaction, and the
    shard claimed there as arriving; the number of rows of each table. Rows the target
    had of the shard (a copy an earlier move left, out of date) go first."""
    _delete_rows(target, shard)
    counts: dict[str, int] = {}
    for table in ROWS_OF_SHARD:
        columns = sql.SQL(", ").join(map(sql.Identifier, _columns(source, table)))
        order = sql.SQL(" ORDER BY id") if table in NEW_IDS else sql.SQL("")
        read = sql.SQL("COPY (SELECT {} FROM {}{}) TO STDOUT (FORMAT binary)").format(
            columns, _of_shard(table, shard), order
        )
        write = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT binary)").format(
            sql.Identifier(table), columns
        )
        try:
            with source.cursor().copy(read) as rows_out, target.cursor().copy(write) as rows_in:
                for block in rows_out:
                    rows_in.write(block)
        except psycopg.errors.UniqueViolation as error:
            # An idempotency key one owner used on two shards of two databases (say a
            # merchant's capture here and there) cannot be in one: the move is refused.
            raise ShardMoveError(f"{table}: a row the target has already: {error}") from error
        count = sql.SQL("SELECT count(*) FROM {}").format(_of_shard(table, shard))
        sent = source.execute(count).fetchone()
        arrived = target.execute(count).fetchone()
        if sent != arrived:
            raise ShardMoveError(f"{table}: {sent} rows sent, {arrived} arrived")
        counts[table] = int(str(sent[0])) if sent else 0
    (last,) = source.execute("SELECT last_value FROM receipt_number_seq").fetchone() or (1,)
    target.execute(
        "SELECT setval('receipt_number_seq',"
        " greatest(%s, (SELECT last_value FROM receipt_number_seq)))",
        (last,),
    )
    target.execute(
        "INSERT INTO ledger_shards (shard, state, move_id) VALUES (%s, 'arriving', %s)"
        " ON CONFLICT (shard) DO UPDATE SET state = 'arriving', since = now(),"
        " move_id = excluded.move_id WHERE ledger_shards.state <> 'held'",
        (shard, move),
    )
    return counts


def _pause(control: psycopg.Connection[tuple[object, ...]], shard: int) -> None:
    """The shard's lock, exclusive, for the session. A writer holding it shared may wait
    for a row lock of a writer queued behind us: PostgreSQL's deadlock detector then
    breaks the cycle, sometimes by failing this wait, which is tried again."""
    for attempt in range(1, PAUSE_ATTEMPTS + 1):
        try:
            control.execute("SELECT ledger_pause_shard(%s)", (shard,))
            return
        except psycopg.errors.DeadlockDetected:
            if attempt == PAUSE_ATTEMPTS:
                raise


def _purge(control: psycopg.Connection[tuple[object, ...]], shard: int) -> int:
    """The rows a database keeps of a shard it does not hold (it let the shard go, or
    has an out-of-date copy of it), and a copy 'arriving' recorded as 'left', so that
    it is never held; how many rows. (No writer can add any: each checks that the
    database holds the shard. One still holding row locks it took before the pause, on
    its way to being refused, is waited for.)"""
    with control.transaction():
        deleted = _delete_rows(control, shard)
        control.execute(
            "UPDATE ledger_shards SET state = 'left', since = now()"
            " WHERE shard = %s AND state = 'arriving'",
            (shard,),
        )
    return deleted


def _lock_move(connection: psycopg.Connection[tuple[object, ...]], shard: int) -> None:
    row = connection.execute("SELECT ledger_lock_shard_move(%s)", (shard,)).fetchone()
    connection.commit()
    if not row or not row[0]:
        raise ShardMoveError(f"another move of shard {shard} is running")


def move_shard(shard: int, source_url: str, target_url: str) -> MoveReport:
    """Moves one logical shard from the database that holds it to another (above); or
    finishes the move of it from source to target that stopped part-way (the target's
    copy is the one the source let the shard go to); or, the target holding it,
    deletes what the source keeps of it."""
    with (
        _connect(source_url, autocommit=True) as control,
        _connect(source_url) as snapshot,
        _connect(target_url) as target,
    ):
        # One run at a time (a second would throw away the first one's copy).
        _lock_move(control, shard)
        _lock_move(target, shard)
        at_source, at_target = _claim(snapshot, shard), _claim(target, shard)
        counts: dict[str, int] = {}
        if at_source.state == "held":
            if at_target.state == "held":
                raise ShardMoveError(f"both databases hold shard {shard}")
            _check_alike(snapshot, target)
            if at_target.state is not None:
                # What an earlier move left there goes before the pause (the copy
                # deletes again, within its transaction, what might remain).
                _purge(target, shard)
            move = str(uuid.uuid4())
            counts = _copy_paused(control, snapshot, target, shard, move)
            _hold(target, shard, move)
        elif at_target.state == "arriving":
            if at_source.state != "left" or at_source.move != at_target.move:
                raise ShardMoveError(
                    f"the target's copy of shard {shard} is not what the source let go"
                )
            _hold(target, shard, at_source.move)
        elif at_target.state != "held" or at_source.state is None:
            raise ShardMoveError(f"neither database holds shard {shard}")
        _purge(control, shard)
    resumed = at_source.state != "held" or at_target.state == "arriving"
    return MoveReport(shard, counts, resumed)


def _copy_paused(
    control: psycopg.Connection[tuple[object, ...]],
    snapshot: psycopg.Connection[tuple[object, ...]],
    target: psycopg.Connection[tuple[object, ...]],
    shard: int,
    move: str,
) -> dict[str, int]:
    """Steps 1 and 2 and the first of 3: paused, copied, and let go by the source (its
    claim deleted: the writes that waited are refused once the pause ends)."""
    _pause(control, shard)
    try:
        # The snapshot begins with its first statement: after the pause.
        snapshot.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        snapshot.read_only = True
        counts = _copy(snapshot, target, shard, move)
        snapshot.rollback()
        target.commit()
        control.execute(
            "UPDATE ledger_shards SET state = 'left', since = now(), move_id = %s WHERE shard = %s",
            (move, shard),
        )
    finally:
        control.execute("SELECT ledger_resume_shard(%s)", (shard,))
    return counts


def _hold(target: psycopg.Connection[tuple[object, ...]], shard: int, move: str | None) -> None:
    """The target holds the shard: its copy arriving from this move."""
    held = target.execute(
        "UPDATE ledger_shards SET state = 'held', since = now()"
        " WHERE shard = %s AND state = 'arriving' AND move_id = %s",
        (shard, move),
    )
    if held.rowcount != 1:
        target.rollback()
        raise ShardMoveError(f"the target database has no copy of shard {shard} arriving")
    target.commit()
