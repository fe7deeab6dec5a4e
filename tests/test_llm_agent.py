"""LLMAgent: log-probs, values, reference, LoRA sharing, and act() with a KV cache through the env."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers.tiny import tiny_model, tiny_tokenizer

from agents.policy import AgentOutput, LLMAgent, enable_activation_checkpointing, sample_tokens
from agents.rl.batch import TokenBatch
from agents.run.rollout import act
from cory_env import OBSERVER, PIONEER, CoryTextVecEnv, GenerationConfig


def make_batch(tok) -> TokenBatch:
    queries = [tok(q).input_ids for q in ["This movie was", "I loved", "Question: Tom has 3"]]
    responses = [tok(r).input_ids for r in [" great and", " this film, a beautiful", " apples"]]
    responses[0] = responses[0] + [tok.eos_token_id]
    return TokenBatch.from_lists(queries, responses, pad_id=tok.pad_token_id)


def manual_logprobs(model, batch: TokenBatch) -> torch.Tensor:
    with torch.no_grad():
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    logp = logits.log_softmax(-1)
    pos = batch.logit_positions()
    rows = torch.arange(len(batch))[:, None]
    return logp[rows, pos].gather(-1, batch.response_ids.unsqueeze(-1)).squeeze(-1)


def masked(x: torch.Tensor, batch: TokenBatch) -> torch.Tensor:
    return x * batch.response_mask


def eos_heavy_model(seed: int = 0):
    """The tiny Llama with a live EOS row (it is the zero padding row at init; the weights are
    tied), so turns end at different steps."""
    model = tiny_model(seed)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        emb = model.model.embed_tokens.weight
        emb[0] = torch.randn(emb.shape[1], generator=g) * 0.2
    return model


def venv_for(tok, n: int = 6, max_new: int = 10) -> CoryTextVecEnv:
    venv = CoryTextVecEnv(num_envs=n, task="sentiment", tokenizer=tok, max_new_tokens=max_new)
    venv.reset(seed=3)
    return venv


# --------------------------------------------------------------------------- forward / reference


def test_forward_matches_manual_log_softmax():
    tok = tiny_tokenizer()
    agent = LLMAgent.full_copy(tiny_model(), tok)
    batch = make_batch(tok)
    out = agent.forward(batch, with_logits=True)
    assert isinstance(out, AgentOutput)
    n, t = batch.response_ids.shape
    assert out.logprobs.shape == out.values.shape == out.entropy.shape == (n, t)
    assert out.logits.shape == (n, t, len(tok))
    torch.testing.assert_close(
        masked(out.logprobs, batch), masked(manual_logprobs(agent.reference, batch), batch)
    )
    logp = out.logits.log_softmax(-1)
    torch.testing.assert_close(out.entropy, masked(-(logp.exp() * logp).sum(-1), batch))
    assert (out.logits[batch.response_mask == 0] == 0).all()  # padding: zeros, as every output
    assert agent.forward(batch).logits is None


def test_values_and_gradients_flow():
    tok = tiny_tokenizer()
    agent = LLMAgent.full_copy(tiny_model(), tok)
    batch = make_batch(tok)
    out = agent.forward(batch)
    assert out.values.requires_grad and out.logprobs.requires_grad
    (masked(out.values, batch).sum() + masked(out.logprobs, batch).sum()).backward()
    assert agent.value_head.weight.grad is not None and agent.value_head.weight.grad.abs().sum() > 0
    assert agent.model.model.layers[0].self_attn.q_proj.weight.grad is not None
    assert all(p.grad is None for p in agent.reference.parameters())
    ids = {id(p) for p in agent.trainable_parameters()}
    assert id(agent.value_head.weight) in ids and id(agent.model.lm_head.weight) in ids


@pytest.mark.parametrize("lora", [False, True])
def test_activation_checkpointing_recomputes_layers_in_backward_only(lora):
    tok = tiny_tokenizer()
    if lora:
        agent = LLMAgent.lora(tiny_model(), tok, r=4, alpha=8)
    else:
        agent = LLMAgent.full_copy(tiny_model(), tok)
    batch = make_batch(tok)

    def layer_calls(fn) -> int:
        hf = agent.model.get_base_model() if lora else agent.model
        # the MLP runs inside the checkpointed forward, so it starts again on the recompute
        # (a pre-hook: torch stops the recompute once it has what the backward needs)
        calls = []
        handle = hf.model.layers[0].mlp.register_forward_pre_hook(lambda *_: calls.append(1))
        try:
            fn()
        finally:
            handle.remove()
        return len(calls)

    def step():
        for p in agent.trainable_parameters():
            p.grad = None
        out = agent.forward(batch)
        (masked(out.logprobs, batch).sum() + masked(out.values, batch).sum()).backward()
        return [p.grad.clone() for p in agent.trainable_parameters() if p.grad is not None]

    agent.forward(batch)  # the first forward checks packing once: not counted
    grads_plain = []
    assert layer_calls(lambda: grads_plain.extend(step())) == 1
    ref_before = agent.ref_logprobs(batch)
    enable_activation_checkpointing(agent.model)
    grads_ckpt = []
    assert layer_calls(lambda: grads_ckpt.extend(step())) == 2  # forward, then recomputed
    with torch.no_grad():  # the learners' rollout pass: nothing to recompute
        assert layer_calls(lambda: agent.forward(batch)) == 1
    assert len(grads_plain) == len(grads_ckpt) > 0
    for a, b in zip(grads_plain, grads_ckpt):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(agent.ref_logprobs(batch), ref_before)


def test_ref_logprobs_full_copy_before_and_after_a_step():
    tok = tiny_tokenizer()
    agent = LLMAgent.full_copy(tiny_model(), tok)
    batch = make_batch(tok)
    ref = agent.ref_logprobs(batch)
    assert not ref.requires_grad
    torch.testing.assert_close(
        masked(ref, batch), masked(agent.forward(batch).logprobs.detach(), batch)
    )
    full = agent.ref_logprobs(batch, full=True)
    assert full.shape == (*ref.shape, len(tok))
    torch.testing.assert_close(full.gather(-1, batch.response_ids.unsqueeze(-1)).squeeze(-1), ref)

    opt = torch.optim.SGD(agent.trainable_parameters(), lr=0.5)
    (-masked(agent.forward(batch).logprobs, batch).sum()).backward()
    opt.step()
    after = agent.forward(batch).logprobs.detach()
    assert (masked(after - ref, batch).abs().max()) > 1e-3
    torch.testing.assert_close(agent.ref_logprobs(batch), ref)  # the reference did not move


def test_full_copies_share_one_frozen_reference():
    tok = tiny_tokenizer()
    reference = tiny_model()
    a = LLMAgent.full_copy(tiny_model(), tok, reference=reference)
    b = LLMAgent.full_copy(tiny_model(), tok, reference=reference)
    assert a.reference is b.reference is reference
    assert not any(p.requires_grad for p in reference.parameters())
    with pytest.raises(ValueError, match="different object"):
        LLMAgent.full_copy(reference, tok, reference=reference)


def test_full_copy_state_dict_round_trip():
    tok = tiny_tokenizer()
    a = LLMAgent.full_copy(tiny_model(seed=1), tok)
    b = LLMAgent.full_copy(tiny_model(seed=2), tok)
    batch = make_batch(tok)
    b.load_state_dict(a.state_dict())
    torch.testing.assert_close(b.forward(batch).values, a.forward(batch).values)
    torch.testing.assert_close(b.forward(batch).logprobs, a.forward(batch).logprobs)


# --------------------------------------------------------------------------- LoRA


def _perturb(agent: LLMAgent, scale: float = 0.5) -> None:
    with torch.no_grad():
        for name, p in agent.model.named_parameters():
            if f"lora_B.{agent.adapter}." in name:
                p.normal_(0.0, scale)


def test_lora_pair_shares_the_base_and_keeps_adapters_apart():
    tok = tiny_tokenizer()
    a, b = LLMAgent.lora_pair(tiny_model(), tok, r=4, alpha=8)
    assert a.model is b.model and a.adapter != b.adapter
    base = dict(a.model.named_parameters())
    q_base = next(
        p for k, p in base.items() if k.endswith("layers.0.self_attn.q_proj.base_layer.weight")
    )
    assert (
        q_base
        is dict(b.model.named_parameters())[
            next(k for k in base if k.endswith("layers.0.self_attn.q_proj.base_layer.weight"))
        ]
    )
    assert not q_base.requires_grad
    pa, pb = {id(p) for p in a.trainable_parameters()}, {id(p) for p in b.trainable_parameters()}
    assert pa and pb and not pa & pb
    assert id(q_base) not in pa | pb

    batch = make_batch(tok)
    ref = a.ref_logprobs(batch)
    torch.testing.assert_close(
        masked(a.forward(batch).logprobs.detach(), batch), masked(ref, batch)
    )
    torch.testing.assert_close(b.ref_logprobs(batch), ref)

    # only A's adapter (and value head) gets gradients from A's loss, even after B ran last
    b.forward(batch)
    loss = (
        masked(a.forward(batch).logprobs, batch).sum()
        + masked(a.forward(batch).values, batch).sum()
    )
    b.forward(batch)  # switching adapters between forward and backward must not matter
    loss.backward()
    assert all(p.grad is not None for p in a.trainable_parameters())
    assert all(p.grad is None for p in b.trainable_parameters())
    assert all(p.grad is None for k, p in a.model.named_parameters() if "lora_" not in k)


def test_lora_each_agent_uses_its_own_adapter():
    tok = tiny_tokenizer()
    a, b = LLMAgent.lora_agents(tiny_model(), tok, n=2, r=4, alpha=8)
    batch = make_batch(tok)
    ref = a.ref_logprobs(batch)
    _perturb(a)
    la, lb = a.forward(batch).logprobs.detach(), b.forward(batch).logprobs.detach()
    assert masked(la - ref, batch).abs().max() > 1e-3
    torch.testing.assert_close(masked(lb, batch), masked(ref, batch))  # B still the base
    torch.testing.assert_close(a.forward(batch).logprobs.detach(), la)  # A again after B
    torch.testing.assert_close(a.ref_logprobs(batch), ref)  # adapters disabled = the base
    assert all(p.requires_grad for p in a.trainable_parameters() + b.trainable_parameters())


def test_lora_state_dict_moves_between_adapters():
    tok = tiny_tokenizer()
    a, b = LLMAgent.lora_pair(tiny_model(), tok, r=4, alpha=8)
    _perturb(a)
    batch = make_batch(tok)
    state = a.state_dict()
    assert state["adapter"] and all(a.adapter not in k for k in state["adapter"])
    b.load_state_dict(state)
    torch.testing.assert_close(b.forward(batch).logprobs, a.forward(batch).logprobs)
    torch.testing.assert_close(b.forward(batch).values, a.forward(batch).values)
    full = LLMAgent.full_copy(tiny_model(), tok)
    with pytest.raises(ValueError, match="cannot load"):
        full.load_state_dict(state)


def test_single_lora_agent_and_adding_to_an_existing_peft_model():
    tok = tiny_tokenizer()
    first = LLMAgent.lora(tiny_model(), tok, r=2, alpha=4)
    second = LLMAgent.lora(first.model, tok, r=2, alpha=4)
    assert second.model is first.model and second.adapter != first.adapter
    batch = make_batch(tok)
    _perturb(second)
    assert (
        masked(second.forward(batch).logprobs - first.forward(batch).logprobs, batch).abs().max()
        > 1e-3
    )


# --------------------------------------------------------------------------- sampling


def test_sample_tokens_warpers():
    g = torch.Generator().manual_seed(0)
    logits = torch.tensor([[0.0, 1.0, 2.0, 3.0]]).repeat(400, 1)
    greedy = sample_tokens(logits, GenerationConfig(top_k=1), g)
    assert (greedy == 3).all()
    assert (sample_tokens(logits, GenerationConfig(temperature=0.0), g) == 3).all()
    top2 = sample_tokens(logits, GenerationConfig(top_k=2), g)
    assert set(top2.tolist()) == {2, 3}
    nucleus = sample_tokens(logits, GenerationConfig(top_p=0.5), g)  # p(3) = 0.64 >= 0.5
    assert set(nucleus.tolist()) == {3}
    full = sample_tokens(logits, GenerationConfig(), g)
    assert set(full.tolist()) == {0, 1, 2, 3}


# --------------------------------------------------------------------------- act


def reference_act(model, venv, generation, generator, pad_id) -> list[np.ndarray]:
    """No cache: re-encode each left-padded sequence for every token (the slow, obvious way)."""
    role = venv.agent_selection
    seqs = [list(p) for p in venv.prompt_ids]
    while venv.agent_selection == role:
        width = max(map(len, seqs))
        ids = torch.tensor([[pad_id] * (width - len(s)) + s for s in seqs])
        mask = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in seqs])
        pos = (mask.cumsum(1) - 1).clamp(min=0)
        with torch.no_grad():
            logits = model(input_ids=ids, attention_mask=mask, position_ids=pos).logits[:, -1]
        tokens = sample_tokens(logits, generation, generator)
        venv.step(tokens.numpy())
        for s, t in zip(seqs, tokens.tolist()):
            s.append(t)
    return venv.response_ids(role)


@pytest.mark.parametrize(
    "gen",
    [
        GenerationConfig(max_new_tokens=10),
        GenerationConfig(max_new_tokens=10, temperature=0.7, top_k=20, top_p=0.9),
    ],
)
def test_act_with_cache_equals_no_cache_sampler(gen):
    tok = tiny_tokenizer()
    agent = LLMAgent.full_copy(eos_heavy_model(), tok)
    v1, v2 = venv_for(tok), venv_for(tok)
    for role in (PIONEER, OBSERVER):
        assert v1.agent_selection == v2.agent_selection == role
        fast = act(agent, v1, gen, generator=torch.Generator().manual_seed(11))
        slow = reference_act(
            agent.model, v2, gen, torch.Generator().manual_seed(11), tok.pad_token_id
        )
        assert [r.tolist() for r in fast] == [r.tolist() for r in slow]
    assert v1.agent_selection is None
    lengths = {len(r) for r in v1.response_ids(PIONEER) + v1.response_ids(OBSERVER)}
    assert len(lengths) > 1, "the test should cover turns ending at different steps"
    assert v1.texts(OBSERVER) == v2.texts(OBSERVER)


def test_act_greedy_equals_generate():
    tok = tiny_tokenizer()
    model = eos_heavy_model(seed=1)
    agent = LLMAgent.full_copy(model, tok)
    venv = venv_for(tok, n=5, max_new=8)
    prompts = venv.prompt_ids
    got = act(agent, venv, GenerationConfig(max_new_tokens=8, top_k=1))
    width = max(map(len, prompts))
    ids = torch.tensor([[tok.pad_token_id] * (width - len(p)) + list(p) for p in prompts])
    mask = (
        torch.arange(width)[None] >= torch.tensor([width - len(p) for p in prompts])[:, None]
    ).long()
    out = agent.reference.generate(
        input_ids=ids,
        attention_mask=mask,
        max_new_tokens=8,
        do_sample=False,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
    )
    for r, g in zip(got, out[:, width:].tolist()):
        assert r.tolist() == g[: len(r)]
        assert len(r) == 8 or r[-1] == tok.eos_token_id


def test_act_uses_the_kv_cache():
    tok = tiny_tokenizer()
    agent = LLMAgent.full_copy(tiny_model(), tok)
    venv = venv_for(tok, n=4, max_new=6)
    widths = []
    inner = agent.model.forward

    def spy(*args, **kwargs):
        widths.append(kwargs["input_ids"].shape[1])
        return inner(*args, **kwargs)

    agent.model.forward = spy
    prompt_width = max(map(len, venv.prompt_ids))
    resp = act(
        agent, venv, GenerationConfig(max_new_tokens=6), generator=torch.Generator().manual_seed(0)
    )
    steps = max(map(len, resp))
    assert widths == [prompt_width] + [1] * (steps - 1)


def test_lora_agents_play_both_roles():
    tok = tiny_tokenizer()
    a, b = LLMAgent.lora_pair(eos_heavy_model(), tok, r=4, alpha=8)
    _perturb(b, 0.3)
    venv = venv_for(tok, n=4, max_new=8)
    gen = GenerationConfig(max_new_tokens=8)
    first = act(a, venv, gen, generator=torch.Generator().manual_seed(0))
    second = act(b, venv, gen, generator=torch.Generator().manual_seed(0))
    assert venv.agent_selection is None
    assert all(1 <= len(r) <= 8 for r in first + second)
    assert [r.tolist() for r in first] == [r.tolist() for r in venv.response_ids(PIONEER)]
    assert a.training and b.training  # act() does not change the agent's mode


def test_act_bf16_autocast_and_padded_vocab():
    tok = tiny_tokenizer()
    model = tiny_model(vocab_size=len(tok) + 64)  # an embedding padded past the tokenizer
    with torch.no_grad():
        model.model.embed_tokens.weight[len(tok) :] *= 50.0  # make padded ids attractive
    agent = LLMAgent.full_copy(model, tok, dtype="bf16")
    venv = venv_for(tok, n=3, max_new=5)
    resp = act(
        agent, venv, GenerationConfig(max_new_tokens=5), generator=torch.Generator().manual_seed(0)
    )
    assert all(int(r.max()) < len(tok) for r in resp)
    out = agent.forward(make_batch(tok))
    assert out.logprobs.dtype == torch.float32 and torch.isfinite(out.logprobs).all()


def test_act_errors():
    tok = tiny_tokenizer()
    agent = LLMAgent.full_copy(tiny_model(), tok)
    venv = venv_for(tok, n=2, max_new=4)
    gen = GenerationConfig(max_new_tokens=4, top_k=1)
    with pytest.raises(RuntimeError, match="did not end within"):
        act(agent, venv, gen, max_new_tokens=2)
    venv.reset(seed=0)
    act(agent, venv, gen)
    act(agent, venv, gen)
    with pytest.raises(RuntimeError, match="episode is over"):
        act(agent, venv, gen)


@pytest.mark.slow
def test_smollm2_lora_pair_plays_an_episode():
    """The embedded default model: a LoRA pair plays both roles and scores its answers."""
    from agents.policy.loading import ModelNotFoundError, alias_path, load_model

    try:
        alias_path("smollm2-135m-instruct")
    except ModelNotFoundError as err:
        pytest.skip(str(err))
    model, tok = load_model("smollm2-135m-instruct")
    a, b = LLMAgent.lora_pair(model, tok, r=4, alpha=8)
    venv = CoryTextVecEnv(num_envs=2, task="sentiment", tokenizer=tok, max_new_tokens=4)
    venv.reset(seed=0)
    prompts = venv.prompt_ids
    gen = GenerationConfig(max_new_tokens=4)
    first = act(a, venv, gen, generator=torch.Generator().manual_seed(0))
    act(b, venv, gen, generator=torch.Generator().manual_seed(1))
    assert venv.agent_selection is None and all(1 <= len(r) <= 4 for r in first)
    batch = TokenBatch.from_lists(prompts, first, pad_id=tok.pad_token_id)
    torch.testing.assert_close(
        masked(a.forward(batch).logprobs.detach(), batch),
        masked(a.ref_logprobs(batch), batch),
        atol=1e-4,
        rtol=1e-4,
    )
