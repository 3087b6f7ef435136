"""Local mesh commands (behind `make run` and `make admin`):

python -m services.localmesh run                start everything on localhost, until Ctrl-C
python -m services.localmesh status             what `run`'s supervisor sees: pid, state, restarts
python -m services.localmesh grant-admin EMAIL  give a registered user the admin role
python -m services.localmesh audit              check every invariant of the ledger
python -m services.localmesh move-shard 200-255 --to 2
                                                move logical shards to the second ledger
                                                database, while the mesh runs
python -m services.localmesh traces [--last N]  print the last traces (WALLET_TRACES=1 make run)
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import shutil
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from services.catalogue import TRANSACTION, USER, ServiceSpec
from services.localmesh.mesh import STATUS_FILE, Mesh, MeshConfig, MeshError
from services.localmesh.otlp_sink import OtlpSink, load_spans, render_traces
from services.localmesh.postgres import PostgresError
from services.localmesh.processes import ProcessError, free_port
from services.localmesh.redis import RedisError
from services.localmesh.supervisor import State, read_status, render_status

log = logging.getLogger("services.localmesh")
TRACES_FILE = "traces.jsonl"


class _StopRequested(Exception):
    """Raised in the main thread by SIGINT or SIGTERM: ends `run` cleanly at any stage."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m services.localmesh",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("run", help="start the whole mesh on localhost until Ctrl-C")
    commands.add_parser("status", help="print the state of every process of `run`")
    grant = commands.add_parser("grant-admin", help="give a registered user the admin role")
    grant.add_argument("email")
    commands.add_parser("audit", help="check every invariant of the ledger")
    move = commands.add_parser("move-shard", help="move logical shards to another database")
    move.add_argument("shards")
    move.add_argument("--to", required=True)
    traces = commands.add_parser("traces", help="print the last recorded traces as trees")
    traces.add_argument("--last", type=int, default=5)
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    try:
        config = MeshConfig.for_development()
        if args.command == "grant-admin":
            return service_command(config, USER, "grant-admin", args.email)
        if args.command == "audit":
            return service_command(config, TRANSACTION, "audit")
        if args.command == "move-shard":
            return service_command(config, TRANSACTION, "move-shard", args.shards, "--to", args.to)
        if args.command == "traces":
            return show_traces(config, args.last)
        if args.command == "status":
            return show_status(config)
        return run(config)
    except (MeshError, ProcessError, PostgresError, RedisError, TimeoutError) as error:
        # Expected failures (a busy port, a service that does not start): the message
        # says what to do or which log to read; a traceback would only hide it.
        print(f"error: {error}", file=sys.stderr)
        return 1


def run(config: MeshConfig) -> int:
    """Start the mesh, print how to use it, keep it running (the supervisor restarts
    whatever exits), and stop it all on Ctrl-C or SIGTERM.

    Traces: WALLET_TRACES=1 starts a small OTLP receiver that keeps every span in
    <run folder>/traces.jsonl (read them with `python -m services.localmesh traces`);
    WALLET_OTLP_ENDPOINT=host:port sends them to a collector of your own instead.
    """
    sink: OtlpSink | None = None
    if os.environ.get("WALLET_OTLP_ENDPOINT"):
        config = dataclasses.replace(config, otlp_endpoint=os.environ["WALLET_OTLP_ENDPOINT"])
    elif os.environ.get("WALLET_TRACES", "") not in ("", "0"):
        config.run_dir.mkdir(parents=True, exist_ok=True)
        sink = OtlpSink(free_port(), config.run_dir / TRACES_FILE)
        sink.start()
        config = dataclasses.replace(config, otlp_endpoint=f"127.0.0.1:{sink.port}")
        log.info("tracing to %s", config.run_dir / TRACES_FILE)
    mesh = Mesh(dataclasses.replace(config, supervise=True))
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        if not stop.is_set():
            stop.set()
            # Interrupt whatever the main thread is doing, start-up included.
            raise _StopRequested

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    try:
        mesh.start()
        _print_welcome(mesh)
        # The supervisor logs every exit and restart; this adds a line whenever the
        # overall picture changes (`make status` prints the whole table).
        shown = ""
        while not stop.wait(timeout=2.0):
            summary = mesh.supervisor.summary()
            if summary != shown:
                log.info("status: %s", summary)
                shown = summary
    except _StopRequested:
        pass
    finally:
        # A second Ctrl-C must not interrupt the orderly stop and leave orphans behind.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        log.info("stopping the mesh")
        mesh.stop()
        if sink is not None:
            sink.stop()
        log.info("stopped; data kept in %s", config.run_dir)
    return 0


def show_status(config: MeshConfig) -> int:
    """Prints the supervisor's status file of the run folder. Exit code 0 only if a
    mesh runs there with every process running (for scripts that wait for it)."""
    report = read_status(config.run_dir / STATUS_FILE)
    if report is None:
        print(f"no mesh is running from {config.run_dir} (make run starts one)")
        return 1
    print(render_status(report))
    all_running = all(row.state is State.RUNNING for row in report.rows)
    return 0 if report.launcher_running and all_running else 1


def show_traces(config: MeshConfig, last: int) -> int:
    """Prints the last traces `make run` recorded (WALLET_TRACES=1) as trees."""
    spans = load_spans(config.run_dir / TRACES_FILE)
    if not spans:
        print(f"no traces in {config.run_dir / TRACES_FILE}: start with WALLET_TRACES=1 make run")
        return 1
    print(render_traces(spans, last=last))
    return 0


def _print_welcome(mesh: Mesh) -> None:
    port = mesh.config.envoy_port
    grpcurl = "grpcurl"
    if shutil.which("grpcurl") is None:
        beside_python = Path(sys.executable).parent / "grpcurl"
        if beside_python.exists():
            grpcurl = os.path.relpath(beside_python)
    body = '{"email":"ada@example.com","password":"correct horse battery","display_name":"Ada"}'
    print(
        f"""
Wallet mesh is running.
  REST:         {mesh.edge_url}
  gRPC:         {mesh.edge_grpc_target} (plaintext)
  Envoy admin:  {mesh.admin_url}
  Logs:         {mesh.logs_dir}
  Status:       make status (a process that exits is started again)

Try:
  curl -s localhost:{port}/v1/users -d '{body}'
  {grpcurl} -plaintext localhost:{port} list
  (then log in, open a wallet and top it up with the sandbox card pm_card_visa:
   the README's "Payments" section has the calls)

Ctrl-C stops everything.
""",
        flush=True,
    )


def service_command(config: MeshConfig, spec: ServiceSpec, *args: str) -> int:
    """`python -m <service> <args>` with the service's development environment
    (grant-admin, audit, move-shard); PostgreSQL is started for the command if it is not running.

    The servers are those of the run folder: the ports its mesh was started with
    (mesh.json), and the port its PostgreSQL really listens on if it runs."""
    config = config.with_recorded_ports()
    mesh = Mesh(config)
    listening = mesh.postgres.listening_port()
    if listening is not None and listening != config.postgres_port:
        mesh = Mesh(dataclasses.replace(config, postgres_port=listening))
    if not mesh.postgres.is_initialized:
        print(
            f"no database in {config.run_dir} yet: start the mesh first (make run)",
            file=sys.stderr,
        )
        return 1
    started_here = not mesh.postgres.is_running()
    if started_here:
        log.info("starting PostgreSQL for this command")
        mesh.postgres.start()
    try:
        result = mesh.run_command(spec, *args, capture=False, timeout=3600)
    finally:
        if started_here:
            mesh.postgres.stop()
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
