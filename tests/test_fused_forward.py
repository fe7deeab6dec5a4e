"""Issue 13's fused first forward: the first epoch's first mini-batch runs on the policy as it
was before the update, so its forward with grad gives those rows' old log-probs and values
(one policy forward fewer: the whole no-grad policy pass when one mini-batch is the whole
batch, that mini-batch's share of it otherwise) and the update's numbers are those of the
separate no-grad pass."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers.configs import small_config
from helpers.dp_worker import fixed_batch
from helpers.fakes import BigramAgent, make_batch
from helpers.tiny import tiny_model, tiny_tokenizer

from agents.rl.config import LearnerConfig
from agents.rl.fused import PolicyForward, fused_pass, fused_rows
from agents.rl.learner import make_learner
from agents.rl.optimise import first_minibatch, micro_batches
from agents.rl.passes import rollout_pass
from agents.run.setup import build_agents


def updated(name: str, fuse: bool, mode: str = "lora", rows: bool = False, **cfg):
    """``(learner, stats, policy forwards)`` after one update of a fresh agent (``rows``:
    the rows those forwards ran on, summed, instead of their count)."""
    config = small_config(Path("/tmp/cory-fused"), mode=mode)
    (agent,) = build_agents(config, tiny_model(), tiny_tokenizer(), n=1)
    ppo = LearnerConfig(**{"mini_batch_size": 8, "ppo_epochs": 2, "seed": 0, **cfg})
    kwargs = {"group_size": 2} if name in ("rloo", "grpo") else {}
    # SGD: Adam's sign-like step would turn float noise in near-zero gradients into whole steps
    sgd = torch.optim.SGD(agent.trainable_parameters(), lr=0.5)
    learner = make_learner(name, agent, config=ppo, optimizer=sgd, **kwargs)
    learner.fuse_first_forward = fuse
    calls = []
    real = agent.forward
    agent.forward = lambda b, *a, **k: calls.append(len(b)) or real(b, *a, **k)
    batch, scores = fixed_batch()
    stats = learner.update(batch, scores)
    return learner, stats, sum(calls) if rows else len(calls)


def flat(learner) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in learner.agent.trainable_parameters()])


@pytest.mark.parametrize("name", ["ppo", "rloo", "grpo"])
def test_the_fused_update_equals_the_separate_pass_with_one_forward_fewer(name):
    fused, fused_stats, fused_calls = updated(name, True)
    plain, plain_stats, plain_calls = updated(name, False)
    assert fused_calls == plain_calls - 1
    (fresh,) = build_agents(
        small_config(Path("/tmp/cory-fused")), tiny_model(), tiny_tokenizer(), n=1
    )
    start = torch.cat([p.detach().flatten() for p in fresh.trainable_parameters()])
    assert (flat(plain) - start).abs().max() > 1e-3  # the update moved the weights
    torch.testing.assert_close(flat(fused), flat(plain), rtol=1e-5, atol=1e-6)
    for key, value in plain_stats.items():
        assert fused_stats[key] == pytest.approx(value, rel=1e-4, abs=1e-6), key


@pytest.mark.parametrize("name, mode", [("ppo", "lora"), ("rloo", "lora"), ("ppo", "full")])
def test_with_smaller_mini_batches_the_first_one_is_fused_and_the_update_is_unchanged(name, mode):
    """Mini-batches of 4 of 8 rows (chunks of 4 in the no-grad pass): the first mini-batch's
    forward gives its rows' old log-probs, the no-grad pass runs on the other 4 only."""
    fused, fused_stats, fused_calls = updated(name, True, mode, mini_batch_size=4)
    plain, plain_stats, plain_calls = updated(name, False, mode, mini_batch_size=4)
    assert fused_calls == plain_calls - 1
    torch.testing.assert_close(flat(fused), flat(plain), rtol=1e-5, atol=1e-6)
    for key, value in plain_stats.items():
        assert fused_stats[key] == pytest.approx(value, rel=1e-4, abs=1e-6), key
    # the generator was read, not advanced: the next update shuffles as without fusion
    assert torch.equal(fused.generator.get_state(), plain.generator.get_state())


def test_a_learner_that_picks_its_rows_keeps_the_separate_pass_with_smaller_mini_batches():
    _, _, fused_calls = updated("grpo", True, mini_batch_size=4)
    _, _, plain_calls = updated("grpo", False, mini_batch_size=4)
    assert fused_calls == plain_calls


def test_a_first_call_on_other_rows_runs_its_own_forward():
    """Should a loss's first call not be on the fused rows (a learner that reorders its
    mini-batches), it gets a forward of its own rows, not another mini-batch's outputs."""
    learner, _, _ = updated("ppo", True, mini_batch_size=4)
    batch, _ = fixed_batch()
    rows = torch.tensor([0, 1, 2, 3])
    policy = PolicyForward(learner.agent, (rows, learner.agent.forward(batch.subset(rows))))
    other = torch.tensor([4, 5])
    out = policy(batch.subset(other), other)
    torch.testing.assert_close(out.logprobs, learner.agent.forward(batch.subset(other)).logprobs)
    assert policy.kept is None


