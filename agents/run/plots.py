"""PNG plots of a run (or several): task reward and KL per iteration per model, reward vs KL.

Reads the metric rows written by :class:`agents.run.run_log.RunLog` (names:
:mod:`agents.run.metrics`): per model ``M``, ``M/score`` and ``M/kl`` every iteration and
``eval/M/reward``, ``eval/M/kl`` at evaluations.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from agents.run.metrics import eval_key, model_key  # noqa: E402

Rows = list[dict[str, Any]]


def _series(rows: Rows, key: str) -> tuple[list[int], list[float]]:
    xs = [r["iteration"] for r in rows if isinstance(r.get(key), (int, float))]
    ys = [r[key] for r in rows if isinstance(r.get(key), (int, float))]
    return xs, ys


def plot_runs(runs: dict[str, tuple[Rows, Sequence[str]]], out_dir: str | Path) -> list[Path]:
    """Plot each run's models into ``out_dir``; ``runs`` maps a run label to (rows, models).

    Returns the written files: ``reward.png``, ``kl.png``, ``reward_vs_kl.png``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    curves = [
        (f"{label}/{m}" if len(runs) > 1 else m, rows, m)
        for label, (rows, models) in runs.items()
        for m in models
    ]
    written = []
    for metric, ylabel, fname in (
        ("score", "task reward", "reward.png"),
        ("kl", "KL to reference", "kl.png"),
    ):
        fig, ax = plt.subplots(figsize=(7, 4))
        for name, rows, m in curves:
            xs, ys = _series(rows, model_key(m, metric))
            (line,) = ax.plot(xs, ys, label=f"{name} (train)", alpha=0.6)
            ekey = eval_key(m, "reward" if metric == "score" else "kl")
            ex, ey = _series(rows, ekey)
            if ex:
                ax.plot(ex, ey, "o-", color=line.get_color(), label=f"{name} (eval, alone)")
        ax.set_xlabel("iteration")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out_dir / fname, dpi=110)
        plt.close(fig)
        written.append(out_dir / fname)

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, rows, m in curves:
        _, kl = _series(rows, eval_key(m, "kl"))
        _, rw = _series(rows, eval_key(m, "reward"))
        source = "eval"
        if not kl:
            (_, kl), (_, rw), source = (
                _series(rows, model_key(m, "kl")),
                _series(rows, model_key(m, "score")),
                "train",
            )
        ax.plot(kl, rw, "o-", label=f"{name} ({source})")
    ax.set_xlabel("KL to reference")
    ax.set_ylabel("task reward")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_dir / "reward_vs_kl.png", dpi=110)
    plt.close(fig)
    written.append(out_dir / "reward_vs_kl.png")
    return written
