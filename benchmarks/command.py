"""The `mlc` command's own cost (not a test): a no-op `mlc score` end to end, as cron runs it.

On the embedded defaults (SQLite, a local folder store, no ``PREFECT_API_URL``) it makes a
store of ``--images`` (default 4,000) tiny JPEGs, all scored already by an untrained model of
the default architecture (scoring does not depend on the weights, and listing does not depend
on the images' sizes), then times, each run a new process of the installed `mlc`:

- ``mlc models`` (no flow, no Prefect): the command's floor, for the ratios;
- a no-op ``mlc score`` on the **kept** Prefect server: **cold** (none running: the command
  starts it; first with a new Prefect database, which Prefect migrates, then with the one the
  first start left) and **warm** (the server kept by the command before);
- the same with ``MLC_ORCHESTRATION__KEEP_PREFECT_SERVER=false`` (a temporary server per
  command, Prefect's ephemeral mode: what every job command paid before), first with a new
  Prefect database, then with the one it left;
- where the time of one cold and one warm command goes: interpreter start, mlc's imports,
  Prefect's and the flow's imports, waiting for the server, Prefect's work before the flow's
  body, the body (listing, comparing, the run rows), and what follows it (Prefect's finish,
  log delivery, interpreter exit); and whether TensorFlow or Prefect's server modules were
  imported (neither should be).

Wall times, the command's own CPU (with its children) and the kept server's CPU. Run it on a
quiet machine if you can: wall times grow with the load (printed), CPU times much less.

Usage::

    python -m benchmarks.command [--images 4000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.common import process_cpu_seconds

MLC = Path(sys.executable).parent / "mlc"
TARGET_SECONDS = 5.0
KEEP_OFF = {"MLC_ORCHESTRATION__KEEP_PREFECT_SERVER": "false"}
# (mark that ends a phase, what the phase is); each phase starts where the one before ended.
PHASES = [
    ("interpreter", "interpreter start"),
    ("cli-imported", "mlc's imports (CLI, settings, database, store)"),
    ("prefect-check-start", "the command's checks (arguments, database, champion)"),
    ("prefect-check-end", "Prefect's import (to read its settings: is PREFECT_API_URL set?)"),
    ("load-flow-start", "the kept server's record read (and the server started, when cold)"),
    ("load-flow-end", "the flow's imports (Prefect's engine, mlc's flow and jobs)"),
    ("wait-end", "waiting for the kept server to answer"),
    ("flow-body-start", "Prefect before the flow's body (run created, states, context)"),
    ("flow-body-end", "the flow's body: listing, comparing, run rows, artifacts"),
    ("main-end", "Prefect after the body (final states), the report printed"),
    ("exit", "interpreter exit (log and event delivery, teardown)"),
]


@dataclass
class Measured:
    seconds: float
    cpu_seconds: float
    server_cpu_seconds: float
    stdout: str


def _prepare(home: Path, images: int) -> None:
    """A champion and ``images`` tiny images under ``home``, all scored (in this process)."""
    os.environ["MLC_HOME"] = str(home)
    from mlc_core.jobs.scoring import score_images
    from mlc_core.jobs.workspace import open_workspace
    from mlc_core.settings import load_settings
    from tests.jobs.scoring_support import put_tiny_images, register_champion

    workspace = open_workspace(load_settings())
    try:
        register_champion(workspace)
        put_tiny_images(workspace, images)
        report = score_images(workspace)
    finally:
        workspace.close()
    if report.scored != images:
        raise SystemExit(f"expected {images} images scored while preparing, got {report.scored}")


def _environment(home: Path, folder: Path) -> dict[str, str]:
    environment = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("MLC_", "PREFECT_"))
    }
    environment.update(
        MLC_HOME=str(home),
        PREFECT_HOME=str(folder / "prefect-client"),
        TF_CPP_MIN_LOG_LEVEL="2",
        COLUMNS="200",
    )
    return environment


def _kept_server_cpu(home: Path) -> float:
    from flows.kept_server import is_running, recorded_server, server_folder

    server = recorded_server(server_folder(home))
    if server is None or not is_running(server):
        return 0.0
    return process_cpu_seconds(server.pid)


def _measure(command: list[str], environment: dict[str, str], home: Path) -> Measured:
    """Run ``command`` to its end; its wall time, its CPU with its children's, the kept
    server's CPU meanwhile (a server the command starts counts from zero)."""
    server_before = _kept_server_cpu(home)
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    completed = subprocess.run(command, env=environment, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    if completed.returncode != 0:
        raise SystemExit(f"{command} failed:\n{completed.stdout}\n{completed.stderr}")
    cpu = (children.ru_utime - children_before.ru_utime) + (
        children.ru_stime - children_before.ru_stime
    )
    server = _kept_server_cpu(home)
    server_cpu = server - server_before if server >= server_before else server
    return Measured(seconds, cpu, server_cpu, completed.stdout + completed.stderr)


def _stop_kept_server(environment: dict[str, str]) -> None:
    subprocess.run([str(MLC), "server", "stop"], env=environment, capture_output=True, check=True)


def _timed_runs(home: Path, folder: Path, repeats: int) -> dict[str, list[Measured]]:
    environment = _environment(home, folder)
    score = [str(MLC), "score"]
    found: dict[str, list[Measured]] = {"models": [], "first": [], "cold": [], "warm": []}
    found["temporary-first"], found["temporary"] = [], []
    for _ in range(repeats):
        found["models"].append(_measure([str(MLC), "models"], environment, home))
    found["first"].append(_measure(score, environment, home))
    for _ in range(repeats):
        found["warm"].append(_measure(score, environment, home))
    for _ in range(repeats):
        _stop_kept_server(environment)
        found["cold"].append(_measure(score, environment, home))
    _stop_kept_server(environment)
    temporary = {**environment, **KEEP_OFF}
    found["temporary-first"].append(_measure(score, temporary, home))
    for _ in range(repeats):
        found["temporary"].append(_measure(score, temporary, home))
    for measured in found["warm"]:
        if "listed" not in measured.stdout or "scored 0," not in measured.stdout:
            raise SystemExit(f"the no-op score did not report nothing scored:\n{measured.stdout}")
    return found


def _phases(home: Path, folder: Path) -> dict[str, dict[str, float]]:
    """The phase marks of a cold and a warm no-op score, and the modules each imported."""
    environment = _environment(home, folder)
    command = [sys.executable, "-m", "benchmarks.command_phases", "score"]
    found = {}
    _stop_kept_server(environment)
    for name in ("cold", "warm"):
        marks_file = folder / f"phases-{name}.json"
        started = time.perf_counter()
        subprocess.run(
            command,
            env={**environment, "MLC_BENCH_PHASES": str(marks_file)},
            capture_output=True,
            check=True,
        )
        marks = json.loads(marks_file.read_text())
        # The marks count from the process's start, which is when it was spawned.
        marks["exit"] = {"wall": time.perf_counter() - started}
        found[name] = marks
    _stop_kept_server(environment)
    return found


def _print_phases(phases: dict[str, dict[str, Any]]) -> None:
    print("\nwhere the time of one no-op `mlc score` goes (wall s, CPU s of the command):")
    print(f"  {'phase':<74} {'cold':>12} {'warm':>12}")
    previous = {name: {"wall": 0.0, "cpu": 0.0} for name in phases}
    for mark, label in PHASES:
        cells = []
        for name, marks in phases.items():
            now = marks.get(mark, previous[name])
            wall = now["wall"] - previous[name]["wall"]
            cpu = now.get("cpu", previous[name]["cpu"]) - previous[name]["cpu"]
            cells.append(f"{wall:5.2f} ({cpu:4.2f})" if mark != "exit" else f"{wall:5.2f}      ")
            previous[name] = {"wall": now["wall"], "cpu": now.get("cpu", previous[name]["cpu"])}
        print(f"  {label:<74} {cells[0]:>12} {cells[1]:>12}")
    for name, marks in phases.items():
        modules = marks["modules"]
        print(
            f"  {name}: {modules['count']} modules imported; tensorflow: "
            f"{'yes' if modules['tensorflow'] else 'no'}, keras: "
            f"{'yes' if modules['keras'] else 'no'}, prefect.server.api: "
            f"{'yes' if modules['prefect_server'] else 'no'}"
        )


def _median(runs: list[Measured], field: str) -> float:
    return statistics.median(getattr(run, field) for run in runs)


def _print_timings(found: dict[str, list[Measured]], images: int) -> None:
    print(f"\nno-op `mlc score` over {images} scored images (median of {len(found['warm'])}):")
    rows = [
        ("mlc models (no flow)", "models"),
        ("mlc score, kept server, first start (new Prefect database)", "first"),
        ("mlc score, kept server, cold (the command starts it)", "cold"),
        ("mlc score, kept server, warm (kept by the command before)", "warm"),
        ("mlc score, temporary server, first (new Prefect database)", "temporary-first"),
        ("mlc score, temporary server per command (setting off)", "temporary"),
    ]
    print(f"  {'':<62} {'wall s':>7} {'CPU s':>7} {'server CPU s':>13}")
    for label, key in rows:
        runs = found[key]
        print(
            f"  {label:<62} {_median(runs, 'seconds'):7.2f} {_median(runs, 'cpu_seconds'):7.2f} "
            f"{_median(runs, 'server_cpu_seconds'):13.2f}"
        )
    warm = _median(found["warm"], "seconds")
    models = _median(found["models"], "seconds")
    print(f"\n  warm / mlc models: {warm / models:.2f}")
    print(f"  temporary / warm: {_median(found['temporary'], 'seconds') / warm:.2f}")
    print(f"  cold / warm: {_median(found['cold'], 'seconds') / warm:.2f}")
    verdict = "reached" if warm <= TARGET_SECONDS else "not reached"
    print(f"  warm no-op score {warm:.2f} s (target <= {TARGET_SECONDS:.0f} s: {verdict})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=4000)
    parser.add_argument("--repeats", type=int, default=3)
    arguments = parser.parse_args()
    print(f"load average at start: {os.getloadavg()[0]:.1f} ({os.cpu_count()} cores)")
    with tempfile.TemporaryDirectory(prefix="mlc-bench-command-") as name:
        folder = Path(name)
        home = folder / "mlc-home"
        _prepare(home, arguments.images)
        try:
            found = _timed_runs(home, folder, arguments.repeats)
            phases = _phases(home, folder)
        finally:
            _stop_kept_server(_environment(home, folder))
    _print_timings(found, arguments.images)
    _print_phases(phases)
    print(f"\nload average at end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
