"""The limits file: parsing, strict validation, and how a descriptor finds its bucket.
No Redis, no gRPC."""

from __future__ import annotations

import textwrap

import pytest

from services.ratelimit.limits import (
    DescriptorKey,
    FailureMode,
    Limits,
    LimitsError,
    Match,
    Per,
    Unmatched,
    load_limits,
    parse_limits,
)
from services.ratelimit.server import DEFAULT_LIMITS_FILE

VALID = """
domain: wallet
classes:
  default:   {key: user,           requests: 20, per: second, burst: 40, failure_mode: open}
  money:     {key: user,           requests: 5,  per: second, burst: 10, failure_mode: closed}
  anonymous: {key: remote_address, requests: 10, per: minute, burst: 10, failure_mode: open}
"""


def limits_with(money: str) -> str:
    """VALID with the `money` class's fields replaced by `money`."""
    lines = VALID.splitlines()
    return "\n".join(
        f"  money: {{{money}}}" if line.startswith("  money:") else line for line in lines
    )


def problems(text: str) -> str:
    with pytest.raises(LimitsError) as caught:
        parse_limits(text, source="limits.yaml")
    message = str(caught.value)
    assert message.startswith("limits.yaml: ")
    return message


def test_shipped_limits_are_the_contract_with_envoy() -> None:
    limits = load_limits(DEFAULT_LIMITS_FILE)
    assert limits == parse_limits(VALID)
    assert limits.domain == "wallet"
    assert limits.fail_closed_classes() == {"money"}
    money = limits.classes["money"]
    assert (money.key, money.requests, money.per, money.burst) == (
        DescriptorKey.USER,
        5,
        Per.SECOND,
        10,
    )
    assert money.failure_mode is FailureMode.CLOSED
    anonymous = limits.classes["anonymous"]
    assert anonymous.key is DescriptorKey.REMOTE_ADDRESS
    assert anonymous.rate_per_second == pytest.approx(10 / 60)
    assert anonymous.refill_seconds == pytest.approx(60)


def test_classes_cannot_be_changed_after_loading() -> None:
    limits = parse_limits(VALID)
    with pytest.raises(TypeError):
        limits.classes["money"] = limits.classes["default"]  # type: ignore[index]


@pytest.mark.parametrize(
    ("money", "expected"),
    [
        (
            "key: user, requests: 5, per: second, burst: 10, failure_mode: closed, burts: 3",
            "class 'money': unknown field 'burts'",
        ),
        (
            "key: user, requests: 5, per: second, failure_mode: closed",
            "class 'money': missing field 'burst'",
        ),
        (
            "key: user, requests: 5, per: second, burst: , failure_mode: closed",
            "class 'money': missing field 'burst'",
        ),
        (
            "key: user, requests: 0, per: second, burst: 10, failure_mode: closed",
            "class 'money', field 'requests': 0 is not a whole number",
        ),
        (
            "key: user, requests: 5, per: second, burst: -1, failure_mode: closed",
            "class 'money', field 'burst': -1 is not a whole number",
        ),
        (
            "key: user, requests: 2.5, per: second, burst: 10, failure_mode: closed",
            "class 'money', field 'requests': 2.5 is not a whole number",
        ),
        (
            "key: user, requests: yes, per: second, burst: 10, failure_mode: closed",
            "class 'money', field 'requests': True is not a whole number",
        ),
        (
            "key: user, requests: 4294967296, per: second, burst: 10, failure_mode: closed",
            "class 'money', field 'requests': 4294967296 is not a whole number from 1 to",
        ),
        (
            "key: user, requests: 5, per: day, burst: 10, failure_mode: closed",
            "class 'money', field 'per': 'day' is not one of second, minute, hour",
        ),
        (
            "key: account, requests: 5, per: second, burst: 10, failure_mode: closed",
            "class 'money', field 'key': 'account' is not one of user, remote_address",
        ),
        (
            "key: user, requests: 5, per: second, burst: 10, failure_mode: deny",
            "class 'money', field 'failure_mode': 'deny' is not one of open, closed",
        ),
        (
            "key: user, requests: 5, per: second, burst: 10, failure_mode: off",
            "class 'money', field 'failure_mode': False is not one of open, closed",
        ),
    ],
)
def test_a_bad_class_field_is_named(money: str, expected: str) -> None:
    assert expected in problems(limits_with(money))


