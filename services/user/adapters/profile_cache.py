"""User profiles in Redis, read through, keyed by a generation per user that every
committed change of the profile bumps (runtime/cache.py, Generations): a read that
straddles a change never keeps the profile from before it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from redis.asyncio import Redis

from services.runtime.cache import Generations, JsonCache
from services.user.domain.model import Role, User

# The Redis namespace of cached profiles (bump the version when their shape changes).
NAMESPACE = "user:profile:v2"
GENERATION = "user:gen:profile:v1:"


def _to_json(user: User) -> dict[str, Any]:
    return {
        "id": user.id,
        "email": user.email,
        "display_name": user.display_name,
        "phone": user.phone,
        "roles": sorted(role.value for role in user.roles),
        "created_at": user.created_at.isoformat(),
        "updated_at": user.updated_at.isoformat(),
    }


def _from_json(data: dict[str, Any]) -> User:
    return User(
        id=data["id"],
        email=data["email"],
        display_name=data["display_name"],
        phone=data["phone"],
        roles=frozenset(Role(role) for role in data["roles"]),
        created_at=datetime.fromisoformat(data["created_at"]),
        updated_at=datetime.fromisoformat(data["updated_at"]),
    )


class RedisProfileCache:
    def __init__(self, redis: Redis, *, ttl_seconds: int) -> None:
        self.cache = JsonCache(redis, NAMESPACE, ttl_seconds=ttl_seconds)
        self._generations = Generations(redis)

    async def profile(
        self, user_id: str, load: Callable[[], Awaitable[User | None]]
    ) -> User | None:
        return await self._generations.read_through_json(
            self.cache, GENERATION + user_id, f"{user_id}:", load, _to_json, _from_json
        )

    async def invalidate(self, user_id: str) -> None:
        await self._generations.bump(self.cache, [GENERATION + user_id])
