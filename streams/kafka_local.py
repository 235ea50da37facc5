"""The local Apache Kafka broker for development and tests (`strata kafka …`).

A thin wrapper around ``deploy/kafka/kafka.sh``, which fetches Kafka's jars
from Maven Central into a cache outside the repository and runs a single-node
KRaft broker on 127.0.0.1 without Docker.  The client port comes from the
``kafka_bootstrap`` setting; everything else the script needs (cache, data
dir, heap, …) it reads from its own ``STRATA_KAFKA_*`` variables, passed
through unchanged.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO, Mapping

from strata.streams.config import Settings

# The repository checkout holds the script; with `pip install -e .` this file
# stays in the checkout, so the path resolves there too.
SCRIPT = Path(__file__).resolve().parent.parent / "deploy" / "kafka" / "kafka.sh"

COMMANDS = ("start", "stop", "status", "lag", "fetch", "reset")
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")

# exit status of `kafka.sh status` when the broker is stopped
STOPPED = 3


def bootstrap_address(bootstrap: str) -> tuple[str, int]:
    """The first ``host:port`` of a bootstrap list, as (host, port)."""
    first = bootstrap.split(",")[0].strip()
    host, _, port = first.rpartition(":")
    if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"{first!r} is not host:port")
    return host, int(port)


def _pump(source: IO[str], sink_name: str, into: list[str]) -> None:
    """Copy a child's stream line by line to our stdout/stderr, keeping a copy."""
    for line in source:
        into.append(line)
        sink = getattr(sys, sink_name)
        try:
            sink.write(line)
            sink.flush()
        except (ValueError, OSError):  # our stream closed: keep collecting
            pass
    source.close()


def run(
    command: str,
    *args: str,
    port: int | None = None,
    env: Mapping[str, str] | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess:
    """Run ``kafka.sh COMMAND ARGS…``, streaming its output to the terminal.

    ``port`` sets the broker's client port (``STRATA_KAFKA_PORT``; the
    controller uses port + 1 unless ``STRATA_KAFKA_CONTROLLER_PORT`` is set).
    ``env`` holds extra variables laid over a copy of the current environment
    (e.g. ``STRATA_KAFKA_DIR`` for a throwaway data dir).  The returned
    CompletedProcess also carries the output as ``stdout`` / ``stderr`` text.
    With ``check`` a non-zero exit raises CalledProcessError — pass
    ``check=False`` for ``status``, which exits 3 when the broker is stopped.
    """
    if not SCRIPT.is_file():
        raise FileNotFoundError(
            f"{SCRIPT} not found: the local Kafka script ships with the source checkout "
            "(install Strata with `pip install -e .` from a clone)"
        )
    child_env = dict(os.environ)
    if env:
        child_env.update({k: str(v) for k, v in env.items()})
    if port is not None:
        child_env["STRATA_KAFKA_PORT"] = str(int(port))
    argv = ["bash", str(SCRIPT), command, *args]
    out: list[str] = []
    err: list[str] = []
    with subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=child_env,
        text=True,
        encoding="utf-8",
        errors="replace",
        bufsize=1,
    ) as proc:
        pumps = [
            threading.Thread(target=_pump, args=(proc.stdout, "stdout", out), daemon=True),
            threading.Thread(target=_pump, args=(proc.stderr, "stderr", err), daemon=True),
        ]
        for t in pumps:
            t.start()
        try:
            returncode = proc.wait()
        except BaseException:  # Ctrl-C: let the script finish its own cleanup
            proc.terminate()
            proc.wait()
            raise
        for t in pumps:
            t.join()
    result = subprocess.CompletedProcess(argv, returncode, "".join(out), "".join(err))
    if check:
        result.check_returncode()
    return result


def _kafka_command(args: argparse.Namespace, settings: Settings) -> int:
    env = {"STRATA_PARTITIONS": str(settings.partitions)}
    extra: list[str] = []
    if args.action == "fetch":
        port = None
    else:
        try:
            host, port = bootstrap_address(settings.kafka_bootstrap)
        except ValueError as exc:
            print(f"strata kafka: STRATA_KAFKA_BOOTSTRAP: {exc}", file=sys.stderr)
            return 2
        if host not in LOCAL_HOSTS:
            print(
                f"strata kafka: STRATA_KAFKA_BOOTSTRAP is {settings.kafka_bootstrap}; the local broker only "
                "runs on 127.0.0.1 (set STRATA_KAFKA_BOOTSTRAP=127.0.0.1:PORT)",
                file=sys.stderr,
            )
            return 2
        script_port = os.environ.get("STRATA_KAFKA_PORT")
        if script_port is not None and script_port.strip() != str(port):
            print(
                f"strata kafka: STRATA_KAFKA_PORT={script_port} disagrees with STRATA_KAFKA_BOOTSTRAP="
                f"{settings.kafka_bootstrap}; `strata kafka` runs the broker at the port of STRATA_KAFKA_BOOTSTRAP "
                f"so that workers find it (set STRATA_KAFKA_BOOTSTRAP=127.0.0.1:{script_port.strip()})",
                file=sys.stderr,
            )
            return 2
    if args.action == "lag":
        extra.append(args.group or settings.app_id)
    elif args.group:
        print(f"strata kafka {args.action}: unexpected argument {args.group!r}", file=sys.stderr)
        return 2
    try:
        return run(args.action, *extra, port=port, env=env, check=False).returncode
    except FileNotFoundError as exc:
        print(f"strata kafka: {exc}", file=sys.stderr)
        return 1


def register(subparsers) -> None:
    """Add ``strata kafka start|stop|status|lag [GROUP]|fetch|reset``."""
    p = subparsers.add_parser(
        "kafka",
        help="local single-node Apache Kafka on 127.0.0.1 (no Docker)",
        description=(
            "Run a real Apache Kafka (KRaft, single node) on 127.0.0.1 at the port of "
            "STRATA_KAFKA_BOOTSTRAP. The jars are fetched once from Maven Central (needs java 17+ "
            "and mvn). Settings: STRATA_KAFKA_DIR, STRATA_KAFKA_CACHE, STRATA_KAFKA_HEAP, … "
            f"(see `bash {SCRIPT.relative_to(SCRIPT.parents[2])} help`)."
        ),
    )
    p.add_argument(
        "action",
        choices=COMMANDS,
        help="start (fetch, format once, wait until ready) | stop | status (exit 3 when stopped) | "
        "lag [GROUP] (consumer group offsets and lag) | fetch (download the jars) | reset (stop, delete data)",
    )
    p.add_argument("group", nargs="?", help="lag: the consumer group (default: STRATA_APP_ID)")
    p.set_defaults(func=_kafka_command)
