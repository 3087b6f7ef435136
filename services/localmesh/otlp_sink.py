"""A small OTLP/gRPC trace receiver for development and tests: it stores the
spans it is sent (in memory, and as JSON lines in a file when given one) so
that a trace can be looked at without running a collector.

`make run` with WALLET_TRACES=1 starts one; `python -m services.localmesh traces`
prints the stored traces as trees.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable
from concurrent import futures
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1 import common_pb2


@dataclass(frozen=True)
class ReceivedSpan:
    trace_id: str
    span_id: str
    parent_span_id: str
    name: str
    service: str
    kind: int
    start_ns: int
    end_ns: int
    attributes: dict[str, str]


def _value(value: common_pb2.AnyValue) -> str:
    kind = value.WhichOneof("value")
    return str(getattr(value, kind)) if kind else ""


def spans_of(request: trace_service_pb2.ExportTraceServiceRequest) -> list[ReceivedSpan]:
    spans: list[ReceivedSpan] = []
    for resource_spans in request.resource_spans:
        resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                spans.append(
                    ReceivedSpan(
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_span_id=span.parent_span_id.hex(),
                        name=span.name,
                        service=resource.get("service.name", "?"),
                        kind=span.kind,
                        start_ns=span.start_time_unix_nano,
                        end_ns=span.end_time_unix_nano,
                        attributes={a.key: _value(a.value) for a in span.attributes},
                    )
                )
    return spans


class SpanStore(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, jsonl: Path | None) -> None:
        self._jsonl = jsonl
        self._lock = threading.Lock()
        self.spans: list[ReceivedSpan] = []

    def Export(  # noqa: N802 (the OTLP service's method name)
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: Any
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        received = spans_of(request)
        with self._lock:
            self.spans += received
            if self._jsonl is not None:
                with self._jsonl.open("a") as file:
                    for span in received:
                        file.write(json.dumps(asdict(span)) + "\n")
        return trace_service_pb2.ExportTraceServiceResponse()

    def trace(self, trace_id: str) -> list[ReceivedSpan]:
        with self._lock:
            return [span for span in self.spans if span.trace_id == trace_id]


class OtlpSink:
    """The receiver, on 127.0.0.1:<port>, in threads of the calling process."""

    def __init__(self, port: int, jsonl: Path | None = None) -> None:
        self.port = port
        self.store = SpanStore(jsonl)
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(  # type: ignore[no-untyped-call]
            self.store, self._server
        )
        self._server.add_insecure_port(f"127.0.0.1:{port}")

    def start(self) -> None:
        self._server.start()

    def stop(self) -> None:
        self._server.stop(grace=1).wait()


def load_spans(jsonl: Path) -> list[ReceivedSpan]:
    if not jsonl.exists():
        return []
    return [ReceivedSpan(**json.loads(line)) for line in jsonl.read_text().splitlines() if line]


def render_traces(spans: Iterable[ReceivedSpan], *, last: int = 5) -> str:
    """The last traces as indented trees: service, span name, duration, ids."""
    by_trace: dict[str, list[ReceivedSpan]] = {}
    for span in spans:
        by_trace.setdefault(span.trace_id, []).append(span)
    ordered = sorted(by_trace.values(), key=lambda group: min(s.start_ns for s in group))
    lines: list[str] = []
    for group in ordered[-last:]:
        lines.append(f"trace {group[0].trace_id}")
        lines += _tree(group)
    return "\n".join(lines)


def _tree(group: list[ReceivedSpan]) -> list[str]:
    ids = {span.span_id for span in group}
    children: dict[str, list[ReceivedSpan]] = {}
    for span in group:
        parent = span.parent_span_id if span.parent_span_id in ids else ""
        children.setdefault(parent, []).append(span)
    lines: list[str] = []

    def walk(parent: str, depth: int) -> None:
        for span in sorted(children.get(parent, []), key=lambda s: s.start_ns):
            took = (span.end_ns - span.start_ns) / 1e6
            wallet = {k: v for k, v in span.attributes.items() if k.startswith("wallet.")}
            lines.append(
                f"{'  ' * (depth + 1)}{span.service}: {span.name} {took:.2f} ms"
                + (f" {wallet}" if wallet else "")
            )
            walk(span.span_id, depth + 1)

    walk("", 0)
    return lines
