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


def test_report_finals_matched_values_and_paired_tests_by_hand(tmp_path):
    sweep = tmp_path / "sweep"
    write_run(sweep / "cory" / "seed_0", [(0, 0.1, 0.0), (2, 0.3, 1.0)])
    write_run(sweep / "cory" / "seed_1", [(0, 0.1, 0.0), (2, 0.5, 2.0)])
    write_run(sweep / "ppo" / "seed_0", [(0, 0.1, 0.0), (2, 0.4, 4.0)], models=("policy",))
    write_run(sweep / "ppo" / "seed_1", [(0, 0.1, 0.0), (2, 0.2, 3.0)], models=("policy",))
    report = load_script("scripts/report.py")
    summary = report.main([str(sweep)])
    cory, ppo = summary["methods"]["cory"], summary["methods"]["ppo"]
    assert cory["seeds"] == 2 and cory["final"]["reward"]["mean"] == pytest.approx(0.4)
    # two seeds: t(0.975, 1) = tan(0.475 pi) = 12.7062, sd = 0.1414, half-width = t sd / sqrt(2)
    half = math.tan(0.475 * math.pi) * math.sqrt(0.02) / math.sqrt(2)
    assert cory["final"]["reward"]["ci95"] == pytest.approx(half)
    assert ppo["final"]["kl"]["mean"] == pytest.approx(3.5)
    # default targets: KLs up to the smallest top KL (cory seed 0's 1.0); rewards from the
    # highest first evaluation (0.1) to the lowest best reward (ppo seed 1's 0.2)
    assert summary["kl_targets"] == [0.25, 0.5, 0.75, 1.0]
    assert summary["reward_targets"] == pytest.approx([0.125, 0.15, 0.175, 0.2])
    # reward where each run first reaches KL 1: 0.3; 0.1 + 0.5 * 0.4; 0.1 + 0.3 / 4; 0.1 + 0.1 / 3
    at1 = {m: summary["methods"][m]["at_kl"]["1.0"]["per_seed"] for m in ("cory", "ppo")}
    assert at1["cory"] == pytest.approx({"0": 0.3, "1": 0.3})
    assert at1["ppo"] == pytest.approx({"0": 0.175, "1": 0.1 + 0.1 / 3})
    # KL where each first reaches reward 0.2: 0.5, 0.5; 4 / 3, 3
    at02 = ppo["at_reward"]["0.2"]
    assert at02["per_seed"] == pytest.approx({"0": 4 / 3, "1": 3.0}) and at02["reached"] == 2
    assert cory["at_reward"]["0.2"]["mean"] == pytest.approx(0.5)
    (test,) = [p for p in summary["paired"] if p["at"] == "kl" and p["target"] == 1.0]
    d = [0.3 - 0.175, 0.3 - (0.1 + 0.1 / 3)]  # 0.125, 0.1667: mean 0.1458, t = 7.0
    assert (test["a"], test["b"], test["seeds"]) == ("cory", "ppo", 2)
    assert test["diff"] == pytest.approx(sum(d) / 2)
    assert test["t"] == pytest.approx(7.0)
    assert test["p"] == pytest.approx(1 - 2 / math.pi * math.atan(7.0))  # t with 1 dof
    for name in ("curves.png", "curves_tokens.png", "frontier.png", "table.md"):
        assert (sweep / "report" / name).is_file()
    text = (sweep / "report" / "table.md").read_text()
    assert "| cory | 2 | 0.400 ±" in text and "| cory − ppo | reward at kl 1 |" in text
    # explicit targets and a baseline: one pair per other method, at those targets only
    summary = report.main([str(sweep), "--baseline", "cory", "--kl-targets", "2"])
    assert [(p["a"], p["b"], p["target"]) for p in summary["paired"] if p["at"] == "kl"] == [
        ("ppo", "cory", 2.0)
    ]
    assert math.isnan(
        summary["methods"]["cory"]["at_kl"]["2.0"]["per_seed"]["0"]
    )  # never got there
    with pytest.raises(SystemExit, match="no runs of grpo"):
        report.main([str(sweep), "--methods", "cory", "grpo"])


