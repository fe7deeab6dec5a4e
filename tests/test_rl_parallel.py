"""``agents.rl.parallel``: on one process each piece is the identity or does nothing; on a
world of several (its collectives stood in for by the other process's numbers) the no-grad
pass is this process's share gathered in rank order, the stats are row-weighted means over
every share, and FSDP's extra pieces make up the difference to the busiest process."""

from __future__ import annotations

import math

import torch
from helpers.fakes import BigramAgent, make_batch

from agents.distributed import SINGLE, World
from agents.rl import parallel
from agents.rl.passes import rollout_pass

ARGS = (4, "kl", True, True)  # chunk, estimator, with values, with the reference
TWO = World(size=2, rank=0, kind="MULTI_CPU")
TWO_FSDP = World(size=2, rank=0, kind="MULTI_CPU", fsdp=True)


def test_on_one_process_the_pass_is_the_plain_pass_and_the_stats_are_as_given():
    agent, batch = BigramAgent(), make_batch()
    for got, want in zip(
        parallel.sharded_pass(agent, batch, SINGLE, *ARGS), rollout_pass(agent, batch, *ARGS)
    ):
        assert (got is None and want is None) or torch.equal(got, want)
    stats = {"policy/ratio": torch.tensor(1.5)}
    assert parallel.reduce_stats(stats, 3, 3, SINGLE, torch.device("cpu")) is stats
    assert parallel.extra_pieces(2, SINGLE, budget=10) == 0


def test_two_processes_each_pass_their_share_and_gather_the_whole_batch(monkeypatch):
    agent, batch = BigramAgent(), make_batch()
    whole = rollout_pass(agent, batch, *ARGS)
    t_len = batch.response_ids.shape[1]
    other = rollout_pass(agent, batch.subset(torch.arange(4, 8)), *ARGS)  # rank 1's share
    others = [torch.nn.functional.pad(x, (0, t_len - x.shape[1])) for x in other if x is not None]
    seen = []
    monkeypatch.setattr(
        parallel, "gather_rows", lambda x, w: seen.append(len(x)) or torch.cat([x, others.pop(0)])
    )
    got = parallel.sharded_pass(agent, batch, TWO, *ARGS)
    assert seen == [4, 4, 4]  # old log-probs, values, ref log-probs: rank 0's 4 rows each
    for g, w in zip(got, whole):
        assert (g is None and w is None) or torch.allclose(g, w, atol=1e-6)
    # rows that do not divide over the processes: the whole batch on every one
    odd = batch.subset(torch.arange(7))
    monkeypatch.setattr(parallel, "gather_rows", lambda x, w: (_ for _ in ()).throw(AssertionError))
    for g, w in zip(parallel.sharded_pass(agent, odd, TWO, *ARGS), rollout_pass(agent, odd, *ARGS)):
        assert (g is None and w is None) or torch.equal(g, w)


def test_stats_are_row_weighted_means_over_the_shares_and_nan_where_one_is_not_finite(monkeypatch):
    # this process: 3 rows, means a=1, b=2; the other: 1 row, a=4, b=inf
    partner = [
        torch.tensor([4.0 * 1, 0.0]),
        torch.tensor([0.0, 1.0]),
    ]  # its finite sums, its bad flags
    monkeypatch.setattr(parallel, "reduce_sum", lambda t, w: t + partner.pop(0))
    stats = {"a": torch.tensor(1.0), "b": torch.tensor(2.0)}
    out = parallel.reduce_stats(stats, 3, 4, TWO, torch.device("cpu"))
    assert set(out) == {"a", "b"}
    assert float(out["a"]) == (1.0 * 3 + 4.0 * 1) / 4
    assert math.isnan(float(out["b"]))


def test_a_process_without_rows_takes_the_stat_names_from_one_that_has_them(monkeypatch):
    monkeypatch.setattr(
        parallel, "gather", lambda obj, w: [["a"], obj]
    )  # rank 0 has rows, we do not
    partner = [
        torch.tensor([5.0]),
        torch.tensor([0.0]),
    ]  # rank 0's sum of a over its 1 row; no bad flag
    monkeypatch.setattr(parallel, "reduce_sum", lambda t, w: t + partner.pop(0))
    out = parallel.reduce_stats(
        None, 0, 1, World(size=2, rank=1, kind="MULTI_CPU"), torch.device("cpu")
    )
    assert list(out) == ["a"] and float(out["a"]) == 5.0


def test_fsdp_processes_run_as_many_pieces_as_the_busiest_and_weightless_ones_add_nothing(
    monkeypatch,
):
    monkeypatch.setattr(parallel, "gather", lambda obj, w: [obj, 5])
    assert parallel.extra_pieces(2, TWO_FSDP, budget=10) == 3
    assert parallel.extra_pieces(2, TWO_FSDP, budget=None) == 0  # no budget: one piece each
    assert (
        parallel.extra_pieces(2, TWO, budget=10) == 0
    )  # plain data parallelism: no collective forward
    agent, batch = BigramAgent(), make_batch()
    calls = []

    def loss_of(sub, idx):
        calls.append(idx.tolist())
        return agent.forward(sub).logprobs.sum(), {}

    loss = parallel.weightless_piece(loss_of, batch, torch.tensor([6, 2, 5]))
    assert calls == [[6]]
    (loss * 0.0).backward()
    assert all(
        float(p.grad.abs().sum()) == 0.0 for p in agent.trainable_parameters() if p.grad is not None
    )
