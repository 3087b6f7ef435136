"""The user service's schema and repositories on real PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from services.localmesh.postgres import PostgresServer
from services.runtime.db import create_engine
from services.user.adapters.repository import SqlRefreshTokenRepository, SqlUserRepository
from services.user.domain.model import NewUser, ProfileChanges, RefreshTokenOwner, Role
from services.user.domain.ports import EmailTaken
from tests.integration.user_calls import USERS_DB

HASH = "$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA"


@pytest.fixture
async def engine(empty_users_db: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(empty_users_db, pool_size=4)
    yield engine
    await engine.dispose()


def sql(postgres: PostgresServer, statement: str) -> None:
    with psycopg.connect(postgres.conninfo(USERS_DB), autocommit=True) as connection:
        connection.execute(statement)


async def test_email_unique_regardless_of_case(engine: AsyncEngine) -> None:
    users = SqlUserRepository(engine)
    await users.add(NewUser("ada@example.com", "Ada", None, HASH))
    with pytest.raises(EmailTaken):
        await users.add(NewUser("ADA@example.COM", "Other Ada", None, HASH))
    credentials = await users.credentials_by_email("Ada@Example.com")
    assert credentials is not None
    assert credentials.user.display_name == "Ada"


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("display_name", "''"),
        ("phone", "'0170 1234'"),
        ("password_hash", "'plaintext'"),
        ("roles", "'{superuser}'"),
    ],
)
async def test_constraints_refuse_states_the_domain_never_makes(
    postgres: PostgresServer, empty_users_db: str, column: str, value: str
) -> None:
    values = {
        "email": "'x@example.com'",
        "display_name": "'X'",
        "phone": "NULL",
        "password_hash": f"'{HASH}'",
        "roles": "'{user}'",
    } | {column: value}
    with pytest.raises(psycopg.errors.CheckViolation):
        sql(
            postgres,
            f"INSERT INTO users ({', '.join(values)}) VALUES ({', '.join(values.values())})",  # noqa: S608
        )


async def test_update_profile_and_email_conflict(engine: AsyncEngine) -> None:
    users = SqlUserRepository(engine)
    ada = await users.add(NewUser("ada@example.com", "Ada", "+491701234567", HASH))
    await users.add(NewUser("bob@example.com", "Bob", None, HASH))
    updated = await users.update_profile(
        ada.id, ProfileChanges(display_name="A.", clear_phone=True)
    )
    assert updated is not None
    assert (updated.display_name, updated.phone) == ("A.", None)
    assert updated.updated_at > ada.updated_at
    with pytest.raises(EmailTaken):
        await users.update_profile(ada.id, ProfileChanges(email="BOB@example.com"))
    assert (await users.get(ada.id)) == updated
    assert (
        await users.update_profile(
            "00000000-0000-0000-0000-000000000000", ProfileChanges(display_name="x")
        )
        is None
    )


async def test_keyset_pages_cover_everyone_once(engine: AsyncEngine) -> None:
    users = SqlUserRepository(engine)
    added = [await users.add(NewUser(f"u{i}@example.com", f"U{i}", None, HASH)) for i in range(7)]
    seen = []
    page = await users.page(None, 3)
    while page:
        seen += page
        last = page[-1]
        from services.user.domain.model import UserCursor

        page = await users.page(UserCursor(last.created_at, last.id), 3)
    assert sorted(u.id for u in seen) == sorted(u.id for u in added)
    assert len(seen) == 7


async def test_grant_role_is_idempotent(engine: AsyncEngine) -> None:
    users = SqlUserRepository(engine)
    ada = await users.add(NewUser("ada@example.com", "Ada", None, HASH))
    assert await users.grant_role("ADA@example.com", Role.ADMIN)
    assert await users.grant_role("ada@example.com", Role.ADMIN)
    refreshed = await users.get(ada.id)
    assert refreshed is not None
    assert refreshed.roles == frozenset({Role.USER, Role.ADMIN})
    assert not await users.grant_role("nobody@example.com", Role.ADMIN)


async def test_concurrent_rotations_of_one_token_let_exactly_one_win(engine: AsyncEngine) -> None:
    users = SqlUserRepository(engine)
    tokens = SqlRefreshTokenRepository(engine)
    ada = await users.add(NewUser("ada@example.com", "Ada", None, HASH))
    now = datetime.now(UTC)
    owner = RefreshTokenOwner(ada.id, "11111111-1111-1111-1111-111111111111")
    await tokens.add("a" * 64, owner, now + timedelta(days=1))
    results = await asyncio.gather(
        *(tokens.rotate("a" * 64, f"{i:064d}", now + timedelta(days=1), now) for i in range(8))
    )
    winners = [r for r in results if r is not None]
    assert winners == [owner]
    stored = await tokens.find("a" * 64)
    assert stored is not None
    assert stored.used
    await tokens.revoke_family(owner.family_id, now)
    successor = next(f"{i:064d}" for i, r in enumerate(results) if r is not None)
    revoked = await tokens.find(successor)
    assert revoked is not None
    assert revoked.revoked
