"""The RLOO learner: leave-one-out maths, updates on the tiny model, validation, state, docs."""

from __future__ import annotations

import copy
import math
import re
from pathlib import Path

import pytest
import torch
from helpers.tiny import tiny_model, tiny_tokenizer

from agents.policy.agent import LLMAgent
from agents.rl import LearnerConfig
from agents.rl import learner as learner_mod
from agents.rl.batch import TokenBatch
from agents.rl.learner import Learner, make_learner
from agents.rl.rloo import RLOOLearner, check_group_size, rloo_advantages

DOCS = Path(__file__).resolve().parents[1] / "docs" / "learners.md"


def make_agent() -> LLMAgent:
    return LLMAgent.full_copy(tiny_model(), tiny_tokenizer())


def grouped_batch(group_size: int = 4, groups: int = 2, seed: int = 0) -> TokenBatch:
    """``groups`` queries, each followed by ``group_size`` distinct random responses (lengths 2-5)."""
    tok = tiny_tokenizer()
    texts = ["This movie was", "Question: Tom has 3 apples"]
    g = torch.Generator().manual_seed(seed)
    queries, responses = [], []
    for i in range(groups):
        q = tok.encode(texts[i % len(texts)])
        for _ in range(group_size):
            n = int(torch.randint(2, 6, (1,), generator=g))
            queries.append(q)
            responses.append(torch.randint(1, len(tok), (n,), generator=g).tolist())
    return TokenBatch.from_lists(queries, responses, tok.pad_token_id)


def config(**kw) -> LearnerConfig:
    base = dict(learning_rate=1e-2, mini_batch_size=4, ppo_epochs=2, init_kl_coef=0.1, seed=3)
    base.update(kw)
    return LearnerConfig(**base)


def seq_logprobs(agent: LLMAgent, batch: TokenBatch) -> torch.Tensor:
    with torch.no_grad():
        return (agent.forward(batch).logprobs * batch.response_mask).sum(1)


# ------------------------------------------------------------------ the pure maths


def test_rloo_advantages_match_hand_computed_values():
    rewards = torch.tensor([1.0, 2.0, 3.0, 6.0, 0.0, 0.0, 1.0, -1.0])
    # group 1 (sum 12): 1 - 11/3, 2 - 10/3, 3 - 9/3, 6 - 6/3; group 2 (sum 0): 0 - 0/3, 0 - 0/3, 1 + 1/3, -1 - 1/3
    expected = torch.tensor([-8 / 3, -4 / 3, 0.0, 4.0, 0.0, 0.0, 4 / 3, -4 / 3])
    adv = rloo_advantages(rewards, 4)
    torch.testing.assert_close(adv, expected)
    torch.testing.assert_close(adv.reshape(2, 4).sum(1), torch.zeros(2))
    # group_size 2: each sample's baseline is the other one
    torch.testing.assert_close(
        rloo_advantages(torch.tensor([1.0, 3.0, 5.0, 5.0]), 2), torch.tensor([-2.0, 2.0, 0.0, 0.0])
    )


@pytest.mark.parametrize("n, group_size", [(8, 1), (8, 0), (6, 4), (0, 2), (4, 2.0), (4, True)])
def test_invalid_group_sizes_raise(n, group_size):
    with pytest.raises(ValueError):
        check_group_size(n, group_size)
    with pytest.raises(ValueError):
        rloo_advantages(torch.zeros(n), group_size)


def test_rloo_advantages_reject_non_1d_rewards():
    with pytest.raises(ValueError, match="1-D"):
        rloo_advantages(torch.zeros(2, 4), 4)


# ------------------------------------------------------------------ the learner


def test_invalid_k_and_batches_raise_clear_errors():
    agent = make_agent()
    for size in (1, 0, -3):
        with pytest.raises(ValueError, match="group_size >= 2"):
            RLOOLearner(agent, config(), group_size=size)
    learner = RLOOLearner(agent, config(), group_size=4)
    batch = grouped_batch(group_size=3, groups=2)  # 6 rows: not groups of 4
    with pytest.raises(ValueError, match="multiple of 4"):
        learner.update(batch, [0.0] * 6)
    ok = grouped_batch(group_size=4, groups=2)
    with pytest.raises(ValueError, match="7 scores"):
        learner.update(ok, [0.0] * 7)
    with pytest.raises(ValueError, match="finite"):
        learner.update(ok, [math.nan] + [0.0] * 7)
    assert learner.num_updates == 0


def test_make_learner_builds_rloo_with_config_and_overrides():
    agent = make_agent()
    learner = make_learner("rloo", agent, config=config(), group_size=2)
    assert isinstance(learner, RLOOLearner) and isinstance(learner, Learner)
    assert learner.samples_per_query == 2 and learner.agent is agent
    assert learner.config.learning_rate == 1e-2
    over = make_learner("rloo", make_agent(), config=config(), group_size=3, ppo_epochs=1)
    assert over.samples_per_query == 3 and over.config.ppo_epochs == 1
    assert "rloo" in learner_mod.available_learners()


