"""Data-parallel training on 2 real processes (``torchrun``, gloo, 1 thread each, tiny
model): the world size is 2 inside both ranks, an update equals the single-process one,
the ranks roll out disjoint shards of the single-process batch and keep identical weights,
one process writes the run folder, and a resumed run reproduces an uninterrupted one."""

from __future__ import annotations

import json

import pytest
import torch
from helpers.configs import small_config
from helpers.dp_worker import flat_trainable, update_learner
from helpers.launch import launch, untimed
from helpers.tiny import tiny_model, tiny_tokenizer

from agents.cory import CoryTrainer
from agents.distributed import SINGLE
from agents.run.run_log import read_jsonl

pytestmark = pytest.mark.slow


def test_a_two_process_update_equals_the_single_process_update(tmp_path):
    ranks = launch(tmp_path / "dp", "update")
    assert [r["world"][:2] for r in ranks] == [(2, 0), (2, 1)]
    assert ranks[0]["world"][2] == "MULTI_CPU"
    single = update_learner(tmp_path / "single", SINGLE)
    expected = flat_trainable(single)
    initial = flat_trainable(update_learner(tmp_path / "initial", SINGLE, update=False))
    assert (expected - initial).abs().max() > 1e-2  # the update moved the weights
    torch.testing.assert_close(ranks[0]["params"], ranks[1]["params"], rtol=0, atol=0)
    torch.testing.assert_close(ranks[0]["params"], expected, rtol=1e-5, atol=1e-6)
    for key in ("ppo/policy/approxkl", "ppo/loss/total", "objective/kl", "ppo/val/error"):
        assert ranks[0]["stats"][key] == pytest.approx(single.stats[key], rel=1e-4, abs=1e-6), key


def test_a_two_process_cory_run_shards_the_batch_keeps_one_model_and_writes_one_run(tmp_path):
    ranks = launch(tmp_path, "cory", "--iterations", "2")
    assert [r["world"][:2] for r in ranks] == [(2, 0), (2, 1)]
    # the ranks saw the same global batches and rolled out disjoint halves of them
    single = CoryTrainer(
        small_config(tmp_path / "single", iterations=2),
        model=tiny_model(),
        tokenizer=tiny_tokenizer(),
    )
    for it, ((all0, mine0), (all1, mine1)) in enumerate(
        zip(ranks[0]["shards"], ranks[1]["shards"])
    ):
        assert all0 == all1
        assert mine0 + mine1 == all0 and len(mine0) == len(mine1) == len(all0) // 2
        assert all0 == [str(q) for q in single.run.sample_queries()[0]], it
    # identical weights on both ranks, and they moved
    start = {m: flat_trainable(lr) for m, lr in single.learners.items()}
    for m in ("model_a", "model_b"):
        torch.testing.assert_close(ranks[0]["params"][m], ranks[1]["params"][m], rtol=0, atol=0)
        assert not torch.equal(ranks[0]["params"][m], start[m])
    assert untimed(ranks[0]["rows"]) == untimed(ranks[1]["rows"])
    # one set of logs and checkpoints, written by rank 0
    run = tmp_path / "run"
    assert [r["iteration"] for r in read_jsonl(run / "metrics.jsonl")] == [0, 1, 2]
    assert len(list((run / "tensorboard").glob("events.out.tfevents.*"))) == 1
    assert json.loads((run / "config.json").read_text())["num_processes"] == 2
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["iter_000001", "iter_000002"]
    assert (run / "models" / "model_a" / "adapter_config.json").is_file()


def test_a_two_process_run_resumes_to_the_numbers_of_an_uninterrupted_one(tmp_path):
    whole = launch(tmp_path / "whole", "ppo", "--iterations", "3")
    launch(tmp_path / "cut", "ppo", "--iterations", "3", "--stop-after", "2")
    resumed = launch(tmp_path / "cut", "ppo", "--iterations", "3", "--resume")
    assert untimed(read_jsonl(tmp_path / "cut" / "run" / "metrics.jsonl")) == untimed(
        read_jsonl(tmp_path / "whole" / "run" / "metrics.jsonl")
    )
    torch.testing.assert_close(resumed[1]["params"], whole[1]["params"], rtol=0, atol=0)


def test_resuming_with_another_world_size_is_refused(tmp_path):
    launch(tmp_path, "ppo", "--iterations", "2", "--stop-after", "1")
    with pytest.raises(Exception, match="was run by 2 process"):
        from baselines.ppo import SingleAgentTrainer

        SingleAgentTrainer(
            small_config(tmp_path, iterations=2, resume=True),
            model=tiny_model(),
            tokenizer=tiny_tokenizer(),
        ).train()
