"""The PPO core: hand-computed values for the pure functions, and PPOLearner on a tiny agent."""

from __future__ import annotations

import copy
import math
import warnings

import numpy as np
import pytest
import torch
from helpers.fakes import QUERIES, RESPONSES, SCORES, BigramAgent, cfg, make_batch  # noqa: F401

from agents.rl import (
    AdaptiveKLController,
    FixedKLController,
    Learner,
    LearnerConfig,
    PPOLearner,
    RunningMoments,
    available_learners,
    compute_gae,
    compute_rewards,
    entropy_from_logits,
    kl_penalty,
    last_token_index,
    logprobs_from_logits,
    make_learner,
    masked_mean,
    masked_var,
    masked_whiten,
    policy_loss,
    process_scores,
    register_learner,
    value_loss,
)

T = torch.tensor


def close(a, b, tol=1e-6):
    return torch.allclose(
        torch.as_tensor(a, dtype=torch.float64),
        torch.as_tensor(b, dtype=torch.float64),
        atol=tol,
        rtol=0,
    )


# --------------------------------------------------------------------------- pure functions


def test_logprobs_and_entropy_from_logits():
    logits = T([[[0.0, math.log(3.0)], [1.0, 1.0]]])  # (1, 2, 2): probs [.25, .75], [.5, .5]
    labels = T([[1, 0]])
    assert close(logprobs_from_logits(logits, labels), [[math.log(0.75), math.log(0.5)]])
    h0 = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    assert close(entropy_from_logits(logits), [[h0, math.log(2.0)]])


def test_masked_mean_var_whiten():
    x = T([[1.0, 2.0, 3.0, 100.0]])
    m = T([[1.0, 1.0, 1.0, 0.0]])
    assert close(masked_mean(x, m), 2.0)
    assert close(
        masked_mean(T([[1.0, 3.0], [5.0, 7.0]]), T([[1.0, 0.0], [1.0, 1.0]]), axis=1), [1.0, 6.0]
    )
    assert close(masked_var(x, m), 1.0)  # (1 + 0 + 1) / (3 - 1)
    assert close(masked_var(x, m, unbiased=False), 2.0 / 3.0)
    s = 1.0 / math.sqrt(1.0 + 1e-8)
    assert close(masked_whiten(x, m), [[-s, 0.0, s, 0.0]])
    assert close(masked_whiten(x, m, shift_mean=False), [[2 - s, 2.0, 2 + s, 0.0]])
    # NaN/inf on padding does not leak
    assert close(masked_mean(T([[1.0, float("nan")]]), T([[1.0, 0.0]])), 1.0)
    assert close(masked_var(T([[5.0]]), T([[1.0]])), 0.0)
    with pytest.raises(ValueError):
        masked_var(x, torch.zeros_like(m))


def test_kl_estimators():
    lp, ref = T([-1.0, -2.0]), T([-1.5, -1.0])
    assert close(kl_penalty(lp, ref, "kl"), [0.5, -1.0])
    assert close(kl_penalty(lp, ref, "abs"), [0.5, 1.0])
    assert close(kl_penalty(lp, ref, "mse"), [0.125, 0.5])
    # full: KL([.5,.25,.25] || [.25,.25,.5]) = .5 ln 2 + .25 ln .5 = .25 ln 2
    p, q = T([0.5, 0.25, 0.25]).log(), T([0.25, 0.25, 0.5]).log()
    assert close(kl_penalty(p, q, "full"), 0.25 * math.log(2.0))
    # a zero-probability token under the policy contributes 0, not NaN
    p0 = T([1.0, 0.0]).log()
    assert close(kl_penalty(p0, T([0.5, 0.5]).log(), "full"), math.log(2.0))
    # vs a plain-Python sum on random (N, T, V) distributions
    g = torch.Generator().manual_seed(0)
    a = torch.log_softmax(torch.randn(2, 3, 5, generator=g, dtype=torch.float64), -1)
    b = torch.log_softmax(torch.randn(2, 3, 5, generator=g, dtype=torch.float64), -1)
    got = kl_penalty(a, b, "full")
    for i in range(2):
        for t in range(3):
            manual = sum(math.exp(a[i, t, v]) * (a[i, t, v] - b[i, t, v]) for v in range(5))
            assert abs(float(got[i, t]) - manual) < 1e-12
    with pytest.raises(ValueError):
        kl_penalty(lp, ref, "nope")