def test_update_changes_the_policy_but_not_the_value_head():
    agent = make_agent()
    learner = RLOOLearner(agent, config(), group_size=4)
    policy = [p.detach().clone() for p in agent.model.parameters()]
    head = [p.detach().clone() for p in agent.value_head.parameters()]
    stats = learner.update(grouped_batch(), [1.0, 0.0, 0.0, 0.5, 0.0, 2.0, 1.0, 0.0])

    assert any(not torch.equal(a, b) for a, b in zip(policy, agent.model.parameters()))
    assert all(torch.equal(a, b) for a, b in zip(head, agent.value_head.parameters()))
    assert all(p.grad is None for p in agent.value_head.parameters())
    for key in (
        "objective/kl",
        "objective/kl_coef",
        "rloo/loss/policy",
        "rloo/advantage/std",
        "ppo/mean_scores",
        "env/reward_mean",
        "rloo/policy/clipfrac",
        "rloo/grad_norm",
    ):
        assert key in stats and math.isfinite(stats[key]), key
    assert stats["objective/kl"] == pytest.approx(0.0, abs=1e-5)  # policy == reference at first
    assert stats["ppo/mean_scores"] == pytest.approx(4.5 / 8)
    assert stats["rloo/epochs"] == 2.0 and learner.num_updates == 1


def test_reward_is_score_minus_kl_coef_times_sequence_kl():
    learner = RLOOLearner(make_agent(), config(init_kl_coef=0.5, adap_kl_ctrl=False), group_size=4)
    batch, scores = grouped_batch(), [1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]
    learner.update(batch, scores)
    stats = learner.update(batch, scores)  # the policy has moved: the KL is no longer 0
    assert abs(stats["objective/kl"]) > 1e-4
    assert stats["rloo/reward/mean"] == pytest.approx(
        stats["ppo/mean_scores"] - 0.5 * stats["objective/kl"], abs=1e-5
    )
    assert stats["rloo/advantage/mean"] == pytest.approx(0.0, abs=1e-5)


def test_repeated_updates_raise_the_rewarded_responses_logprob():
    agent = make_agent()
    learner = RLOOLearner(agent, config(init_kl_coef=0.0, adap_kl_ctrl=False), group_size=4)
    batch = grouped_batch()
    scores = [1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0]  # one rewarded answer per group
    before = seq_logprobs(agent, batch)
    for _ in range(4):
        learner.update(batch, scores)
    gain = seq_logprobs(agent, batch) - before
    assert gain[0] > 0.5 and gain[6] > 0.5
    others = [1, 2, 3, 4, 5, 7]
    assert bool((gain[[0, 6]].min() > gain[others]).all())


def test_one_epoch_one_minibatch_is_reinforce_with_the_leave_one_out_baseline():
    """With SGD(lr=1), one epoch over one mini-batch, no clipping: the step is the RLOO
    gradient -(1/#tokens) * sum_i A_i * grad log pi(y_i | x_i)."""
    batch = grouped_batch(group_size=2, groups=3)
    scores = torch.tensor([1.0, 0.0, 0.5, 2.0, -1.0, 0.0])
    agent = make_agent()
    params = list(agent.model.parameters())
    start = [p.detach().clone() for p in params]
    sgd = torch.optim.SGD(agent.trainable_parameters(), lr=1.0)
    cfg = config(
        ppo_epochs=1, mini_batch_size=6, max_grad_norm=None, init_kl_coef=0.0, adap_kl_ctrl=False
    )
    RLOOLearner(agent, cfg, group_size=2, optimizer=sgd).update(batch, scores)

    manual = make_agent()
    adv = rloo_advantages(scores, 2)
    logp = (manual.forward(batch).logprobs * batch.response_mask).sum(1)
    (-(adv * logp).sum() / batch.response_mask.sum()).backward()
    for p0, p, q in zip(start, params, manual.model.parameters()):
        expected = -q.grad if q.grad is not None else torch.zeros_like(p0)
        torch.testing.assert_close(p.detach() - p0, expected, rtol=1e-4, atol=1e-6)


def test_full_kl_estimator_and_score_scaling_run():
    cfg = config(kl_penalty="full", use_score_scaling=True, use_score_norm=True, score_clip=3.0)
    learner = RLOOLearner(make_agent(), cfg, group_size=4)
    batch, scores = grouped_batch(), [3.0, 0.0, 1.0, 0.0, 0.0, 5.0, 1.0, 0.0]
    learner.update(batch, scores)
    stats = learner.update(batch, scores)
    assert stats["objective/kl"] > 0  # the exact KL is non-negative
    assert all(math.isfinite(v) for v in stats.values())


