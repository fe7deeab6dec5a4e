"""Aggregate a sweep (``SWEEP/<method>/seed_<s>/``, as ``scripts/sweep.py`` writes) into
evidence: per method, the final evaluation numbers (mean and 95% confidence interval over
seeds), the reward at matched KL and the KL at matched reward (read off each run's
evaluation path, see :mod:`agents.run.study_stats`), paired t-tests between methods over
the seeds they share (the same seed samples the same queries), where each run ran (the
machine kind, dtype and processes of its sittings), each run's held-out evaluation of its
final models where ``scripts/evaluate.py`` wrote one (``models/<model>/evaluation.json``:
pass@k, reward, KL, averaged over the run's models, paired over seeds too), the course of
each run's evaluation reward (its peak, the drop after it and the slope of its second half,
see :func:`agents.run.study_stats.course`: does the reward peak and decline), and plots:
reward and KL against iterations and against sampled tokens, and the reward-KL frontier
with a band over seeds.

    python scripts/report.py runs/sweep            # writes runs/sweep/report/
    python scripts/report.py runs/sweep --methods cory ppo --baseline ppo --kl-targets 5 10 20
    python scripts/report.py runs/sweep --methods cory ppo --out runs/sweep/report-main
    python scripts/report.py runs/sweep --archive docs/results/data/sweep  # a committable copy

Out: ``summary.json`` (every number), ``table.md`` (the tables printed), ``curves.png``,
``curves_tokens.png``, ``frontier.png``. Default targets: four KLs evenly up to the largest
KL every run reaches, and four rewards evenly from the highest first evaluation to the
lowest best reward of any run, so each target is one every run can be read at.

``--archive DEST`` copies what the report reads into ``DEST/<method>/seed_<s>/``: each
run's ``config.json``, ``events.jsonl``, its models' ``evaluation.json`` files and
``metrics.jsonl`` cut to the columns read here (:data:`ARCHIVED`; no checkpoints, weights
or samples), small enough to commit; the report
on the archive is the report on the sweep.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from agents.run.run_log import read_jsonl  # noqa: E402
from agents.run.study_stats import course, first_crossing, mean_ci, paired_test  # noqa: E402

STATS = ("reward", "gain", "kl", "distinct1", "distinct2", "length")
"""``gain``: the evaluation reward minus the run's own first evaluation's (the base model's,
sampled with the run's evaluation seed): seeds sample the base model's answers differently,
and the gain removes that offset (a paired comparison)."""
ANSWER_LENGTHS = "/tokens/responses_len_mean"
"""Each role's mean sampled answer length in a training row (``pioneer/``, ``observer/``,
``policy/``...): times ``charts/episodes``, the tokens that iteration sampled."""

COURSE = ("peak", "peak_iteration", "drop", "late_slope")
"""The course of a run's evaluation reward (:func:`agents.run.study_stats.course`)."""
HELDOUT = "models/*/evaluation.json"
"""Where ``scripts/evaluate.py`` writes a run's final model's held-out evaluation."""
HELDOUT_STATS = ("reward", "kl", "distinct2", "length")
"""The held-out numbers the report reads besides each ``pass@k``."""

ARCHIVED = ("iteration", "eval/", "charts/", ANSWER_LENGTHS)
"""The metrics columns the report reads (by name, prefix or suffix): what ``--archive`` keeps."""


