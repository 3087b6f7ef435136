"""The user service's use cases: registration, profiles, and sessions.

Plain Python: no gRPC, no SQL. Authorization decisions live here too — who may
read, change or list whom — because they are rules of the domain.
"""

from __future__ import annotations

import hashlib
import math
import secrets
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import NoReturn

from services.runtime.auth import Caller
from services.runtime.errors import (
    AlreadyExists,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    ViolationCollector,
)
from services.user.domain import validation
from services.user.domain.model import (
    NewUser,
    ProfileChanges,
    RefreshTokenOwner,
    Session,
    User,
    UserCursor,
)
from services.user.domain.ports import (
    AccessTokenIssuer,
    AccessTokenRevoker,
    Clock,
    EmailTaken,
    LoginThrottle,
    PasswordHasher,
    ProfileCache,
    RefreshTokenRepository,
    UserRepository,
)

ME = "me"
DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100
UPDATABLE_FIELDS = frozenset({"display_name", "phone", "email"})
# One message for every login failure: it must not tell whether the email exists.
LOGIN_FAILED = "email or password is wrong"
# The same for every email over its limit, registered or not.
LOGIN_THROTTLED = "too many failed logins for this email; try again later"


@dataclass(frozen=True)
class Registration:
    email: str
    password: str
    display_name: str
    phone: str


@dataclass(frozen=True)
class ProfileUpdate:
    """`fields` are the names to change (from the field mask); empty means
    every non-empty value given."""

    user_id: str
    email: str
    display_name: str
    phone: str
    fields: frozenset[str]


def hash_refresh_token(token: str) -> str:
    # Refresh tokens are 256 random bits: a fast hash is enough, and a stolen
    # table of hashes yields nothing usable.
    return hashlib.sha256(token.encode()).hexdigest()