def test_state_dict_round_trip_reproduces_the_next_update_exactly():
    cfg = config(use_score_scaling=True, target=0.01, horizon=10.0)
    batch, scores = grouped_batch(), [1.0, 0.0, 0.0, 0.5, 0.0, 2.0, 1.0, 0.0]
    agent = make_agent()
    learner = RLOOLearner(agent, cfg, group_size=4)
    learner.update(batch, scores)
    saved_agent = copy.deepcopy(agent.state_dict())
    saved = copy.deepcopy(learner.state_dict())
    assert set(saved) >= {"optimizer", "kl_ctl", "running", "generator", "group_size"}
    expected = learner.update(batch, scores)

    fresh_agent = make_agent()
    fresh_agent.load_state_dict(saved_agent)
    fresh = RLOOLearner(fresh_agent, cfg, group_size=4)
    fresh.load_state_dict(saved)
    assert fresh.kl_ctl.value == saved["kl_ctl"]["value"] != cfg.init_kl_coef
    assert fresh.update(batch, scores) == expected
    for p, q in zip(agent.trainable_parameters(), fresh_agent.trainable_parameters()):
        assert torch.equal(p, q)

    with pytest.raises(ValueError, match="group_size=4"):
        RLOOLearner(make_agent(), cfg, group_size=2).load_state_dict(saved)


# ------------------------------------------------------------------ the documented example


def test_the_docs_worked_example_runs():
    blocks = re.findall(r"```python\n(.*?)```", DOCS.read_text(), flags=re.S)
    example = next(b for b in blocks if "class Reinforce" in b)
    namespace: dict = {}
    try:
        exec(compile(example, str(DOCS), "exec"), namespace)
        agent = make_agent()
        learner = make_learner("reinforce", agent, config=config(), group_size=4)
        assert isinstance(learner, Learner) and learner.samples_per_query == 4
        batch = grouped_batch()
        before = seq_logprobs(agent, batch)
        stats = learner.update(batch, [1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0])
        assert {"objective/kl", "reinforce/loss"} <= set(stats)
        assert not torch.equal(before, seq_logprobs(agent, batch))
        with pytest.raises(ValueError):
            learner.update(grouped_batch(group_size=3), [0.0] * 6)
    finally:
        if "reinforce" in learner_mod._REGISTRY:
            learner_mod._REGISTRY.unregister("reinforce")


# ------------------------------------------------------------------ through the CORY trainer


def test_cory_with_an_rloo_model_and_a_ppo_model_trains_swaps_and_resumes(tmp_path):
    from agents.cory import CoryTrainer
    from agents.run.config import TrainConfig
    from cory_env.rewards import register_reward

    # a dense reward: the tiny model's answers all score 0 under VADER, and the weights
    # would then move on float noise alone
    register_reward(
        "test-length",
        lambda: lambda queries, responses: [len(r) / 10 for r in responses],
        replace=True,
    )

    def cfg(name: str, **kw) -> TrainConfig:
        return TrainConfig(
            task="sentiment",
            iterations=2,
            batch_size=2,
            mini_batch_size=2,
            ppo_epochs=2,
            learning_rate=1e-2,
            max_new_tokens=3,
            min_new_tokens=2,
            swap_period=1,
            eval_every=0,
            output_dir=str(tmp_path / name),
            progress=False,
            mode="full",
            learner="rloo",
            observer_learner="ppo",
            group_size=2,
            reward="test-length",
            **kw,
        )

    def trainer(c: TrainConfig) -> CoryTrainer:
        return CoryTrainer(c, model=tiny_model(), tokenizer=tiny_tokenizer())

    full = trainer(cfg("a"))
    a, b = full.learners["model_a"], full.learners["model_b"]
    assert isinstance(a, RLOOLearner) and a.samples_per_query == 2 and b.samples_per_query == 1
    assert full.run.venv.num_envs == 4  # 2 queries x group_size 2 samples
    before = [p.detach().clone() for p in a.agent.trainable_parameters()]
    rows = full.train()
    assert full.roles.num_swaps == 2
    assert any(not torch.equal(x, y) for x, y in zip(before, a.agent.trainable_parameters()))
    # model_a (RLOO) was pioneer, then observer; its stats are under its role
    assert "pioneer/rloo/loss/policy" in rows[0] and "observer/rloo/loss/policy" in rows[1]
    assert "observer/ppo/loss/policy" in rows[0]

    timing = ("charts/rollout_s", "charts/iteration_s")
    trainer(cfg("b")).train(stop_after=1)
    resumed = trainer(cfg("b", resume=True))
    rows_b = resumed.train()
    drop = lambda rs: [{k: v for k, v in r.items() if k not in timing} for r in rs]  # noqa: E731
    assert drop(rows_b) == drop(rows)
    for p, q in zip(
        a.agent.trainable_parameters(), resumed.learners["model_a"].agent.trainable_parameters()
    ):
        assert torch.equal(p, q)