@dataclass
class Run:
    """One run folder's evidence."""

    curve: dict[int, dict[str, float]]
    """Evaluation iteration -> each statistic averaged over the run's models, plus ``gain``
    and ``tokens`` (answer tokens sampled by training before that evaluation)."""
    machines: list[str] = field(default_factory=list)
    dtypes: list[str] = field(default_factory=list)
    processes: list[int] = field(default_factory=list)
    train_s: float = 0.0
    """The sum of the run's ``charts/iteration_s`` (training iterations, evaluations not
    included)."""
    heldout: dict[str, float] = field(default_factory=dict)
    """The run's final models evaluated alone by ``scripts/evaluate.py`` (each model's
    ``models/<model>/evaluation.json``), each number averaged over its models: held-out
    pass@k, reward, KL."""
    iteration_s: float = float("nan")
    """The median of the run's ``charts/iteration_s``: one training iteration's time, which a
    few iterations slowed by another job (or a paused process) do not move."""

    def path(self, x: str, y: str) -> tuple[list[float], list[float]]:
        its = [i for i in sorted(self.curve) if x in self.curve[i] and y in self.curve[i]]
        return [self.curve[i][x] for i in its], [self.curve[i][y] for i in its]

    def course(self) -> dict[str, float]:
        """The course of the run's evaluation reward (peak, drop, late slope)."""
        its = [i for i in sorted(self.curve) if "reward" in self.curve[i]]
        return course(its, [self.curve[i]["reward"] for i in its])


def run_curve(rows: list[dict]) -> dict[int, dict[str, float]]:
    """Iteration -> each statistic of the run's evaluations, averaged over its models, its
    ``gain`` over the first evaluation and the training ``tokens`` sampled before it."""
    out, tokens = {}, 0.0
    for row in sorted(rows, key=lambda r: r["iteration"]):
        models = sorted(
            {k.split("/")[1] for k in row if k.startswith("eval/") and k.endswith("/reward")}
        )
        if models:
            out[row["iteration"]] = {
                s: float(np.mean([row[f"eval/{m}/{s}"] for m in models]))
                for s in STATS
                if all(f"eval/{m}/{s}" in row for m in models)
            }
            out[row["iteration"]]["tokens"] = tokens
        lengths = [v for k, v in row.items() if k.endswith(ANSWER_LENGTHS)]
        tokens += row.get("charts/episodes", 0.0) * float(np.sum(lengths))
    if out:
        first = out[min(out)].get("reward")
        for point in out.values():
            if "reward" in point and first is not None:
                point["gain"] = point["reward"] - first
    return out


def load_heldout(folder: Path) -> dict[str, float]:
    """Each number of the run's ``models/*/evaluation.json`` (each ``pass@k`` and
    :data:`HELDOUT_STATS`) averaged over its models; empty without such files."""
    files = [json.loads(p.read_text()) for p in sorted(folder.glob(HELDOUT))]
    if not files:
        return {}
    keys = [
        k
        for k in files[0]
        if (k.startswith("pass@") or k in HELDOUT_STATS) and all(k in f for f in files)
    ]
    return {k: float(np.mean([f[k] for f in files])) for k in keys}


def load_run(folder: Path) -> Run:
    rows = read_jsonl(folder / "metrics.jsonl")
    times = [r["charts/iteration_s"] for r in rows if "charts/iteration_s" in r]
    sittings = [e for e in read_jsonl(folder / "events.jsonl") if e.get("event") == "sitting"]
    return Run(
        curve=run_curve(rows),
        machines=sorted({str(e.get("machine")) for e in sittings}),
        dtypes=sorted({str(e.get("dtype")) for e in sittings}),
        processes=sorted({int(e.get("processes", 1)) for e in sittings}),
        train_s=float(sum(times)),
        iteration_s=float(np.median(times)) if times else float("nan"),
        heldout=load_heldout(folder),
    )


def load_sweep(sweep: Path) -> dict[str, dict[int, Run]]:
    """method -> seed -> the run."""
    data: dict[str, dict[int, Run]] = {}
    for metrics in sorted(sweep.glob("*/seed_*/metrics.jsonl")):
        method, seed = metrics.parent.parent.name, int(metrics.parent.name.split("_")[1])
        data.setdefault(method, {})[seed] = load_run(metrics.parent)
    return data


