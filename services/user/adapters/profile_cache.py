"""User profiles in Redis, cache-aside (the domain decides when to read,
fill and invalidate; this only stores)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from services.runtime.cache import JsonCache
from services.user.domain.model import Role, User

# The Redis namespace of cached profiles (bump the version when their shape changes).
NAMESPACE = "user:profile:v1"


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
    def __init__(self, cache: JsonCache) -> None:
        self.cache = cache

    async def get(self, user_id: str) -> User | None:
        data = await self.cache.get(user_id)
        return _from_json(data) if data is not None else None

    async def put(self, user: User) -> None:
        await self.cache.put(user.id, _to_json(user))

    async def invalidate(self, user_id: str) -> None:
        await self.cache.invalidate(user_id)
