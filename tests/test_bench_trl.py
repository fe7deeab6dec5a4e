"""bench/trl_grpo.py without TRL: our side's per-step timing on the tiny model (the steps
asked, each one optimiser step that moves the adapters; no reference pass at beta 0), and
the one-line exit naming trl where it is not installed. No test needs trl or the network."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import numpy as np
import pytest
import torch
from helpers.scripts import ROOT, load_script

bench = load_script("bench/trl_grpo.py")
TINY = dict(model="tiny", queries=2, group_size=2, new_tokens=4, warmup=0)


def length_reward():
    """Each answer's length in characters: rewards that differ within a group (the tiny
    model's answers score 0 with VADER, which leaves nothing to learn)."""
    return lambda queries, answers: np.array([float(len(a)) for a in answers])


@pytest.fixture(autouse=True)
def varied_reward(monkeypatch):
    monkeypatch.setattr(bench, "reward", length_reward)


def timed_steps(beta: float, steps: int = 2):
    """Our trainer at ``beta``, its adapters before, and ``steps`` timed steps."""
    trainer = bench.our_trainer(bench.Args(**TINY, steps=steps), beta)
    params = list(trainer.learner.agent.trainable_parameters())
    before = [p.detach().clone() for p in params]
    return trainer, params, before, bench.time_ours(trainer, steps)


@pytest.mark.parametrize("beta", [0.04, 0.0])
def test_each_timed_step_is_one_optimiser_step_that_moves_the_adapters(beta):
    trainer, params, before, rows = timed_steps(beta)
    assert len(rows) == 2
    assert any(not torch.equal(p, b) for p, b in zip(params, before, strict=True))
    # one mini-batch of every answer, one epoch: one Adam step per iteration
    adam = trainer.learner.optimizer
    assert {int(adam.state[p]["step"]) for p in params if p in adam.state} == {2}
    for row in rows:
        parts = row["rollout_s"] + row["ref_pass_s"] + row["update_s"]
        assert parts == pytest.approx(row["step_s"], rel=1e-9)
        assert 0 < row["rollout_s"] < row["step_s"] and row["update_s"] > 0
        assert 1 <= row["answer_tokens"] <= 4  # at most new_tokens, fewer where EOS came first


def test_beta_0_runs_no_reference_pass_and_beta_0_04_one_per_step():
    *_, with_kl = timed_steps(0.04)
    trainer, *_, without = timed_steps(0.0)
    assert [r["ref_calls"] for r in with_kl] == [1, 1]  # 4 answers: one chunk of the pass
    assert all(r["ref_pass_s"] > 0 for r in with_kl)
    assert not trainer.learner.uses_reference
    assert [(r["ref_calls"], r["ref_pass_s"]) for r in without] == [(0, 0.0), (0, 0.0)]


def test_the_summary_drops_the_warm_up_steps_and_takes_medians():
    rows = [{"step_s": s, "rollout_s": s / 2} for s in (9.0, 1.0, 3.0, 2.0)]
    out = bench.summary(rows, warmup=1)
    assert out == {"step_s": 2.0, "rollout_s": 1.0, "steps": 3, "step_times_s": [1.0, 3.0, 2.0]}


def test_our_side_alone_runs_in_a_child_process_without_trl():
    out = bench.main(bench.Args(**{**TINY, "warmup": 1}, steps=1, betas=(0.0,), sides=("ours",)))
    assert out["trl_version"] is None and "ours_over_trl_beta_0" not in out
    ours = out["ours_beta_0"]
    assert ours["steps"] == 1 and ours["ref_calls"] == 0 and ours["torch_threads"] == 2


def test_without_trl_the_bench_says_what_it_needs(monkeypatch):
    monkeypatch.setitem(sys.modules, "trl", None)  # import trl fails
    with pytest.raises(SystemExit, match=r"needs trl \(measured with trl 1\.13\.0\)") as err:
        bench.main(bench.Args(**TINY, steps=1))
    assert "pip install . trl==1.13.0" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.skipif(importlib.util.find_spec("trl") is not None, reason="trl is installed")
def test_the_script_exits_non_zero_naming_trl_where_it_is_missing():
    res = subprocess.run(
        [sys.executable, "bench/trl_grpo.py", "--model", "tiny"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert res.returncode == 1 and res.stdout == ""
    (line,) = res.stderr.strip().splitlines()
    assert line.startswith("bench/trl_grpo.py needs trl") and "python3 -m venv" in line
