"""Models out in Hugging Face format: every run writes ``models/<model>/``; the adapter, the
full model and the merged model reload with the standard calls and give the agent's log-probs."""

from __future__ import annotations

import torch
from helpers.configs import small_config
from helpers.scripts import load_script
from helpers.tiny import tiny_model, tiny_tokenizer
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from agents.cory import CoryTrainer
from agents.rl.batch import TokenBatch
from baselines.ppo import SingleAgentTrainer


def batch(tok) -> TokenBatch:
    queries = [tok(q).input_ids for q in ["This movie was", "I loved"]]
    responses = [tok(r).input_ids for r in [" great and", " this film"]]
    return TokenBatch.from_lists(queries, responses, tok.pad_token_id)


@torch.no_grad()
def logprobs_of(model, b: TokenBatch) -> torch.Tensor:
    """The response log-probs of ``b`` under a plain Hugging Face model."""
    logits = model(input_ids=b.input_ids, attention_mask=b.attention_mask).logits
    pos = b.logit_positions()
    lp = logits.gather(1, pos.unsqueeze(-1).expand(-1, -1, logits.shape[-1])).log_softmax(-1)
    return lp.gather(-1, b.response_ids.unsqueeze(-1)).squeeze(-1) * b.response_mask


@torch.no_grad()
def agent_logprobs(agent, b: TokenBatch) -> torch.Tensor:
    agent.eval()
    return agent.forward(b).logprobs * b.response_mask


def test_lora_adapters_reload_with_peft_and_merge_into_full_models(tmp_path):
    tok = tiny_tokenizer()
    trainer = CoryTrainer(
        small_config(tmp_path, iterations=2, eval_every=0), model=tiny_model(), tokenizer=tok
    )
    trainer.train()
    out = tmp_path / "run" / "models"
    b = batch(tok)
    for name, learner in trainer.learners.items():
        folder = out / name
        assert (folder / "adapter_config.json").is_file() and (
            folder / "adapter_model.safetensors"
        ).is_file()
        loaded = PeftModel.from_pretrained(tiny_model(), str(folder)).eval()
        want = agent_logprobs(learner.agent, b)
        assert not torch.allclose(want, logprobs_of(tiny_model(), b), atol=1e-4)  # it was trained
        torch.testing.assert_close(logprobs_of(loaded, b), want, atol=1e-5, rtol=1e-5)
        head = load_file(str(folder / "value_head.safetensors"))
        torch.testing.assert_close(head["weight"], learner.agent.value_head.weight.detach())
        assert (
            AutoTokenizer.from_pretrained(str(folder))("I loved").input_ids
            == tok("I loved").input_ids
        )
    export = load_script("scripts/export.py")
    # the base is the tiny model the test built (not a hub id): merge onto a fresh copy of it
    from agents.policy.export import merge_adapter

    merged_dir = merge_adapter(out / "model_b", tiny_model(), tmp_path / "merged")
    merged = AutoModelForCausalLM.from_pretrained(str(merged_dir)).eval()
    torch.testing.assert_close(
        logprobs_of(merged, b),
        agent_logprobs(trainer.learners["model_b"].agent, b),
        atol=1e-5,
        rtol=1e-5,
    )
    assert (merged_dir / "value_head.safetensors").is_file() and not (
        merged_dir / "adapter_config.json"
    ).exists()
    assert callable(export.main)


def test_full_models_reload_with_transformers(tmp_path):
    tok = tiny_tokenizer()
    trainer = SingleAgentTrainer(
        small_config(tmp_path, iterations=1, eval_every=0, mode="full"),
        model=tiny_model(),
        tokenizer=tok,
    )
    trainer.train()
    folder = tmp_path / "run" / "models" / "policy"
    loaded = AutoModelForCausalLM.from_pretrained(str(folder)).eval()
    b = batch(tok)
    torch.testing.assert_close(
        logprobs_of(loaded, b), agent_logprobs(trainer.learner.agent, b), atol=1e-5, rtol=1e-5
    )
