"""REST transfers with wrk: the same transfers as gRPC, through Envoy's JSON transcoder.

wrk runs a Lua script per thread: each request takes a random seeded pair and the source
owner's token, and a distinct Idempotency-Key (run id, thread number, counter). The script's
done() prints one JSON line with the counts, status codes and latency percentiles, which is
all this module reads. wrk comes from Debian (`apt-get install wrk`); without it the REST
stage is skipped with a message.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import uuid
from pathlib import Path

from bench.measurement import Measurement
from bench.seed import CURRENCY, SeededWallet

PAIRS = 2048  # random (source, destination, token) triples the script picks from

_SCRIPT = r"""
local pairs_ = dofile("__PAIRS__")
local threads = {}
local thread_count = 0
local counter = 0
statuses = {}

function setup(thread)
  thread_count = thread_count + 1
  thread:set("id", thread_count)
  table.insert(threads, thread)
end

function init(args)
  run_id = args[1]
  math.randomseed(id * 7919 + os.time())
end

function request()
  counter = counter + 1
  local p = pairs_[math.random(#pairs_)]
  local body = string.format(
    '{"source_wallet_id":"%s","destination_wallet_id":"%s",' ..
    '"amount":{"currency":"__CURRENCY__","amount":1}}', p[1], p[2])
  return wrk.format("POST", "/v1/transfers", {
    ["authorization"] = "Bearer " .. p[3],
    ["idempotency-key"] = run_id .. "-" .. id .. "-" .. counter,
    ["content-type"] = "application/json",
  }, body)
end

function response(status, headers, body)
  local key = tostring(status)
  statuses[key] = (statuses[key] or 0) + 1
end

function done(summary, latency, requests)
  local all = {}
  for _, thread in ipairs(threads) do
    local counts = thread:get("statuses")
    for code, n in pairs(counts) do all[code] = (all[code] or 0) + n end
  end
  local parts = {}
  for code, n in pairs(all) do table.insert(parts, string.format('"%s": %d', code, n)) end
  local e = summary.errors
  io.write(string.format(
    'BENCH-JSON {"requests": %d, "duration_us": %d, "socket_errors": %d,' ..
    ' "p50_us": %d, "p95_us": %d, "p99_us": %d, "mean_us": %f, "statuses": {%s}}\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(95), latency:percentile(99), latency.mean,
    table.concat(parts, ", ")))
end
"""


def wrk_path() -> str | None:
    return shutil.which("wrk")


def ensure_wrk() -> str | None:
    """wrk, installing Debian's package when missing and we may (root or passwordless
    sudo); None (with the reason printed) when it cannot be had."""
    found = wrk_path()
    if found or os.environ.get("BENCH_NO_INSTALL"):
        return found
    if shutil.which("apt-get") is None:
        print("bench: wrk not found and apt-get is not available; skipping REST")
        return None
    prefix: list[str] = []
    if os.geteuid() != 0:
        sudo_ok = (
            shutil.which("sudo")
            and subprocess.run(["sudo", "-n", "true"], capture_output=True, check=False).returncode
            == 0
        )
        if not sudo_ok:
            print("bench: wrk not found (apt-get install wrk needs root); skipping REST")
            return None
        prefix = ["sudo", "-n"]
    print("bench: installing wrk with apt-get")
    apt = [*prefix, "env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "-q", "-y"]
    subprocess.run([*apt, "install", "--no-install-recommends", "wrk"], check=False)
    return wrk_path()


def write_script(wallets: list[SeededWallet], work_dir: Path, seed: int = 2) -> Path:
    rng = random.Random(seed)  # noqa: S311 - reproducible load, not secrets
    rows = []
    for _ in range(PAIRS):
        source, destination = rng.sample(wallets, 2)
        rows.append(f'{{"{source.wallet_id}","{destination.wallet_id}","{source.token}"}}')
    pairs_file = work_dir / "wrk-pairs.lua"
    pairs_file.write_text("return {\n" + ",\n".join(rows) + "\n}\n")
    script = work_dir / "wrk-transfer.lua"
    script.write_text(
        _SCRIPT.replace("__PAIRS__", str(pairs_file)).replace("__CURRENCY__", CURRENCY)
    )
    return script


def run_wrk(
    wrk: str, *, url: str, script: Path, concurrency: int, seconds: int, work_dir: Path
) -> Measurement:
    name = f"rest-transfer-uniform-c{concurrency}"
    command = [
        wrk,
        f"--threads={min(concurrency, 2)}",
        f"--connections={concurrency}",
        f"--duration={seconds}s",
        "--timeout=20s",
        f"--script={script}",
        url,
        "--",
        uuid.uuid4().hex[:12],
    ]
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=seconds + 120, check=False
    )
    (work_dir / f"{name}.wrk.txt").write_text(result.stdout + result.stderr)
    line = next((s for s in result.stdout.splitlines() if s.startswith("BENCH-JSON ")), None)
    if result.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({result.returncode}): {result.stderr.strip()}")
    report = json.loads(line.removeprefix("BENCH-JSON "))
    statuses = {str(k): int(v) for k, v in report["statuses"].items()}
    duration = report["duration_us"] / 1e6
    ok = statuses.get("200", 0)
    return Measurement(
        name=name,
        tool="wrk",
        workload="rest-transfer",
        shape="uniform",
        concurrency=concurrency,
        seconds=round(duration, 3),
        requests=int(report["requests"]),
        throughput=ok / duration if duration else 0.0,
        errors=int(report["requests"]) - ok + int(report["socket_errors"]),
        p50_ms=report["p50_us"] / 1000,
        p95_ms=report["p95_us"] / 1000,
        p99_ms=report["p99_us"] / 1000,
        mean_ms=report["mean_us"] / 1000,
        statuses=statuses,
    )
