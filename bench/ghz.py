"""gRPC load with ghz: transfers and reads, through Envoy or straight to one instance.

ghz sends the messages of a JSON data array round robin (message i = request number mod
K) and renders `{{newUUID}}` per call, so every transfer has a fresh idempotency key.
Its metadata, though, is one JSON object in ghz v0.120.0 (the latest release; an array is
refused), while the service wants the token of the source wallet's owner. So the metadata
is a template choosing the token by the same request number, with S source owners and
message i paid from owner i mod S (K a multiple of S). ghz parses that template on every
call, so it must stay short: the tokens (S of ~450 bytes) are in ghz's environment,
`BENCH_TOKEN_<i>`, and the template only names one, ``env (printf `BENCH_TOKEN_%d` (mod
.RequestNumber S))`` (Sprig's `env`; a template listing the tokens themselves cost ghz
about a third of the machine). A metadata file's tokens are in the JSON file beside it
(`<name>.tokens.json`), which run_ghz passes on. S = 128 keeps concurrent calls (up to
128 in flight, consecutive numbers) on different source wallets, so source rows are not
what transfers queue on.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
from pathlib import Path

from bench.measurement import Measurement
from bench.seed import CURRENCY, SeededWallet

GHZ_VERSION = "v0.120.0"
PROTOSET = Path(__file__).resolve().parent.parent / "gen" / "descriptors" / "wallet.pb"
SERVICE = "wallet.transaction.v1.TransactionService"
SOURCES = 128  # source owners per data file (see the module docstring)
MESSAGES = 512  # data array length, a multiple of SOURCES
BATCH_SEED = 2  # the batch payers' sample (list_transactions_files reads their histories)
_CLOSED_BY_GHZ = "use of closed network connection"


def ghz_path() -> Path:
    return Path(__file__).resolve().parent.parent / ".tools" / "ghz"


TOKEN_VARIABLE = "BENCH_TOKEN_"  # noqa: S105 (a variable name prefix)


def write_metadata(path: Path, tokens: list[str]) -> Path:
    """A metadata template choosing token (request number mod len(tokens)), and the
    tokens beside it (module docstring)."""
    chosen = f"env (printf `{TOKEN_VARIABLE}%d` (mod .RequestNumber {len(tokens)}))"
    path.write_text(json.dumps({"authorization": f"Bearer {{{{{chosen}}}}}"}))
    _tokens_file(path).write_text(json.dumps(tokens))
    return path


def _tokens_file(metadata: Path) -> Path:
    return metadata.with_suffix(".tokens.json")


def _token_environment(metadata: Path) -> dict[str, str]:
    tokens = json.loads(_tokens_file(metadata).read_text())
    return {f"{TOKEN_VARIABLE}{i}": token for i, token in enumerate(tokens)}


def transfer_files(
    wallets: list[SeededWallet],
    shape: str,
    work_dir: Path,
    seed: int = 1,
    payees: list[SeededWallet] | None = None,
) -> tuple[Path, Path]:
    """(data, metadata) files for CreateTransfer; hot: every transfer pays wallet n=1;
    cross: every transfer pays one of `payees` (another database's wallets)."""
    rng = random.Random(seed)  # noqa: S311 - reproducible load, not secrets
    merchant = wallets[0]
    payers = wallets[1:] if shape == "hot" else wallets
    sources = rng.sample(payers, SOURCES)
    messages = []
    for i in range(MESSAGES):
        source = sources[i % SOURCES]
        if shape == "hot":
            destination = merchant
        elif shape == "cross":
            assert payees, "cross-database transfers need the other database's wallets"
            destination = rng.choice(payees)
        else:
            destination = rng.choice(wallets)
            while destination.n == source.n:
                destination = rng.choice(wallets)
        messages.append(
            {
                "request_id": "{{newUUID}}",
                "source_wallet_id": source.wallet_id,
                "destination_wallet_id": destination.wallet_id,
                "amount": {"currency": CURRENCY, "amount": 1},
            }
        )
    data = work_dir / f"ghz-transfer-{shape}.json"
    data.write_text(json.dumps(messages))
    return data, write_metadata(
        work_dir / f"ghz-transfer-{shape}-metadata.json", [s.token for s in sources]
    )


def batch_transfer_files(
    wallets: list[SeededWallet], batch: int, work_dir: Path, seed: int = BATCH_SEED
) -> tuple[Path, Path]:
    """(data, metadata) files for BatchCreateTransfers: each message is `batch` transfers
    from one owner's wallet to random others, each item with its own fresh key."""
    rng = random.Random(seed)  # noqa: S311 - reproducible load, not secrets
    sources = batch_sources(wallets, rng)
    messages = []
    for i in range(MESSAGES):
        source = sources[i % SOURCES]
        items = []
        for _ in range(batch):
            destination = rng.choice(wallets)
            while destination.n == source.n:
                destination = rng.choice(wallets)
            items.append(
                {
                    "request_id": "{{newUUID}}",
                    "source_wallet_id": source.wallet_id,
                    "destination_wallet_id": destination.wallet_id,
                    "amount": {"currency": CURRENCY, "amount": 1},
                }
            )
        messages.append({"requests": items})
    data = work_dir / f"ghz-transfer-batch{batch}.json"
    data.write_text(json.dumps(messages))
    return data, write_metadata(
        work_dir / f"ghz-transfer-batch{batch}-metadata.json", [s.token for s in sources]
    )


def batch_sources(
    wallets: list[SeededWallet], rng: random.Random | None = None
) -> list[SeededWallet]:
    """The owners who pay in batches: they have the longest histories after the run."""
    return (rng or random.Random(BATCH_SEED)).sample(wallets, SOURCES)  # noqa: S311


def list_transactions_files(
    wallets: list[SeededWallet], work_dir: Path, page_size: int = 50
) -> tuple[Path, Path]:
    """(data, metadata) files for ListTransactions: each batch payer reads the first
    page of their history (`page_size` items: each has booked more than that by then)."""
    readers = batch_sources(wallets)
    data = work_dir / "ghz-list-transactions.json"
    data.write_text(json.dumps([{"page_size": page_size} for _ in readers]))
    return data, write_metadata(
        work_dir / "ghz-list-transactions-metadata.json", [w.token for w in readers]
    )


def get_wallet_files(wallets: list[SeededWallet], work_dir: Path) -> tuple[Path, Path]:
    """(data, metadata) files for GetWallet: each owner reads their own wallet."""
    readers = wallets[:SOURCES]
    data = work_dir / "ghz-get-wallet.json"
    data.write_text(json.dumps([{"wallet_id": w.wallet_id} for w in readers]))
    return data, write_metadata(
        work_dir / "ghz-get-wallet-metadata.json", [w.token for w in readers]
    )


def run_ghz(
    *,
    name: str,
    workload: str,
    shape: str,
    target: str,
    method: str,
    data: Path,
    metadata: Path,
    concurrency: int,
    seconds: float,
    work_dir: Path,
) -> Measurement:
    """Run ghz for `seconds` at `concurrency`; its JSON report is kept beside the results."""
    report = work_dir / f"{name}.ghz.json"
    command = [
        str(ghz_path()),
        "--insecure",
        f"--protoset={PROTOSET}",
        f"--call={SERVICE}.{method}",
        f"--data-file={data}",
        f"--metadata-file={metadata}",
        f"--concurrency={concurrency}",
        # Several HTTP/2 connections, so Envoy's worker threads all get some.
        f"--connections={min(concurrency, 4)}",
        f"--duration={seconds}s",
        "--timeout=20s",
        "--format=json",
        f"--output={report}",
        target,
    ]
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=seconds + 120,
        check=False,
        env={**os.environ, **_token_environment(metadata)},
    )
    if not report.exists():
        raise RuntimeError(f"ghz failed ({result.returncode}): {result.stderr.strip()}")
    return parse_report(
        json.loads(report.read_text()),
        name=name,
        workload=workload,
        shape=shape,
        concurrency=concurrency,
        seconds=seconds,
    )


