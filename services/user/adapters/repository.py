"""PostgreSQL repositories of the user service (SQLAlchemy 2.0 Core, async)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Row, and_, func, insert, literal, select, text, tuple_, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

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


def _user(row: Row[*tuple[Any, ...]]) -> User:
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
        try:
            async with self._engine.begin() as connection:
                row = (await connection.execute(statement)).one()
        except IntegrityError as error:
            if _is_email_conflict(error):
                raise EmailTaken from error
            raise
        return _user(row)

    async def get(self, user_id: str) -> User | None:
        async with self._engine.connect() as connection:
            row = (
                await connection.execute(select(*_USER_COLUMNS).where(users.c.id == user_id))
            ).one_or_none()
        return _user(row) if row else None

    async def credentials_by_email(self, email: str) -> Credentials | None:
        statement = select(*_USER_COLUMNS, users.c.password_hash).where(
            func.lower(users.c.email) == func.lower(email)
        )
        async with self._engine.connect() as connection:
            row = (await connection.execute(statement)).one_or_none()
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
        try:
            async with self._engine.begin() as connection:
                row = (await connection.execute(statement)).one_or_none()
        except IntegrityError as error:
            if _is_email_conflict(error):
                raise EmailTaken from error
            raise
        return _user(row) if row else None

    async def set_password_hash(self, user_id: str, password_hash: str) -> None:
        async with self._engine.begin() as connection:
            await connection.execute(
                update(users).where(users.c.id == user_id).values(password_hash=password_hash)
            )

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
        async with self._engine.connect() as connection:
            rows = (await connection.execute(statement)).all()
        return [_user(row) for row in rows]

    async def grant_role(self, email: str, role: Role) -> str | None:
        """Adds a role to the user with this email; their id, or None if there is none."""
        statement = text(
            "UPDATE users SET roles = CASE WHEN :role = ANY (roles) THEN roles"
            " ELSE array_append(roles, :role) END, updated_at = now()"
            " WHERE lower(email) = lower(:email) RETURNING id"
        )
        async with self._engine.begin() as connection:
            result = await connection.execute(statement, {"role": role.value, "email": email})
            user_id = result.scalar_one_or_none()
        return str(user_id) if user_id is not None else None


class SqlRefreshTokenRepository:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def add(self, token_hash: str, owner: RefreshTokenOwner, expires_at: datetime) -> None:
        async with self._engine.begin() as connection:
            await connection.execute(
                insert(refresh_tokens).values(
                    token_hash=token_hash,
                    user_id=owner.user_id,
                    family_id=owner.family_id,
                    expires_at=expires_at,
                )
            )

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
        async with self._engine.begin() as connection:
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

    async def find(self, token_hash: str) -> StoredRefreshToken | None:
        async with self._engine.connect() as connection:
            row = (
                await connection.execute(
                    select(refresh_tokens).where(refresh_tokens.c.token_hash == token_hash)
                )
            ).one_or_none()
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
        for _ in range(_REVOKE_ALL_PASSES):
            async with self._engine.begin() as connection:
                revoked = (await connection.execute(revoke)).rowcount
            if revoked == 0:
                return

    async def revoke_family(self, family_id: str, now: datetime) -> None:
        async with self._engine.begin() as connection:
            await connection.execute(
                update(refresh_tokens)
                .where(
                    refresh_tokens.c.family_id == family_id,
                    refresh_tokens.c.revoked_at.is_(None),
                )
                .values(revoked_at=now)
            )