def test_the_gain_pairs_the_seeds_and_tokens_and_sittings_are_read(tmp_path):
    """Seeds whose base evaluations differ (0.1 / 0.3): the gain is each run's own rise;
    the tokens sampled before each evaluation and each sitting's machine and dtype."""
    sweep = tmp_path / "sweep"
    write_run(sweep / "cory" / "seed_0", [(0, 0.1, 0.0), (2, 0.3, 1.0)])
    write_run(sweep / "cory" / "seed_1", [(0, 0.3, 0.0), (2, 0.7, 2.0)])
    ppo = sweep / "ppo" / "seed_0"
    write_run(ppo, [(0, 0.1, 0.0), (2, 0.2, 3.0)], models=("policy",))
    rows = [json.loads(x) for x in (ppo / "metrics.jsonl").read_text().splitlines()]
    train = [
        {
            "charts/episodes": 4.0,
            "policy/tokens/responses_len_mean": 5.0,
            "charts/iteration_s": 2.0,
        },
        {
            "charts/episodes": 4.0,
            "policy/tokens/responses_len_mean": 7.0,
            "charts/iteration_s": 3.0,
        },
    ]
    rows = [{**rows[0], **train[0]}, {"iteration": 1, **train[1]}, rows[1]]
    (ppo / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    sittings = [
        {"iteration": 0, "event": "sitting", "machine": "cpu-a", "dtype": "fp32", "processes": 1},
        {"iteration": 1, "event": "resume"},
        {"iteration": 1, "event": "sitting", "machine": "cpu-b", "dtype": "fp32", "processes": 1},
    ]
    (ppo / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in sittings))
    summary = load_script("scripts/report.py").main([str(sweep)])
    cory, ppo_entry = summary["methods"]["cory"], summary["methods"]["ppo"]
    assert cory["final"]["gain"]["mean"] == pytest.approx(0.3)  # (0.2 + 0.4) / 2
    # the evaluation at iteration 2 follows iterations 0 and 1: 4 * 5 + 4 * 7 answer tokens
    assert ppo_entry["curve"]["2"]["tokens"]["mean"] == pytest.approx(48.0)
    assert ppo_entry["curve"]["0"]["tokens"]["mean"] == 0.0
    assert ppo_entry["machines"] == ["cpu-a", "cpu-b"] and ppo_entry["dtypes"] == ["fp32"]
    assert ppo_entry["train_s"]["mean"] == pytest.approx(5.0)
    assert ppo_entry["iteration_s"]["mean"] == pytest.approx(2.5)  # the median of 2 and 3
    assert cory["machines"] == []  # no events.jsonl: nothing claimed
    # the archive keeps what the report reads and drops the rest: the same report
    rows[0]["policy/ppo/loss/total"] = 1.5
    (ppo / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    report = load_script("scripts/report.py")
    again = report.main([str(sweep), "--archive", str(tmp_path / "archive")])
    kept = (tmp_path / "archive" / "ppo" / "seed_0" / "metrics.jsonl").read_text()
    assert "policy/ppo/loss/total" not in kept and "policy/tokens/responses_len_mean" in kept
    assert (tmp_path / "archive" / "ppo" / "seed_0" / "events.jsonl").is_file()
    same = report.main([str(tmp_path / "archive")])
    assert json.dumps(same, sort_keys=True) == json.dumps(again, sort_keys=True)  # NaNs too


def test_held_out_evaluations_are_averaged_over_models_and_paired_by_seed(tmp_path):
    """``scripts/evaluate.py``'s ``models/<m>/evaluation.json``: a run's number is the mean
    of its models', a method's the mean over seeds, and the paired test pairs the seeds."""
    sweep = tmp_path / "sweep"
    held = {
        ("cory", 0): {"model_a": 0.50, "model_b": 0.30},
        ("cory", 1): {"model_a": 0.60, "model_b": 0.60},
        ("ppo", 0): {"policy": 0.25},
        ("ppo", 1): {"policy": 0.40},
    }
    for (method, seed), models in held.items():
        run = sweep / method / f"seed_{seed}"
        write_run(run, [(0, 0.1, 0.0), (2, 0.3, 1.0)], models=tuple(models))
        for m, p1 in models.items():
            (run / "models" / m).mkdir(parents=True)
            evaluation = {"model": m, "pass@1": p1, "pass@4": 2 * p1, "reward": p1, "kl": 1.0}
            (run / "models" / m / "evaluation.json").write_text(json.dumps(evaluation))
    report = load_script("scripts/report.py")
    summary = report.main([str(sweep), "--archive", str(tmp_path / "archive")])
    cory, ppo = (summary["methods"][m]["heldout"] for m in ("cory", "ppo"))
    assert cory["pass@1"]["mean"] == pytest.approx(0.5) and cory["pass@1"]["seeds"] == 2
    assert ppo["pass@4"]["mean"] == pytest.approx(0.65)  # (0.5 + 0.8) / 2
    (test,) = [p for p in summary["paired_heldout"] if p["stat"] == "pass@1"]
    assert test["diff"] == pytest.approx(((0.4 - 0.25) + (0.6 - 0.4)) / 2)  # per seed: 0.15, 0.2
    assert (
        "| held-out (final models) | seeds | pass@1 | pass@4 | reward | kl |"
        in (sweep / "report" / "table.md").read_text()
    )
    kept = tmp_path / "archive" / "cory" / "seed_0" / "models" / "model_b" / "evaluation.json"
    assert json.loads(kept.read_text())["pass@1"] == 0.30
    again = report.main([str(tmp_path / "archive")])  # the archive gives the same report
    assert again["methods"]["cory"]["heldout"] == summary["methods"]["cory"]["heldout"]


def test_the_course_of_each_run_is_read_and_paired_by_seed(tmp_path):
    """Per run the peak of its evaluation reward, the drop after it and its late slope; a
    method's numbers are means over seeds, and the paired test pairs the seeds."""
    sweep = tmp_path / "sweep"
    its = (0, 8, 16, 24)
    rewards = {
        ("cory", 0): (0.1, 0.2, 0.3, 0.4),  # rises to the end: no drop, slope +0.125
        ("cory", 1): (0.1, 0.3, 0.3, 0.5),  # slope +0.25
        ("ppo", 0): (0.1, 0.6, 0.5, 0.3),  # peak at 8, drop 0.3, slope -0.25
        ("ppo", 1): (0.1, 0.5, 0.4, 0.4),  # drop 0.1, slope 0
    }
    for (method, seed), r in rewards.items():
        write_run(sweep / method / f"seed_{seed}", [(i, x, i / 8) for i, x in zip(its, r)])
    summary = load_script("scripts/report.py").main([str(sweep)])
    cory, ppo = (summary["methods"][m]["course"] for m in ("cory", "ppo"))
    assert ppo["peak"]["mean"] == pytest.approx(0.55) and ppo["peak_iteration"]["mean"] == 8.0
    assert ppo["drop"]["per_seed"] == pytest.approx({"0": 0.3, "1": 0.1})
    assert ppo["late_slope"]["per_seed"] == pytest.approx({"0": -0.25, "1": 0.0})
    assert cory["drop"]["mean"] == 0.0 and cory["peak_iteration"]["mean"] == 24.0
    assert cory["late_slope"]["mean"] == pytest.approx((0.125 + 0.25) / 2)
    (test,) = [p for p in summary["paired_course"] if p["stat"] == "late_slope"]
    assert test["diff"] == pytest.approx(((0.125 + 0.25) + (0.25 - 0.0)) / 2)  # 0.375, 0.25
    assert "| cory − ppo | drop |" in (sweep / "report" / "table.md").read_text()


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