def parse_report(
    report: dict[str, object],
    *,
    name: str,
    workload: str,
    shape: str,
    concurrency: int,
    seconds: float,
) -> Measurement:
    """ghz's JSON: counts, rps, latencies in nanoseconds, status and error distributions."""
    percentiles: dict[int, float] = {}
    for item in _list(report.get("latencyDistribution")):
        if isinstance(item, dict):
            percentiles[int(item["percentage"])] = float(item["latency"]) / 1e6
    statuses = {
        str(k): int(_number(v)) for k, v in _dict(report.get("statusCodeDistribution")).items()
    }
    error_kinds = {
        str(k): int(_number(v)) for k, v in _dict(report.get("errorDistribution")).items()
    }
    count = int(_number(report.get("count")))
    # At the end of --duration ghz closes its connections under the calls still in flight
    # and counts them as Unavailable "use of closed network connection": at most one per
    # worker, never an answer of ours. They are reported apart, not as errors.
    cut = sum(n for kind, n in error_kinds.items() if _CLOSED_BY_GHZ in kind)
    if 0 < cut <= concurrency:
        error_kinds = {k: n for k, n in error_kinds.items() if _CLOSED_BY_GHZ not in k}
        statuses["Unavailable"] = statuses.get("Unavailable", 0) - cut
        if statuses["Unavailable"] <= 0:
            del statuses["Unavailable"]
        statuses["cut-at-end-by-ghz"] = cut
    not_ok = sum(n for code, n in statuses.items() if code not in ("OK", "cut-at-end-by-ghz"))
    notes = "; ".join(f"{n} x {kind}" for kind, n in sorted(error_kinds.items())[:5])
    ok = statuses.get("OK", 0)
    total_seconds = _number(report.get("total")) / 1e9 or seconds
    return Measurement(
        name=name,
        tool="ghz",
        workload=workload,
        shape=shape,
        concurrency=concurrency,
        seconds=round(total_seconds, 3),
        requests=count,
        # Successful calls per second: failures do not count as throughput.
        throughput=ok / total_seconds if total_seconds else 0.0,
        errors=max(not_ok, sum(error_kinds.values())),
        p50_ms=percentiles.get(50),
        p95_ms=percentiles.get(95),
        p99_ms=percentiles.get(99),
        mean_ms=_number(report.get("average")) / 1e6,
        statuses=statuses,
        notes=notes,
    )


def _list(value: object) -> list[object]:
    return value if isinstance(value, list) else []


def _dict(value: object) -> dict[object, object]:
    return value if isinstance(value, dict) else {}


def _number(value: object) -> float:
    return float(value) if isinstance(value, int | float) else 0.0
