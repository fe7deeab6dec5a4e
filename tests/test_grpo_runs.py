"""GRPO in the trainers: any seat of CORY next to PPO, role exchange, resume, the
single-agent control, refill rounds, no value head, the docs' recipes, and learning."""

from __future__ import annotations

import dataclasses
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.configs import small_config
from helpers.tiny import tiny_model, tiny_tokenizer

from agents.cory import CoryTrainer
from agents.policy.agent import LLMAgent
from agents.rl import GRPOLearner, PPOLearner
from agents.run.cli import parse
from agents.run.episode_batch import EpisodeBatch, refill
from agents.run.rollout import Turns
from baselines.ppo import SingleAgentTrainer

DOCS = Path(__file__).resolve().parents[1] / "docs" / "learners.md"
TIMING = ("charts/rollout_s", "charts/iteration_s")


def drop_timing(rows):
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


def params(learner):
    return [p.detach().clone() for p in learner.agent.trainable_parameters()]


def vowel_share(queries, responses):
    """A dense toy reward: the share of vowels in the answer."""
    return np.array([sum(c in "aeiou" for c in r) / max(len(r), 1) for r in responses], np.float32)


def build(cls, cfg, task=None):
    from cory_env.tasks import make_task

    task = task or make_task("sentiment").with_reward(vowel_share)
    return cls(cfg, model=tiny_model(), tokenizer=tiny_tokenizer(), task=task)


def test_grpo_and_ppo_seats_train_swap_with_their_state_and_resume(tmp_path):
    cfg = small_config(
        tmp_path / "a",
        learner="grpo",
        observer_learner="ppo",
        group_size=2,
        batch_size=2,
        mini_batch_size=2,
        max_new_tokens=3,
        min_new_tokens=2,
        iterations=3,
        swap_period=1,
        eval_every=0,
        kl_beta=0.1,
    )
    full = build(CoryTrainer, cfg)
    a, b = full.learners["model_a"], full.learners["model_b"]
    assert isinstance(a, GRPOLearner) and isinstance(b, PPOLearner)
    assert a.agent.value_head is None and b.agent.value_head is not None  # none built for GRPO
    assert full.run.venv.num_envs == 4 and a.max_answer_length == 3
    before = {m: params(lr) for m, lr in full.learners.items()}
    rows = full.train()
    for m, lr in full.learners.items():
        assert any(
            not torch.equal(x, y) for x, y in zip(before[m], lr.agent.trainable_parameters())
        ), m
    # model_a (GRPO) was pioneer, observer, pioneer; each learner kept its Adam state through the swaps
    assert "pioneer/grpo/loss/policy" in rows[0] and "observer/grpo/loss/policy" in rows[1]
    assert "observer/ppo/loss/value" in rows[0] and "pioneer/ppo/loss/value" in rows[1]
    for learner in (a, b):
        steps = [float(s["step"]) for s in learner.optimizer.state_dict()["state"].values()]
        assert steps and min(steps) >= 3 * 2  # 3 updates x 2 epochs x 1 mini-batch step
    for key in (
        "grpo/policy/clipfrac_low",
        "grpo/policy/clipfrac_high",
        "grpo/policy/seq_ratio",
        "grpo/policy/kl",
        "grpo/uniform_groups",
        "grpo/advantage/std",
        "grpo/length/mean",
    ):
        assert f"pioneer/{key}" in rows[0], key
    assert rows[0]["charts/episodes"] == 4 and rows[0]["charts/refill_rounds"] == 0

    cfg_b = dataclasses.replace(cfg, output_dir=str(tmp_path / "b" / "run"))
    build(CoryTrainer, cfg_b).train(stop_after=1)
    resumed = build(CoryTrainer, dataclasses.replace(cfg_b, resume=True))
    assert drop_timing(resumed.train()) == drop_timing(rows)
    for m in full.learners:
        for p, q in zip(
            full.learners[m].agent.trainable_parameters(),
            resumed.learners[m].agent.trainable_parameters(),
        ):
            assert torch.equal(p, q)


