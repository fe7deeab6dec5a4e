"""LoRA layers in fewer calls (:mod:`agents.policy.lora_calls`): the fused layers give
peft's numbers and gradients; sampling with the adapter merged gives the tokens of peft's
layers at a fixed seed; the shared base, which is also the reference, is never written;
layers peft computes differently keep peft's forward."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers.tiny import tiny_model, tiny_tokenizer

from agents.policy import KVCacheSampler, LLMAgent, sample_tokens
from agents.policy.lora_calls import LoraLinear, merged_forwards, plain_layers
from agents.rl import LearnerConfig, PPOLearner, TokenBatch
from cory_env import GenerationConfig


def trained_pair(seed: int = 0) -> tuple[LLMAgent, LLMAgent]:
    """Two LoRA agents on one tiny base, their ``lora_B`` moved off zero (as after updates)."""
    torch.manual_seed(seed)
    a, b = LLMAgent.lora_pair(tiny_model(), tiny_tokenizer(), r=4, alpha=8)
    with torch.no_grad():
        for name, p in a.model.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.05)
    return a, b


def batch(seed: int) -> TokenBatch:
    g = torch.Generator().manual_seed(seed)
    queries = [torch.randint(1, 300, (int(n),), generator=g).tolist() for n in (3, 5, 2, 4)]
    responses = [torch.randint(1, 300, (int(n),), generator=g).tolist() for n in (4, 2, 5, 3)]
    return TokenBatch.from_lists(queries, responses, 0)


def base_weights(agent: LLMAgent) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in agent.model.named_parameters() if "lora_" not in n}


def test_the_fused_layers_give_peft_s_log_probs_and_gradients():
    a, _ = trained_pair()
    b = batch(1)
    got = {}
    for fast in (False, True):
        a.fast_lora = fast
        a.model.zero_grad()
        out = a.forward(b)
        (out.logprobs.sum() + out.values.sum()).backward()
        grads = {n: p.grad.clone() for n, p in a.model.named_parameters() if p.grad is not None}
        got[fast] = (out.logprobs.detach(), grads)
    (lp_peft, g_peft), (lp_fused, g_fused) = got[False], got[True]
    torch.testing.assert_close(lp_fused, lp_peft, rtol=1e-6, atol=1e-6)
    assert set(g_fused) == set(g_peft) and any("lora_A" in n for n in g_peft)
    for name, grad in g_peft.items():
        torch.testing.assert_close(g_fused[name], grad, rtol=1e-5, atol=1e-7, msg=name)


def test_lora_linear_gradients_are_the_derivatives():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 5, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 5, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(4, dtype=torch.float64, requires_grad=True)
    a = torch.randn(2, 5, dtype=torch.float64, requires_grad=True)
    b = torch.randn(4, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda *t: LoraLinear.apply(*t, 1.5), (x, w, bias, a, b))
    expected = x @ w.T + bias + 1.5 * (x @ a.T) @ b.T
    torch.testing.assert_close(LoraLinear.apply(x, w, bias, a, b, 1.5), expected)


def decode(agent: LLMAgent, prompts: list[np.ndarray], seed: int, steps: int = 12):
    """``(tokens (steps, B), logits (steps, B, V))`` sampled from the full distribution."""
    g = torch.Generator().manual_seed(seed)
    tokens, logits = [], []
    with KVCacheSampler.open(agent, prompts, steps) as s:
        for _ in range(steps):
            logits.append(s.logits.clone())
            tokens.append(sample_tokens(s.logits, GenerationConfig(), g))
            s.advance(tokens[-1])
    return torch.stack(tokens), torch.stack(logits)


def test_merged_sampling_gives_the_tokens_of_peft_s_layers():
    a, _ = trained_pair()
    rng = np.random.default_rng(0)
    prompts = [rng.integers(1, 300, size=int(rng.integers(2, 9))) for _ in range(8)]
    for seed in range(4):
        a.fast_lora = False
        tokens, logits = decode(a, prompts, seed)
        a.fast_lora = True
        merged_tokens, merged_logits = decode(a, prompts, seed)
        torch.testing.assert_close(merged_logits, logits, rtol=1e-5, atol=1e-5)
        assert torch.equal(merged_tokens, tokens)


def test_the_shared_base_is_bit_identical_after_many_rollouts_and_updates():
    a, b = trained_pair()
    before = base_weights(a)
    adapter = {n: p.clone() for n, p in a.state_dict()["adapter"].items()}
    prompts = [np.array([5, 17, 42]), np.array([8, 2])]
    learner = PPOLearner(a, LearnerConfig(learning_rate=1e-2, mini_batch_size=2, ppo_epochs=1))
    for it in range(25):
        for agent in (a, b):
            decode(agent, prompts, seed=it, steps=4)
        if it % 5 == 0:
            learner.update(batch(it), np.ones(4, dtype=np.float32))
    after = base_weights(a)
    assert all(torch.equal(after[n], w) for n, w in before.items())
    # the adapter did train, and no layer kept a replaced forward
    assert any(not torch.equal(p, adapter[n]) for n, p in a.state_dict()["adapter"].items())
    assert not any("forward" in vars(m) for m in a.model.modules())


def test_the_replaced_forwards_are_removed_when_the_block_raises():
    a, _ = trained_pair()
    with pytest.raises(RuntimeError, match="inside"), a.policy(training=False, sampling=True):
        assert sum("forward" in vars(m) for m in a.model.modules()) == 14  # 7 per layer
        raise RuntimeError("inside")
    assert not any("forward" in vars(m) for m in a.model.modules())


def test_layers_peft_computes_otherwise_keep_peft_s_forward():
    torch.manual_seed(0)
    agent = LLMAgent.lora(tiny_model(), tiny_tokenizer(), r=4, alpha=8, dropout=0.1)
    agent.model.train()
    assert plain_layers(agent.model, agent.adapter) == []  # dropout active while training
    agent.model.eval()
    assert len(plain_layers(agent.model, agent.adapter)) == 14
    with agent.model.disable_adapter():
        assert plain_layers(agent.model, agent.adapter) == []
    bf16 = LLMAgent.lora(tiny_model().to(torch.bfloat16), tiny_tokenizer(), r=4, alpha=8)
    layers = plain_layers(bf16.model, bf16.adapter)
    with merged_forwards(layers, bf16.adapter):  # a bf16 base with fp32 adapters: not merged
        assert not any("forward" in vars(m) for m in bf16.model.modules())