def _round_down(x: float, digits: int = 3) -> float:
    """``x`` to ``digits`` significant digits, rounded towards minus infinity (a target a
    run reaches stays one it reaches)."""
    if x == 0 or not math.isfinite(x):
        return x
    scale = 10.0 ** (digits - 1 - math.floor(math.log10(abs(x))))
    return math.floor(x * scale) / scale


def is_read(column: str) -> bool:
    """Whether the report reads this metrics column (:data:`ARCHIVED`)."""
    return any(column.startswith(a) or column.endswith(a) for a in ARCHIVED)


def archive(sweep: Path, methods: list[str], dest: Path) -> list[Path]:
    """Copy each run of ``methods`` under ``sweep`` into ``dest`` (see the module docstring)."""
    import shutil

    out = []
    for method in methods:
        for run in sorted((sweep / method).glob("seed_*")):
            if not (run / "metrics.jsonl").is_file():
                continue
            target = dest / method / run.name
            if target.exists():
                shutil.rmtree(target)
            target.mkdir(parents=True)
            for name in ("config.json", "events.jsonl"):
                if (run / name).is_file():
                    shutil.copy2(run / name, target / name)
            rows = [
                {k: v for k, v in row.items() if is_read(k)}
                for row in read_jsonl(run / "metrics.jsonl")
            ]
            (target / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
            for evaluation in sorted(run.glob(HELDOUT)):
                kept = target / evaluation.relative_to(run)
                kept.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(evaluation, kept)
            out.append(target)
    return out


def common_top_kl(data: dict[str, dict[int, Run]]) -> float:
    """The largest KL every run's evaluation path reaches (0 without evaluations)."""
    tops = [
        max(r.path("kl", "reward")[0]) for runs in data.values() for r in runs.values() if r.curve
    ]
    return min(tops, default=0.0)


def default_targets(data: dict[str, dict[int, Run]]) -> tuple[list[float], list[float]]:
    """Four KLs evenly up to the largest KL every run reaches; four rewards evenly from the
    highest first evaluation to the lowest best reward of any run."""
    runs = [r for runs in data.values() for r in runs.values() if r.curve]
    if not runs:
        return [], []
    top_kl = common_top_kl(data)
    low = max(r.curve[min(r.curve)]["reward"] for r in runs)
    high = min(max(r.path("kl", "reward")[1]) for r in runs)
    kls = [_round_down(top_kl * q) for q in (0.25, 0.5, 0.75, 1.0)] if top_kl > 0 else []
    rewards = [_round_down(low + (high - low) * q) for q in (0.25, 0.5, 0.75, 1.0)]
    return kls, (rewards if high > low else [])


def matched(runs: dict[int, Run], at: str, target: float) -> dict[int, float]:
    """Seed -> the reward where the run first reaches KL ``target`` (``at="kl"``) or the KL
    where it first reaches reward ``target`` (``at="reward"``)."""
    other = "reward" if at == "kl" else "kl"
    return {s: first_crossing(*r.path(at, other), target) for s, r in runs.items()}


def summarize(
    data: dict[str, dict[int, Run]],
    kl_targets: list[float] | None = None,
    reward_targets: list[float] | None = None,
    baseline: str | None = None,
) -> dict:
    """Every number of the report (see the module docstring); ``baseline``: pair each method
    with it alone, else every pair of methods."""
    auto_kl, auto_reward = default_targets(data)
    targets = {
        "kl": auto_kl if kl_targets is None else kl_targets,
        "reward": auto_reward if reward_targets is None else reward_targets,
    }
    summary: dict = {
        "methods": {},
        "kl_targets": targets["kl"],
        "reward_targets": targets["reward"],
    }
    for method, runs in data.items():
        finals = {s: r.curve[max(r.curve)] for s, r in runs.items() if r.curve}
        entry: dict = {
            "seeds": len(finals),
            "final": {
                s: dict(zip(("mean", "ci95"), mean_ci([f[s] for f in finals.values()])))
                for s in STATS
                if all(s in f for f in finals.values())
            },
            "machines": sorted({m for r in runs.values() for m in r.machines}),
            "dtypes": sorted({d for r in runs.values() for d in r.dtypes}),
            "processes": sorted({p for r in runs.values() for p in r.processes}),
            **{
                k: dict(zip(("mean", "ci95"), mean_ci([getattr(r, k) for r in runs.values()])))
                for k in ("train_s", "iteration_s")
            },
        }
        evaluated = [r.heldout for r in runs.values() if r.heldout]
        entry["heldout"] = {
            k: {
                **dict(zip(("mean", "ci95"), mean_ci([h[k] for h in evaluated]))),
                "seeds": len(evaluated),
            }
            for k in (evaluated[0] if evaluated else {})
            if all(k in h for h in evaluated)
        }
        courses = {s: r.course() for s, r in runs.items() if r.curve}
        entry["course"] = {
            k: {
                **dict(zip(("mean", "ci95"), mean_ci([c[k] for c in courses.values()]))),
                "per_seed": {str(s): c[k] for s, c in sorted(courses.items())},
            }
            for k in COURSE
        }
        iters = sorted({i for r in runs.values() for i in r.curve})
        entry["curve"] = {
            str(i): {
                s: dict(
                    zip(
                        ("mean", "ci95"),
                        mean_ci(
                            [
                                r.curve[i][s]
                                for r in runs.values()
                                if i in r.curve and s in r.curve[i]
                            ]
                        ),
                    )
                )
                for s in ("reward", "kl", "tokens")
            }
            for i in iters
        }
        for at in ("kl", "reward"):
            entry[f"at_{at}"] = {}
            for t in targets[at]:
                per_seed = matched(runs, at, t)
                m, ci = mean_ci(list(per_seed.values()))
                reached = sum(math.isfinite(v) for v in per_seed.values())
                entry[f"at_{at}"][str(t)] = {
                    "mean": m,
                    "ci95": ci,
                    "reached": reached,
                    "per_seed": {str(s): v for s, v in sorted(per_seed.items())},
                }
        summary["methods"][method] = entry
    methods = list(data)
    pairs = (
        [(m, baseline) for m in methods if m != baseline]
        if baseline in data
        else list(combinations(methods, 2))
    )
    summary["paired"], summary["paired_course"], summary["paired_heldout"] = [], [], []
    for a, b in pairs:
        common = sorted(set(data[a]) & set(data[b]))
        seeds = [str(s) for s in common]
        for at in ("kl", "reward"):
            for t in targets[at]:
                va, vb = (summary["methods"][m][f"at_{at}"][str(t)]["per_seed"] for m in (a, b))
                test = paired_test([va[s] for s in seeds], [vb[s] for s in seeds])
                summary["paired"].append({"a": a, "b": b, "at": at, "target": t, **test})
        for k in ("peak", "drop", "late_slope"):
            va, vb = (summary["methods"][m]["course"][k]["per_seed"] for m in (a, b))
            test = paired_test(
                [va.get(s, math.nan) for s in seeds], [vb.get(s, math.nan) for s in seeds]
            )
            summary["paired_course"].append({"a": a, "b": b, "stat": k, **test})
        shared = [s for s in common if data[a][s].heldout and data[b][s].heldout]
        for k in summary["methods"][a]["heldout"]:
            if k in summary["methods"][b]["heldout"] and shared:
                test = paired_test(
                    [data[a][s].heldout[k] for s in shared], [data[b][s].heldout[k] for s in shared]
                )
                summary["paired_heldout"].append({"a": a, "b": b, "stat": k, **test})
    return summary


def _pm(mean: float, ci95: float, digits: int = 3) -> str:
    if math.isnan(mean):
        return "—"
    return f"{mean:.{digits}f}" + ("" if math.isnan(ci95) else f" ± {ci95:.{digits}f}")


def table(summary: dict) -> str:
    """The markdown tables: final numbers, matched values, paired tests."""
    lines = [
        "| method | seeds | "
        + " | ".join(STATS)
        + " | train s | s/iteration | machines | dtypes |",
        "|" + "---|" * (len(STATS) + 6),
    ]
    for method, e in summary["methods"].items():
        cells = [_pm(**e["final"][s]) if s in e["final"] else "—" for s in STATS]
        lines.append(
            f"| {method} | {e['seeds']} | "
            + " | ".join(cells)
            + f" | {_pm(**e['train_s'], digits=0)} | {_pm(**e['iteration_s'], digits=1)}"
            + f" | {', '.join(e['machines']) or '—'}"
            + f" | {', '.join(e['dtypes']) or '—'} |"
        )
    for at, other in (("kl", "reward"), ("reward", "KL")):
        if not summary[f"{at}_targets"]:
            continue
        name = "KL" if at == "kl" else "reward"
        lines += ["", f"| {other} at {name} = | " + " | ".join(summary["methods"]) + " |"]
        lines.append("|" + "---|" * (len(summary["methods"]) + 1))
        for t in summary[f"{at}_targets"]:
            cells = []
            for e in summary["methods"].values():
                v = e[f"at_{at}"][str(t)]
                cells.append(f"{_pm(v['mean'], v['ci95'])} ({v['reached']}/{e['seeds']})")
            lines.append(f"| {t:g} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "| course of the evaluation reward | seeds | peak | peak iteration | drop (peak − final)"
        " | late slope (per 10 iterations) |",
        "|---|---|---|---|---|---|",
    ]
    for method, e in summary["methods"].items():
        cells = [_pm(**{k: e["course"][c][k] for k in ("mean", "ci95")}) for c in COURSE]
        cells[1] = _pm(
            e["course"]["peak_iteration"]["mean"], e["course"]["peak_iteration"]["ci95"], 1
        )
        lines.append(f"| {method} | {e['seeds']} | " + " | ".join(cells) + " |")
    held = {k for e in summary["methods"].values() for k in e["heldout"]}
    heldout = sorted((k for k in held if k.startswith("pass@")), key=lambda k: int(k[5:]))
    heldout += [k for k in HELDOUT_STATS if k in held]
    if heldout:
        lines += [
            "",
            "| held-out (final models) | seeds | " + " | ".join(heldout) + " |",
            "|" + "---|" * (len(heldout) + 2),
        ]
        for method, e in summary["methods"].items():
            h = e["heldout"]
            seeds = max((v["seeds"] for v in h.values()), default=0)
            cells = [_pm(h[k]["mean"], h[k]["ci95"]) if k in h else "—" for k in heldout]
            lines.append(f"| {method} | {seeds} | " + " | ".join(cells) + " |")
    lines += _paired_table(
        "paired (same seeds)",
        "at",
        summary["paired"],
        lambda p: f"{'reward' if p['at'] == 'kl' else 'KL'} at {p['at']} {p['target']:g}",
    )
    lines += _paired_table(
        "paired, course (same seeds)", "stat", summary["paired_course"], lambda p: p["stat"]
    )
    lines += _paired_table(
        "paired, held-out (same seeds)", "stat", summary["paired_heldout"], lambda p: p["stat"]
    )
    return "\n".join(lines) + "\n"


def _paired_table(title: str, column: str, tests: list[dict], what) -> list[str]:
    """The markdown rows of paired tests (none without tests); ``what(test)``: its ``column``."""
    if not tests:
        return []
    return [
        "",
        f"| {title} | {column} | difference a − b | seeds | t | p |",
        "|---|---|---|---|---|---|",
        *(
            f"| {p['a']} − {p['b']} | {what(p)} | {_pm(p['diff'], p['ci95'])} | "
            f"{p['seeds']} | {p['t']:.2f} | {p['p']:.3g} |"
            for p in tests
        ),
    ]


def _band(ax, x, mean, ci, label):
    (line,) = ax.plot(x, mean, "o-", ms=3, label=label)
    ci = np.nan_to_num(np.asarray(ci, dtype=np.float64))
    ax.fill_between(
        x, np.asarray(mean) - ci, np.asarray(mean) + ci, color=line.get_color(), alpha=0.2
    )
    return line


def plots(summary: dict, data: dict[str, dict[int, Run]], out: Path) -> list[Path]:
    """``curves.png`` (reward and KL per iteration), ``curves_tokens.png`` (the same against
    the mean sampled tokens), ``frontier.png`` (every evaluation and the reward at each KL
    with its band over seeds)."""
    paths = []
    for name, xlabel in (("curves", "iteration"), ("curves_tokens", "sampled answer tokens")):
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        for method, e in summary["methods"].items():
            its = sorted(int(i) for i in e["curve"])
            c = [e["curve"][str(i)] for i in its]
            x = its if name == "curves" else [p["tokens"]["mean"] for p in c]
            for ax, stat in zip(axes, ("reward", "kl")):
                _band(ax, x, [p[stat]["mean"] for p in c], [p[stat]["ci95"] for p in c], method)
                ax.set_xlabel(xlabel)
                ax.set_ylabel(f"evaluation {stat} (mean, 95% band)")
        axes[0].legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / f"{name}.png", dpi=110)
        plt.close(fig)
        paths.append(out / f"{name}.png")
    fig, ax = plt.subplots(figsize=(6, 4.5))
    top = common_top_kl(data)
    grid = np.linspace(0.0, top, 25) if top > 0 else np.array([0.0])
    for method, runs in data.items():
        pts = [p for r in runs.values() for p in zip(*r.path("kl", "reward"))]
        band = [mean_ci(list(matched(runs, "kl", float(k)).values())) for k in grid]
        line = _band(ax, grid, [b[0] for b in band], [b[1] for b in band], method)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], ".", color=line.get_color(), alpha=0.35)
    ax.set_xlabel("KL to reference")
    ax.set_ylabel("evaluation reward")
    ax.set_title("reward where each run first reaches a KL (mean, 95% band)", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "frontier.png", dpi=110)
    plt.close(fig)
    return [*paths, out / "frontier.png"]


