"""The user service's use cases against in-memory fakes: rules, not storage."""

from __future__ import annotations

from datetime import timedelta

import pytest

from services.runtime.errors import (
    AlreadyExists,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unauthenticated,
)
from services.user.domain.accounts import (
    LOGIN_FAILED,
    ProfileUpdate,
    hash_refresh_token,
)
from services.user.domain.model import Role
from tests.fakes.user import PASSWORD, World, caller_of


@pytest.fixture
def world() -> World:
    return World()


def violations(error: InvalidArgument) -> dict[str, str]:
    return {v.field: v.description for v in error.violations}


# --- registration ----------------------------------------------------------------


async def test_register_normalizes_and_stores(world: World) -> None:
    user = await world.register(
        "  Ada@Example.COM ", display_name="  Ada L. ", phone="+49 170 1234567"
    )
    assert user.email == "Ada@example.com"
    assert user.display_name == "Ada L."
    assert user.phone == "+491701234567"
    assert user.roles == frozenset({Role.USER})
    assert world.users.rows[user.id].password_hash == f"v2:{PASSWORD}"


async def test_register_reports_every_bad_field_at_once(world: World) -> None:
    with pytest.raises(InvalidArgument) as caught:
        await world.register("not-an-email", password="short", display_name=" ", phone="12")
    assert set(violations(caught.value)) == {"email", "password", "display_name", "phone"}
    assert world.users.rows == {}


