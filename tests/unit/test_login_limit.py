"""The per-account limit of failed logins, in the domain (fake bucket): failures
take tries, successes give theirs back, and over the limit the answer is the same
for every email and no password is checked."""

from __future__ import annotations

import pytest

from services.runtime.errors import InvalidArgument, ResourceExhausted, Unauthenticated
from services.user.domain.accounts import LOGIN_THROTTLED
from services.user.domain.validation import login_account
from tests.fakes.user import PASSWORD, World

WRONG = "wrong password 1"


@pytest.fixture
def world() -> World:
    return World()


async def fail(world: World, email: str, times: int) -> None:
    for _ in range(times):
        with pytest.raises(Unauthenticated):
            await world.accounts.login(email, WRONG)


async def throttled(world: World, email: str, password: str = WRONG) -> ResourceExhausted:
    with pytest.raises(ResourceExhausted) as caught:
        await world.accounts.login(email, password)
    return caught.value


async def test_over_the_limit_no_password_is_checked_and_every_email_looks_the_same(
    world: World,
) -> None:
    await world.register("ada@example.com")
    burst = world.login_throttle.burst
    await fail(world, "ada@example.com", burst)
    await fail(world, "nobody@example.com", burst)
    checked = world.passwords.verifications
    assert checked == 2 * burst  # the unknown email verified a decoy each time

    registered = await throttled(world, "ada@example.com", PASSWORD)  # even the right one
    unknown = await throttled(world, "nobody@example.com")
    assert world.passwords.verifications == checked
    assert registered.message == unknown.message == LOGIN_THROTTLED
    assert registered.reason == unknown.reason == "LOGIN_THROTTLED"
    assert registered.retry_after_seconds == unknown.retry_after_seconds == 30


async def test_the_retry_hint_is_whole_seconds_and_at_least_one(world: World) -> None:
    world.login_throttle.retry_after_seconds = 0.2
    await fail(world, "ada@example.com", world.login_throttle.burst)
    assert (await throttled(world, "ada@example.com")).retry_after_seconds == 1
    world.login_throttle.retry_after_seconds = 12.01
    assert (await throttled(world, "ada@example.com")).retry_after_seconds == 13


async def test_successes_take_nothing(world: World) -> None:
    await world.register("ada@example.com")
    burst = world.login_throttle.burst
    await fail(world, "ada@example.com", burst - 1)
    for _ in range(3 * burst):
        assert (await world.accounts.login("ada@example.com", PASSWORD)).access_token
    await fail(world, "ada@example.com", 1)  # the last try is still there
    await throttled(world, "ada@example.com")


async def test_every_spelling_of_an_email_shares_one_bucket(world: World) -> None:
    await world.register("ada@example.com")
    spellings = ["ada@example.com", "ADA@example.com", "  Ada@Example.COM ", "aDa@eXample.com"]
    assert len({login_account(spelling) for spelling in spellings}) == 1
    for spelling in spellings[: world.login_throttle.burst]:
        with pytest.raises(Unauthenticated):
            await world.accounts.login(spelling, WRONG)
    await fail(world, "ada@example.com", world.login_throttle.burst - len(spellings))
    await throttled(world, spellings[-1])


async def test_one_accounts_limit_leaves_the_others_alone(world: World) -> None:
    await world.register("ada@example.com")
    await world.register("bob@example.com", display_name="Bob")
    await fail(world, "ada@example.com", world.login_throttle.burst)
    await throttled(world, "ada@example.com", PASSWORD)
    assert (await world.accounts.login("bob@example.com", PASSWORD)).access_token


async def test_the_owner_gets_in_once_the_bucket_refills(world: World) -> None:
    user = await world.register("ada@example.com")
    await fail(world, "ada@example.com", world.login_throttle.burst)
    await throttled(world, "ada@example.com", PASSWORD)
    world.login_throttle.refill()
    assert (await world.accounts.login("ada@example.com", PASSWORD)).user_id == user.id


async def test_malformed_logins_take_no_try(world: World) -> None:
    for _ in range(2 * world.login_throttle.burst):
        with pytest.raises(InvalidArgument):
            await world.accounts.login("ada@example.com", "")
    assert world.login_throttle.tries == {}
