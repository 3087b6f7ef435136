"""Users and sessions as the domain sees them: plain data, no I/O."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class Role(StrEnum):
    USER = "user"
    ADMIN = "admin"


@dataclass(frozen=True)
class User:
    """A registered person. The password hash never leaves the repository
    except through `Credentials`."""

    id: str
    email: str
    display_name: str
    phone: str | None
    roles: frozenset[Role]
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class Credentials:
    user: User
    password_hash: str


@dataclass(frozen=True)
class NewUser:
    email: str
    display_name: str
    phone: str | None
    password_hash: str


@dataclass(frozen=True)
class ProfileChanges:
    """The fields an update sets; None means "leave as it is", except for
    `phone`, where `clear_phone` removes it."""

    email: str | None = None
    display_name: str | None = None
    phone: str | None = None
    clear_phone: bool = False


@dataclass(frozen=True)
class UserCursor:
    """Position after the last user of a page (users sort by creation, then id)."""

    created_at: datetime
    user_id: str


@dataclass(frozen=True)
class RefreshTokenOwner:
    """Whom a refresh token belongs to, and the family it was rotated from."""

    user_id: str
    family_id: str


@dataclass(frozen=True)
class StoredRefreshToken:
    user_id: str
    family_id: str
    used: bool
    revoked: bool


@dataclass(frozen=True)
class IssuedAccessToken:
    token: str
    token_id: str
    expires_in: int


@dataclass(frozen=True)
class Session:
    """What Login and RefreshToken hand out."""

    user_id: str
    access_token: str
    access_expires_in: int
    refresh_token: str
    refresh_expires_in: int


@dataclass(frozen=True)
class LoginAllowance:
    """Whether a login may check its password now; if not, how long until it may."""

    allowed: bool
    retry_after_seconds: float = 0.0