def test_last_token_index():
    m = T([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0], [1.0, 1.0, 0.0]])
    assert last_token_index(m).tolist() == [2, 0, 1]
    with pytest.raises(ValueError):
        last_token_index(T([[0.0, 0.0]]))


def test_compute_rewards_places_score_at_last_real_token():
    lp = T([[-1.0, -2.0, -3.0], [-1.0, -1.0, -9.0]])
    ref = T([[-1.5, -2.0, -2.0], [-0.5, -2.0, 5.0]])
    mask = T([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    rewards, non_score, kls = compute_rewards(T([2.0, -1.0]), lp, ref, mask, kl_coef=0.1)
    assert close(kls, [[0.5, 0.0, -1.0], [-0.5, 1.0, 0.0]])
    assert close(non_score, [[-0.05, 0.0, 0.1], [0.05, -0.1, 0.0]])
    assert close(rewards, [[-0.05, 0.0, 2.1], [0.05, -1.1, 0.0]])
    # other estimators go through kl_penalty
    _, _, kls_mse = compute_rewards(T([0.0, 0.0]), lp, ref, mask, 0.1, "mse")
    assert close(kls_mse, [[0.125, 0.0, 0.5], [0.125, 0.5, 0.0]])
    # full estimator from (N, T, V) log-probs
    g = torch.Generator().manual_seed(1)
    full_lp = torch.log_softmax(torch.randn(2, 3, 4, generator=g), -1)
    full_ref = torch.log_softmax(torch.randn(2, 3, 4, generator=g), -1)
    r, _, k = compute_rewards(
        T([1.0, 1.0]), lp, ref, mask, 0.5, "full", full_logprobs=full_lp, full_ref_logprobs=full_ref
    )
    expect = (full_lp.exp() * (full_lp - full_ref)).sum(-1) * mask
    assert close(k, expect) and close(r[0, 2], -0.5 * expect[0, 2] + 1.0)
    with pytest.raises(ValueError):
        compute_rewards(T([1.0, 1.0]), lp, ref, mask, 0.5, "full")


def test_compute_gae_by_hand():
    gamma, lam = 0.9, 0.8
    values = T([[1.0, 2.0, 3.0], [1.0, 2.0, 99.0]])
    rewards = T([[0.5, 0.0, 1.0], [0.5, 1.0, 7.0]])
    mask = T([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    # row 0: d2 = 1 - 3 = -2; d1 = 0 + .9*3 - 2 = .7; d0 = .5 + .9*2 - 1 = 1.3
    a02 = -2.0
    a01 = 0.7 + gamma * lam * a02
    a00 = 1.3 + gamma * lam * a01
    # row 1 (padded): V and r at the padding are ignored; d1 = 1 + 0 - 2 = -1; d0 = 1.3
    a11 = -1.0
    a10 = 1.3 + gamma * lam * a11
    adv, ret = compute_gae(values, rewards, mask, gamma, lam, whiten=False)
    assert close(adv, [[a00, a01, a02], [a10, a11, 0.0]])
    assert close(ret, [[a00 + 1, a01 + 2, a02 + 3], [a10 + 1, a11 + 2, 0.0]])
    assert close(adv, [[0.7672, -0.74, -2.0], [0.58, -1.0, 0.0]])
    # whitened over the 5 real positions
    real = [a00, a01, a02, a10, a11]
    mu = sum(real) / 5
    sd = math.sqrt(sum((x - mu) ** 2 for x in real) / 4 + 1e-8)
    wadv, wret = compute_gae(values, rewards, mask, gamma, lam)
    assert close(
        wadv,
        [
            [(a00 - mu) / sd, (a01 - mu) / sd, (a02 - mu) / sd],
            [(a10 - mu) / sd, (a11 - mu) / sd, 0.0],
        ],
        1e-5,
    )
    assert close(wret, ret) and not wadv.requires_grad


def test_policy_loss_inside_and_outside_clip():
    lp, old = T([[math.log(0.6)]]), T([[math.log(0.5)]])
    m = T([[1.0]])
    ratio = 0.6 / 0.5
    loss, st = policy_loss(lp, old, T([[1.0]]), m, cliprange=0.3)  # inside the clip region
    assert close(loss, -ratio) and close(st["clipfrac"], 0.0) and close(st["ratio"], ratio)
    assert close(st["approxkl"], 0.5 * math.log(ratio) ** 2)
    assert close(st["policykl"], -math.log(ratio))
    loss, st = policy_loss(lp, old, T([[1.0]]), m, cliprange=0.1)  # A > 0, ratio > 1 + c: clipped
    assert close(loss, -1.1) and close(st["clipfrac"], 1.0)
    loss, st = policy_loss(lp, old, T([[-1.0]]), m, cliprange=0.1)  # A < 0: pessimistic, unclipped
    assert close(loss, ratio) and close(st["clipfrac"], 0.0)
    # two tokens + padding that would overflow exp(); mean over the real ones
    lp2 = T([[math.log(0.6), math.log(0.2), 500.0]], requires_grad=True)
    old2 = T([[math.log(0.5), math.log(0.4), -500.0]])
    adv2 = T([[1.0, 2.0, 3.0]])
    m2 = T([[1.0, 1.0, 0.0]])
    loss, st = policy_loss(lp2, old2, adv2, m2, cliprange=0.1, entropy=T([[1.0, 3.0, 9.0]]))
    # token 1: ratio 1.2, A=1 -> clipped term -1.1; token 2: ratio 0.5, A=2 -> min(-1.0, -1.8) wins: -1.0
    assert (
        close(loss, (-1.1 + -1.0) / 2) and close(st["clipfrac"], 0.5) and close(st["entropy"], 2.0)
    )
    loss.backward()
    assert torch.isfinite(lp2.grad).all() and lp2.grad[0, 2] == 0


def test_value_loss_inside_and_outside_clip():
    m = T([[1.0]])
    old, ret = T([[1.0]]), T([[2.0]])
    loss, st = value_loss(T([[1.5]]), old, ret, m, 0.2)  # clipped to 1.2: (0.8)^2 > (0.5)^2
    assert close(loss, 0.5 * 0.64) and close(st["clipfrac"], 1.0) and close(st["error"], 0.25)
    loss, st = value_loss(T([[1.1]]), old, ret, m, 0.2)  # inside: both equal
    assert close(loss, 0.5 * 0.81) and close(st["clipfrac"], 0.0)
    loss, st = value_loss(T([[3.0]]), old, ret, m, 0.2)  # clipped one is closer: unclipped wins
    assert close(loss, 0.5) and close(st["clipfrac"], 0.0) and close(st["vpred"], 3.0)
    loss, _ = value_loss(T([[1.5, 7.0]]), T([[1.0, 0.0]]), T([[2.0, 0.0]]), T([[1.0, 0.0]]), 0.2)
    assert close(loss, 0.32)


def test_kl_controllers():
    c = AdaptiveKLController(0.2, target=6.0, horizon=10000)
    c.update(9.0, 256)  # error clipped to +0.2
    assert math.isclose(c.value, 0.2 * (1 + 0.2 * 256 / 10000))
    v = c.value
    c.update(6.6, 100)  # error +0.1
    assert math.isclose(c.value, v * (1 + 0.1 * 100 / 10000))
    v = c.value
    c.update(0.0, 1000)  # error clipped to -0.2
    assert math.isclose(c.value, v * 0.98)
    d = AdaptiveKLController(0.2, 6.0, 10000)
    d.load_state_dict(copy.deepcopy(c.state_dict()))
    assert d.value == c.value
    f = FixedKLController(0.3)
    f.update(100.0, 256)
    assert f.value == 0.3 and f.state_dict() == {"value": 0.3}


def test_running_moments_vs_numpy():
    rng = np.random.default_rng(0)
    a, b = rng.normal(1.0, 2.0, 7), rng.normal(-3.0, 0.5, 5)
    rm = RunningMoments()
    m1, s1 = rm.update(torch.tensor(a, dtype=torch.float32))
    assert math.isclose(m1, a.mean(), rel_tol=1e-6) and math.isclose(
        s1, a.std(ddof=1), rel_tol=1e-6
    )
    rm.update(b)
    both = np.concatenate([a.astype(np.float32), b])
    assert math.isclose(rm.mean, both.mean(), rel_tol=1e-6)
    assert math.isclose(rm.var, both.var(), rel_tol=1e-6)
    assert math.isclose(rm.std, both.std(ddof=1), rel_tol=1e-6)
    assert math.isclose(rm.count, 12)
    rm2 = RunningMoments()
    rm2.load_state_dict(rm.state_dict())
    assert rm2.state_dict() == rm.state_dict()


def test_process_scores():
    s = T([1.0, 3.0])
    assert close(process_scores(s, None), s)
    assert close(process_scores(s, None, score_clip=2.0), [1.0, 2.0])
    rm = RunningMoments()
    out = process_scores(s, rm, use_score_scaling=True)
    std = math.sqrt(2.0)  # unbiased std of [1, 3]
    assert close(out, [1 / std, 3 / std], 1e-5)
    rm = RunningMoments()
    out = process_scores(s, rm, use_score_scaling=True, use_score_norm=True)
    assert close(out, [-1 / std, 1 / std], 1e-5)
    with pytest.raises(ValueError):
        process_scores(s, rm, use_score_norm=True)
    with pytest.raises(ValueError):
        LearnerConfig(use_score_norm=True)
    with pytest.raises(ValueError):
        LearnerConfig(kl_penalty="l2")


# --------------------------------------------------------------------------- a tiny agent


EXPECTED_KEYS = {
    "objective/kl",
    "objective/kl_coef",
    "objective/entropy",
    "ppo/loss/policy",
    "ppo/loss/value",
    "ppo/loss/total",
    "ppo/policy/clipfrac",
    "ppo/policy/approxkl",
    "ppo/policy/entropy",
    "ppo/val/clipfrac",
    "ppo/returns/mean",
    "ppo/mean_scores",
    "ppo/mean_non_score_reward",
    "ppo/learning_rate",
    "ppo/val/var_explained",
    "ppo/epochs",
    "ppo/early_stop",
}


def test_ppo_learner_is_a_learner_and_registered():
    agent = BigramAgent()
    learner = make_learner("ppo", agent, learning_rate=1e-3, ppo_epochs=2)
    assert isinstance(learner, PPOLearner) and isinstance(learner, Learner)
    assert learner.config.ppo_epochs == 2 and learner.samples_per_query == 1
    assert learner.optimizer.param_groups[0]["lr"] == 1e-3
    assert make_learner("ppo", agent, config=cfg(), ppo_epochs=3).config.ppo_epochs == 3
    assert "ppo" in available_learners()
    with pytest.raises(ValueError):
        make_learner("nope", agent)
    with pytest.raises(ValueError):
        register_learner("ppo", PPOLearner)


def test_docstring_example_learner_satisfies_protocol():
    """Runs the worked example of ``agents.rl.learner``'s docstring itself, not a copy of it."""
    import textwrap

    import agents.rl.learner as learner_mod

    doc = learner_mod.__doc__
    example = textwrap.dedent(doc[doc.index("no critic::") + len("no critic::") :])
    agent = BigramAgent()
    namespace = {"agent": agent, "Learner": Learner}
    try:
        exec(compile(example, "agents/learner.py (docstring)", "exec"), namespace)
        learner = namespace["learner"]
        assert isinstance(learner, Learner) and learner.agent is agent
        learner.opt.param_groups[0]["lr"] = 0.1  # the example's 1e-4 moves a bigram too slowly
        before = agent.prob(2, 3)
        for _ in range(5):
            stats = learner.update(make_batch(), SCORES)
        assert agent.prob(2, 3) > before
        assert set(stats) == {"reinforce/loss", "env/reward_mean"}
        assert stats["env/reward_mean"] == pytest.approx(float(SCORES.mean()))
    finally:
        if "reinforce" in learner_mod._REGISTRY:
            learner_mod._REGISTRY.unregister("reinforce")


def test_ppo_update_learns_rewarded_token():
    agent = BigramAgent()
    learner = PPOLearner(agent, cfg())
    batch = make_batch()
    w0 = [p.detach().clone() for p in agent.trainable_parameters()]
    p0 = agent.prob(2, 3)
    history = [learner.update(batch, SCORES) for _ in range(15)]
    assert set(history[0]) >= EXPECTED_KEYS
    assert all(isinstance(v, float) and math.isfinite(v) for v in history[0].values())
    assert any(not torch.equal(a, b) for a, b in zip(w0, agent.trainable_parameters(), strict=True))
    assert agent.prob(2, 3) > p0 + 0.2
    assert history[0]["objective/kl"] == pytest.approx(0.0, abs=1e-6)  # policy == ref at the start
    # the batch is fixed (off-policy), so the sampled-token "kl" estimate may be negative
    assert abs(history[-1]["objective/kl"]) > 0.01
    assert history[0]["ppo/loss/policy"] < 0  # the clipped surrogate improved within the update
    losses = [h["ppo/loss/value"] for h in history]
    assert losses[-1] < 0.25 * losses[0] and losses[5] < losses[0]
    assert history[0]["ppo/mean_scores"] == pytest.approx(SCORES.mean())
    assert history[0]["ppo/epochs"] == 4 and history[0]["ppo/early_stop"] == 0
    # the adaptive controller moved the coefficient (sequence KL << target 6: it decreases)
    assert learner.kl_ctl.value < 0.05


def test_ppo_full_kl_estimator_matches_manual():
    agent = BigramAgent()
    learner = PPOLearner(agent, cfg(kl_penalty="full"))
    batch = make_batch()
    learner.update(batch, SCORES)
    with torch.no_grad():
        logp = torch.log_softmax(agent.forward(batch, with_logits=True).logits, -1)
        ref = agent.ref_logprobs(batch, full=True)
        kl = ((logp.exp() * (logp - ref)).sum(-1) * batch.response_mask).sum(1).mean()
    stats = learner.update(batch, SCORES)
    assert stats["objective/kl"] == pytest.approx(float(kl), rel=1e-5) and stats["objective/kl"] > 0


def test_early_stop_on_target_kl():
    batch = make_batch()
    stats = PPOLearner(BigramAgent(), cfg(target_kl=1e-9)).update(batch, SCORES)
    assert stats["ppo/epochs"] == 1 and stats["ppo/early_stop"] == 1
    stats = PPOLearner(BigramAgent(), cfg(target_kl=100.0)).update(batch, SCORES)
    assert stats["ppo/epochs"] == 4 and stats["ppo/early_stop"] == 0


def test_ratio_threshold_skips_minibatches():
    agent = BigramAgent()
    w0 = [p.detach().clone() for p in agent.trainable_parameters()]
    learner = PPOLearner(agent, cfg(ratio_threshold=0.5, ppo_epochs=2))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a skipped mini-batch is a metric, not a Python warning
        stats = learner.update(make_batch(), SCORES)
    assert stats["ppo/skipped_minibatches"] == 4
    assert all(torch.equal(a, b) for a, b in zip(w0, agent.trainable_parameters(), strict=True))


@pytest.mark.parametrize(
    ("mb", "gas", "steps"), [(2, 1, 4), (2, 2, 2), (4, 1, 2), (8, 1, 1), (16, 1, 1)]
)
def test_gradient_accumulation_step_count(mb, gas, steps):
    learner = PPOLearner(
        BigramAgent(), cfg(mini_batch_size=mb, gradient_accumulation_steps=gas, ppo_epochs=1)
    )
    learner.update(make_batch(), SCORES)
    state = learner.optimizer.state_dict()["state"]
    assert {int(s["step"]) for s in state.values()} == {steps}


def test_bad_scores_raise():
    learner = PPOLearner(BigramAgent(), cfg())
    with pytest.raises(ValueError):
        learner.update(make_batch(), SCORES[:3])
    with pytest.raises(ValueError):
        learner.update(make_batch(), np.full(8, np.nan))


@pytest.mark.parametrize("scaling", [False, True])
def test_state_dict_round_trip_reproduces_next_update(scaling):
    config = cfg(use_score_scaling=scaling, use_score_norm=scaling, seed=3)
    batch = make_batch()
    agent_a = BigramAgent()
    learner_a = PPOLearner(agent_a, config)
    learner_a.update(batch, SCORES)
    weights = copy.deepcopy(agent_a.state_dict())
    state = copy.deepcopy(learner_a.state_dict())
    stats_a = learner_a.update(batch, SCORES + 0.5)

    agent_b = BigramAgent(seed=123)  # different init; everything comes from the checkpoint
    agent_b.load_state_dict(weights)
    learner_b = PPOLearner(agent_b, config)
    learner_b.load_state_dict(state)
    stats_b = learner_b.update(batch, SCORES + 0.5)
    assert stats_a == stats_b
    for pa, pb in zip(agent_a.trainable_parameters(), agent_b.trainable_parameters(), strict=True):
        assert torch.equal(pa, pb)
    assert learner_a.kl_ctl.value == learner_b.kl_ctl.value
    assert learner_a.running.state_dict() == learner_b.running.state_dict()

    # without the learner state (fresh optimiser / generator) the update differs
    agent_c = BigramAgent()
    agent_c.load_state_dict(weights)
    assert PPOLearner(agent_c, config).update(batch, SCORES + 0.5) != stats_a


def test_same_seed_same_run():
    a = PPOLearner(BigramAgent(), cfg(seed=7))
    b = PPOLearner(BigramAgent(), cfg(seed=7))
    for _ in range(2):
        assert a.update(make_batch(), SCORES) == b.update(make_batch(), SCORES)


def test_whiten_rewards_scales_the_token_rewards_before_gae():
    """``LearnerConfig.whiten_rewards``: the returns are GAE's on the token rewards divided by
    their std (mean kept), not on the rewards as they are."""
    config = cfg(whiten_rewards=True)
    learner = PPOLearner(BigramAgent(), config)
    seen = {}
    real = learner.advantages
    learner.advantages = lambda batch, ro: seen.setdefault(
        "targets", real(batch, seen.setdefault("ro", ro))
    )
    learner.update(make_batch(), SCORES)
    ro, targets = seen["ro"], seen["targets"]
    whitened = masked_whiten(ro.rewards, ro.mask, shift_mean=False)
    _, returns = compute_gae(ro.values, whitened, ro.mask, config.gamma, config.lam)
    _, plain = compute_gae(ro.values, ro.rewards, ro.mask, config.gamma, config.lam)
    torch.testing.assert_close(targets["returns"], returns)
    assert (targets["returns"] - plain).abs().max() > 1e-3
