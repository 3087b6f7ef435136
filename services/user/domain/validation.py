"""Rules for what users may type: email, password, display name, phone."""

from __future__ import annotations

import unicodedata

import phonenumbers
from email_validator import EmailNotValidError, validate_email

from services.runtime.errors import ViolationCollector

PASSWORD_MIN_LENGTH = 12
# argon2 hashes any length, but a megabyte password is a denial-of-service tool.
PASSWORD_MAX_LENGTH = 256
DISPLAY_NAME_MAX_LENGTH = 100
EMAIL_MAX_LENGTH = 254


def normalize_email(raw: str, field: str, errors: ViolationCollector) -> str | None:
    """The email in canonical form (domain lower-cased, Unicode normalized),
    or None with a violation recorded. Uniqueness ignores case entirely."""
    email = raw.strip()
    if not email:
        errors.add(field, "is required")
        return None
    if len(email) > EMAIL_MAX_LENGTH:
        errors.add(field, f"must be at most {EMAIL_MAX_LENGTH} characters")
        return None
    try:
        return validate_email(email, check_deliverability=False).normalized
    except EmailNotValidError as error:
        errors.add(field, f"is not a valid email address: {error}")
        return None


def email_key(email: str) -> str:
    """What two emails must share to count as the same address."""
    return email.casefold()


def lookup_email(raw: str) -> str:
    """A typed email as lookups send it to the repository, which compares it
    without regard to case (`lower()` on both sides, in SQL)."""
    return raw.strip()


def login_account(raw: str) -> str:
    """The account a login names, for its per-account limit: the lookup's email,
    case-folded. Case folding identifies at least every pair of spellings the
    lookup's `lower()` does (PostgreSQL's, under the C locale: ASCII letters), so
    no spelling of an account's email gets a bucket of its own."""
    return email_key(lookup_email(raw))


def check_password(
    password: str, email: str | None, field: str, errors: ViolationCollector
) -> None:
    """NIST SP 800-63B style: length matters most; a few cheap refusals."""
    if not password:
        errors.add(field, "is required")
        return
    if len(password) < PASSWORD_MIN_LENGTH:
        errors.add(field, f"must be at least {PASSWORD_MIN_LENGTH} characters")
        return
    if len(password) > PASSWORD_MAX_LENGTH:
        errors.add(field, f"must be at most {PASSWORD_MAX_LENGTH} characters")
        return
    if password.isalpha() or password.isdigit():
        errors.add(field, "must not be only letters or only digits")
        return
    if len(set(password)) < 5:
        errors.add(field, "must use at least 5 different characters")
        return
    if email and email_key(email).split("@")[0] in email_key(password):
        errors.add(field, "must not contain the email address")


def normalize_display_name(raw: str, field: str, errors: ViolationCollector) -> str | None:
    name = unicodedata.normalize("NFC", raw.strip())
    if not name:
        errors.add(field, "is required")
        return None
    if len(name) > DISPLAY_NAME_MAX_LENGTH:
        errors.add(field, f"must be at most {DISPLAY_NAME_MAX_LENGTH} characters")
        return None
    if any(unicodedata.category(char).startswith("C") for char in name):
        errors.add(field, "must not contain control characters")
        return None
    return name


def normalize_phone(raw: str, field: str, errors: ViolationCollector) -> str | None:
    """E.164 form ("+491701234567"); the number must include its country code."""
    try:
        number = phonenumbers.parse(raw.strip(), None)
    except phonenumbers.NumberParseException:
        errors.add(field, "must be a phone number in E.164 form, e.g. +491701234567")
        return None
    if not phonenumbers.is_valid_number(number):
        errors.add(field, "is not a valid phone number")
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
