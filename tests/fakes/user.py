"""In-memory stand-ins for the user service's ports (domain tests only), and the world of
them its use cases run in: `World` wires them into `Accounts`."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from services.runtime.auth import Caller
from services.user.adapters.tokens import SigningKey
from services.user.domain.accounts import Accounts, Registration
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
from services.user.domain.ports import EmailTaken


class FakeClock:
    def __init__(self) -> None:
        self.moment = datetime(2026, 1, 1, tzinfo=UTC)

    def now(self) -> datetime:
        return self.moment

    def advance(self, delta: timedelta) -> None:
        self.moment += delta


class FakeUsers:
    def __init__(self, clock: FakeClock) -> None:
        self.rows: dict[str, Credentials] = {}
        self._clock = clock

    def _email_in_use(self, email: str, except_id: str | None = None) -> bool:
        return any(
            c.user.email.lower() == email.lower() and c.user.id != except_id
            for c in self.rows.values()
        )

    async def add(self, new_user: NewUser) -> User:
        if self._email_in_use(new_user.email):
            raise EmailTaken
        self._clock.advance(timedelta(seconds=1))
        now = self._clock.now()
        user = User(
            str(uuid.uuid4()),
            new_user.email,
            new_user.display_name,
            new_user.phone,
            frozenset({Role.USER}),
            now,
            now,
        )
        self.rows[user.id] = Credentials(user, new_user.password_hash)
        return user

    async def get(self, user_id: str) -> User | None:
        row = self.rows.get(user_id)
        return row.user if row else None

    async def credentials_by_email(self, email: str) -> Credentials | None:
        return next((c for c in self.rows.values() if c.user.email.lower() == email.lower()), None)

    async def update_profile(self, user_id: str, changes: ProfileChanges) -> User | None:
        row = self.rows.get(user_id)
        if row is None:
            return None
        if changes.email is not None and self._email_in_use(changes.email, user_id):
            raise EmailTaken
        user = row.user
        user = replace(
            user,
            email=changes.email or user.email,
            display_name=changes.display_name or user.display_name,
            phone=None if changes.clear_phone else (changes.phone or user.phone),
        )
        self.rows[user_id] = Credentials(user, row.password_hash)
        return user

    async def set_password_hash(self, user_id: str, password_hash: str) -> None:
        self.rows[user_id] = replace(self.rows[user_id], password_hash=password_hash)

    async def page(self, after: UserCursor | None, limit: int) -> list[User]:
        ordered = sorted((c.user for c in self.rows.values()), key=lambda u: (u.created_at, u.id))
        if after is not None:
            ordered = [
                u for u in ordered if (u.created_at, u.id) > (after.created_at, after.user_id)
            ]
        return ordered[:limit]

    def make_admin(self, user_id: str) -> None:
        row = self.rows[user_id]
        user = replace(row.user, roles=row.user.roles | {Role.ADMIN})
        self.rows[user_id] = Credentials(user, row.password_hash)


@dataclass
class _Token:
    owner: RefreshTokenOwner
    expires_at: datetime
    used: bool = False
    revoked: bool = False


class FakeRefreshTokens:
    def __init__(self) -> None:
        self.tokens: dict[str, _Token] = {}

    async def add(self, token_hash: str, owner: RefreshTokenOwner, expires_at: datetime) -> None:
        self.tokens[token_hash] = _Token(owner, expires_at)

    async def rotate(
        self, old_hash: str, new_hash: str, new_expires_at: datetime, now: datetime
    ) -> RefreshTokenOwner | None:
        token = self.tokens.get(old_hash)
        if token is None or token.used or token.revoked or token.expires_at <= now:
            return None
        token.used = True
        self.tokens[new_hash] = _Token(token.owner, new_expires_at)
        return token.owner

    async def find(self, token_hash: str) -> StoredRefreshToken | None:
        token = self.tokens.get(token_hash)
        if token is None:
            return None
        return StoredRefreshToken(
            token.owner.user_id, token.owner.family_id, token.used, token.revoked
        )

    async def revoke_family(self, family_id: str, now: datetime) -> None:
        for token in self.tokens.values():
            if token.owner.family_id == family_id:
                token.revoked = True

    async def revoke_all_of_user(self, user_id: str, now: datetime) -> None:
        for token in self.tokens.values():
            if token.owner.user_id == user_id:
                token.revoked = True


class FakePasswords:
    """Reversible "hashes" so tests run in microseconds; counts verifications."""

    def __init__(self) -> None:
        self.verifications = 0
        self.scheme = "v2"

    async def hash(self, password: str) -> str:
        return f"{self.scheme}:{password}"

    async def verify(self, password_hash: str, password: str) -> bool:
        self.verifications += 1
        return password_hash.split(":", 1)[1] == password

    def needs_rehash(self, password_hash: str) -> bool:
        return not password_hash.startswith(f"{self.scheme}:")


class FakeAccessTokens:
    lifetime_seconds = 900

    def __init__(self) -> None:
        self.issued: list[tuple[str, frozenset[Role]]] = []

    def issue(self, user_id: str, roles: frozenset[Role], now: datetime) -> IssuedAccessToken:
        self.issued.append((user_id, roles))
        return IssuedAccessToken(f"access-{len(self.issued)}", f"jti-{len(self.issued)}", 900)


class FakeRevoker:
    def __init__(self) -> None:
        self.revoked: dict[str, int] = {}

        # user id -> lifetime of the tokens revoked by "log out everywhere"
        self.all_revoked: dict[str, int] = {}

    async def revoke(self, token_id: str, expires_at: int) -> None:
        self.revoked[token_id] = expires_at

    async def revoke_all_of_user(self, user_id: str, token_lifetime_seconds: int) -> None:
        self.all_revoked[user_id] = token_lifetime_seconds


class FakeRevocationCheck:
    """The token verifier's revocation check: the token ids given are revoked; records
    every caller it was asked about."""

    def __init__(self, *token_ids: str) -> None:
        self.token_ids = set(token_ids)
        self.asked: list[Caller] = []

    async def is_revoked(self, caller: Caller) -> bool:
        self.asked.append(caller)
        return caller.token_id in self.token_ids


class FakeLoginThrottle:
    """A bucket of `burst` tries per account that never refills unless told to."""

    def __init__(self, burst: int = 5, retry_after_seconds: float = 30.0) -> None:
        self.burst = burst
        self.retry_after_seconds = retry_after_seconds
        self.tries: dict[str, int] = {}

    async def take(self, account: str) -> LoginAllowance:
        left = self.tries.get(account, self.burst)
        if left < 1:
            return LoginAllowance(allowed=False, retry_after_seconds=self.retry_after_seconds)
        self.tries[account] = left - 1
        return LoginAllowance(allowed=True)

    async def give_back(self, account: str) -> None:
        self.tries[account] = min(self.burst, self.tries.get(account, self.burst) + 1)

    def refill(self) -> None:
        self.tries.clear()


class FakeProfileCache:
    def __init__(self) -> None:
        self.entries: dict[str, User] = {}
        self.hits = 0

    async def profile(
        self, user_id: str, load: Callable[[], Awaitable[User | None]]
    ) -> User | None:
        user = self.entries.get(user_id)
        self.hits += user is not None
        if user is None:
            user = await load()
            if user is not None:
                self.entries[user_id] = user
        return user

    async def invalidate(self, user_id: str) -> None:
        self.entries.pop(user_id, None)


def signing_key(tmp_path: Path, name: str = "key.pem") -> SigningKey:
    """A fresh Ed25519 signing key, written where the service would read it."""
    path = tmp_path / name
    path.write_bytes(
        Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return SigningKey.from_pem_file(path)


PASSWORD = "correct horse battery"


class World:
    def __init__(self) -> None:
        self.clock = FakeClock()
        self.users = FakeUsers(self.clock)
        self.refresh_tokens = FakeRefreshTokens()
        self.passwords = FakePasswords()
        self.access_tokens = FakeAccessTokens()
        self.revoker = FakeRevoker()
        self.cache = FakeProfileCache()
        self.login_throttle = FakeLoginThrottle()
        self.accounts = Accounts(
            self.users,
            self.refresh_tokens,
            self.passwords,
            self.access_tokens,
            self.revoker,
            self.cache,
            self.clock,
            login_throttle=self.login_throttle,
            refresh_lifetime=timedelta(days=1),
        )

    async def register(self, email: str = "ada@example.com", **overrides: str) -> User:
        fields = {"password": PASSWORD, "display_name": "Ada", "phone": ""} | overrides
        return await self.accounts.register(Registration(email=email, **fields))


def caller_of(user: User, *roles: str) -> Caller:
    return Caller(user.id, frozenset(roles or ("user",)), "jti-1", 2_000_000_000)