@pytest.mark.parametrize(
    ("password", "why"),
    [
        ("abcdefghijkl", "only letters"),
        ("123456789012", "only letters or only digits"),
        ("aaaaaaaaaaa1", "5 different characters"),
        ("x" * 300 + "1", "at most 256"),
        ("my-ada-password", "must not contain the email"),
    ],
)
async def test_weak_passwords_are_refused(world: World, password: str, why: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        await world.register(password=password)
    assert why in violations(caught.value)["password"]


async def test_duplicate_email_differs_only_in_case(world: World) -> None:
    await world.register("ada@example.com")
    with pytest.raises(AlreadyExists) as caught:
        await world.register("ADA@EXAMPLE.COM")
    assert caught.value.reason == "EMAIL_TAKEN"
    assert len(world.users.rows) == 1


# --- profiles ----------------------------------------------------------------------


async def test_get_me_uses_the_cache_after_first_read(world: World) -> None:
    user = await world.register()
    caller = caller_of(user)
    assert (await world.accounts.get(caller, "me")).id == user.id
    assert world.cache.hits == 0
    assert (await world.accounts.get(caller, user.id)).email == user.email
    assert world.cache.hits == 1


async def test_a_user_cannot_read_another(world: World) -> None:
    ada = await world.register("ada@example.com")
    bob = await world.register("bob@example.com", display_name="Bob")
    with pytest.raises(PermissionDenied):
        await world.accounts.get(caller_of(bob), ada.id)
    assert (await world.accounts.get(caller_of(bob, "user", "admin"), ada.id)).id == ada.id


async def test_get_rejects_malformed_and_unknown_ids(world: World) -> None:
    user = await world.register()
    admin = caller_of(user, "admin")
    with pytest.raises(InvalidArgument):
        await world.accounts.get(admin, "not-a-uuid")
    with pytest.raises(NotFound):
        await world.accounts.get(admin, "00000000-0000-0000-0000-000000000000")


async def test_update_with_mask_changes_only_masked_fields_and_invalidates(world: World) -> None:
    user = await world.register(phone="+491701234567")
    caller = caller_of(user)
    await world.accounts.get(caller, "me")  # fills the cache
    updated = await world.accounts.update(
        caller,
        ProfileUpdate(
            "me",
            email="",
            display_name="Ada Lovelace",
            phone="",
            fields=frozenset({"display_name", "phone"}),
        ),
    )
    assert updated.display_name == "Ada Lovelace"
    assert updated.phone is None  # masked and empty: cleared
    assert updated.email == user.email
    assert user.id not in world.cache.entries
    assert (await world.accounts.get(caller, "me")).display_name == "Ada Lovelace"


async def test_update_without_mask_applies_non_empty_fields(world: World) -> None:
    user = await world.register(phone="+491701234567")
    updated = await world.accounts.update(
        caller_of(user), ProfileUpdate("me", "", "Countess", "", frozenset())
    )
    assert updated.display_name == "Countess"
    assert updated.phone == "+491701234567"


async def test_update_refuses_taken_email_unknown_field_and_other_user(world: World) -> None:
    ada = await world.register("ada@example.com")
    bob = await world.register("bob@example.com", display_name="Bob")
    with pytest.raises(AlreadyExists):
        await world.accounts.update(
            caller_of(bob), ProfileUpdate("me", "ADA@example.com", "", "", frozenset())
        )
    with pytest.raises(InvalidArgument) as caught:
        await world.accounts.update(
            caller_of(bob), ProfileUpdate("me", "", "", "", frozenset({"roles"}))
        )
    assert "cannot update roles" in violations(caught.value)["update_mask"]
    with pytest.raises(InvalidArgument):
        await world.accounts.update(caller_of(bob), ProfileUpdate("me", "", "", "", frozenset()))
    with pytest.raises(PermissionDenied):
        await world.accounts.update(
            caller_of(bob), ProfileUpdate(ada.id, "", "Eve", "", frozenset())
        )
    assert (await world.users.get(ada.id)) == ada


async def test_listing_is_admin_only_and_pages_without_gaps(world: World) -> None:
    people = [await world.register(f"p{i}@example.com", display_name=f"P{i}") for i in range(5)]
    with pytest.raises(PermissionDenied):
        await world.accounts.list(caller_of(people[0]), 2, None)
    admin = caller_of(people[0], "admin")
    seen: list[str] = []
    cursor = None
    for _ in range(3):
        page, cursor = await world.accounts.list(admin, 2, cursor)
        seen += [u.id for u in page]
        if cursor is None:
            break
    assert seen == [p.id for p in people]
    assert cursor is None
    with pytest.raises(InvalidArgument):
        await world.accounts.list(admin, 101, None)


# --- sessions ----------------------------------------------------------------------


async def test_login_is_case_insensitive_and_issues_both_tokens(world: World) -> None:
    user = await world.register()
    session = await world.accounts.login("ADA@example.com", PASSWORD)
    assert session.user_id == user.id
    assert session.access_token == "access-1"
    assert hash_refresh_token(session.refresh_token) in world.refresh_tokens.tokens


async def test_login_failures_look_the_same_and_cost_the_same(world: World) -> None:
    await world.register()
    with pytest.raises(Unauthenticated) as wrong_password:
        await world.accounts.login("ada@example.com", "wrong password 1")
    with pytest.raises(Unauthenticated) as unknown_email:
        await world.accounts.login("nobody@example.com", "wrong password 1")
    assert wrong_password.value.message == unknown_email.value.message == LOGIN_FAILED
    assert world.passwords.verifications == 2  # the unknown email still verified a decoy


async def test_login_rehashes_outdated_hashes(world: World) -> None:
    user = await world.register()
    world.passwords.scheme = "v3"
    await world.accounts.login("ada@example.com", PASSWORD)
    assert world.users.rows[user.id].password_hash == f"v3:{PASSWORD}"


async def test_refresh_rotates_and_reuse_revokes_the_family(world: World) -> None:
    await world.register()
    first = await world.accounts.login("ada@example.com", PASSWORD)
    second = await world.accounts.refresh(first.refresh_token)
    assert second.refresh_token != first.refresh_token
    with pytest.raises(Unauthenticated) as reused:
        await world.accounts.refresh(first.refresh_token)
    assert reused.value.reason == "REFRESH_REUSED"
    # The thief's reuse also killed the legitimate successor.
    with pytest.raises(Unauthenticated):
        await world.accounts.refresh(second.refresh_token)


async def test_refresh_refuses_expired_and_unknown_tokens(world: World) -> None:
    await world.register()
    session = await world.accounts.login("ada@example.com", PASSWORD)
    with pytest.raises(Unauthenticated):
        await world.accounts.refresh("made-up")
    world.clock.advance(timedelta(days=2))
    with pytest.raises(Unauthenticated) as expired:
        await world.accounts.refresh(session.refresh_token)
    assert expired.value.reason == "REFRESH_INVALID"


async def test_refresh_picks_up_new_roles(world: World) -> None:
    user = await world.register()
    session = await world.accounts.login("ada@example.com", PASSWORD)
    world.users.make_admin(user.id)
    await world.accounts.refresh(session.refresh_token)
    assert world.access_tokens.issued[-1] == (user.id, frozenset({Role.USER, Role.ADMIN}))


async def test_logout_revokes_access_token_and_refresh_family(world: World) -> None:
    user = await world.register()
    session = await world.accounts.login("ada@example.com", PASSWORD)
    await world.accounts.logout(caller_of(user), session.refresh_token)
    assert world.revoker.revoked == {"jti-1": 2_000_000_000}
    with pytest.raises(Unauthenticated):
        await world.accounts.refresh(session.refresh_token)


async def test_logout_refuses_someone_elses_refresh_token(world: World) -> None:
    await world.register("ada@example.com")
    bob = await world.register("bob@example.com", display_name="Bob")
    adas = await world.accounts.login("ada@example.com", PASSWORD)
    with pytest.raises(InvalidArgument):
        await world.accounts.logout(caller_of(bob), adas.refresh_token)
    assert world.revoker.revoked == {}
    assert (await world.accounts.refresh(adas.refresh_token)).user_id != bob.id


async def test_lookup_by_email_or_id_needs_exactly_one_key(world: World) -> None:
    ada = await world.register("ada@example.com")
    bob = await world.register("bob@example.com", display_name="Bob")
    assert (await world.accounts.lookup(caller_of(bob), "ADA@example.com", "")).id == ada.id
    assert (await world.accounts.lookup(caller_of(bob), "", ada.id)).display_name == "Ada"
    for email, user_id in (("", ""), ("ada@example.com", ada.id)):
        with pytest.raises(InvalidArgument):
            await world.accounts.lookup(caller_of(bob), email, user_id)
    with pytest.raises(NotFound):
        await world.accounts.lookup(caller_of(bob), "nobody@example.com", "")
