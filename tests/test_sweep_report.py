"""scripts/sweep.py runs a grid on the tiny model, skips finished runs and resumes interrupted
ones; scripts/report.py's means, confidence intervals and frontier equal hand-computed values."""

from __future__ import annotations

import json
import math

import pytest
from helpers.scripts import load_script
from helpers.tiny import tiny_model, tiny_tokenizer


def write_run(folder, evals: list[tuple[int, float, float]], models=("model_a", "model_b")):
    """A run folder whose metrics hold evaluation rows ``(iteration, reward, kl)`` per model."""
    folder.mkdir(parents=True)
    rows = [
        {
            "iteration": it,
            **{
                f"eval/{m}/{s}": v
                for m in models
                for s, v in (
                    ("reward", r),
                    ("kl", k),
                    ("distinct1", 0.5),
                    ("distinct2", 0.9),
                    ("length", 4.0),
                )
            },
        }
        for it, r, k in evals
    ]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_report_means_cis_and_frontier_by_hand(tmp_path):
    sweep = tmp_path / "sweep"
    write_run(sweep / "cory" / "seed_0", [(0, 0.1, 0.0), (2, 0.3, 1.0)])
    write_run(sweep / "cory" / "seed_1", [(0, 0.1, 0.0), (2, 0.5, 2.0)])
    write_run(sweep / "ppo" / "seed_0", [(0, 0.1, 0.0), (2, 0.4, 4.0)], models=("policy",))
    write_run(sweep / "ppo" / "seed_1", [(0, 0.1, 0.0), (2, 0.2, 3.0)], models=("policy",))
    report = load_script("scripts/report.py")
    summary = report.main([str(sweep)])
    cory, ppo = summary["methods"]["cory"], summary["methods"]["ppo"]
    assert cory["seeds"] == 2 and cory["final"]["reward"]["mean"] == pytest.approx(0.4)
    # two seeds: t(0.975, 1) = 12.706, sd = 0.1414, half-width = 12.706 * 0.1414 / sqrt(2)
    assert cory["final"]["reward"]["ci95"] == pytest.approx(12.706 * math.sqrt(0.02) / math.sqrt(2))
    assert ppo["final"]["kl"]["mean"] == pytest.approx(3.5)
    assert [tuple(p) for p in cory["frontier"]] == [(0.0, 0.1), (1.0, 0.3), (2.0, 0.5)]
    assert [tuple(p) for p in ppo["frontier"]] == [(0.0, 0.1), (3.0, 0.2), (4.0, 0.4)]
    assert summary["matched_reward"] == pytest.approx(0.4)  # the smaller of the best rewards
    assert cory["kl_at_matched_reward"] == 2.0 and ppo["kl_at_matched_reward"] == 4.0
    assert (sweep / "report" / "curves.png").is_file() and (
        sweep / "report" / "frontier.png"
    ).is_file()
    assert "| cory | 2 | 0.400 ±" in (sweep / "report" / "table.md").read_text()
    assert report.mean_ci([1.0])[1] != report.mean_ci([1.0])[1]  # one seed: no interval (NaN)


def test_the_gain_over_each_runs_first_evaluation_pairs_the_seeds(tmp_path):
    """Seeds whose base evaluations differ (0.1 / 0.3): the gain is each run's own rise."""
    sweep = tmp_path / "sweep"
    write_run(sweep / "cory" / "seed_0", [(0, 0.1, 0.0), (2, 0.3, 1.0)])
    write_run(sweep / "cory" / "seed_1", [(0, 0.3, 0.0), (2, 0.7, 2.0)])
    write_run(sweep / "ppo" / "seed_0", [(0, 0.1, 0.0), (2, 0.2, 3.0)], models=("policy",))
    summary = load_script("scripts/report.py").main([str(sweep)])
    cory, ppo = summary["methods"]["cory"], summary["methods"]["ppo"]
    assert cory["final"]["gain"]["mean"] == pytest.approx(0.3)  # (0.2 + 0.4) / 2
    assert [(kl, round(g, 9)) for kl, g in cory["gain_frontier"]] == [
        (0.0, 0.0),
        (1.0, 0.2),
        (2.0, 0.4),
    ]
    assert summary["matched_gain"] == pytest.approx(0.1)  # PPO's best gain
    assert cory["kl_at_matched_gain"] == 1.0 and ppo["kl_at_matched_gain"] == 3.0
    assert summary["matched_reward"] == pytest.approx(0.2)
    assert (
        cory["kl_at_matched_reward"] == 0.0
    )  # seed 1's base model already scores 0.3: why the gain


@pytest.mark.slow
def test_sweep_runs_a_grid_skips_finished_and_resumes_interrupted(tmp_path, capsys):
    tiny = tmp_path / "tiny"
    tiny_model().save_pretrained(tiny)
    tiny_tokenizer().save_pretrained(tiny)
    flags = [
        "--model",
        str(tiny),
        "--batch-size",
        "2",
        "--mini-batch-size",
        "2",
        "--ppo-epochs",
        "1",
        "--eval-every",
        "1",
        "--eval-size",
        "2",
        "--max-new-tokens",
        "3",
        "--min-new-tokens",
        "2",
        "--lora-r",
        "2",
        "--lora-alpha",
        "4",
    ]
    sweep = load_script("scripts/sweep.py")
    out = tmp_path / "sweep"
    # an interrupted run: one iteration of two done, no completion marker
    import subprocess
    import sys

    first = sweep.command(out, "ppo", 1, [*flags, "--iterations", "1"])
    assert subprocess.run(first, cwd=sweep.ROOT, capture_output=True).returncode == 0
    results = sweep.main(
        [
            str(out),
            "--methods",
            "cory",
            "ppo",
            "--seeds",
            "0",
            "1",
            "--parallel",
            "2",
            *flags,
            "--iterations",
            "2",
        ]
    )
    assert sorted((r["method"], r["seed"], r["status"]) for r in results) == [
        ("cory", 0, "done"),
        ("cory", 1, "done"),
        ("ppo", 0, "done"),
        ("ppo", 1, "done"),
    ]
    assert [r["resumed"] for r in results if (r["method"], r["seed"]) == ("ppo", 1)] == [True]
    rows = [
        json.loads(x) for x in (out / "ppo" / "seed_1" / "metrics.jsonl").read_text().splitlines()
    ]
    assert [r["iteration"] for r in rows if "policy/score" in r] == [0, 1]
    again = sweep.main(
        [str(out), "--methods", "cory", "ppo", "--seeds", "0", "1", *flags, "--iterations", "2"]
    )
    assert all(r["status"] == "skipped" for r in again)
    printed = capsys.readouterr().out
    assert "cory seed 0: finished before, skipped" in printed
    sweep.main([str(out), "--methods", "cory", "--seeds", "3", "--print", *flags])
    printed = capsys.readouterr().out
    assert "--seed 3" in printed and "seed_3" in printed and sys.executable in printed
    assert not (out / "cory" / "seed_3").exists()  # printed, not run
    summary = load_script("scripts/report.py").main([str(out)])
    assert set(summary["methods"]) == {"cory", "ppo"} and summary["methods"]["cory"]["seeds"] == 2
