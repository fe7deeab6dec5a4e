"""On a CUDA device (skipped without one): CORY and PPO train the tiny model there, a bf16
LoRA base keeps fp32 adapters, and a 4-bit base (bitsandbytes) trains LoRA adapters."""

from __future__ import annotations

import dataclasses
import importlib.util

import pytest
import torch
from helpers.configs import small_config
from helpers.tiny import tiny_model, tiny_tokenizer

from agents.cory import CoryTrainer
from agents.policy.loading import load_model
from baselines.ppo import SingleAgentTrainer

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def trainable(trainer) -> dict[str, torch.Tensor]:
    return {
        m: torch.cat([p.detach().flatten().float().cpu() for p in lr.agent.trainable_parameters()])
        for m, lr in trainer.learners.items()
    }


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_cory_trains_on_cuda(tmp_path, dtype):
    config = small_config(tmp_path, iterations=2, device="cuda", dtype=dtype, eval_every=0)
    trainer = CoryTrainer(config, model=tiny_model().to("cuda"), tokenizer=tiny_tokenizer())
    before = trainable(trainer)
    rows = trainer.train()
    assert all(
        p.is_cuda and p.dtype == torch.float32
        for lr in trainer.learners.values()
        for p in lr.agent.trainable_parameters()
    )
    for m, after in trainable(trainer).items():
        assert not torch.equal(after, before[m]), m
    assert all(torch.isfinite(torch.tensor(r["charts/reward"])) for r in rows)


def test_ppo_trains_on_cuda(tmp_path):
    config = small_config(tmp_path, iterations=2, device="cuda", eval_every=0)
    trainer = SingleAgentTrainer(config, model=tiny_model().to("cuda"), tokenizer=tiny_tokenizer())
    before = trainable(trainer)
    trainer.train()
    assert not torch.equal(trainable(trainer)["policy"], before["policy"])


@pytest.mark.skipif(importlib.util.find_spec("bitsandbytes") is None, reason="the quant extra")
def test_a_4bit_base_trains_lora_adapters(tmp_path):
    folder = tmp_path / "tiny"
    tiny_model().save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    model, tokenizer = load_model(folder, dtype="bf16", device="cuda", load_in_4bit=True)
    assert any(type(m).__name__ == "Linear4bit" for m in model.modules())
    config = small_config(
        tmp_path, iterations=2, device="cuda", dtype="bf16", load_in_4bit=True, eval_every=0
    )
    trainer = CoryTrainer(dataclasses.replace(config), model=model, tokenizer=tokenizer)
    before = trainable(trainer)
    trainer.train()
    for m, after in trainable(trainer).items():
        assert not torch.equal(after, before[m]), m
