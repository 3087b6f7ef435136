"""What the domain needs from the outside world, as protocols. Adapters
implement them with PostgreSQL, Redis, argon2 and JWTs; unit tests with fakes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Protocol

from services.user.domain.model import (
    Credentials,
    IssuedAccessToken,
    LoginAllowance,
    NewUser,
    ProfileChanges,
    RefreshTokenOwner,
    Role,
    StoredRefreshToken,
    User,
    UserCursor,
)


class EmailTaken(Exception):
    """Raised by the repository when a unique email would be duplicated."""


class UserRepository(Protocol):
    async def add(self, new_user: NewUser) -> User:
        """Inserts a user; raises EmailTaken if the email is in use (any case)."""
        ...

    async def get(self, user_id: str) -> User | None: ...

    async def credentials_by_email(self, email: str) -> Credentials | None:
        """Looks the email up without regard to case."""
        ...

    async def update_profile(self, user_id: str, changes: ProfileChanges) -> User | None:
        """Applies changes in one statement; raises EmailTaken; None if no such user."""
        ...

    async def set_password_hash(self, user_id: str, password_hash: str) -> None: ...

    async def page(self, after: UserCursor | None, limit: int) -> list[User]:
        """Users sorted by (created_at, id), strictly after the cursor."""
        ...


class RefreshTokenRepository(Protocol):
    async def add(
        self, token_hash: str, owner: RefreshTokenOwner, expires_at: datetime
    ) -> None: ...

    async def rotate(
        self, old_hash: str, new_hash: str, new_expires_at: datetime, now: datetime
    ) -> RefreshTokenOwner | None:
        """Atomically marks an unused, unrevoked, unexpired token used and stores its
        successor in the same family. None if the token was not in that state."""
        ...

    async def find(self, token_hash: str) -> StoredRefreshToken | None: ...

    async def revoke_family(self, family_id: str, now: datetime) -> None: ...

    async def revoke_all_of_user(self, user_id: str, now: datetime) -> None:
        """Revokes every refresh token of the user, those being rotated right now
        included (their successors too)."""
        ...


class PasswordHasher(Protocol):
    async def hash(self, password: str) -> str: ...

    async def verify(self, password_hash: str, password: str) -> bool: ...

    def needs_rehash(self, password_hash: str) -> bool: ...


class AccessTokenIssuer(Protocol):
    @property
    def lifetime_seconds(self) -> int: ...

    def issue(self, user_id: str, roles: frozenset[Role], now: datetime) -> IssuedAccessToken: ...


class AccessTokenRevoker(Protocol):
    async def revoke(self, token_id: str, expires_at: int) -> None: ...

    async def revoke_all_of_user(self, user_id: str, token_lifetime_seconds: int) -> None:
        """Revokes every access token of the user issued until now; returns once a
        token issued from then on is valid. Raises Unavailable if it cannot."""
        ...


class LoginThrottle(Protocol):
    """Failed logins per account: a token bucket per email, whoever sends them."""

    async def take(self, account: str) -> LoginAllowance:
        """Takes one try from the bucket of `account` (the email's lookup key)."""
        ...

    async def give_back(self, account: str) -> None:
        """Returns the try a successful login took: only failures count."""
        ...


class ProfileCache(Protocol):
    async def profile(
        self, user_id: str, load: Callable[[], Awaitable[User | None]]
    ) -> User | None:
        """The profile from the cache, or as `load` reads it (then kept, unless a change
        of the profile came in between)."""
        ...

    async def invalidate(self, user_id: str) -> None:
        """After a committed change of the profile, before answering."""
        ...


class Clock(Protocol):
    def now(self) -> datetime: ...
