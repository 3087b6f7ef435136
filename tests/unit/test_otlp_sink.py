"""The development trace receiver: OTLP spans in, trees out (no I/O)."""

from __future__ import annotations

from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from services.localmesh.otlp_sink import render_traces, spans_of

TRACE = bytes(range(16))


def request() -> trace_service_pb2.ExportTraceServiceRequest:
    def span(span_id: int, parent: int, name: str, start: int) -> trace_pb2.Span:
        return trace_pb2.Span(
            trace_id=TRACE,
            span_id=span_id.to_bytes(8, "big"),
            parent_span_id=parent.to_bytes(8, "big") if parent else b"",
            name=name,
            start_time_unix_nano=start,
            end_time_unix_nano=start + 2_000_000,
            attributes=[
                common_pb2.KeyValue(
                    key="wallet.transaction_id", value=common_pb2.AnyValue(string_value="t-1")
                )
            ],
        )

    export = trace_service_pb2.ExportTraceServiceRequest()
    resource_spans = export.resource_spans.add()
    resource_spans.resource.attributes.add(
        key="service.name", value=common_pb2.AnyValue(string_value="wallet-transaction")
    )
    resource_spans.scope_spans.add().spans.extend(
        [span(2, 1, "SELECT", 20), span(1, 0, "CreateTransfer", 10)]
    )
    return export


def test_spans_keep_ids_parents_service_and_attributes() -> None:
    spans = spans_of(request())
    assert [(s.name, s.service) for s in spans] == [
        ("SELECT", "wallet-transaction"),
        ("CreateTransfer", "wallet-transaction"),
    ]
    assert spans[0].trace_id == TRACE.hex()
    assert spans[0].parent_span_id == spans[1].span_id
    assert spans[0].attributes == {"wallet.transaction_id": "t-1"}


def test_traces_render_as_indented_trees() -> None:
    lines = render_traces(spans_of(request())).splitlines()
    assert lines[0] == f"trace {TRACE.hex()}"
    assert lines[1].startswith("  wallet-transaction: CreateTransfer 2.00 ms")
    assert lines[2].startswith("    wallet-transaction: SELECT 2.00 ms")
    assert "'wallet.transaction_id': 't-1'" in lines[1]
