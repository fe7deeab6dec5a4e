"""The default dtype ``auto``: bf16 for LoRA on a CPU that computes bf16 natively, fp32
elsewhere; resolved once, when the config is made, recorded in ``config.json`` and kept by a
resume (even on a machine where ``auto`` would resolve otherwise)."""

from __future__ import annotations

import json

import pytest
from helpers.configs import small_config
from helpers.tiny import tiny_model, tiny_tokenizer

from agents.cory import CoryTrainer
from agents.policy import loading
from agents.run.cli import parse
from agents.run.config import TrainConfig


@pytest.fixture
def cpu(monkeypatch):
    """Set whether 'this CPU' computes bf16 natively; ``$CORY_DTYPE`` unset."""
    monkeypatch.delenv("CORY_DTYPE", raising=False)

    def native(bf16: bool) -> None:
        monkeypatch.setattr(loading, "cpu_computes_natively", lambda dtype: dtype == "fp32" or bf16)

    return native


def test_auto_is_bf16_only_for_lora_on_a_cpu_that_computes_bf16(cpu, monkeypatch):
    cpu(True)
    assert loading.default_dtype("cpu", "lora") == "bf16"
    assert loading.default_dtype("cpu", "full") == "fp32"  # full copies: not studied
    assert loading.default_dtype("cuda", "lora") == "fp32"
    cfg = TrainConfig()
    assert cfg.dtype == "bf16" and cfg.dtype_was_auto
    assert TrainConfig(mode="full").dtype == "fp32"
    explicit = TrainConfig(dtype="fp32")
    assert explicit.dtype == "fp32" and not explicit.dtype_was_auto
    cpu(False)
    assert TrainConfig().dtype == "fp32"  # emulated bf16 is slower than fp32
    monkeypatch.setenv("CORY_DTYPE", "bf16")
    assert TrainConfig().dtype == "bf16" and TrainConfig(dtype="fp32").dtype == "fp32"
    monkeypatch.setenv("CORY_DTYPE", "fp64")
    with pytest.raises(ValueError, match="dtype must be one of"):
        TrainConfig()


def test_the_cli_resolves_auto_with_the_flags_mode(cpu):
    cpu(True)
    assert parse("", []).dtype == "bf16"
    assert parse("", ["--mode", "full"]).dtype == "fp32"  # not the default's bf16
    assert parse("", ["--dtype", "fp32"]).dtype == "fp32"


def test_a_run_records_the_resolved_dtype_and_its_resume_keeps_it(tmp_path, cpu):
    cpu(True)
    cfg = small_config(tmp_path, iterations=2, eval_every=0)
    assert cfg.dtype == "bf16"
    first = CoryTrainer(cfg, model=tiny_model(), tokenizer=tiny_tokenizer())
    first.train(stop_after=1)
    assert {learner.agent.dtype for learner in first.learners.values()} == {"bf16"}
    out = tmp_path / "run"
    assert json.loads((out / "config.json").read_text())["dtype"] == "bf16"

    cpu(False)  # the run moves to a machine where ``auto`` is fp32: it stays on bf16
    again = small_config(tmp_path, iterations=2, eval_every=0, resume=True)
    assert again.dtype == "fp32" and again.dtype_was_auto
    CoryTrainer(again, model=tiny_model(), tokenizer=tiny_tokenizer()).train()
    sittings = [
        json.loads(line)
        for line in (out / "events.jsonl").read_text().splitlines()
        if '"sitting"' in line
    ]
    assert [s["dtype"] for s in sittings] == ["bf16", "bf16"]
    assert json.loads((out / "config.json").read_text())["dtype"] == "bf16"
    assert parse("", ["--resume", "--output-dir", str(out)]).dtype == "bf16"  # the CLI's too

    # an explicit dtype other than the run's is refused, as any fixed setting is
    fixed = small_config(tmp_path, iterations=3, eval_every=0, dtype="fp32", resume=True)
    with pytest.raises(Exception, match="dtype: 'bf16' -> 'fp32'"):
        CoryTrainer(fixed, model=tiny_model(), tokenizer=tiny_tokenizer())
