"""Precision that fits a GPU: a LoRA agent over a bf16 base keeps its adapters and value head
in fp32, trains on CPU, and scores within a stated tolerance of the fp32 agent."""

from __future__ import annotations

import pytest
import torch
from helpers.fakes import SCORES
from helpers.tiny import tiny_model, tiny_tokenizer

from agents.policy import LLMAgent
from agents.rl import LearnerConfig, PPOLearner, TokenBatch
from agents.run.config import TrainConfig
from agents.run.setup import weights_dtype

BF16_LOGPROB_ATOL = 1e-2
"""bf16 keeps 8 bits of mantissa; on the tiny model the response log-probs of a bf16 base
differ from fp32's by well under 1e-3 on the CPUs it was measured on: the tolerance leaves room for
other CPUs' kernels."""


def batch(tok) -> TokenBatch:
    queries = [
        tok(q).input_ids for q in ["This movie was", "I loved", "The plot was", "Question:"]
    ] * 2
    responses = [tok(r).input_ids for r in [" great", " this film", " boring and", " 8"]] * 2
    return TokenBatch.from_lists(queries, responses, tok.pad_token_id)


def agent(weights: torch.dtype, compute: str) -> LLMAgent:
    torch.manual_seed(0)
    return LLMAgent.lora(tiny_model().to(weights), tiny_tokenizer(), r=4, alpha=8, dtype=compute)


def test_a_bf16_base_keeps_fp32_adapters_trains_and_scores_near_fp32():
    tok = tiny_tokenizer()
    fp32, bf16 = agent(torch.float32, "fp32"), agent(torch.bfloat16, "bf16")
    base = [p for n, p in bf16.model.named_parameters() if "lora_" not in n]
    assert base and all(p.dtype == torch.bfloat16 for p in base)
    assert all(
        p.dtype == torch.float32 for p in bf16.trainable_parameters()
    )  # adapters + value head
    b = batch(tok)
    with torch.no_grad():
        gap = ((fp32.forward(b).logprobs - bf16.forward(b).logprobs) * b.response_mask).abs().max()
        ref_gap = ((fp32.ref_logprobs(b) - bf16.ref_logprobs(b)) * b.response_mask).abs().max()
    assert float(gap) < BF16_LOGPROB_ATOL and float(ref_gap) < BF16_LOGPROB_ATOL
    before = [p.detach().clone() for p in bf16.trainable_parameters()]
    learner = PPOLearner(bf16, LearnerConfig(learning_rate=1e-2, mini_batch_size=4, ppo_epochs=2))
    stats = learner.update(b, SCORES)
    assert stats["ppo/nonfinite_steps"] == 0 and stats["ppo/optimizer_steps"] == 4
    assert any(not torch.equal(a, p) for a, p in zip(before, bf16.trainable_parameters()))
    assert all(p.dtype == torch.float32 for p in bf16.trainable_parameters())


def test_the_run_loads_a_lora_base_in_the_compute_dtype_and_full_copies_in_fp32():
    assert weights_dtype(TrainConfig(dtype="bf16", mode="lora")) == "bf16"
    assert weights_dtype(TrainConfig(dtype="bf16", mode="full")) == "fp32"
    assert weights_dtype(TrainConfig()) == "fp32"


def test_4bit_loading_is_refused_where_it_cannot_work_saying_what_is_missing(monkeypatch):
    import importlib.util

    from agents.policy import loading
    from agents.run.config import PRESETS, TrainConfig

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n == "bitsandbytes" else real(n, *a)
    )
    with pytest.raises(ModuleNotFoundError, match=r'pip install -e "\.\[quant\]"'):
        loading.check_4bit("cuda")
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: object() if n == "bitsandbytes" else real(n, *a)
    )
    with pytest.raises(ValueError, match="needs a CUDA device"):
        loading.check_4bit("cpu")
    with pytest.raises(ValueError, match="needs --mode lora"):
        TrainConfig(mode="full", load_in_4bit=True)
    assert PRESETS["gsm8k-llama2"]["load_in_4bit"] is True


@pytest.mark.parametrize(
    "bf16_isa, amx, expected", [(False, False, False), (True, False, True), (False, True, True)]
)
def test_bf16_counts_as_native_on_an_x86_cpu_with_avx512_bf16_or_amx_only(
    monkeypatch, bf16_isa, amx, expected
):
    from agents.policy import loading

    monkeypatch.setattr(loading.platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: bf16_isa)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    monkeypatch.setattr(torch.cpu, "_is_amx_fp16_supported", lambda: False)
    assert loading.cpu_computes_natively("bf16") is expected
    assert loading.cpu_computes_natively("fp32") and not loading.cpu_computes_natively("fp16")
    with pytest.raises(ValueError, match="dtype"):
        loading.cpu_computes_natively("int8")


def test_a_cpu_run_in_an_emulated_dtype_is_warned_about_before_loading(monkeypatch, tmp_path):
    import warnings

    from helpers.configs import small_config

    from agents.run import setup

    monkeypatch.setattr(setup, "cpu_computes_natively", lambda dtype: dtype == "fp32")
    with pytest.warns(UserWarning, match="--dtype bf16 on a CPU without bf16 matmul instructions"):
        setup.preflight(small_config(tmp_path, dtype="bf16"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        setup.preflight(small_config(tmp_path, dtype="fp32"))
        monkeypatch.setattr(setup, "cpu_computes_natively", lambda dtype: True)
        setup.preflight(small_config(tmp_path, dtype="bf16"))
