"""Domain errors: what went wrong, in the domain's words, with no gRPC in sight.

Domain code raises these; one interceptor (`services.runtime.interceptors`) maps
them to gRPC status codes with `google.rpc` details, so every service answers
the same way and handlers never build statuses by hand.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from enum import Enum


class ErrorKind(Enum):
    """The kinds of failure a caller can act on; each maps to one gRPC code."""

    INVALID_ARGUMENT = "invalid_argument"
    NOT_FOUND = "not_found"
    ALREADY_EXISTS = "already_exists"
    PERMISSION_DENIED = "permission_denied"
    UNAUTHENTICATED = "unauthenticated"
    FAILED_PRECONDITION = "failed_precondition"
    ABORTED = "aborted"
    RESOURCE_EXHAUSTED = "resource_exhausted"
    UNAVAILABLE = "unavailable"


@dataclass(frozen=True)
class FieldViolation:
    """One bad field of a request: which one (dotted path) and why."""

    field: str
    description: str


class DomainError(Exception):
    """Base of every error a caller is meant to see."""

    kind: ErrorKind = ErrorKind.FAILED_PRECONDITION

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        # A stable, machine-readable reason (google.rpc.ErrorInfo), e.g. "EMAIL_TAKEN".
        self.reason = reason


class InvalidArgument(DomainError):
    """The request itself is wrong; `violations` say which fields and why."""

    kind = ErrorKind.INVALID_ARGUMENT

    def __init__(self, violations: list[FieldViolation], message: str | None = None) -> None:
        if not violations:
            raise ValueError("InvalidArgument needs at least one field violation")
        super().__init__(message or "; ".join(f"{v.field}: {v.description}" for v in violations))
        self.violations = violations

    @classmethod
    def single(cls, field: str, description: str) -> InvalidArgument:
        return cls([FieldViolation(field, description)])


class NotFound(DomainError):
    kind = ErrorKind.NOT_FOUND


class AlreadyExists(DomainError):
    kind = ErrorKind.ALREADY_EXISTS


class PermissionDenied(DomainError):
    kind = ErrorKind.PERMISSION_DENIED


class Unauthenticated(DomainError):
    kind = ErrorKind.UNAUTHENTICATED


class FailedPrecondition(DomainError):
    kind = ErrorKind.FAILED_PRECONDITION


class Aborted(DomainError):
    """A concurrent request conflicted with this one; retrying may succeed."""

    kind = ErrorKind.ABORTED


class ResourceExhausted(DomainError):
    """The caller is over a limit; `retry_after_seconds` says when trying again can
    succeed (sent as google.rpc.RetryInfo)."""

    kind = ErrorKind.RESOURCE_EXHAUSTED

    def __init__(self, message: str, *, reason: str, retry_after_seconds: int) -> None:
        super().__init__(message, reason=reason)
        self.retry_after_seconds = retry_after_seconds


class Unavailable(DomainError):
    """A dependency is down; retrying later may succeed."""

    kind = ErrorKind.UNAVAILABLE


class ViolationCollector:
    """Gathers every bad field of a request before failing, so a client learns
    all of its mistakes at once rather than one per round trip."""

    def __init__(self) -> None:
        self.violations: list[FieldViolation] = []

    def add(self, field: str, description: str) -> None:
        self.violations.append(FieldViolation(field, description))

    def uuid(self, value: str, field: str) -> str:
        """`value` as a canonical UUID; else a violation of `field`, and `value` back."""
        if not value:
            self.add(field, "is required")
            return value
        try:
            return str(uuid.UUID(value))
        except ValueError:
            self.add(field, "must be an id (a UUID)")
            return value

    def raise_if_any(self) -> None:
        if self.violations:
            raise InvalidArgument(self.violations)
