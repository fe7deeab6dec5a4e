"""pass@k against its closed form, and scripts/evaluate.py on a tiny model and on a run's
exported adapter folder."""

from __future__ import annotations

import dataclasses
from math import comb

import pytest
import torch
from helpers.configs import small_config
from helpers.scripts import load_script
from helpers.tiny import tiny_model, tiny_tokenizer

from agents.cory import CoryTrainer
from agents.run.evaluate import pass_at_k
from cory_env import GenerationConfig, Query, Task
from cory_env.rewards import make_reward


@pytest.mark.parametrize(
    ("n", "c", "k"), [(5, 0, 1), (5, 1, 1), (5, 2, 3), (10, 3, 5), (4, 4, 2), (6, 5, 2)]
)
def test_pass_at_k_equals_the_closed_form(n, c, k):
    assert pass_at_k(n, c, k) == pytest.approx(1 - comb(n - c, k) / comb(n, k))


def test_pass_at_k_refuses_impossible_counts():
    with pytest.raises(ValueError):
        pass_at_k(4, 5, 1)
    with pytest.raises(ValueError):
        pass_at_k(4, 1, 5)


def test_evaluate_a_tiny_model_on_an_answer_checked_task_and_on_sentiment():
    torch.manual_seed(0)
    script = load_script("scripts/evaluate.py")
    sums = [Query(f"{a}+{b}=", str(a + b)) for a, b in ((2, 2), (3, 5), (1, 0))]
    task = Task(
        name="sums",
        train_queries=sums,
        eval_queries=sums,
        reward_fn=make_reward("answer-match"),
        generation=GenerationConfig(max_new_tokens=3, max_prompt_tokens=16),
    )
    args = script.Args(model="tiny", task="sums", eval_size=3, samples=4, k=[1, 2])
    result = script.evaluate(
        args, policy=tiny_model(), reference=tiny_model(), tokenizer=tiny_tokenizer(), task=task
    )
    assert result["questions"] == 3 and result["samples"] == 4
    assert 0.0 <= result["pass@1"] <= result["pass@2"] <= 1.0
    assert result["kl"] == pytest.approx(0.0, abs=1e-5)  # the reference is the same weights
    plain = script.evaluate(
        script.Args(model="tiny", task="sentiment", eval_size=4, max_new_tokens=3),
        policy=tiny_model(),
        reference=tiny_model(),
        tokenizer=tiny_tokenizer(),
    )
    assert "pass@1" not in plain and plain["reward_se"] >= 0


def test_evaluate_an_exported_adapter_folder(tmp_path, monkeypatch):
    CoryTrainer(
        small_config(tmp_path, iterations=1, eval_every=0),
        model=tiny_model(),
        tokenizer=tiny_tokenizer(),
    ).train()
    script = load_script("scripts/evaluate.py")
    monkeypatch.setattr(script, "load_model", lambda name, **kw: (tiny_model(), tiny_tokenizer()))
    folder = tmp_path / "run" / "models" / "model_a"
    args = script.Args(model=str(folder), task="sentiment", eval_size=4, max_new_tokens=3)
    with pytest.raises(SystemExit, match="records no base model: pass --base"):
        script.main(args)  # a model built in memory has no name to record
    result = script.main(dataclasses.replace(args, base="tiny"))
    assert result["kl"] != pytest.approx(
        0.0, abs=1e-6
    )  # the trained adapter moved away from its base
    assert (folder / "evaluation.json").is_file()
