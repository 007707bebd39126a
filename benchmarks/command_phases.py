"""`mlc ARGS` with phase marks, for benchmarks/command.py (run as ``python -m
benchmarks.command_phases ARGS`` with ``MLC_BENCH_PHASES`` naming the JSON file to write).

Each mark is the wall time since the process started (from ``/proc``, so the interpreter's own
start counts) and this process's CPU time. The marks wrap the functions the command calls:
reading Prefect's settings (the first import of Prefect), loading the flow, waiting for the
kept server, and the flow's body; the command itself is the
installed one, unchanged.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

marks: dict[str, Any] = {}


def _since_process_start() -> float:
    stat = Path("/proc/self/stat").read_text()
    start_ticks = int(stat[stat.rindex(")") + 2 :].split()[19])
    uptime = float(Path("/proc/uptime").read_text().split()[0])
    return uptime - start_ticks / os.sysconf("SC_CLK_TCK")


def mark(name: str) -> None:
    marks[name] = {"wall": _since_process_start(), "cpu": time.process_time()}


def _instrument() -> None:
    """Wrap what the command calls, so each phase's end is marked."""
    import flows.common
    import flows.kept_server

    load_flow = flows.common.load_flow
    wait_until_healthy = flows.kept_server.wait_until_healthy

    def marked_load_flow(entrypoint: str) -> Any:
        mark("load-flow-start")
        flow = load_flow(entrypoint)
        mark("load-flow-end")
        body = flow.fn

        def marked_body(*args: Any, **kwargs: Any) -> Any:
            mark("flow-body-start")
            try:
                return body(*args, **kwargs)
            finally:
                mark("flow-body-end")

        flow.fn = marked_body
        return flow

    def marked_wait(*args: Any) -> None:
        wait_until_healthy(*args)
        mark("wait-end")

    prefect_api_configured = flows.kept_server.prefect_api_configured

    def marked_prefect_api_configured() -> bool:
        mark("prefect-check-start")
        configured = prefect_api_configured()
        mark("prefect-check-end")
        return configured

    flows.common.load_flow = marked_load_flow
    flows.kept_server.wait_until_healthy = marked_wait
    flows.kept_server.prefect_api_configured = marked_prefect_api_configured


def main() -> None:
    mark("interpreter")
    from flows.cli import main as mlc

    mark("cli-imported")
    _instrument()
    sys.argv = ["mlc", *sys.argv[1:]]
    try:
        mlc()
    finally:
        mark("main-end")
        marks.setdefault("wait-end", marks.get("load-flow-end"))
        marks["modules"] = {
            "count": len(sys.modules),
            "tensorflow": "tensorflow" in sys.modules,
            "keras": "keras" in sys.modules,
            "prefect_server": any(name.startswith("prefect.server.api") for name in sys.modules),
        }
        Path(os.environ["MLC_BENCH_PHASES"]).write_text(json.dumps(marks))


if __name__ == "__main__":
    main()
