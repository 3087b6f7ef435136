"""PostgreSQL repositories of the user service (SQLAlchemy 2.0 Core, async).

When a connection is lost (a PostgreSQL restart), work is run again on a fresh
one where that is safe (services/runtime/db.py: `read`, `transaction`): reads
always; writes lost before their commit (rolled back: nothing happened); and,
even if lost during the commit, the writes that are idempotent by construction —
profile updates, password rehashes, role grants and family revocations set values
(twice is once), and a refresh token's insert skips its own row. Registration and
refresh-token rotation are not: a second run after a commit would answer "email
taken" or treat the rotation as token reuse. A loss during their commit answers
UNAVAILABLE (the outcome is unknown; the client tries again)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Row, and_, func, insert, literal, select, text, tuple_, update
from sqlalchemy.dialects.postgresql import insert as upsert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.runtime import db
from services.user.adapters.tables import refresh_tokens, users
from services.user.domain.model import (
    Credentials,
    NewUser,
    ProfileChanges,
    RefreshTokenOwner,
    Role,
    StoredRefreshToken,
    User,
    UserCursor,
)
from services.user.domain.ports import EmailTaken

AnyRow = Row[*tuple[Any, ...]]
_EMAIL_INDEX = "users_email_lower_key"
_REVOKE_ALL_PASSES = 5
_USER_COLUMNS = (
    users.c.id,
    users.c.email,
    users.c.display_name,
    users.c.phone,
    users.c.roles,
    users.c.created_at,
    users.c.updated_at,
)


def _user(row: AnyRow) -> User:
    return User(
        id=str(row.id),
        email=row.email,
        display_name=row.display_name,
        phone=row.phone,
        roles=frozenset(Role(role) for role in row.roles),
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _is_email_conflict(error: IntegrityError) -> bool:
    diag = getattr(error.orig, "diag", None)
    return getattr(diag, "constraint_name", None) == _EMAIL_INDEX


class SqlUserRepository:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def add(self, new_user: NewUser) -> User:
        statement = (
            insert(users)
            .values(
                email=new_user.email,
                display_name=new_user.display_name,
                phone=new_user.phone,
                password_hash=new_user.password_hash,
                roles=[Role.USER.value],
            )
            .returning(*_USER_COLUMNS)
        )

        async def work(connection: AsyncConnection) -> AnyRow:
            return (await connection.execute(statement)).one()

        try:
            row = await db.transaction(self._engine, work, idempotent=False)
        except IntegrityError as error:
            if _is_email_conflict(error):
                raise EmailTaken from error
            raise
        return _user(row)

    async def _read_one(self, statement: Any) -> AnyRow | None:
        async def work(connection: AsyncConnection) -> AnyRow | None:
            return (await connection.execute(statement)).one_or_none()

        return await db.read(self._engine, work)

    async def get(self, user_id: str) -> User | None:
        row = await self._read_one(select(*_USER_COLUMNS).where(users.c.id == user_id))
        return _user(row) if row else None

    async def credentials_by_email(self, email: str) -> Credentials | None:
        statement = select(*_USER_COLUMNS, users.c.password_hash).where(
            func.lower(users.c.email) == func.lower(email)
        )
        row = await self._read_one(statement)
        return Credentials(_user(row), row.password_hash) if row else None

    async def update_profile(self, user_id: str, changes: ProfileChanges) -> User | None:
        values: dict[str, Any] = {"updated_at": func.now()}
        if changes.email is not None:
            values["email"] = changes.email
        if changes.display_name is not None:
            values["display_name"] = changes.display_name
        if changes.phone is not None or changes.clear_phone:
            values["phone"] = changes.phone
        statement = (
            update(users).where(users.c.id == user_id).values(**values).returning(*_USER_COLUMNS)
        )

        async def work(connection: AsyncConnection) -> AnyRow | None:
            return (await connection.execute(statement)).one_or_none()

        try:
            row = await db.transaction(self._engine, work, idempotent=True)
        except IntegrityError as error:
            if _is_email_conflict(error):
                raise EmailTaken from error
            raise
        return _user(row) if row else None

    async def set_password_hash(self, user_id: str, password_hash: str) -> None:
        statement = update(users).where(users.c.id == user_id).values(password_hash=password_hash)

        async def work(connection: AsyncConnection) -> None:
            await connection.execute(statement)

        await db.transaction(self._engine, work, idempotent=True)

    async def page(self, after: UserCursor | None, limit: int) -> list[User]:
        statement = select(*_USER_COLUMNS).order_by(users.c.created_at, users.c.id).limit(limit)
        if after is not None:
            statement = statement.where(
                tuple_(users.c.created_at, users.c.id)
                > tuple_(
                    literal(after.created_at, users.c.created_at.type),
                    literal(after.user_id, users.c.id.type),
                )
            )

        async def work(connection: AsyncConnection) -> list[AnyRow]:
            return list((await connection.execute(statement)).all())

        return [_user(row) for row in await db.read(self._engine, work)]

    async def grant_role(self, email: str, role: Role) -> str | None:
        """Adds a role to the user with this email; their id, or None if there is none."""
        statement = text(
            "UPDATE users SET roles = CASE WHEN :role = ANY (roles) THEN roles"
            " ELSE array_append(roles, :role) END, updated_at = now()"
            " WHERE lower(email) = lower(:email) RETURNING id"
        )

        async def work(connection: AsyncConnection) -> Any:
            result = await connection.execute(statement, {"role": role.value, "email": email})
            return result.scalar_one_or_none()

        user_id = await db.transaction(self._engine, work, idempotent=True)
        return str(user_id) if user_id is not None else None


class SqlRefreshTokenRepository:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def add(self, token_hash: str, owner: RefreshTokenOwner, expires_at: datetime) -> None:
        # The hash of 256 random bits: a row already there is this insert's own,
        # committed by a try whose answer was lost.
        statement = (
            upsert(refresh_tokens)
            .values(
                token_hash=token_hash,
                user_id=owner.user_id,
                family_id=owner.family_id,
                expires_at=expires_at,
            )
            .on_conflict_do_nothing(index_elements=[refresh_tokens.c.token_hash])
        )

        async def work(connection: AsyncConnection) -> None:
            await connection.execute(statement)

        await db.transaction(self._engine, work, idempotent=True)

    async def rotate(
        self, old_hash: str, new_hash: str, new_expires_at: datetime, now: datetime
    ) -> RefreshTokenOwner | None:
        # The conditional UPDATE is the lock: of two concurrent rotations of
        # one token exactly one sees the row still unused.
        consume = (
            update(refresh_tokens)
            .where(
                and_(
                    refresh_tokens.c.token_hash == old_hash,
                    refresh_tokens.c.used_at.is_(None),
                    refresh_tokens.c.revoked_at.is_(None),
                    refresh_tokens.c.expires_at > now,
                )
            )
            .values(used_at=now)
            .returning(refresh_tokens.c.user_id, refresh_tokens.c.family_id)
        )

        async def work(connection: AsyncConnection) -> RefreshTokenOwner | None:
            row = (await connection.execute(consume)).one_or_none()
            if row is None:
                return None
            owner = RefreshTokenOwner(str(row.user_id), str(row.family_id))
            await connection.execute(
                insert(refresh_tokens).values(
                    token_hash=new_hash,
                    user_id=owner.user_id,
                    family_id=owner.family_id,
                    created_at=now,
                    expires_at=new_expires_at,
                )
            )
            return owner

        return await db.transaction(self._engine, work, idempotent=False)

    async def find(self, token_hash: str) -> StoredRefreshToken | None:
        statement = select(refresh_tokens).where(refresh_tokens.c.token_hash == token_hash)

        async def work(connection: AsyncConnection) -> AnyRow | None:
            return (await connection.execute(statement)).one_or_none()

        row = await db.read(self._engine, work)
        if row is None:
            return None
        return StoredRefreshToken(
            user_id=str(row.user_id),
            family_id=str(row.family_id),
            used=row.used_at is not None,
            revoked=row.revoked_at is not None,
        )

    async def revoke_all_of_user(self, user_id: str, now: datetime) -> None:
        # A rotation in flight when a pass takes its snapshot inserts a successor
        # that pass cannot see; but the pass waits for the rotated row (locked by
        # the rotation) and revokes it, so it counts a row and the next pass sees
        # the successor. A pass that finds nothing leaves no token of the user
        # that a refresh could still use. Bounded: only new logins (password
        # holders) can keep adding rows.
        revoke = (
            update(refresh_tokens)
            .where(refresh_tokens.c.user_id == user_id, refresh_tokens.c.revoked_at.is_(None))
            .values(revoked_at=now)
        )

        async def work(connection: AsyncConnection) -> int:
            return int((await connection.execute(revoke)).rowcount)

        for _ in range(_REVOKE_ALL_PASSES):
            # Idempotent: revoking what is revoked changes nothing.
            if await db.transaction(self._engine, work, idempotent=True) == 0:
                return

    async def revoke_family(self, family_id: str, now: datetime) -> None:
        statement = (
            update(refresh_tokens)
            .where(
                refresh_tokens.c.family_id == family_id,
                refresh_tokens.c.revoked_at.is_(None),
            )
            .values(revoked_at=now)
        )

        async def work(connection: AsyncConnection) -> None:
            await connection.execute(statement)

        await db.transaction(self._engine, work, idempotent=True)