def test_the_single_agent_control_runs_grpo_without_a_value_head(tmp_path):
    cfg = small_config(
        tmp_path,
        learner="grpo",
        group_size=2,
        batch_size=2,
        iterations=2,
        eval_every=2,
        kl_beta=0.0,
        loss_aggregation="seq-mean-token-sum-norm",
    )
    trainer = build(SingleAgentTrainer, cfg)
    learner = trainer.learner
    assert isinstance(learner, GRPOLearner) and learner.agent.value_head is None
    assert trainer.run.venv.num_envs == 4 and learner.max_answer_length == 5
    before = params(learner)
    rows = trainer.train()
    assert any(not torch.equal(x, y) for x, y in zip(before, learner.agent.trainable_parameters()))
    assert (
        np.isnan(rows[0]["policy/kl"]) and rows[-1]["eval/policy/kl"] >= 0
    )  # eval still measures KL
    assert "policy/grpo/loss/policy" in rows[0] and "policy/grpo/policy/kl" not in rows[0]


def test_an_agent_without_a_value_head():
    agent = LLMAgent.full_copy(tiny_model(), tiny_tokenizer(), value_head=False)
    assert agent.value_head is None and "value_head" not in agent.state_dict()
    assert all(p is not None for p in agent.trainable_parameters())
    with pytest.raises(ValueError, match="value head"):
        PPOLearner(agent)
    with pytest.raises(ValueError, match="value head mismatch"):
        LLMAgent.full_copy(tiny_model(), tiny_tokenizer()).load_state_dict(agent.state_dict())
    heads = LLMAgent.lora_agents(
        tiny_model(), tiny_tokenizer(), n=2, r=4, value_heads=[False, True]
    )
    assert heads[0].value_head is None and heads[1].value_head is not None


def episodes(rewards, tag):
    n = len(rewards)
    turns = Turns(
        prompts=[np.array([1])] * n,
        responses=[np.array([2])] * n,
        texts=[f"{tag}{i}" for i in range(n)],
        scores=np.asarray(rewards, np.float32),
        rewards=np.asarray(rewards, np.float32),
    )
    return EpisodeBatch([f"{tag}{i // 2}" for i in range(n)], [turns], [np.zeros(n, bool)])


def test_refill_rounds_keep_informative_groups_in_rollout_order():
    first = episodes([1, 1, 0, 1], "a")  # group a0 uniform, a1 informative
    more = iter(
        [episodes([2, 2, 3, 3], "b"), episodes([5, 6, 7, 7], "c"), episodes([0, 1, 0, 1], "d")]
    )
    batch, rounds = refill(first, lambda: next(more), seats=[0], group_size=2, groups=2, rounds=3)
    assert rounds == 2 and batch.queries == ["a1", "a1", "c0", "c0"]
    assert batch.turns[0].rewards.tolist() == [0, 1, 5, 6] and batch.turns[0].texts == [
        "a2",
        "a3",
        "c0",
        "c1",
    ]
    # too few informative groups within the rounds: filled up with uniform ones, in rollout order
    more = iter([episodes([2, 2, 3, 3], "b")])
    batch, rounds = refill(first, lambda: next(more), seats=[0], group_size=2, groups=2, rounds=1)
    assert rounds == 1 and batch.queries == ["a0", "a0", "a1", "a1"]
    # enough already, or no seat drops uniform groups: nothing is rolled out
    assert refill(episodes([0, 1, 2, 3], "a"), None, [0], 2, 2, 3)[1] == 0
    assert refill(first, None, [], 2, 2, 3)[1] == 0


