"""CORY with K models: K = 2 reproduces the two-agent trainer (to float32 rounding); K = 3 trains every
model, rotates them through the seats keeping their optimisers, and resumes; mixed models
sharing a tokenizer train together (models of different tokenizers: test_mixed_tokenizers.py);
per-seat generation settings."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from helpers.configs import small_config
from helpers.tiny import tiny_model, tiny_tokenizer
from transformers import LlamaConfig, LlamaForCausalLM

from agents.cory import CoryTrainer

TIMING = ("charts/rollout_s", "charts/iteration_s")
DIAGNOSTICS = ("distinct1", "distinct2", "repeat_fraction")
REFERENCE = json.loads((Path(__file__).parent / "data" / "cory_k2_reference.json").read_text())[
    "cases"
]


def without_timing(rows):
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


def params(learner) -> list[torch.Tensor]:
    return [p.detach().clone() for p in learner.agent.trainable_parameters()]


@pytest.mark.parametrize("mode", ["lora", "full"])
def test_two_agents_reproduce_the_recorded_two_agent_run(tmp_path, mode):
    # recorded with the padded computation and a separate no-grad pass; packing's and the
    # fused first mini-batch's float-level differences (tested in test_packing.py and
    # test_fused_forward.py) would move the numbers further. The float32 rounding of CPUs'
    # kernels differs (AVX2, AVX-512, AMX machines): through four iterations the statistics
    # move up to ~5e-6 and the weights ~2e-5 relative, and a clip fraction by a token (a
    # ratio on the clip boundary: 0.0 -> 0.125 on an AVX-512 BF16 AMD EPYC), so fractions of
    # tokens are compared to within one token of the smallest mini-batch (2 answers of >= 3 tokens)
    cfg = small_config(tmp_path, mode=mode, pack_sequences=False)
    trainer = CoryTrainer(cfg, model=tiny_model(), tokenizer=tiny_tokenizer())
    for learner in trainer.learners.values():
        learner.fuse_first_forward = False
    rows = without_timing(trainer.train())
    expected = REFERENCE[mode]
    assert len(rows) == len(expected["rows"])
    for got, want in zip(rows, expected["rows"], strict=True):
        extra = set(got) - set(want)  # only the collapse diagnostics added since the recording
        assert set(want) <= set(got) and all(k.rsplit("/", 1)[1] in DIAGNOSTICS for k in extra)
        for key, value in want.items():
            tol = dict(abs=1 / 6 + 1e-9) if key.endswith("clipfrac") else dict(rel=1e-4, abs=2e-5)
            assert got[key] == pytest.approx(value, **tol), key
    for m, learner in trainer.learners.items():
        total = float(sum(p.detach().double().sum() for p in learner.agent.trainable_parameters()))
        assert total == pytest.approx(expected["weights"][m], rel=1e-4, abs=1e-9)


def three(tmp_path, **kw):
    return small_config(
        tmp_path, **{"num_agents": 3, "iterations": 4, "swap_period": 2, "eval_every": 2, **kw}
    )


def test_three_models_train_rotate_keep_their_optimisers_and_resume(tmp_path):
    trainer = CoryTrainer(three(tmp_path / "a"), model=tiny_model(), tokenizer=tiny_tokenizer())
    assert trainer.models == ("model_a", "model_b", "model_c")
    before = {m: params(lr) for m, lr in trainer.learners.items()}
    rows = trainer.train()
    for m, lr in trainer.learners.items():  # every model's weights changed
        assert any(
            not torch.equal(a, b) for a, b in zip(before[m], lr.agent.trainable_parameters())
        )
        steps = {float(s["step"]) for s in lr.optimizer.state_dict()["state"].values()}
        assert steps == {
            16.0
        }  # 4 iterations x 2 epochs x 2 mini-batches: no state lost at rotations
    # seats: a b c for iterations 0-1, then each model one seat along: c a b for 2-3
    assert [rows[0][f"model_{m}/role"] for m in "abc"] == [0.0, 1.0, 2.0]
    assert [rows[2][f"model_{m}/role"] for m in "abc"] == [1.0, 2.0, 0.0]
    assert trainer.roles.pioneer is trainer.learners["model_b"]  # two rotations: b, c, a
    for key in (
        "pioneer/ppo/loss/total",
        "observer/ppo/loss/total",
        "observer_1/ppo/loss/total",
        "eval/model_c/reward",
    ):
        assert key in rows[0]
    assert rows[0]["charts/reward"] == pytest.approx(
        rows[0]["pioneer/score"] + rows[0]["observer/score"] + rows[0]["observer_1/score"], abs=1e-5
    )
    # resume reproduces the uninterrupted run
    config = three(tmp_path / "b")
    CoryTrainer(config, model=tiny_model(), tokenizer=tiny_tokenizer()).train(stop_after=3)
    resumed = CoryTrainer(
        dataclasses.replace(config, resume=True), model=tiny_model(), tokenizer=tiny_tokenizer()
    ).train()
    assert without_timing(resumed) == without_timing(rows)


def test_a_random_permutation_schedule_deals_seats_and_resumes(tmp_path):
    config = three(tmp_path / "a", role_schedule="random", swap_period=1)
    full = CoryTrainer(config, model=tiny_model(), tokenizer=tiny_tokenizer()).train()
    seats = [tuple(r[f"model_{m}/role"] for m in "abc") for r in full if "model_a/role" in r]
    assert len(seats) == 4 and all(sorted(s) == [0.0, 1.0, 2.0] for s in seats)
    assert len(set(seats)) > 1  # the seats were dealt anew
    config_b = three(tmp_path / "b", role_schedule="random", swap_period=1)
    CoryTrainer(config_b, model=tiny_model(), tokenizer=tiny_tokenizer()).train(stop_after=2)
    resumed = CoryTrainer(
        dataclasses.replace(config_b, resume=True), model=tiny_model(), tokenizer=tiny_tokenizer()
    ).train()
    assert without_timing(resumed) == without_timing(full)


def wider_model(seed: int = 1) -> LlamaForCausalLM:
    """A tiny Llama twice as wide as the tests' model, over the same tokenizer."""
    torch.manual_seed(seed)
    tok = tiny_tokenizer()
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        bos_token_id=None,
        tie_word_embeddings=True,
    )
    return LlamaForCausalLM(cfg).eval()


