"""Aggregate a sweep (``SWEEP/<method>/seed_<s>/``, as ``scripts/sweep.py`` writes) into
evidence: per-iteration evaluation reward and KL per method (mean and 95% confidence band
over seeds), the reward-KL frontier (every evaluation point, each method's frontier and its
KL at a matched reward; the same for the reward gain over each run's first evaluation), and
a markdown table + JSON of the final numbers (mean +- CI, seeds).

    python scripts/report.py runs/sweep            # writes runs/sweep/report/
    python scripts/report.py runs/sweep --methods cory ppo --out runs/sweep/report-main
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

STATS = ("reward", "gain", "kl", "distinct1", "distinct2", "length")
"""``gain``: the evaluation reward minus the run's own first evaluation's (the base model's,
sampled with the run's evaluation seed): seeds sample the base model's answers differently,
and the gain removes that offset (a paired comparison)."""
_T975 = {
    1: 12.706,
    2: 4.303,
    3: 3.182,
    4: 2.776,
    5: 2.571,
    6: 2.447,
    7: 2.365,
    8: 2.306,
    9: 2.262,
    10: 2.228,
    15: 2.131,
    20: 2.086,
    30: 2.042,
}


def t_critical(dof: int) -> float:
    """Student's t 0.975 quantile (two-sided 95%); between tabulated degrees of freedom the
    smaller one's (a slightly wider interval); the normal 1.96 past 30."""
    if dof < 1:
        return math.nan
    if dof > 30:
        return 1.96
    return _T975[max(k for k in _T975 if k <= dof)]  # the next tabulated below: a wider, safe CI


def mean_ci(values) -> tuple[float, float]:
    """``(mean, half-width of the 95% confidence interval)``; NaN half-width for one value."""
    v = np.asarray(values, dtype=np.float64)
    if len(v) < 2:
        return float(v.mean()) if len(v) else math.nan, math.nan
    return float(v.mean()), float(t_critical(len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v)))


def run_curve(rows: list[dict]) -> dict[int, dict[str, float]]:
    """Iteration -> each statistic of the run's evaluations, averaged over its models."""
    out = {}
    for row in rows:
        models = sorted(
            {k.split("/")[1] for k in row if k.startswith("eval/") and k.endswith("/reward")}
        )
        if models:
            out[row["iteration"]] = {
                s: float(np.mean([row[f"eval/{m}/{s}"] for m in models]))
                for s in STATS
                if all(f"eval/{m}/{s}" in row for m in models)
            }
    if out:
        first = out[min(out)].get("reward")
        for point in out.values():
            if "reward" in point and first is not None:
                point["gain"] = point["reward"] - first
    return out


def load_sweep(sweep: Path) -> dict[str, dict[int, dict[int, dict[str, float]]]]:
    """method -> seed -> the run's evaluation curve."""
    data: dict[str, dict[int, dict]] = {}
    for metrics in sorted(sweep.glob("*/seed_*/metrics.jsonl")):
        rows = [json.loads(x) for x in metrics.read_text().splitlines() if x.strip()]
        method, seed = metrics.parent.parent.name, int(metrics.parent.name.split("_")[1])
        data.setdefault(method, {})[seed] = run_curve(rows)
    return data