def test_every_problem_is_reported_at_once() -> None:
    message = problems(limits_with("key: ip, requests: 0, per: week, burst: 1, failure_mode: x"))
    for field in ("key", "requests", "per", "failure_mode"):
        assert f"class 'money', field '{field}'" in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "the file must be a mapping with 'domain' and 'classes'"),
        ("- a\n- b\n", "the file must be a mapping"),
        (VALID + "extra: 1\n", "unknown top-level field 'extra'"),
        (VALID.replace("domain: wallet", "domain: ''"), "'domain' must be a non-empty string"),
        ("domain: wallet\nclasses: {}\n", "'classes' must be a non-empty mapping"),
        (VALID + "  'rl:x': {}\n", "class 'rl:x': names are letters, digits"),
        (VALID + "  spare: 3\n", "class 'spare': must be a mapping with fields"),
        ("domain: [wallet\n", "not valid YAML"),
        # PyYAML would silently keep the last of two `money` entries.
        (VALID + "  money: {}\n", "'money' is given twice"),
    ],
)
def test_a_bad_file_is_refused(text: str, expected: str) -> None:
    assert expected in problems(text)


def test_a_missing_file_is_a_limits_error() -> None:
    with pytest.raises(LimitsError, match="cannot read the limits file"):
        load_limits("/nonexistent/limits.yaml")


def test_yaml_merge_keys_still_work() -> None:
    text = textwrap.dedent(
        """
        domain: wallet
        classes:
          default: &user_limit {key: user, requests: 20, per: second, burst: 40, failure_mode: open}
          reads:
            <<: *user_limit
            requests: 50
        """
    )
    assert parse_limits(text).classes["reads"].requests == 50


# --- which bucket a descriptor draws from ------------------------------------------------


@pytest.fixture(scope="module")
def limits() -> Limits:
    return parse_limits(VALID)


def test_an_authenticated_call_matches_its_class_and_user(limits: Limits) -> None:
    found = limits.match("wallet", [("class", "money"), ("user", "u-1")])
    assert found == Match(limits.classes["money"], "u-1")


def test_an_anonymous_call_matches_its_remote_address(limits: Limits) -> None:
    found = limits.match("wallet", [("class", "anonymous"), ("remote_address", "2001:db8::1")])
    assert found == Match(limits.classes["anonymous"], "2001:db8::1")


def test_entries_are_found_by_key_not_position(limits: Limits) -> None:
    found = limits.match("wallet", [("user", "u-1"), ("class", "default")])
    assert found == Match(limits.classes["default"], "u-1")


@pytest.mark.parametrize(
    ("domain", "entries", "reason"),
    [
        ("shop", [("class", "money"), ("user", "u-1")], "domain 'shop' is not 'wallet'"),
        ("wallet", [("user", "u-1")], "descriptor has no 'class' entry"),
        ("wallet", [("class", "gold"), ("user", "u-1")], "unknown class 'gold'"),
        (
            "wallet",
            [("class", "money"), ("remote_address", "192.0.2.1")],
            "class 'money': descriptor has no 'user' entry",
        ),
        # An empty subject would put every such caller in one bucket.
        ("wallet", [("class", "money"), ("user", "")], "class 'money': descriptor has no 'user'"),
        (
            "wallet",
            [("class", "anonymous"), ("user", "u-1")],
            "class 'anonymous': descriptor has no 'remote_address' entry",
        ),
    ],
)
def test_descriptors_that_are_not_ours_say_why_without_naming_the_caller(
    limits: Limits, domain: str, entries: list[tuple[str, str]], reason: str
) -> None:
    found = limits.match(domain, entries)
    assert isinstance(found, Unmatched)
    assert found.reason.startswith(reason)
    assert "u-1" not in found.reason
    assert "192.0.2.1" not in found.reason
