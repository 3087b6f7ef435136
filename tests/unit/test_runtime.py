"""Shared runtime pieces without I/O: error mapping and log redaction."""

from __future__ import annotations

import json
import logging

import pytest
from google.rpc import code_pb2, error_details_pb2

from services.runtime.errors import (
    AlreadyExists,
    FieldViolation,
    InvalidArgument,
    Unauthenticated,
    ViolationCollector,
)
from services.runtime.interceptors import status_for
from services.runtime.logging import REDACTED, RedactingFilter, configure_logging, redact


def test_invalid_argument_maps_to_bad_request_details() -> None:
    status = status_for(
        InvalidArgument([FieldViolation("email", "is required"), FieldViolation("password", "x")])
    )
    assert status.code == code_pb2.INVALID_ARGUMENT
    bad_request = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(bad_request)
    assert [(v.field, v.description) for v in bad_request.field_violations] == [
        ("email", "is required"),
        ("password", "x"),
    ]


def test_reason_becomes_error_info() -> None:
    status = status_for(AlreadyExists("taken", reason="EMAIL_TAKEN"))
    assert status.code == code_pb2.ALREADY_EXISTS
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    assert (info.reason, info.domain) == ("EMAIL_TAKEN", "wallet-mesh")
    assert status_for(Unauthenticated("no")).code == code_pb2.UNAUTHENTICATED


def test_collector_raises_only_with_violations() -> None:
    errors = ViolationCollector()
    errors.raise_if_any()
    errors.add("a", "bad")
    with pytest.raises(InvalidArgument) as caught:
        errors.raise_if_any()
    assert caught.value.violations == [FieldViolation("a", "bad")]


def test_redaction_of_secret_keys_and_embedded_jwts() -> None:
    jwt_like = "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ1In0.c2lnbmF0dXJl"
    assert redact(f"token was {jwt_like}!") == f"token was {REDACTED}!"
    assert redact({"password": "hunter2", "nested": {"refresh_token": "abc", "ok": 1}}) == {
        "password": REDACTED,
        "nested": {"refresh_token": REDACTED, "ok": 1},
    }


def test_redaction_of_payment_tokens_but_not_failure_codes() -> None:
    text = "No such PaymentMethod: 'pm_1NvXyZ2eZvKYlo2C' (card_declined, ba_sandbox_fails)"
    assert redact(text) == f"No such PaymentMethod: '{REDACTED}' (card_declined, {REDACTED})"
    assert redact({"payment_method": "tok_visa", "instrument": "x", "status": "failed"}) == {
        "payment_method": REDACTED,
        "instrument": REDACTED,
        "status": "failed",
    }


def test_redacting_filter_scrubs_record_extras() -> None:
    record = logging.makeLogRecord(
        {"msg": "login %s", "args": ("eyJa.eyJb.c",), "password": "hunter2", "user": "u1"}
    )
    assert RedactingFilter().filter(record)
    assert record.getMessage() == f"login {REDACTED}"
    assert record.__dict__["password"] == REDACTED
    assert json.dumps(record.__dict__["user"]) == '"u1"'


def test_json_log_lines_carry_service_instance_and_iso_time(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("user", "user-7")
    try:
        logging.getLogger("test").warning("hello", extra={"password": "hunter2", "user_id": "u1"})
        line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    finally:
        logging.getLogger().handlers.clear()
    assert line["message"] == "hello"
    assert (line["level"], line["service"], line["instance"]) == ("WARNING", "user", "user-7")
    assert line["timestamp"].endswith("+00:00")
    assert line["password"] == REDACTED
    assert line["user_id"] == "u1"


def test_envoy_and_opentelemetry_protos_coexist() -> None:
    """xds-protos and opentelemetry-proto write the same files; the set-up must
    leave OpenTelemetry's (the OTLP exporter imports them) next to Envoy's stubs."""
    from envoy.service.ratelimit.v3 import rls_pb2  # type: ignore[import-untyped]
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.proto.common.v1 import common_pb2

    assert hasattr(common_pb2, "InstrumentationScope")
    assert rls_pb2.RateLimitResponse.Code.Name(2) == "OVER_LIMIT"
    assert OTLPSpanExporter is not None
