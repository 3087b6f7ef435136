"""How the end-to-end tests configure their meshes: the rate limits they run under and
the payment timings that make background work (retries, webhooks, the reconciler) quick."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from services.localmesh.mesh import MeshConfig

GENEROUS_LIMITS = Path(__file__).with_name("limits-generous.yaml")
TIGHT_LIMITS = Path(__file__).with_name("limits-tight.yaml")


# Payment timings of the test meshes: provider calls give up after 0.5 s (3 tries),
# the sandbox's slow cards settle (and send their webhook) after 3 s, and the
# reconciler looks at a pending payment 2 s after it was made, then every 0.3 s pass.
PAYMENT_TIMINGS = {
    "GATEWAY_CALL_TIMEOUT_MS": "500",
    "GATEWAY_RETRY_BASE_DELAY_MS": "50",
    "GATEWAY_SANDBOX_WEBHOOK_DELAY_MS": "3000",
    "GATEWAY_BREAKER_FAILURES": "5",
    "GATEWAY_BREAKER_OPEN_MS": "1500",
    "TRANSACTION_GATEWAY_TIMEOUT_MS": "4500",
    "TRANSACTION_RECONCILE_AFTER_MS": "2000",
    "TRANSACTION_RECONCILE_INTERVAL_MS": "300",
}


def mesh_config_for_tests(run_dir: Path, limits: Path) -> MeshConfig:
    return dataclasses.replace(
        MeshConfig.for_tests(run_dir), ratelimit_config=limits, extra_env=PAYMENT_TIMINGS
    )