def frontier(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The upper-left Pareto front of ``(kl, reward)`` points, by increasing KL: each point
    has a higher reward than every point of smaller KL."""
    front, best = [], -math.inf
    for kl, reward in sorted(points):
        if reward > best:
            front.append((kl, reward))
            best = reward
    return front


def kl_at_reward(front: list[tuple[float, float]], target: float) -> float:
    """The smallest KL at which the frontier reaches ``target`` (NaN if it never does)."""
    return next((kl for kl, reward in front if reward >= target), math.nan)


def summarize(data: dict) -> dict:
    """Per method: final statistics (mean, CI, seeds), per-iteration means and CIs, the
    frontier, and the KL at the reward every method reaches (the smallest of their best)."""
    summary: dict = {"methods": {}}
    fronts, gains = {}, {}
    for method, runs in data.items():
        finals = {s: curve[max(curve)] for s, curve in runs.items() if curve}
        entry = {
            "seeds": len(finals),
            "final": {
                s: dict(zip(("mean", "ci95"), mean_ci([f[s] for f in finals.values()])))
                for s in STATS
                if all(s in f for f in finals.values())
            },
        }
        iters = sorted({i for curve in runs.values() for i in curve})
        entry["curve"] = {
            str(i): {
                s: dict(
                    zip(
                        ("mean", "ci95"),
                        mean_ci([c[i][s] for c in runs.values() if i in c and s in c[i]]),
                    )
                )
                for s in ("reward", "kl")
            }
            for i in iters
        }
        points = [(c[i]["kl"], c[i]["reward"]) for c in runs.values() for i in c]
        fronts[method] = frontier(points)
        entry["frontier"] = fronts[method]
        gains[method] = frontier(
            [(c[i]["kl"], c[i]["gain"]) for c in runs.values() for i in c if "gain" in c[i]]
        )
        entry["gain_frontier"] = gains[method]
        summary["methods"][method] = entry
    if fronts:
        target = min(max(r for _, r in f) for f in fronts.values() if f)
        summary["matched_reward"] = target
        for method, f in fronts.items():
            summary["methods"][method]["kl_at_matched_reward"] = kl_at_reward(f, target)
    if any(gains.values()):
        target = min(max(g for _, g in f) for f in gains.values() if f)
        summary["matched_gain"] = target
        for method, f in gains.items():
            summary["methods"][method]["kl_at_matched_gain"] = kl_at_reward(f, target)
    return summary


def table(summary: dict) -> str:
    """The markdown table of final numbers."""
    head = (
        "| method | seeds | " + " | ".join(STATS) + " | KL at matched reward | KL at matched gain |"
    )
    lines = [head, "|" + "---|" * (len(STATS) + 4)]
    for method, entry in summary["methods"].items():
        cells = []
        for s in STATS:
            m = entry["final"].get(s)
            cells.append("—" if m is None else f"{m['mean']:.3f} ± {m['ci95']:.3f}")
        lines.append(
            f"| {method} | {entry['seeds']} | "
            + " | ".join(cells)
            + f" | {entry.get('kl_at_matched_reward', math.nan):.3f}"
            + f" | {entry.get('kl_at_matched_gain', math.nan):.3f} |"
        )
    return "\n".join(lines) + "\n"


def plots(summary: dict, data: dict, out: Path) -> list[Path]:
    """``curves.png`` (reward and KL per iteration, mean and 95% band) and ``frontier.png``."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for method, entry in summary["methods"].items():
        its = sorted(int(i) for i in entry["curve"])
        for ax, stat in zip(axes, ("reward", "kl")):
            m = np.array([entry["curve"][str(i)][stat]["mean"] for i in its])
            ci = np.nan_to_num(np.array([entry["curve"][str(i)][stat]["ci95"] for i in its]))
            (line,) = ax.plot(its, m, "o-", label=method)
            ax.fill_between(its, m - ci, m + ci, color=line.get_color(), alpha=0.2)
            ax.set_xlabel("iteration")
            ax.set_ylabel(f"evaluation {stat}")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "curves.png", dpi=110)
    plt.close(fig)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, stat, key in ((axes[0], "reward", "frontier"), (axes[1], "gain", "gain_frontier")):
        for method, runs in data.items():
            pts = [(c[i]["kl"], c[i][stat]) for c in runs.values() for i in c if stat in c[i]]
            (line,) = ax.plot([p[0] for p in pts], [p[1] for p in pts], ".", alpha=0.4)
            front = summary["methods"][method][key]
            ax.plot(
                [p[0] for p in front],
                [p[1] for p in front],
                "-",
                color=line.get_color(),
                label=method,
            )
        ax.set_xlabel("KL to reference")
        ax.set_ylabel(
            f"evaluation {stat}" + (" (over the run's first evaluation)" if stat == "gain" else "")
        )
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "frontier.png", dpi=110)
    plt.close(fig)
    return [out / "curves.png", out / "frontier.png"]


def main(argv: list[str] | None = None) -> dict:
    import argparse

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("sweep", type=Path)
    p.add_argument(
        "--methods",
        nargs="+",
        help="only these methods (their matched reward/gain is then among them alone)",
    )
    p.add_argument("--out", type=Path, help="the report folder (default: SWEEP/report)")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    data = load_sweep(args.sweep)
    if args.methods:
        data = {m: data[m] for m in args.methods if m in data}
    if not data:
        raise SystemExit(
            f"no runs under {args.sweep} (expected SWEEP/<method>/seed_<s>/metrics.jsonl)"
        )
    out = args.out or args.sweep / "report"
    out.mkdir(parents=True, exist_ok=True)
    summary = summarize(data)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "table.md").write_text(table(summary))
    plots(summary, data, out)
    print(table(summary), end="")
    print(f"wrote {out}/summary.json, table.md, curves.png, frontier.png")
    return summary


if __name__ == "__main__":
    main()
