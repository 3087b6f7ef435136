"""Money: integer minor units and an ISO 4217 currency. No floats, anywhere.

The one definition of the money rules every service and provider follows: which
currencies, their minor-unit exponents, the largest amount, and how a decimal string
becomes minor units and back."""

from __future__ import annotations

import re
from dataclasses import dataclass

from services.runtime.errors import ViolationCollector

# ISO 4217 codes this wallet supports, with their minor-unit exponent (digits
# after the decimal point). A short, deliberate list: adding a currency is a
# business decision, not a lookup.
CURRENCY_EXPONENTS: dict[str, int] = {
    "AUD": 2, "BHD": 3, "BRL": 2, "CAD": 2, "CHF": 2, "CNY": 2, "CZK": 2, "DKK": 2,
    "EUR": 2, "GBP": 2, "HKD": 2, "HUF": 2, "INR": 2, "ISK": 0, "JOD": 3, "JPY": 0,
    "KRW": 0, "KWD": 3, "MXN": 2, "NOK": 2, "NZD": 2, "OMR": 3, "PLN": 2, "SEK": 2,
    "SGD": 2, "TND": 3, "TRY": 2, "USD": 2, "ZAR": 2,
}  # fmt: skip

# Largest amount one movement may carry: 10^12 minor units (ten billion euros).
# Far below int64's limit, so sums of many amounts cannot overflow either.
MAX_AMOUNT = 10**12

# ASCII digits only: Python's \d, int() and Decimal() also take other scripts'
# digits (Arabic-Indic "\u0660.\u0660\u0661" would be 0.01), which no client means.
_DECIMAL = re.compile(r"(?P<units>[0-9]{1,15})(?:\.(?P<fraction>[0-9]+))?")


@dataclass(frozen=True)
class Money:
    currency: str
    amount: int  # minor units

    @property
    def decimal(self) -> str:
        return format_decimal(self.amount, self.currency)


def format_decimal(amount: int, currency: str) -> str:
    """1050 EUR → "10.50"; -5 JPY → "-5"."""
    exponent = CURRENCY_EXPONENTS.get(currency, 2)
    sign = "-" if amount < 0 else ""
    units, fraction = divmod(abs(amount), 10**exponent)
    return f"{sign}{units}.{fraction:0{exponent}d}" if exponent else f"{sign}{units}"


def check_currency(code: str, field: str, errors: ViolationCollector) -> str | None:
    if not code:
        errors.add(field, "is required (an ISO 4217 code such as EUR)")
        return None
    if code not in CURRENCY_EXPONENTS:
        errors.add(field, f"{code!r} is not a supported ISO 4217 currency code")
        return None
    return code


def parse_amount(
    currency: str,
    amount: int,
    decimal: str,
    field: str,
    errors: ViolationCollector,
    *,
    signed: bool = False,
) -> Money | None:
    """The amount a client sent, as minor units (`amount`) or as a decimal string
    (`decimal`, e.g. "10.50"), or both if they agree. Positive unless `signed`
    (then non-zero)."""
    code = check_currency(currency, f"{field}.currency", errors)
    if code is None:
        return None
    minor = amount
    if decimal:
        parsed = _parse_decimal(decimal, code, f"{field}.decimal", errors)
        if parsed is None:
            return None
        if amount and amount != parsed:
            errors.add(field, f"amount {amount} and decimal {decimal!r} disagree")
            return None
        minor = parsed
    if signed:
        if minor == 0:
            errors.add(f"{field}.amount", "must not be zero")
            return None
    elif minor <= 0:
        errors.add(f"{field}.amount", "must be greater than zero (minor units)")
        return None
    if abs(minor) > MAX_AMOUNT:
        errors.add(f"{field}.amount", f"must be at most {MAX_AMOUNT} minor units")
        return None
    return Money(code, minor)


def _parse_decimal(text: str, currency: str, field: str, errors: ViolationCollector) -> int | None:
    negative = text.startswith("-")
    match = _DECIMAL.fullmatch(text[1:] if negative else text)
    if match is None:
        errors.add(field, f"{text!r} is not a decimal amount like 10.50")
        return None
    exponent = CURRENCY_EXPONENTS[currency]
    fraction = match["fraction"] or ""
    if len(fraction) > exponent:
        errors.add(field, f"{currency} has {exponent} decimal places; {text!r} has {len(fraction)}")
        return None
    minor: int = int(match["units"]) * 10**exponent + int(fraction.ljust(exponent, "0") or 0)
    return -minor if negative else minor
