"""Sequence packing (agents/policy/packing.py): the layout holds every sequence once with
its own positions, and the packed forward gives the padded forward's log-probs, values,
entropy, reference log-probs and gradients (LoRA and full copies); a model whose packed
logits differ is scored padded, with a warning."""

from __future__ import annotations

import pytest
import torch
from helpers.tiny import tiny_model, tiny_tokenizer
from transformers import LlamaForCausalLM

from agents.policy import LLMAgent
from agents.policy.packing import balanced_bins, pack, packing_width
from agents.rl import TokenBatch


def batch(tok, n: int = 6, seed: int = 0) -> TokenBatch:
    g = torch.Generator().manual_seed(seed)
    queries = [
        torch.randint(
            1, len(tok), (int(torch.randint(2, 9, (1,), generator=g)),), generator=g
        ).tolist()
        for _ in range(n)
    ]
    responses = [
        torch.randint(
            1, len(tok), (int(torch.randint(1, 6, (1,), generator=g)),), generator=g
        ).tolist()
        for _ in range(n)
    ]
    return TokenBatch.from_lists(queries, responses, tok.pad_token_id)


def test_balanced_bins_hold_every_sequence_once_and_fill_evenly():
    lengths = [9, 3, 7, 7, 2, 5, 8, 4]
    bins = balanced_bins(lengths, 3)
    assert sorted(i for b in bins for i in b) == list(range(len(lengths)))
    loads = [sum(lengths[i] for i in b) for b in bins]
    assert max(loads) <= 4 / 3 * 15  # 45 tokens in 3 rows: LPT's bound on the fullest row
    width, bins = packing_width(lengths)
    assert sorted(i for b in bins for i in b) == list(range(len(lengths)))
    assert width >= max(lengths) and all(sum(lengths[i] for i in b) <= width for b in bins)
    slots = len(bins) * width
    assert slots < len(lengths) * max(lengths) and (slots - 45) / slots <= 0.1  # padded: 72 slots
    # 12 tokens: 2 rows of 6 fill every slot (as 1 row of 12: the narrower wins); when
    # attention is dear, 4 rows of 4 (16 slots, each attending over 4) cost less
    assert packing_width([4, 3, 3, 2])[0] == 6
    assert packing_width([4, 3, 3, 2], attention=1.0)[0] == 4


def test_pack_keeps_each_sequence_and_its_positions():
    tok = tiny_tokenizer()
    b = batch(tok)
    p = pack(b, tok.pad_token_id)
    lengths = b.attention_mask.sum(1)
    assert p.slots < b.input_ids.numel() and p.slots >= int(lengths.sum())
    flat_ids, flat_pos = p.input_ids.flatten(), p.position_ids.flatten()
    rows, cols = b.response_mask.nonzero(as_tuple=True)
    assert torch.equal(rows, p.rows) and torch.equal(cols, p.cols)
    # the position before each response token predicts it: the next slot holds that token
    assert torch.equal(flat_ids[p.logit_index + 1], b.response_ids[rows, cols])
    assert torch.equal(flat_pos[p.logit_index], b.query_lengths[rows] - 1 + cols)
    # every sequence appears whole, at positions 0..len-1
    for i in range(len(b)):
        seq = b.input_ids[i, : int(lengths[i])]
        starts = (flat_pos == 0).nonzero().flatten().tolist()
        assert any(torch.equal(flat_ids[s : s + len(seq)], seq) for s in starts)


def agents_for(mode: str):
    tok = tiny_tokenizer()
    torch.manual_seed(0)
    if mode == "lora":
        make = lambda: LLMAgent.lora(tiny_model(), tok, r=4, alpha=8)  # noqa: E731
    else:
        make = lambda: LLMAgent.full_copy(tiny_model(), tok)  # noqa: E731
    padded, packed = make(), make()
    padded.packing = False
    packed.load_state_dict(padded.state_dict())
    with torch.no_grad():  # a value head that is not zero, so its gradient is compared too
        for a in (padded, packed):
            for p, v in zip(
                a.value_head.parameters(),
                (torch.full_like(q, 0.1) for q in a.value_head.parameters()),
            ):
                p.copy_(v)
    return tok, padded, packed


@pytest.mark.parametrize("mode", ["lora", "full"])
def test_packed_forward_equals_the_padded_one_with_gradients(mode):
    tok, padded, packed = agents_for(mode)
    b = batch(tok, n=7, seed=1)
    m = b.response_mask
    outs = {}
    for name, agent in (("padded", padded), ("packed", packed)):
        out = agent.forward(b, with_logits=True)
        loss = (out.logprobs * m).sum() + (out.values * m).sum() + (out.entropy * m).sum()
        loss.backward()
        grads = [p.grad.clone() for p in agent.trainable_parameters() if p.grad is not None]
        outs[name] = (out, grads, agent.ref_logprobs(b), agent.ref_logprobs(b, full=True))
    assert packed._packs is True and padded._packs is None
    (o1, g1, r1, f1), (o2, g2, r2, f2) = outs["padded"], outs["packed"]
    tol = dict(atol=1e-5, rtol=1e-4)
    for x, y in (
        (o1.logprobs, o2.logprobs),
        (o1.values, o2.values),
        (o1.entropy, o2.entropy),
        (r1, r2),
    ):
        torch.testing.assert_close(x * m, y * m, **tol)
        assert (y[m == 0] == 0).all()  # padding: zeros
    torch.testing.assert_close(o1.logits, o2.logits, **tol)
    torch.testing.assert_close(f1, f2, **tol)
    assert len(g1) == len(g2) == len(packed.trainable_parameters())
    for x, y in zip(g1, g2, strict=True):
        torch.testing.assert_close(x, y, atol=1e-5, rtol=1e-3)


class NoPositions(LlamaForCausalLM):
    """A model that ignores ``position_ids``: packed, its sequences would attend to each other."""

    def forward(self, *args, position_ids=None, **kwargs):
        return super().forward(*args, **kwargs)


def test_a_model_whose_packed_logits_differ_is_scored_padded_with_a_warning():
    tok = tiny_tokenizer()
    base = tiny_model()
    model = NoPositions(base.config)
    model.load_state_dict(base.state_dict())
    agent = LLMAgent.full_copy(model, tok)
    reference = LLMAgent.full_copy(tiny_model(), tok)
    reference.packing = False
    b = batch(tok, n=5, seed=2)
    with pytest.warns(UserWarning, match="scored padded, not packed"):
        out = agent.forward(b)
    assert agent._packs is False
    torch.testing.assert_close(out.logprobs, reference.forward(b).logprobs)