@pytest.mark.parametrize("mode", ["lora", "full"])
def test_models_of_different_widths_train_together(tmp_path, mode):
    small, wide = tiny_model(), wider_model()
    trainer = CoryTrainer(
        small_config(tmp_path, mode=mode, iterations=2),
        model=[small, wide],
        tokenizer=tiny_tokenizer(),
    )
    a, b = trainer.learners["model_a"].agent, trainer.learners["model_b"].agent
    assert a.value_head.in_features == 32 and b.value_head.in_features == 64
    before = {m: params(lr) for m, lr in trainer.learners.items()}
    rows = trainer.train()
    for m, lr in trainer.learners.items():
        assert any(
            not torch.equal(x, y) for x, y in zip(before[m], lr.agent.trainable_parameters())
        )
    assert "eval/model_b/kl" in rows[-1]


def test_per_seat_generation_settings(tmp_path):
    config = small_config(
        tmp_path,
        num_agents=3,
        iterations=1,
        eval_every=0,
        seat_max_new_tokens=[2, 3, 6],
        seat_top_k=[1, 0, 0],
    )
    trainer = CoryTrainer(config, model=tiny_model(), tokenizer=tiny_tokenizer())
    assert [g.max_new_tokens for g in trainer.run.seats] == [2, 3, 6]
    assert [g.top_k for g in trainer.run.seats] == [1, 0, 0]
    trainer.step(0)
    lengths = [
        [len(r) for r in trainer.run.venv.response_ids(role)]
        for role in trainer.run.venv.possible_agents
    ]
    assert max(lengths[0]) <= 2 and max(lengths[1]) <= 3 and max(lengths[2]) <= 6
    assert max(lengths[2]) > 3  # the last observer was allowed its longer answer
    with pytest.raises(ValueError, match="seat_max_new_tokens needs 3 values"):
        small_config(tmp_path, num_agents=3, seat_max_new_tokens=[2, 3])
