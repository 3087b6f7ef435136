"""JSON log lines, one per event, with the service and instance on each, and
secrets redacted at the logger — not left to each caller's care."""

from __future__ import annotations

import logging
import os
import re
import sys
from typing import Any

from pythonjsonlogger.json import JsonFormatter

from services.runtime.telemetry import current_trace_ids

# Attribute names whose values are never written (card and payout tokens included).
_SECRET_KEYS = re.compile(
    r"pass(word)?|secret|token|authorization|api[_-]?key|card|payment_method|instrument", re.I
)
# A JWT (three base64url parts, the first starting with `{"`) anywhere in text.
_JWT = re.compile(r"eyJ[\w-]+\.[\w-]+\.[\w-]*")
# A payment provider's token for a card, bank account or payment method anywhere in
# text (Stripe's pm_, tok_, btok_, src_, ba_, seti_; the sandbox uses the same).
_PAYMENT_TOKEN = re.compile(r"\b(?:pm|tok|btok|src|ba|seti)_[A-Za-z0-9_]+")
REDACTED = "[redacted]"


def redact(value: Any) -> Any:
    """Replaces secrets inside a value that is about to be logged."""
    if isinstance(value, str):
        return _PAYMENT_TOKEN.sub(REDACTED, _JWT.sub(REDACTED, value))
    if isinstance(value, dict):
        return {
            key: REDACTED if _SECRET_KEYS.search(str(key)) else redact(item)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact(item) for item in value]
    return value


class RedactingFilter(logging.Filter):
    """Redacts secret-named extras and tokens found in messages and extras."""

    _STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage())
        record.args = None
        for key, value in list(record.__dict__.items()):
            if key in self._STANDARD:
                continue
            record.__dict__[key] = REDACTED if _SECRET_KEYS.search(key) else redact(value)
        return True


class _ContextFilter(logging.Filter):
    def __init__(self, service: str, instance: str) -> None:
        super().__init__()
        self._service = service
        self._instance = instance

    def filter(self, record: logging.LogRecord) -> bool:
        record.service = self._service
        record.instance = self._instance
        ids = current_trace_ids()
        if ids is not None:
            record.trace_id, record.span_id = ids
        return True


def configure_logging(service: str, instance: str) -> None:
    """Sends JSON lines to stderr at LOG_LEVEL (default INFO)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter(
            "{levelname}{name}{message}{service}{instance}",
            style="{",
            rename_fields={"levelname": "level", "name": "logger"},
            # ISO 8601 in UTC, under "timestamp".
            timestamp=True,
        )
    )
    handler.addFilter(_ContextFilter(service, instance))
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(os.environ.get("LOG_LEVEL", "INFO").upper())
