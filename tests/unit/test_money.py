"""Money parsing and formatting: integers in minor units, decimals per currency."""

from __future__ import annotations

import pytest

from services.runtime.errors import ViolationCollector
from services.runtime.money import MAX_AMOUNT, Money, format_decimal, parse_amount


def parse(
    currency: str, amount: int = 0, decimal: str = "", signed: bool = False
) -> tuple[Money | None, dict[str, str]]:
    errors = ViolationCollector()
    money = parse_amount(currency, amount, decimal, "amount", errors, signed=signed)
    return money, {v.field: v.description for v in errors.violations}


@pytest.mark.parametrize(
    ("amount", "currency", "text"),
    [(1050, "EUR", "10.50"), (5, "EUR", "0.05"), (-5, "USD", "-0.05"), (1234, "JPY", "1234"),
     (1, "KWD", "0.001"), (0, "EUR", "0.00")],
)  # fmt: skip
def test_format_decimal(amount: int, currency: str, text: str) -> None:
    assert format_decimal(amount, currency) == text


def test_minor_units_and_decimals_agree() -> None:
    assert parse("EUR", 1050) == (Money("EUR", 1050), {})
    assert parse("EUR", decimal="10.5") == (Money("EUR", 1050), {})
    assert parse("JPY", decimal="1234") == (Money("JPY", 1234), {})
    assert parse("EUR", 1050, "10.50") == (Money("EUR", 1050), {})


@pytest.mark.parametrize(
    ("currency", "amount", "decimal", "field", "why"),
    [
        ("EUR", 0, "", "amount.amount", "greater than zero"),
        ("EUR", -5, "", "amount.amount", "greater than zero"),
        ("EUR", MAX_AMOUNT + 1, "", "amount.amount", "at most"),
        ("EUR", 0, "10.505", "amount.decimal", "EUR has 2 decimal places"),
        ("JPY", 0, "1.5", "amount.decimal", "JPY has 0 decimal places"),
        ("EUR", 0, "1e3", "amount.decimal", "not a decimal amount"),
        ("EUR", 1000, "10.50", "amount", "disagree"),
        ("XXX", 100, "", "amount.currency", "not a supported"),
        ("", 100, "", "amount.currency", "is required"),
    ],
)
def test_bad_amounts_name_the_field(
    currency: str, amount: int, decimal: str, field: str, why: str
) -> None:
    money, violations = parse(currency, amount, decimal)
    assert money is None
    assert why in violations[field]


def test_signed_amounts_allow_debits_but_not_zero() -> None:
    assert parse("EUR", -500, signed=True) == (Money("EUR", -500), {})
    assert parse("EUR", decimal="-5.00", signed=True) == (Money("EUR", -500), {})
    assert "must not be zero" in parse("EUR", 0, signed=True)[1]["amount.amount"]
