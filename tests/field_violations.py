"""The field violations (google.rpc.BadRequest) of an error answer, by field: how
every test reads which fields a refusal names, over REST and over gRPC."""

from __future__ import annotations

import grpc
import httpx
from google.rpc import error_details_pb2
from grpc_status import rpc_status

BAD_REQUEST = "type.googleapis.com/google.rpc.BadRequest"


def rest_violations(response: httpx.Response) -> dict[str, str]:
    """field -> description, from a REST error body's `details`."""
    found: dict[str, str] = {}
    for detail in response.json().get("details", []):
        if detail.get("@type") == BAD_REQUEST:
            found |= {v["field"]: v["description"] for v in detail["field_violations"]}
    return found


def grpc_violations(error: grpc.aio.AioRpcError) -> dict[str, str]:
    """field -> description, from a gRPC error's status details."""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    found: dict[str, str] = {}
    for detail in status.details:
        bad_request = error_details_pb2.BadRequest()
        if detail.Unpack(bad_request):
            found |= {v.field: v.description for v in bad_request.field_violations}
    return found
