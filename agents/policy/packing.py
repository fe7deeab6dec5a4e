"""Sequence packing: a :class:`~agents.rl.batch.TokenBatch`'s sequences laid end to end in a
few rows, so that a forward computes no padding.

A batch's sequences (``query ++ response``, right-padded to the longest, ``S``) are packed
into ``B`` rows of near-equal fill (:func:`balanced_bins`), ``W`` the fullest row's, between
``S`` and ``(1 + MAX_WIDTH) S``: the ``B`` of least estimated cost ``B * W * (1 + a * W)``,
``a`` the cost of attending to one more position relative to the rest of a token's forward
(:func:`attention_cost`). Each sequence keeps its own positions (``position_ids`` restart at
0), and a model fed ``position_ids`` without an attention mask attends within each sequence
only (transformers' packed-sequence masks,
``masking_utils.find_packed_sequence_indices``; the slots after a row's last sequence form
a sequence of their own, whose outputs nothing reads). The attention inside a row costs
``O(W)`` per token, more than the padded layout's; the linear layers, the bulk of the FLOPs,
run on the real tokens plus the few slots the packing could not fill.

Everything here is index arithmetic on CPU lists and tensors; the agent
(:meth:`agents.policy.agent.LLMAgent.forward`) checks once per model that packed and padded
logits agree before it uses it.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

import torch

from agents.rl.batch import TokenBatch

__all__ = ["Packed", "attention_cost", "balanced_bins", "pack", "packing_width"]

MAX_WIDTH = 3
"""A row holds at most ``1 + MAX_WIDTH`` times the longest sequence."""
ATTENTION_SLOWDOWN = 3.0
"""How much less efficiently attention runs than the linear layers, per FLOP, on a CPU: its
share of an update's time over its share of the update's FLOPs (``bench/update.py`` splits
an update; the benchmarks page, ``docs/benchmarks.md``)."""


def balanced_bins(lengths: list[int], k: int) -> list[list[int]]:
    """Indices of ``lengths`` in ``k`` bins of near-equal total length: longest first, each
    into the bin holding the least so far (LPT scheduling: the fullest bin is within 4/3 of
    the best possible); each bin's indices in placement order, empty bins dropped."""
    heap = [(0, b) for b in range(k)]
    bins: list[list[int]] = [[] for _ in range(k)]
    for i in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        load, b = heapq.heappop(heap)
        bins[b].append(i)
        heapq.heappush(heap, (load + lengths[i], b))
    return [members for members in bins if members]


def attention_cost(config) -> float:
    """The cost of one more attended position per token, relative to the rest of the token's
    forward: ``4 L d`` attention FLOPs per position against ``2 P`` (``L`` layers of width
    ``d``, ``P`` parameters, from a transformers config), times :data:`ATTENTION_SLOWDOWN`;
    0 for a config without those fields."""
    config = config.get_text_config() if hasattr(config, "get_text_config") else config
    layers, width = getattr(config, "num_hidden_layers", None), getattr(config, "hidden_size", None)
    inner = getattr(config, "intermediate_size", None) or 4 * (width or 0)
    if not layers or not width:
        return 0.0
    params = layers * (4 * width * width + 3 * width * inner)  # attention + gated MLP, roughly
    return ATTENTION_SLOWDOWN * 4 * layers * width / (2 * params)


def packing_width(lengths: list[int], attention: float = 0.0) -> tuple[int, list[list[int]]]:
    """``(width, bins)``: over ``k`` rows (:func:`balanced_bins`, the width their fullest
    row), the packing of least estimated cost ``k * width * (1 + attention * width)``, with
    a width of at most ``(1 + MAX_WIDTH)`` times the longest sequence; the narrower on a tie."""
    longest, total = max(lengths), sum(lengths)
    best: tuple[float, int, list[list[int]]] | None = None
    for k in range(max(1, -(-total // ((1 + MAX_WIDTH) * longest))), len(lengths) + 1):
        bins = balanced_bins(lengths, k)
        width = max(sum(lengths[i] for i in members) for members in bins)
        cost = len(bins) * width * (1.0 + attention * width)
        if best is None or cost < best[0] or (cost == best[0] and width < best[1]):
            best = (cost, width, bins)
    assert best is not None
    return best[1], best[2]


@dataclass
class Packed:
    """A batch packed into ``(B, W)`` rows."""

    input_ids: torch.Tensor
    """(B, W) int64: the sequences end to end, the unused slots holding the pad id."""
    position_ids: torch.Tensor
    """(B, W) int64: each sequence's own positions; an unused tail counts from 0 again."""
    logit_index: torch.Tensor
    """(R,) int64: flat index into ``B * W`` of the position whose logits predict each real
    response token, in the batch's row-major response order (``response_mask.nonzero()``)."""
    rows: torch.Tensor
    """(R,) int64: the batch row of each of those response tokens."""
    cols: torch.Tensor
    """(R,) int64: its response position."""

    @property
    def slots(self) -> int:
        """Token positions the packed forward computes."""
        return self.input_ids.numel()


def pack(batch: TokenBatch, pad_id: int, attention: float = 0.0) -> Packed:
    """``batch``'s sequences packed (see the module docstring; ``attention``: see
    :func:`packing_width`)."""
    lengths = batch.attention_mask.sum(1).tolist()
    width, bins = packing_width(lengths, attention)
    ids = torch.full((len(bins), width), pad_id, dtype=torch.int64)
    pos = torch.zeros((len(bins), width), dtype=torch.int64)
    start = [0] * len(lengths)
    src = batch.input_ids.cpu()
    for b, members in enumerate(bins):
        at = 0
        for i in members:
            n = lengths[i]
            ids[b, at : at + n] = src[i, :n]
            pos[b, at : at + n] = torch.arange(n)
            start[i] = b * width + at
            at += n
        pos[b, at:] = torch.arange(width - at)
    rows, cols = batch.response_mask.cpu().nonzero(as_tuple=True)
    starts = torch.tensor(start, dtype=torch.int64)
    index = starts[rows] + batch.query_lengths.cpu()[rows] - 1 + cols
    dev = batch.device
    return Packed(ids.to(dev), pos.to(dev), index.to(dev), rows.to(dev), cols.to(dev))
