"""Log out everywhere: the domain revokes every refresh token of the caller and
every access token issued to them; the runtime's cutoff decides, per token, from
its whole-second `iat`."""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from services.runtime.auth import Caller, TokenVerifier, cutoff_for, is_revoked_by
from services.runtime.errors import Unauthenticated
from services.user.adapters.tokens import JwtIssuer, LocalPublicKeys
from services.user.domain.model import Role
from tests.fakes.user import PASSWORD, FakeRevocationCheck, World, caller_of, signing_key


@pytest.fixture
def world() -> World:
    return World()


async def test_every_refresh_token_of_the_caller_is_revoked_and_no_one_elses(
    world: World,
) -> None:
    ada = await world.register("ada@example.com")
    await world.register("bob@example.com", display_name="Bob")
    phone = await world.accounts.login("ada@example.com", PASSWORD)
    laptop = await world.accounts.login("ada@example.com", PASSWORD)
    rotated = await world.accounts.refresh(laptop.refresh_token)
    bobs = await world.accounts.login("bob@example.com", PASSWORD)

    await world.accounts.logout_everywhere(caller_of(ada))

    for token in (phone.refresh_token, rotated.refresh_token):
        with pytest.raises(Unauthenticated):
            await world.accounts.refresh(token)
    assert world.revoker.all_revoked == {ada.id: world.access_tokens.lifetime_seconds}
    assert (await world.accounts.refresh(bobs.refresh_token)).user_id != ada.id
    # A new session starts as usual.
    again = await world.accounts.login("ada@example.com", PASSWORD)
    assert (await world.accounts.refresh(again.refresh_token)).user_id == ada.id


def caller(issued_at: int) -> Caller:
    return Caller("u", frozenset({"user"}), "jti", issued_at + 900, token_issued_at=issued_at)


def test_the_cutoff_is_the_next_whole_second() -> None:
    assert cutoff_for(1000.0) == 1001
    assert cutoff_for(1000.001) == 1001
    assert cutoff_for(1000.999) == 1001


def test_tokens_of_the_cutoffs_second_and_before_are_revoked_later_ones_are_not() -> None:
    logged_out_everywhere = 1000.4
    cutoff = str(cutoff_for(logged_out_everywhere)).encode()  # as Redis returns it
    # Issued earlier in the same second, or before: revoked.
    assert is_revoked_by(caller(1000), None, cutoff)
    assert is_revoked_by(caller(400), None, cutoff)
    # Issued from the cutoff on (the call returns only then): valid.
    assert not is_revoked_by(caller(1001), None, cutoff)
    assert not is_revoked_by(caller(1002), None, cutoff)
    # No cutoff: only a revoked jti counts.
    assert not is_revoked_by(caller(1000), None, None)
    assert is_revoked_by(caller(1001), b"1", cutoff)
    assert is_revoked_by(caller(1000), b"1", None)


def test_a_caller_without_an_issue_time_is_older_than_any_cutoff() -> None:
    legacy = Caller("u", frozenset(), "jti", 2_000_000_000)
    assert is_revoked_by(legacy, None, b"1")


async def test_the_verifier_asks_with_the_tokens_subject_and_issue_time(tmp_path: Path) -> None:
    key = signing_key(tmp_path)
    # Late in a second: `iat` keeps the whole second.
    issued_at = datetime.fromtimestamp(math.floor(time.time()) - 1 + 0.7, UTC)
    token = JwtIssuer(key, issuer="i", audience="a", lifetime_seconds=900).issue(
        "user-7", frozenset({Role.USER}), issued_at
    )
    check = FakeRevocationCheck()
    verifier = TokenVerifier(LocalPublicKeys(key), check, issuer="i", audience="a")
    await verifier.verify(token.token)
    await verifier.verify(token.token)  # from the verifier's cache: asked again
    assert [(c.user_id, c.token_id, c.token_issued_at) for c in check.asked] == [
        ("user-7", token.token_id, math.floor(issued_at.timestamp()))
    ] * 2
