"""Numbers from outside are ASCII digits only: Python's int(), Decimal() and \\d
also take other scripts' digits, so each parser says which it means."""

from __future__ import annotations

import time
from decimal import Decimal

import pytest

from services.gateway.adapters import paypal_provider, sandbox
from services.gateway.domain.providers import WebhookSignatureInvalid
from services.runtime.errors import ViolationCollector
from services.runtime.money import Money, parse_amount

# Arabic-Indic, Extended Arabic-Indic, Devanagari, fullwidth and Bengali digits: all
# of them int() and Decimal() read as 0.01 or 1.
FOREIGN_DIGITS = [
    "\u0660.\u0660\u0661",
    "\u06f0.\u06f0\u06f1",
    "\u0966.\u0966\u0967",
    "\uff10.\uff10\uff11",
    "\u09e7",
    "1\u0660",
    "\uff11.00",
]


def parse(decimal: str, currency: str = "EUR") -> tuple[Money | None, dict[str, str]]:
    errors = ViolationCollector()
    money = parse_amount(currency, 0, decimal, "amount", errors)
    return money, {v.field: v.description for v in errors.violations}


@pytest.mark.parametrize("text", FOREIGN_DIGITS)
def test_amounts_in_other_digits_are_refused(text: str) -> None:
    assert Decimal(text) > 0  # what a careless parser would have booked
    money, violations = parse(text)
    assert money is None
    assert "is not a decimal amount" in violations["amount.decimal"]


@pytest.mark.parametrize("text", ["1.00\n", "1_000", "+1.00", "1e2", "Infinity", "NaN", ".5"])
def test_other_forms_python_accepts_are_refused(text: str) -> None:
    assert parse(text)[0] is None


def test_ascii_amounts_still_parse() -> None:
    assert parse("0.01") == (Money("EUR", 1), {})
    assert parse("1234", "JPY") == (Money("JPY", 1234), {})


@pytest.mark.parametrize(
    "value", [*FOREIGN_DIGITS, "NaN", "sNaN", "Infinity", "1e3", " 1.00", "1_0.00", ""]
)
def test_paypal_values_are_ascii_decimals_only(value: str) -> None:
    assert paypal_provider._decimal(value) is None


@pytest.mark.parametrize(("value", "expected"), [("10.50", "10.50"), ("500", "500"), (".5", "0.5")])
def test_paypal_values_in_ascii_parse(value: str, expected: str) -> None:
    assert paypal_provider._decimal(value) == Decimal(expected)


def test_a_sandbox_signature_time_in_other_digits_is_malformed() -> None:
    body = b"{}"
    stamp = int(time.time())
    good = sandbox.sign("secret", body, stamp)
    sandbox.verify("secret", body, good)
    foreign = str(stamp).translate(
        str.maketrans("0123456789", "\u0660\u0661\u0662\u0663\u0664\u0665\u0666\u0667\u0668\u0669")
    )
    assert int(foreign) == stamp
    forged = good.replace(f"t={stamp}", f"t={foreign}")
    with pytest.raises(WebhookSignatureInvalid, match="malformed"):
        sandbox.verify("secret", body, forged)
