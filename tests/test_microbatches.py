"""``max_tokens_per_microbatch``: a mini-batch cut by a token budget into micro-batches, one
backward each, takes the same optimiser step as the whole mini-batch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.configs import small_config
from helpers.dp_worker import fixed_batch
from helpers.tiny import tiny_model, tiny_tokenizer

from agents.rl.config import LearnerConfig
from agents.rl.learner import make_learner
from agents.rl.optimise import micro_batches
from agents.run.budget import pioneer_budget
from agents.run.config import TrainConfig
from agents.run.learner_config import learner_config
from agents.run.rollout import Turns
from agents.run.setup import build_agents


def updated(budget: int | None, ratio_threshold: float = 10.0):
    (agent,) = build_agents(
        small_config(Path("/tmp/cory-micro")), tiny_model(), tiny_tokenizer(), n=1
    )
    ppo = LearnerConfig(
        mini_batch_size=4,
        ppo_epochs=2,
        seed=0,
        ratio_threshold=ratio_threshold,
        max_tokens_per_microbatch=budget,
    )
    # SGD: Adam's sign-like step would turn float noise in near-zero gradients into whole steps
    learner = make_learner(
        "ppo", agent, config=ppo, optimizer=torch.optim.SGD(agent.trainable_parameters(), lr=0.5)
    )
    pieces = []
    real = agent.forward
    agent.forward = lambda b, **k: pieces.append(len(b)) or real(b, **k)
    batch, scores = fixed_batch()
    stats = learner.update(batch, scores)
    return torch.cat([p.detach().flatten() for p in agent.trainable_parameters()]), stats, pieces


def test_micro_batches_take_the_whole_mini_batchs_step():
    whole, whole_stats, whole_sizes = updated(None)
    cut, cut_stats, cut_sizes = updated(12)  # rows of 5-7 tokens: 1-2 rows a piece
    assert (
        max(cut_sizes[2:]) < max(whole_sizes[2:]) == 4
    )  # after the 2 no-grad chunks: smaller pieces
    torch.testing.assert_close(cut, whole, rtol=1e-5, atol=1e-6)
    for key in ("ppo/loss/total", "ppo/policy/approxkl", "ppo/val/error", "ppo/optimizer_steps"):
        assert cut_stats[key] == pytest.approx(whole_stats[key], rel=1e-4, abs=1e-7), key


def test_a_skipped_mini_batch_leaves_no_gradient_from_its_pieces():
    """With every mini-batch over the ratio threshold, nothing steps, cut or whole."""
    start, _, _ = updated(None, ratio_threshold=1e-9)
    cut, stats, _ = updated(12, ratio_threshold=1e-9)
    torch.testing.assert_close(cut, start, rtol=0, atol=0)
    assert stats["ppo/optimizer_steps"] == 0.0


def test_the_cut_respects_the_budget_and_keeps_long_rows_whole():
    batch, _ = fixed_batch()
    rows = torch.arange(len(batch))
    lengths = batch.attention_mask.sum(1)
    for budget in (1, 6, 12, 20, 1000):
        pieces = micro_batches(batch, rows, budget)
        assert torch.equal(torch.cat(pieces).sort().values, rows)  # every row once
        for p in pieces:
            assert len(p) == 1 or int(lengths[p].max()) * len(p) <= budget
        # longest first: each piece's rows are at least as long as the next piece's
        for a, b in zip(pieces, pieces[1:]):
            assert int(lengths[a].min()) >= int(lengths[b].max())
    assert len(micro_batches(batch, rows, 1)) == len(batch)
    assert len(micro_batches(batch, rows, len(batch) * int(lengths.max()))) == 1  # fits: whole
    assert learner_config(TrainConfig(max_tokens_per_microbatch=64)).max_tokens_per_microbatch == 64
    with pytest.raises(ValueError, match="max_tokens_per_microbatch"):
        TrainConfig(max_tokens_per_microbatch=0)


# ------------------------------------------------------------------ the observers' budget


def test_the_pioneer_budget_is_its_mini_batch_times_its_longest_sequence():
    turns = Turns(
        prompts=[np.arange(3), np.arange(5), np.arange(4)],
        responses=[np.arange(2), np.arange(4), np.arange(1)],
        texts=["", "", ""],
    )
    assert pioneer_budget(turns, mini_batch_size=2) == 2 * 9
    assert pioneer_budget(turns, mini_batch_size=8) == 3 * 9  # a mini-batch holds at most the batch


def test_a_budget_lowers_one_update_and_keeps_a_smaller_own_one():
    whole = LearnerConfig(max_tokens_per_microbatch=None)
    assert whole.within_budget(40).max_tokens_per_microbatch == 40
    assert whole.max_tokens_per_microbatch is None  # the learner's own config is untouched
    assert whole.within_budget(None) is whole
    own = LearnerConfig(max_tokens_per_microbatch=30)
    assert own.within_budget(40) is own and own.within_budget(20).max_tokens_per_microbatch == 20


def cory_step(tmp_path, on: bool, monkeypatch):
    """One CORY iteration (SGD, as above) with or without the observers' budget: the
    weights after it, its metrics, and each mini-batch's (budget, pieces)."""
    import importlib

    from agents.cory import CoryTrainer

    opt = importlib.import_module(
        "agents.rl.optimise"
    )  # the module (agents.rl.optimise is also its function)

    cuts = []
    real = opt.micro_batches
    torch.manual_seed(0)
    cfg = small_config(
        tmp_path / str(on), batch_size=4, mini_batch_size=4, ppo_epochs=1, observer_token_budget=on
    )
    trainer = CoryTrainer(cfg, model=tiny_model(), tokenizer=tiny_tokenizer())
    for learner in trainer.learners.values():
        learner.optimizer = torch.optim.SGD(learner.agent.trainable_parameters(), lr=0.5)
        learner.lr_scheduler = None
    with monkeypatch.context() as patch:
        patch.setattr(
            opt,
            "micro_batches",
            lambda b, rows, budget: cuts.append((budget, len(out := real(b, rows, budget)))) or out,
        )
        metrics = trainer.step(0)
    weights = {
        m: torch.cat([p.detach().flatten() for p in lr.agent.trainable_parameters()])
        for m, lr in trainer.learners.items()
    }
    return weights, metrics, cuts


def test_the_observers_budget_cuts_their_mini_batches_and_takes_the_same_step(
    tmp_path, monkeypatch
):
    whole, whole_m, whole_cuts = cory_step(tmp_path, False, monkeypatch)
    cut, cut_m, cut_cuts = cory_step(tmp_path, True, monkeypatch)
    assert [b for b, _ in whole_cuts] == [None, None]  # off: one whole mini-batch per seat
    (pioneer_b, pioneer_n), (observer_b, observer_n) = cut_cuts
    assert pioneer_b is None and pioneer_n == 1 and observer_b is not None and observer_n > 1
    for model in whole:
        torch.testing.assert_close(cut[model], whole[model], rtol=1e-5, atol=1e-6)
    for key in (
        "pioneer/ppo/loss/total",
        "observer/ppo/loss/total",
        "observer/ppo/policy/approxkl",
        "observer/objective/kl",
        "observer/ppo/optimizer_steps",
    ):
        # abs: float32 rounding of a KL that is ~0 (the policy is the reference): 1.2e-7 seen
        assert cut_m[key] == pytest.approx(whole_m[key], rel=1e-4, abs=1e-6), key
