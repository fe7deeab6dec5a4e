"""Fully sharded (FSDP2) full-copy training on 2 real processes, launched the way a user
does, ``accelerate launch --config_file configs/accelerate/cpu_fsdp.yaml`` (gloo, 1 thread
each, tiny model): each process holds half of every weight; an update equals the
single-process one; a CORY run equals the unsharded data-parallel run of the same config,
writes one run with models that load with transformers; a resumed run reproduces an
uninterrupted one; processes with fewer micro-batches (a token budget) or no rows of a
mini-batch run weightless ones; with CPU-RAM-efficient loading only rank 0 reads the
weights and the run is the same; LoRA is refused before anything is sharded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers.configs import small_config
from helpers.dp_worker import flat_trainable, update_learner
from helpers.launch import launch, untimed
from helpers.tiny import tiny_model, tiny_tokenizer

from agents.distributed import SINGLE
from agents.policy.sharding import check_sharding
from agents.run.run_log import read_jsonl

CONFIG = "cpu_fsdp.yaml"


@pytest.mark.slow
def test_an_fsdp_update_shards_the_weights_and_equals_the_single_process_update(tmp_path):
    ranks = launch(tmp_path / "fsdp", "update", "--mode", "full", config=CONFIG)
    assert [(r["world"][:2], r["fsdp"]) for r in ranks] == [((2, 0), True), ((2, 1), True)]
    value_head = 33  # hidden 32 + bias: the one parameter left whole
    assert (
        ranks[0]["held"] == ranks[1]["held"] == (ranks[0]["numel"] - value_head) // 2 + value_head
    )
    single = update_learner(tmp_path / "single", SINGLE, mode="full")
    initial = flat_trainable(
        update_learner(tmp_path / "initial", SINGLE, update=False, mode="full")
    )
    expected = flat_trainable(single)
    assert (expected - initial).abs().max() > 1e-2
    torch.testing.assert_close(ranks[0]["params"], ranks[1]["params"], rtol=0, atol=0)
    torch.testing.assert_close(ranks[0]["params"], expected, rtol=1e-5, atol=1e-6)
    for key in ("ppo/policy/approxkl", "ppo/loss/total", "ppo/val/error", "ppo/policy/entropy"):
        assert ranks[0]["stats"][key] == pytest.approx(single.stats[key], rel=1e-4, abs=1e-6), key


@pytest.mark.slow
@pytest.mark.parametrize(
    "options, settings",
    [
        # a 12-token budget cuts some shares of 2 rows (5-7 tokens each) in two and leaves others
        # whole: the process with fewer pieces runs weightless ones
        (("--budget", "12"), dict(budget=12)),
        # mini-batches of 7 and 1 rows: for the 1-row one, a process holds no row
        (("--mini-batch-size", "7"), dict(mini_batch_size=7)),
        (("--mini-batch-size", "7", "--budget", "12"), dict(mini_batch_size=7, budget=12)),
    ],
)
def test_processes_with_fewer_pieces_run_weightless_ones_and_the_update_is_unchanged(
    tmp_path, options, settings
):
    ranks = launch(tmp_path / "fsdp", "update", "--mode", "full", *options, config=CONFIG)
    expected = flat_trainable(update_learner(tmp_path / "single", SINGLE, mode="full", **settings))
    torch.testing.assert_close(ranks[0]["params"], ranks[1]["params"], rtol=0, atol=0)
    torch.testing.assert_close(ranks[0]["params"], expected, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_an_fsdp_cory_run_equals_the_unsharded_run_and_exports_loadable_models(tmp_path):
    from transformers import AutoModelForCausalLM

    sharded = launch(
        tmp_path / "fsdp", "cory", "--mode", "full", "--iterations", "2", config=CONFIG
    )
    plain = launch(tmp_path / "ddp", "cory", "--mode", "full", "--iterations", "2")
    assert sharded[0]["fsdp"] and not plain[0]["fsdp"]
    for m in ("model_a", "model_b"):
        torch.testing.assert_close(sharded[0]["params"][m], sharded[1]["params"][m], rtol=0, atol=0)
        torch.testing.assert_close(
            sharded[0]["params"][m], plain[0]["params"][m], rtol=0, atol=1e-4
        )
    rows, expected = untimed(sharded[0]["rows"]), untimed(plain[0]["rows"])
    assert [sorted(r) for r in rows] == [sorted(r) for r in expected]
    for row, want in zip(
        rows, expected
    ):  # the rollouts are the same tokens, so the rewards are equal
        for key in ("charts/reward", "eval/model_a/reward", "eval/model_b/reward", "charts/kl"):
            if key in want:
                assert row[key] == pytest.approx(want[key], rel=1e-4, abs=1e-6), key
    run = tmp_path / "fsdp" / "run"
    assert [r["iteration"] for r in read_jsonl(run / "metrics.jsonl")] == [0, 1, 2]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["iter_000001", "iter_000002"]
    exported = AutoModelForCausalLM.from_pretrained(run / "models" / "model_a")
    weights = torch.cat([p.detach().flatten() for p in exported.parameters()])
    torch.testing.assert_close(
        weights, sharded[0]["params"]["model_a"][: len(weights)], rtol=0, atol=0
    )


@pytest.mark.slow
def test_an_fsdp_run_resumes_to_the_numbers_of_an_uninterrupted_one(tmp_path):
    args = ("ppo", "--mode", "full", "--iterations", "3")
    whole = launch(tmp_path / "whole", *args, config=CONFIG)
    launch(tmp_path / "cut", *args, "--stop-after", "2", config=CONFIG)
    resumed = launch(tmp_path / "cut", *args, "--resume", config=CONFIG)
    assert untimed(read_jsonl(tmp_path / "cut" / "run" / "metrics.jsonl")) == untimed(
        read_jsonl(tmp_path / "whole" / "run" / "metrics.jsonl")
    )
    torch.testing.assert_close(resumed[1]["params"], whole[1]["params"], rtol=0, atol=0)


@pytest.mark.slow
def test_a_sharded_checkpoint_holds_each_processs_shards_and_resumes_to_the_same_numbers(tmp_path):
    from safetensors import safe_open

    from agents.errors import CheckpointError
    from agents.run.checkpoint import load_checkpoint
    from agents.run.state_codec import shard_names

    sharded = ("--fsdp_state_dict_type", "SHARDED_STATE_DICT")
    args = ("cory", "--mode", "full", "--iterations", "3")
    whole = launch(tmp_path / "whole", *args, config=CONFIG)  # the config's FULL_STATE_DICT
    launch(tmp_path / "cut", *args, "--stop-after", "2", config=CONFIG, launcher=sharded)
    ckpt = tmp_path / "cut" / "run" / "checkpoints" / "iter_000002"
    assert sorted(p.name for p in ckpt.iterdir()) == [
        "state.json",
        "tensors.rank1.safetensors",
        "tensors.safetensors",
    ]
    meta = json.loads((ckpt / "state.json").read_text())
    names = shard_names(meta["state"])
    assert (
        meta["processes"] == 2
        and any("/optimizer/" in n for n in names)
        and any("/model/" in n for n in names)
    )
    with (
        safe_open(str(ckpt / "tensors.safetensors"), "pt") as f0,
        safe_open(str(ckpt / "tensors.rank1.safetensors"), "pt") as f1,
    ):
        assert set(f1.keys()) == set(names) <= set(f0.keys())
        # the shards are halves: rank 0's and rank 1's rows make each whole tensor
        for n in names:
            a, b = f0.get_tensor(n), f1.get_tensor(n)
            assert a.shape[1:] == b.shape[1:] and abs(a.shape[0] - b.shape[0]) <= 1, n
    with pytest.raises(CheckpointError, match="written by 2 processes.*resume it with 2"):
        load_checkpoint(ckpt, SINGLE)
    resumed = launch(tmp_path / "cut", *args, "--resume", config=CONFIG, launcher=sharded)
    assert untimed(read_jsonl(tmp_path / "cut" / "run" / "metrics.jsonl")) == untimed(
        read_jsonl(tmp_path / "whole" / "run" / "metrics.jsonl")
    )
    for m in ("model_a", "model_b"):
        torch.testing.assert_close(resumed[1]["params"][m], whole[1]["params"][m], rtol=0, atol=0)


@pytest.mark.slow
def test_with_cpu_ram_efficient_loading_only_the_main_process_reads_the_weights(tmp_path):
    folder = tmp_path / "model"
    tiny_model().save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    args = ("cory", "--mode", "full", "--iterations", "2", "--model", str(folder))
    efficient = launch(tmp_path / "efficient", *args, config=CONFIG)  # the config's setting: true
    everywhere = launch(
        tmp_path / "everywhere",
        *args,
        config=CONFIG,
        launcher=("--fsdp_cpu_ram_efficient_loading", "false"),
    )
    assert [r["loaded"] for r in efficient] == ["weights", "meta"]
    assert [r["loaded"] for r in everywhere] == ["weights", "weights"]
    for m in ("model_a", "model_b"):  # rank 1's shards came from rank 0: the same run
        torch.testing.assert_close(
            efficient[1]["params"][m], everywhere[1]["params"][m], rtol=0, atol=0
        )
        torch.testing.assert_close(
            efficient[0]["params"][m], efficient[1]["params"][m], rtol=0, atol=0
        )
    assert untimed(efficient[0]["rows"]) == untimed(everywhere[0]["rows"])


def test_fsdp_with_lora_is_refused():
    with pytest.raises(ValueError, match="full-copy agents only"):
        check_sharding(small_config(Path("/tmp/cory-fsdp"), mode="lora"))