def test_refill_rounds_in_a_run_count_their_episodes(tmp_path):
    def reward(queries, responses):  # "The plot..." openings always get 0: their groups are uniform
        return np.array(
            [
                0.0 if str(q).startswith("The") else float(len(r) % 3)
                for q, r in zip(queries, responses)
            ],
            np.float32,
        )

    from helpers.tasks import make_test_task

    cfg = small_config(
        tmp_path / "a",
        learner="grpo",
        group_size=2,
        batch_size=2,
        iterations=4,
        eval_every=0,
        drop_uniform_groups=True,
        refill_rounds=3,
    )
    rows = build(SingleAgentTrainer, cfg, task=make_test_task(reward)).train()
    for r in rows:
        assert r["charts/episodes"] == 4 * (1 + r["charts/refill_rounds"])
        assert r["policy/grpo/refill_rounds"] == r["charts/refill_rounds"]
    assert sum(r["charts/refill_rounds"] for r in rows) > 0
    assert any(r["policy/grpo/uniform_groups"] < 1 for r in rows)
    # the refill rounds draw from the run's saved random streams: resume reproduces them
    cfg_b = dataclasses.replace(cfg, output_dir=str(tmp_path / "b" / "run"))
    build(SingleAgentTrainer, cfg_b, task=make_test_task(reward)).train(stop_after=2)
    resumed = build(
        SingleAgentTrainer, dataclasses.replace(cfg_b, resume=True), task=make_test_task(reward)
    )
    assert drop_timing(resumed.train()) == drop_timing(rows)


def test_the_docs_recipes_parse():
    recipes = re.findall(
        r"^python scripts/run_(?:cory|ppo)\.py (.*--learner grpo.*)$", DOCS.read_text(), re.M
    )
    assert len(recipes) >= 4
    for line in recipes:
        args = shlex.split(line.split("#")[0])
        cfg = parse("", [*args, "--output-dir", "x"])
        assert "grpo" in (cfg.learner, cfg.observer_learner)
    gspo = parse("", [*shlex.split(next(r for r in recipes if "sequence" in r).split("#")[0])])
    assert gspo.cliprange < 0.01 and gspo.importance_sampling == "sequence"
    assert parse("", ["--rloo-k", "3"]).group_size == 3  # the old name still works


@pytest.mark.parametrize("trainer_cls", [SingleAgentTrainer, CoryTrainer])
def test_grpo_raises_a_dense_reward(tmp_path, trainer_cls):
    cfg = small_config(
        tmp_path,
        learner="grpo",
        group_size=4,
        iterations=12,
        batch_size=4,
        mini_batch_size=8,
        ppo_epochs=4,
        learning_rate=3e-2,
        kl_beta=0.0,
        max_new_tokens=6,
        min_new_tokens=6,
        eval_every=0,
        mode="full",
        swap_period=3,
    )
    rows = build(trainer_cls, cfg).train()
    models = trainer_cls.models
    first = sum(rows[0][f"{m}/score"] for m in models) / len(models)
    last = sum(r[f"{m}/score"] for r in rows[-3:] for m in models) / (3 * len(models))
    assert first < 0.2 and last > first + 0.3, (first, last)


def test_grpo_in_a_chain_of_three_trains_every_seat_and_resumes(tmp_path):
    """One learner per model (``--learners``): GRPO, PPO and RLOO in a chain of three."""
    cfg = small_config(
        tmp_path / "a",
        num_agents=3,
        learners="grpo,ppo,rloo",
        group_size=2,
        batch_size=2,
        mini_batch_size=2,
        max_new_tokens=3,
        min_new_tokens=2,
        iterations=3,
        swap_period=1,
        eval_every=0,
    )
    full = build(CoryTrainer, cfg)
    grpo, ppo, rloo = (full.learners[m] for m in ("model_a", "model_b", "model_c"))
    assert isinstance(grpo, GRPOLearner) and isinstance(ppo, PPOLearner) and rloo.name == "rloo"
    assert [lr.agent.value_head is None for lr in (grpo, ppo, rloo)] == [True, False, True]
    before = {m: params(lr) for m, lr in full.learners.items()}
    rows = full.train()
    for m, lr in full.learners.items():
        assert any(
            not torch.equal(x, y) for x, y in zip(before[m], lr.agent.trainable_parameters())
        ), m
    # the rotation moves the GRPO model along the chain: pioneer, then the last seat, ...
    seats = [next(k.split("/")[0] for k in r if k.endswith("/grpo/loss/policy")) for r in rows[:3]]
    assert len(set(seats)) == 3, seats
    cfg_b = dataclasses.replace(cfg, output_dir=str(tmp_path / "b" / "run"))
    build(CoryTrainer, cfg_b).train(stop_after=2)
    resumed = build(CoryTrainer, dataclasses.replace(cfg_b, resume=True))
    assert drop_timing(resumed.train()) == drop_timing(rows)
