"""The whole mesh's public contract, as generated from protos/.

Every service serves reflection for all of it: behind the edge, grpcurl's one
reflection stream lands on a single instance, and it should still describe every
service the edge routes to. A call still reaches only the service that runs it.
"""

from __future__ import annotations

import functools
import importlib
from pathlib import Path


@functools.cache
def mesh_service_names() -> tuple[str, ...]:
    """Full names of every gRPC service in the generated `wallet.*` packages."""
    import wallet

    names: list[str] = []
    # Namespace packages (protoc writes no __init__.py), so walk the folders.
    for root in map(Path, wallet.__path__):
        for path in sorted(root.rglob("*_service_pb2.py")):
            parts = path.relative_to(root.parent).with_suffix("").parts
            module = importlib.import_module(".".join(parts))
            names += [s.full_name for s in module.DESCRIPTOR.services_by_name.values()]
    return tuple(sorted(names))