def main(argv: list[str] | None = None) -> dict:
    import argparse

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("sweep", type=Path)
    p.add_argument("--methods", nargs="+", help="only these methods, in this order")
    p.add_argument("--baseline", help="pair each method with this one only (default: all pairs)")
    p.add_argument("--kl-targets", nargs="+", type=float, help="KLs to read the reward at")
    p.add_argument("--reward-targets", nargs="+", type=float, help="rewards to read the KL at")
    p.add_argument("--out", type=Path, help="the report folder (default: SWEEP/report)")
    p.add_argument("--archive", type=Path, help="copy what the report reads into this folder")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    data = load_sweep(args.sweep)
    if args.methods:
        missing = [m for m in args.methods if m not in data]
        if missing:
            raise SystemExit(f"no runs of {', '.join(missing)} under {args.sweep}")
        data = {m: data[m] for m in args.methods}
    if not data:
        raise SystemExit(
            f"no runs under {args.sweep} (expected SWEEP/<method>/seed_<s>/metrics.jsonl)"
        )
    if args.baseline and args.baseline not in data:
        raise SystemExit(f"--baseline {args.baseline}: no such method among {', '.join(data)}")
    if args.archive:
        for run in archive(args.sweep, list(data), args.archive):
            print(f"archived {run}")
    out = args.out or args.sweep / "report"
    out.mkdir(parents=True, exist_ok=True)
    summary = summarize(data, args.kl_targets, args.reward_targets, args.baseline)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "table.md").write_text(table(summary))
    plots(summary, data, out)
    print(table(summary), end="")
    print(f"wrote {out}/summary.json, table.md, curves.png, curves_tokens.png, frontier.png")
    return summary


if __name__ == "__main__":
    main()
