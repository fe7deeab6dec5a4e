"""The GRPO family: its maths against hand-computed values, the learner's options on a fake
agent (uniform groups, truncation, no reference with kl_beta 0, state), and learning."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from helpers.fakes import BigramAgent, cfg, make_batch

from agents.rl import (
    GRPOLearner,
    Learner,
    aggregate_loss,
    group_advantages,
    grpo_surrogate,
    kl_loss_term,
    make_learner,
    uniform_groups,
)
from agents.rl.grpo import GRPOOptions, truncated_rows

EPS = 1e-4
SCORES = np.array([1.0, 0.0, 1.0, 0.0, 0.5, 0.5, 0.5, 0.5], np.float32)  # group 1 is uniform


def moved_agent(seed: int = 0) -> BigramAgent:
    """A bigram agent whose policy already differs from its reference (so the KL has a gradient)."""
    agent = BigramAgent()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        agent.head.weight.add_(0.5 * torch.randn(agent.head.weight.shape, generator=g))
    return agent


def sgd_learner(agent, group_size: int = 4, **kw) -> GRPOLearner:
    config = cfg(ppo_epochs=2, mini_batch_size=8, max_grad_norm=None, seed=5)
    opt = torch.optim.SGD(agent.trainable_parameters(), lr=0.5)
    return GRPOLearner(agent, config, group_size, optimizer=opt, **kw)


# ------------------------------------------------------------------ the maths, by hand


def test_advantages_equal_hand_computed_values_for_each_scale():
    r = torch.tensor([1.0, 2.0, 3.0, 6.0, 0.0, 0.0, 1.0, -1.0])
    centred = torch.tensor([-2.0, -1.0, 0.0, 3.0, 0.0, 0.0, 1.0, -1.0])  # group means 3 and 0
    std1, std2 = math.sqrt((4 + 1 + 0 + 9) / 3), math.sqrt((0 + 0 + 1 + 1) / 3)
    batch_std = math.sqrt(sum((x - 1.5) ** 2 for x in r.tolist()) / 7)  # batch mean 12/8
    group = centred / torch.tensor([std1 + EPS] * 4 + [std2 + EPS] * 4)
    torch.testing.assert_close(group_advantages(r, 4, "group"), group)
    torch.testing.assert_close(group_advantages(r, 4, "batch"), centred / (batch_std + EPS))
    torch.testing.assert_close(group_advantages(r, 4, "none"), centred)
    # a uniform group gets 0 under every scale (no NaN from its zero std)
    for scale in ("group", "batch", "none"):
        assert group_advantages(torch.tensor([2.0, 2.0, 1.0, 3.0]), 2, scale)[:2].tolist() == [
            0.0,
            0.0,
        ]
    with pytest.raises(ValueError, match="scale_rewards"):
        group_advantages(r, 4, "std")
    with pytest.raises(ValueError, match="multiple"):
        group_advantages(r[:7], 4)


def test_uniform_groups_are_those_of_equal_rewards():
    r = torch.tensor([1.0, 1.0, 1.0, 0.0, 1.0, 0.0, 2.0, 2.0, 2.0 + 1e-9])
    assert uniform_groups(r, 3).tolist() == [True, False, True]


def test_each_loss_aggregation_equals_its_formula_on_unequal_lengths():
    loss = torch.tensor([[1.0, 9.0, 9.0, 9.0], [2.0, 4.0, 6.0, 9.0], [5.0, 9.0, 9.0, 9.0]])
    mask = torch.tensor(
        [[1.0, 0, 0, 0], [1, 1, 1, 0], [0, 0, 0, 0]]
    )  # lengths 1, 3 and an empty row
    assert float(aggregate_loss(loss, mask, "token-mean")) == pytest.approx((1 + 2 + 4 + 6) / 4)
    assert float(aggregate_loss(loss, mask, "seq-mean-token-mean")) == pytest.approx(
        (1 / 1 + 12 / 3) / 2
    )
    assert float(aggregate_loss(loss, mask, "seq-mean-token-sum-norm", 8)) == pytest.approx(
        (1 + 12) / (2 * 8)
    )
    assert float(aggregate_loss(loss, mask, "seq-mean-token-sum-norm")) == pytest.approx(
        (1 + 12) / (2 * 4)
    )
    assert float(aggregate_loss(loss, torch.zeros_like(mask), "token-mean")) == 0.0
    with pytest.raises(ValueError, match="loss_aggregation"):
        aggregate_loss(loss, mask, "sum")


def surrogate_grad(ratios, adv, **kw):
    old = torch.zeros(1, len(ratios))
    logp = torch.log(torch.tensor([ratios])).requires_grad_(True)
    mask = torch.ones_like(old)
    loss, stats = grpo_surrogate(logp, old, torch.tensor([adv]), mask, **kw)
    loss.sum().backward()
    return loss.detach()[0], logp.grad[0], stats


def test_clip_higher_clips_at_the_two_asymmetric_bounds_and_not_elsewhere():
    ratios = [0.7, 0.85, 1.0, 1.25, 1.35]
    # A > 0: only r > 1 + eps_high = 1.3 is clipped (zero gradient); d(-A r)/dlog r = -A r elsewhere
    loss, grad, stats = surrogate_grad(ratios, 2.0, cliprange_low=0.2, cliprange_high=0.3)
    torch.testing.assert_close(loss, torch.tensor([-1.4, -1.7, -2.0, -2.5, -2.6]))
    torch.testing.assert_close(grad, torch.tensor([-1.4, -1.7, -2.0, -2.5, 0.0]))
    assert (
        float(stats["clipfrac_high"]) == pytest.approx(1 / 5) and float(stats["clipfrac_low"]) == 0
    )
    # A < 0: only r < 1 - eps_low = 0.8 is clipped
    loss, grad, stats = surrogate_grad(ratios, -2.0, cliprange_low=0.2, cliprange_high=0.3)
    torch.testing.assert_close(loss, torch.tensor([1.6, 1.7, 2.0, 2.5, 2.7]))
    torch.testing.assert_close(grad, torch.tensor([0.0, 1.7, 2.0, 2.5, 2.7]))
    assert (
        float(stats["clipfrac_low"]) == pytest.approx(1 / 5) and float(stats["clipfrac_high"]) == 0
    )
    # symmetric by default: 1.25 and 1.35 are both beyond 1.2
    _, grad, _ = surrogate_grad(ratios, 2.0, cliprange_low=0.2)
    assert grad[3:].tolist() == [0.0, 0.0] and bool((grad[:3] != 0).all())


def test_dual_clip_caps_the_loss_of_negative_advantages():
    loss, grad, stats = surrogate_grad([2.0, 4.0], -1.0, cliprange_low=0.2, dual_clip=3.0)
    torch.testing.assert_close(loss, torch.tensor([2.0, 3.0]))  # min(max(-A r, -A clip r), -A c)
    torch.testing.assert_close(grad, torch.tensor([2.0, 0.0]))
    assert float(stats["dual_clipfrac"]) == pytest.approx(0.5)
    loss, _, _ = surrogate_grad([4.0], 1.0, cliprange_low=0.2, dual_clip=3.0)
    torch.testing.assert_close(loss, torch.tensor([-1.2]))  # A > 0: the usual clip only


def test_sequence_ratio_is_exp_mean_log_ratio_with_gspos_gradient():
    g = torch.Generator().manual_seed(0)
    old = -torch.rand(3, 4, generator=g) - 0.5
    mask = torch.tensor([[1.0, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]])
    logp0 = old + torch.tensor([[0.01, 0.02, -0.01, 0.0], [0.3, 0.2, 0, 0], [-0.02, 0, 0, 0]])
    adv = torch.tensor([1.0, 1.0, -2.0])
    eps_low, eps_high = 0.05, 0.06
    logp = logp0.clone().requires_grad_(True)
    token_loss, stats = grpo_surrogate(logp, old, adv, mask, eps_low, eps_high, level="sequence")
    aggregate_loss(token_loss, mask, "seq-mean-token-mean").backward()
    # by hand: s_i = exp(mean_t log r_it); loss = mean_i max(-A_i s_i, -A_i clip(s_i))
    ref = logp0.clone().requires_grad_(True)
    s = torch.exp(((ref - old) * mask).sum(1) / mask.sum(1))
    hand = torch.max(-adv * s, -adv * s.clamp(1 - eps_low, 1 + eps_high)).mean()
    hand.backward()
    torch.testing.assert_close(logp.grad, ref.grad)
    assert float(stats["seq_ratio"]) == pytest.approx(float(s.detach().mean()))
    assert (
        float(s[1].detach()) > 1 + eps_high and float(ref.grad[1].abs().sum()) == 0
    )  # clipped as a whole


def test_kl_loss_estimators_by_hand():
    lp, ref, mask = torch.tensor([[-1.0, -2.0]]), torch.tensor([[-1.5, -1.0]]), torch.ones(1, 2)
    d = lp - ref  # log(pi/ref) = [0.5, -1]
    torch.testing.assert_close(kl_loss_term(lp, ref, mask, "k1"), d)
    torch.testing.assert_close(kl_loss_term(lp, ref, mask, "k2"), 0.5 * d**2)
    torch.testing.assert_close(kl_loss_term(lp, ref, mask, "k3"), torch.exp(-d) + d - 1)
    assert float(kl_loss_term(lp, lp, mask, "k3").abs().sum()) == 0.0


# ------------------------------------------------------------------ the learner's options


def test_uniform_groups_are_counted_and_contribute_no_gradient():
    """Dropped, the uniform group changes nothing: the update equals the one without it."""
    full, alone = moved_agent(), moved_agent()
    stats = sgd_learner(full, drop_uniform_groups=True).update(make_batch(), SCORES)
    sgd_learner(alone, drop_uniform_groups=True).update(make_batch().subset(range(4)), SCORES[:4])
    for p, q in zip(full.trainable_parameters(), alone.trainable_parameters()):
        torch.testing.assert_close(p, q)
    assert stats["grpo/uniform_groups"] == 0.5 and stats["grpo/trained_fraction"] == 0.5
    # kept (the default), the group is still counted and still moves the weights (KL term)
    kept = moved_agent()
    stats = sgd_learner(kept).update(make_batch(), SCORES)
    assert stats["grpo/uniform_groups"] == 0.5 and stats["grpo/trained_fraction"] == 1.0
    assert any(
        not torch.equal(p, q)
        for p, q in zip(kept.trainable_parameters(), full.trainable_parameters())
    )
    # all groups uniform: no step at all
    none = moved_agent()
    before = [p.detach().clone() for p in none.trainable_parameters()]
    stats = sgd_learner(none, drop_uniform_groups=True).update(make_batch(), np.ones(8, np.float32))
    assert stats["grpo/uniform_groups"] == 1.0 and stats["grpo/optimizer_steps"] == 0
    assert all(torch.equal(a, b) for a, b in zip(before, none.trainable_parameters()))


def test_mask_truncated_removes_exactly_the_truncated_rows():
    learner = sgd_learner(moved_agent(), mask_truncated=True)
    seen: list[int] = []
    loss = learner.loss
    learner.loss = lambda sub, idx, ro, targets: (
        seen.extend(idx.tolist()),
        loss(sub, idx, ro, targets),
    )[1]
    flags = np.array([0, 1, 0, 0, 0, 0, 1, 0], bool)
    stats = learner.update(make_batch(), SCORES, truncated=flags)
    assert sorted(set(seen)) == [0, 2, 3, 4, 5, 7] and len(seen) == 2 * 6  # 2 epochs
    assert stats["grpo/truncated"] == pytest.approx(0.25)
    with pytest.raises(ValueError, match="EOS"):  # the fake agent has no tokenizer to infer from
        sgd_learner(moved_agent(), mask_truncated=True).update(make_batch(), SCORES)
    # inferred: an answer is truncated when it does not end in EOS (id 0 here)
    assert truncated_rows(make_batch(), eos_token_id=0).tolist() == [True] * 7 + [False]


class CountingAgent(BigramAgent):
    ref_calls = 0

    def ref_logprobs(self, batch, full=False):
        self.ref_calls += 1
        return super().ref_logprobs(batch, full)


@pytest.mark.parametrize("kl_in", ["loss", "reward"])
def test_kl_beta_zero_never_calls_the_reference(kl_in):
    agent = CountingAgent()
    stats = sgd_learner(agent, kl_beta=0.0, kl_in=kl_in).update(make_batch(), SCORES)
    assert agent.ref_calls == 0 and math.isnan(stats["objective/kl"])
    assert "grpo/policy/kl" not in stats
    with_kl = CountingAgent()
    stats = sgd_learner(with_kl, kl_beta=0.1, kl_in=kl_in).update(make_batch(), SCORES)
    assert with_kl.ref_calls == 1 and math.isfinite(stats["objective/kl"])  # one chunk of 8 rows


def test_kl_in_the_loss_or_in_the_reward():
    batch = make_batch()
    loss_mode = sgd_learner(moved_agent(), kl_beta=0.1)
    stats = loss_mode.update(batch, SCORES)
    assert stats["objective/kl_coef"] == 0.0 and stats["grpo/policy/kl"] > 0  # k3 >= 0
    assert stats["grpo/loss/total"] == pytest.approx(
        stats["grpo/loss/policy"] + 0.1 * stats["grpo/loss/kl"]
    )
    assert stats["grpo/reward/mean"] == pytest.approx(float(SCORES.mean()))
    reward_mode = GRPOLearner(
        moved_agent(), cfg(adap_kl_ctrl=False), 4, kl_beta=0.5, kl_in="reward"
    )
    stats = reward_mode.update(batch, SCORES)
    assert stats["objective/kl_coef"] == 0.5 and abs(stats["objective/kl"]) > 1e-3
    assert stats["grpo/reward/mean"] == pytest.approx(
        stats["ppo/mean_scores"] - 0.5 * stats["objective/kl"], abs=1e-5
    )


def test_built_from_the_registry_with_options_and_validated():
    agent = BigramAgent()
    learner = make_learner(
        "grpo", agent, config=cfg(), group_size=2, loss_aggregation="token-mean", ppo_epochs=1
    )
    assert isinstance(learner, GRPOLearner) and isinstance(learner, Learner)
    assert learner.samples_per_query == 2 and learner.config.ppo_epochs == 1
    assert (
        learner.options.loss_aggregation == "token-mean"
        and learner.options.scale_rewards == "group"
    )
    opts = GRPOOptions(scale_rewards="none")
    assert make_learner("grpo", agent, options=opts, mask_truncated=True).options == GRPOOptions(
        scale_rewards="none", mask_truncated=True
    )
    for bad in (
        {"kl_beta": -1.0},
        {"dual_clip": 1.0},
        {"cliprange_high": 0.0},
        {"kl_in": "both"},
        {"importance_sampling": "group"},
        {"kl_estimator": "k4"},
    ):
        with pytest.raises(ValueError, match=next(iter(bad))):
            GRPOLearner(agent, cfg(), 4, **bad)
    with pytest.raises(ValueError, match="group_size >= 2"):
        GRPOLearner(agent, cfg(), 1)
    with pytest.raises(ValueError, match="multiple of 3"):
        GRPOLearner(agent, cfg(), 3).update(make_batch(), SCORES)


def plain(x) -> bool:
    if isinstance(x, dict):
        return all(isinstance(k, (str, int)) and plain(v) for k, v in x.items())
    if isinstance(x, (list, tuple)):
        return all(plain(v) for v in x)
    return x is None or isinstance(x, (torch.Tensor, int, float, str, bool))


def test_state_is_plain_and_reproduces_the_next_update():
    batch, options = make_batch(), {"drop_uniform_groups": True, "cliprange_high": 0.28}
    agent = moved_agent()
    learner = GRPOLearner(agent, cfg(mini_batch_size=4), 4, **options)
    learner.update(batch, SCORES)
    saved_agent, saved = copy.deepcopy(agent.state_dict()), copy.deepcopy(learner.state_dict())
    assert plain(saved) and saved["group_size"] == 4
    expected = learner.update(batch, SCORES)
    fresh_agent = moved_agent()
    fresh_agent.load_state_dict(saved_agent)
    fresh = GRPOLearner(fresh_agent, cfg(mini_batch_size=4), 4, **options)
    fresh.load_state_dict(saved)
    assert fresh.update(batch, SCORES) == expected
    with pytest.raises(ValueError, match="group_size=4"):
        GRPOLearner(moved_agent(), cfg(), 2).load_state_dict(saved)


@pytest.mark.parametrize(
    "variant",
    [
        {},
        {"scale_rewards": "none", "loss_aggregation": "seq-mean-token-sum-norm"},
        {"loss_aggregation": "token-mean", "cliprange_high": 0.28, "kl_beta": 0.0},
        {"importance_sampling": "sequence", "cliprange": 3e-2},
    ],
)
def test_every_variant_learns_the_rewarded_token(variant):
    """GRPO, Dr. GRPO, DAPO, GSPO: responses starting with token 3 are rewarded; each raises
    that token's probability after the prompt token 2."""
    shared = {k: variant.pop(k) for k in ("cliprange",) if k in variant}
    agent = BigramAgent()
    learner = GRPOLearner(agent, cfg(learning_rate=1e-1, **shared), 4, **variant)
    rewarded = np.array(
        [
            1.0 if r[0] == 3 else 0.0
            for r in [[3, 4], [5], [3], [4, 5, 1], [3, 5, 4], [4], [5, 5], [3, 0]]
        ],
        np.float32,
    )
    before = agent.prob(2, 3)
    for _ in range(5):
        learner.update(make_batch(), rewarded)
    assert agent.prob(2, 3) > before + 0.1