def test_a_token_budget_keeps_the_fusion_while_the_batch_fits_it():
    batch, _ = fixed_batch()
    fits = batch.input_ids.numel()
    _, _, plain_calls = updated("ppo", False)
    _, _, within = updated("ppo", True, max_tokens_per_microbatch=fits)
    _, _, over = updated("ppo", True, max_tokens_per_microbatch=fits - 1)
    assert within == plain_calls - 1 and over > within  # over: cut into pieces


BUDGET = 20
"""Padded tokens: the fixed batch's 8 rows of 5-7 tokens cut in pieces of 2-3 rows."""


@pytest.mark.parametrize("name, mode", [("ppo", "lora"), ("rloo", "lora"), ("ppo", "full")])
def test_a_mini_batch_cut_by_the_token_budget_fuses_its_first_piece_and_the_update_is_unchanged(
    name, mode
):
    """The whole batch is one mini-batch, cut in pieces: the first piece's forward gives its
    rows' old log-probs, the no-grad pass runs on the other rows only."""
    batch, _ = fixed_batch()
    fused, fused_stats, fused_rows = updated(
        name, True, mode, rows=True, max_tokens_per_microbatch=BUDGET
    )
    plain, plain_stats, plain_rows = updated(
        name, False, mode, rows=True, max_tokens_per_microbatch=BUDGET
    )
    first = micro_batches(
        batch, first_minibatch(fused.config, torch.Generator().manual_seed(0), len(batch)), BUDGET
    )
    assert len(first) > 2 and 1 < len(first[0]) < len(batch)
    assert fused_rows == plain_rows - len(first[0])
    torch.testing.assert_close(flat(fused), flat(plain), rtol=1e-5, atol=1e-6)
    for key, value in plain_stats.items():
        assert fused_stats[key] == pytest.approx(value, rel=1e-4, abs=1e-6), key
    assert torch.equal(fused.generator.get_state(), plain.generator.get_state())


def test_a_learner_that_picks_its_rows_keeps_the_separate_pass_under_a_budget_that_cuts():
    _, _, fused_rows = updated("grpo", True, rows=True, max_tokens_per_microbatch=BUDGET)
    _, _, plain_rows = updated("grpo", False, rows=True, max_tokens_per_microbatch=BUDGET)
    assert fused_rows == plain_rows


# ------------------------------------------------------------------ the parts, on their own


def test_the_fused_rows_are_the_first_mini_batch_where_it_is_known_before_the_update():
    batch, _ = fixed_batch()
    gen = torch.Generator().manual_seed(0)
    small, whole = (
        LearnerConfig(mini_batch_size=4, seed=0),
        LearnerConfig(mini_batch_size=8, seed=0),
    )
    state = gen.get_state()
    rows = fused_rows(small, gen, batch, every_row=True)
    assert torch.equal(rows, first_minibatch(small, torch.Generator().manual_seed(0), len(batch)))
    assert torch.equal(gen.get_state(), state)  # read, not advanced
    assert fused_rows(small, gen, batch, every_row=False) is None  # its own rows: not known yet
    assert torch.equal(fused_rows(whole, gen, batch, every_row=False), torch.arange(len(batch)))
    assert (
        fused_rows(LearnerConfig(mini_batch_size=8, kl_penalty="full"), gen, batch, every_row=True)
        is None
    )
    cut = LearnerConfig(mini_batch_size=8, max_tokens_per_microbatch=BUDGET)
    first = micro_batches(batch, first_minibatch(cut, gen, len(batch)), BUDGET)[0]
    assert torch.equal(fused_rows(cut, gen, batch, every_row=True), first)
    assert fused_rows(cut, gen, batch, every_row=False) is None


def test_the_policy_forward_reuses_the_fused_rows_once_then_runs_the_agent():
    agent, batch = BigramAgent(), make_batch()
    rows = torch.tensor([5, 1, 6, 2])
    (_, _, _, _), policy = fused_pass(agent, batch, rows, 4, "kl", True, True)
    calls = []
    real = agent.forward
    agent.forward = lambda b, *a, **k: calls.append(len(b)) or real(b, *a, **k)
    idx = torch.tensor([2, 5])  # among the fused rows, in another order
    out = policy(batch.subset(idx), idx)
    want = real(batch.subset(idx))
    assert calls == [] and policy.kept is None
    torch.testing.assert_close(out.logprobs, want.logprobs)
    torch.testing.assert_close(out.values, want.values)
    out.logprobs.sum().backward()  # the kept forward's graph: gradients reach the agent
    assert agent.head.weight.grad is not None
    policy(batch.subset(idx), idx)
    assert calls == [2]  # the second call: a forward of its own


def test_the_fused_pass_gives_the_plain_passes_numbers():
    agent, batch = BigramAgent(), make_batch()
    plain = rollout_pass(agent, batch, 4, "kl", True, True)
    fused, _ = fused_pass(agent, batch, torch.tensor([0, 3, 7]), 4, "kl", True, True)
    for got, want in zip(fused, plain):
        assert (got is None and want is None) or torch.allclose(got, want, atol=1e-6)
