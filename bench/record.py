"""A bench's result as data: the JSON object it prints last, and with ``--save`` the same
object written to ``bench/results/<bench>/<machine kind>.json`` with what is needed to
reproduce and compare it (the command, the machine, the date, the project's commit) and the
bench's goals, which ``bench/render.py`` turns into the tables of ``docs/benchmarks.md``.
One file per bench and machine kind holds the latest result; its history is git's.
"""

from __future__ import annotations

import datetime
import json
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.machine import machine, machine_kind

__all__ = ["RESULTS", "SAVE_HELP", "Goal", "command", "commit", "emit", "goals", "result", "save"]

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
"""Where ``--save`` writes: ``<bench>/<machine kind>.json`` below it."""
SAVE_HELP = (
    "write the printed object, with the command, machine, date and commit, to "
    "bench/results/<bench>/<machine kind>.json (then: python bench/render.py)"
)

Goal = tuple[str, str, str]
"""``(metric, what it measures, goal)``: ``metric`` a key of the bench's object (``a.b`` for
a key of a nested object), ``goal`` a bound such as ``<= 2.0``, or ``report`` where the
figure is reported without one."""


def goals(table: str) -> list[Goal]:
    """:data:`Goal` rows from a table of lines ``metric | what it measures | goal`` (blank lines
    skipped): a bench's goals written once, as the page shows them."""
    rows = [line.split(" | ") for line in table.strip().splitlines() if line.strip()]
    bad = [" | ".join(r) for r in rows if len(r) != 3]
    if bad:
        raise ValueError(f"a goal row is 'metric | what | goal': {bad}")
    return [(m.strip(), what.strip(), goal.strip()) for m, what, goal in rows]


def command(argv: list[str] | None = None) -> str:
    """The command line that reproduces the run: ``python bench/<x>.py <flags>``, without
    ``--save`` (the script's path relative to the checkout where it lies in it)."""
    argv = list(sys.argv if argv is None else argv)
    script = Path(argv[0]).resolve()
    shown = str(script.relative_to(ROOT)) if script.is_relative_to(ROOT) else argv[0]
    return shlex.join(["python", shown, *(a for a in argv[1:] if a != "--save")])


def commit(root: Path = ROOT) -> str:
    """``git rev-parse HEAD`` of ``root``, with ``+dirty`` when its tree has changes besides
    ``bench/results/``; ``unknown`` outside a git checkout."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(root), *args], capture_output=True, text=True, check=True
        ).stdout.strip()

    try:
        head = git("rev-parse", "HEAD")
        changed = git("status", "--porcelain", "--", ".", ":(exclude)bench/results")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if changed else "")


def _summary(doc: str | None) -> str:
    """The first paragraph of a bench's docstring, on one line."""
    return " ".join((doc or "").strip().split("\n\n")[0].split())


def result(
    metrics: dict[str, Any],
    bench: str,
    goals: list[Goal],
    doc: str | None = None,
    device: str = "cpu",
    argv: list[str] | None = None,
) -> dict[str, Any]:
    """``metrics`` with the run's ``bench``, ``summary``, ``command``, ``machine``,
    ``machine_kind``, ``date`` (ISO), ``commit`` and ``goals`` (a list: their order is the table's)."""
    return {
        **metrics,
        "bench": bench,
        "summary": _summary(doc),
        "command": command(argv),
        "machine": machine(device),
        "machine_kind": machine_kind(device),
        "date": datetime.date.today().isoformat(),
        "commit": commit(),
        "goals": [{"metric": m, "what": what, "goal": goal} for m, what, goal in goals],
    }


def save(record: dict[str, Any], results: Path | None = None) -> Path:
    """Write ``record`` (:func:`result`) to ``<results>/<bench>/<machine kind>.json``, keys
    sorted, so that a new result of the same bench and machine kind replaces the old one."""
    path = (results or RESULTS) / record["bench"] / f"{record['machine_kind']}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    return path


def emit(
    metrics: dict[str, Any],
    bench: str,
    goals: list[Goal],
    saving: bool,
    doc: str | None = None,
    device: str = "cpu",
) -> dict[str, Any]:
    """Print ``metrics`` as the run's last line of output (one JSON object); with
    ``saving``, also :func:`save` it as a result (the path goes to stderr)."""
    print(json.dumps(metrics), flush=True)
    if saving:
        path = save(result(metrics, bench, goals, doc, device))
        print(f"saved {path}", file=sys.stderr)
    return metrics