class Accounts:
    def __init__(
        self,
        users: UserRepository,
        refresh_tokens: RefreshTokenRepository,
        passwords: PasswordHasher,
        access_tokens: AccessTokenIssuer,
        revoked_access_tokens: AccessTokenRevoker,
        profiles: ProfileCache,
        clock: Clock,
        *,
        login_throttle: LoginThrottle,
        refresh_lifetime: timedelta = timedelta(days=30),
    ) -> None:
        self._users = users
        self._refresh_tokens = refresh_tokens
        self._passwords = passwords
        self._access_tokens = access_tokens
        self._revoked = revoked_access_tokens
        self._profiles = profiles
        self._clock = clock
        self._login_throttle = login_throttle
        self._refresh_lifetime = refresh_lifetime
        self._decoy_hash: str | None = None

    # --- registration and profiles -------------------------------------------------

    async def register(self, registration: Registration) -> User:
        errors = ViolationCollector()
        email = validation.normalize_email(registration.email, "email", errors)
        validation.check_password(registration.password, email, "password", errors)
        display_name = validation.normalize_display_name(
            registration.display_name, "display_name", errors
        )
        phone = (
            validation.normalize_phone(registration.phone, "phone", errors)
            if registration.phone.strip()
            else None
        )
        errors.raise_if_any()
        assert email is not None
        assert display_name is not None
        password_hash = await self._passwords.hash(registration.password)
        try:
            return await self._users.add(NewUser(email, display_name, phone, password_hash))
        except EmailTaken as error:
            raise AlreadyExists(
                "a user with this email already exists", reason="EMAIL_TAKEN"
            ) from error

    async def get(self, caller: Caller, user_id: str) -> User:
        target = self._resolve_target(caller, user_id, "user_id")
        if target != caller.user_id and not caller.is_admin:
            raise PermissionDenied("you may read only your own profile", reason="NOT_OWNER")
        user = await self._profiles.profile(target, lambda: self._users.get(target))
        if user is None:
            raise NotFound("no such user", reason="USER_NOT_FOUND")
        return user

    async def lookup(self, caller: Caller, email: str, user_id: str) -> User:
        """Finds a person to pay or to name; the caller sees only their public
        profile (the api layer shows user id and display name, nothing else)."""
        if bool(email.strip()) == bool(user_id.strip()):
            raise InvalidArgument.single("key", "give exactly one of email or user_id")
        if user_id.strip():
            target = self._resolve_target(caller, user_id.strip(), "user_id")
            user = await self._users.get(target)
        else:
            credentials = await self._users.credentials_by_email(validation.lookup_email(email))
            user = credentials.user if credentials else None
        if user is None:
            raise NotFound("no such user", reason="USER_NOT_FOUND")
        return user

    async def list(
        self, caller: Caller, page_size: int, after: UserCursor | None
    ) -> tuple[list[User], UserCursor | None]:
        caller.require_admin()
        if page_size < 0 or page_size > MAX_PAGE_SIZE:
            raise InvalidArgument.single("page_size", f"must be between 0 and {MAX_PAGE_SIZE}")
        limit = page_size or DEFAULT_PAGE_SIZE
        # One extra row tells whether there is a next page without a COUNT.
        rows = await self._users.page(after, limit + 1)
        page = rows[:limit]
        has_more = len(rows) > limit
        next_cursor = UserCursor(page[-1].created_at, page[-1].id) if has_more else None
        return page, next_cursor

    async def update(self, caller: Caller, update: ProfileUpdate) -> User:
        target = self._resolve_target(caller, update.user_id, "user.user_id")
        if target != caller.user_id:
            raise PermissionDenied("you may change only your own profile", reason="NOT_OWNER")
        changes = self._profile_changes(update)
        try:
            user = await self._users.update_profile(target, changes)
        except EmailTaken as error:
            raise AlreadyExists(
                "a user with this email already exists", reason="EMAIL_TAKEN"
            ) from error
        if user is None:
            raise NotFound("no such user", reason="USER_NOT_FOUND")
        # After the commit, before answering: the caller reads their own write.
        await self._profiles.invalidate(target)
        return user

    def _profile_changes(self, update: ProfileUpdate) -> ProfileChanges:
        errors = ViolationCollector()
        unknown = update.fields - UPDATABLE_FIELDS
        if unknown:
            errors.add(
                "update_mask",
                f"cannot update {', '.join(sorted(unknown))}; "
                f"updatable: {', '.join(sorted(UPDATABLE_FIELDS))}",
            )
            errors.raise_if_any()
        given = {
            name
            for name, value in (
                ("email", update.email),
                ("display_name", update.display_name),
                ("phone", update.phone),
            )
            if value.strip()
        }
        fields = update.fields or given
        if not fields:
            raise InvalidArgument.single("update_mask", "names no field to change")
        email = display_name = phone = None
        clear_phone = False
        if "email" in fields:
            email = validation.normalize_email(update.email, "user.email", errors)
        if "display_name" in fields:
            display_name = validation.normalize_display_name(
                update.display_name, "user.display_name", errors
            )
        if "phone" in fields:
            if update.phone.strip():
                phone = validation.normalize_phone(update.phone, "user.phone", errors)
            else:
                clear_phone = True
        errors.raise_if_any()
        return ProfileChanges(email, display_name, phone, clear_phone)

    @staticmethod
    def _resolve_target(caller: Caller, user_id: str, field: str) -> str:
        if user_id == ME:
            return caller.user_id
        try:
            return str(uuid.UUID(user_id))
        except ValueError as error:
            raise InvalidArgument.single(field, 'must be a user id (a UUID) or "me"') from error

    # --- sessions --------------------------------------------------------------

    async def login(self, email: str, password: str) -> Session:
        errors = ViolationCollector()
        if not email.strip():
            errors.add("email", "is required")
        if not password:
            errors.add("password", "is required")
        errors.raise_if_any()
        # Every try takes from the email's bucket before anything is looked up (so
        # concurrent tries cannot all pass one last token, and the answer over the
        # limit is the same whether or not the email is registered); a success
        # gives its try back.
        account = validation.login_account(email)
        allowance = await self._login_throttle.take(account)
        if not allowance.allowed:
            raise ResourceExhausted(
                LOGIN_THROTTLED,
                reason="LOGIN_THROTTLED",
                retry_after_seconds=max(1, math.ceil(allowance.retry_after_seconds)),
            )
        credentials = await self._users.credentials_by_email(validation.lookup_email(email))
        if credentials is None:
            # Spend the same time as a real check, so timing does not tell
            # which emails are registered.
            await self._passwords.verify(await self._decoy(), password)
            raise Unauthenticated(LOGIN_FAILED, reason="LOGIN_FAILED")
        if not await self._passwords.verify(credentials.password_hash, password):
            raise Unauthenticated(LOGIN_FAILED, reason="LOGIN_FAILED")
        await self._login_throttle.give_back(account)
        user = credentials.user
        if self._passwords.needs_rehash(credentials.password_hash):
            await self._users.set_password_hash(user.id, await self._passwords.hash(password))
        return await self._start_session(user, family_id=str(uuid.uuid4()))

    async def refresh(self, refresh_token: str) -> Session:
        if not refresh_token:
            raise InvalidArgument.single("refresh_token", "is required")
        now = self._clock.now()
        new_token = secrets.token_urlsafe(32)
        owner = await self._refresh_tokens.rotate(
            hash_refresh_token(refresh_token),
            hash_refresh_token(new_token),
            now + self._refresh_lifetime,
            now,
        )
        if owner is None:
            await self._refuse_refresh(refresh_token)
        user = await self._users.get(owner.user_id)
        if user is None:
            raise Unauthenticated("refresh token not valid", reason="REFRESH_INVALID")
        access = self._access_tokens.issue(user.id, user.roles, now)
        return Session(
            user.id,
            access.token,
            access.expires_in,
            new_token,
            int(self._refresh_lifetime.total_seconds()),
        )

    async def _refuse_refresh(self, refresh_token: str) -> NoReturn:
        stored = await self._refresh_tokens.find(hash_refresh_token(refresh_token))
        if stored is not None and stored.used and not stored.revoked:
            # A rotated token came back: someone holds a copy. Revoke the whole
            # family so neither the thief nor the victim can go on with it.
            await self._refresh_tokens.revoke_family(stored.family_id, self._clock.now())
            raise Unauthenticated(
                "refresh token was already used; the session is revoked", reason="REFRESH_REUSED"
            )
        raise Unauthenticated("refresh token not valid", reason="REFRESH_INVALID")

    async def logout(self, caller: Caller, refresh_token: str) -> None:
        if refresh_token:
            stored = await self._refresh_tokens.find(hash_refresh_token(refresh_token))
            if stored is None or stored.user_id != caller.user_id:
                raise InvalidArgument.single(
                    "refresh_token", "is not a refresh token of the calling user"
                )
            await self._refresh_tokens.revoke_family(stored.family_id, self._clock.now())
        await self._revoked.revoke(caller.token_id, caller.token_expires_at)

    async def logout_everywhere(self, caller: Caller) -> None:
        """Ends every session of the caller: all their refresh tokens, then every
        access token issued to them until now, this call's included. In that
        order: a refresh stamps its access token with the time before it rotated,
        so whatever a refresh token minted before it was revoked is older than the
        access tokens' cutoff."""
        await self._refresh_tokens.revoke_all_of_user(caller.user_id, self._clock.now())
        await self._revoked.revoke_all_of_user(caller.user_id, self._access_tokens.lifetime_seconds)

    async def _start_session(self, user: User, family_id: str) -> Session:
        now = self._clock.now()
        access = self._access_tokens.issue(user.id, user.roles, now)
        refresh_token = secrets.token_urlsafe(32)
        await self._refresh_tokens.add(
            hash_refresh_token(refresh_token),
            RefreshTokenOwner(user.id, family_id),
            now + self._refresh_lifetime,
        )
        return Session(
            user.id,
            access.token,
            access.expires_in,
            refresh_token,
            int(self._refresh_lifetime.total_seconds()),
        )

    async def _decoy(self) -> str:
        if self._decoy_hash is None:
            self._decoy_hash = await self._passwords.hash(secrets.token_urlsafe(16))
        return self._decoy_hash
