"""The model-forward internals of :class:`agents.policy.agent.LLMAgent`'s scoring.

Each returns the outputs at the ``R`` real response tokens of a
:class:`agents.rl.batch.TokenBatch`, flattened row-major: ``(logits (R, V), last hidden
state (R, H) or None, rows (R,), cols (R,))``, the token ``r`` sitting at ``(rows[r],
cols[r])`` of the response-aligned ``(N, T)`` tensors (:func:`unflatten` puts them back).
The batch is scored right-padded (:func:`padded_outputs`) or packed
(:func:`packed_outputs`, :mod:`agents.policy.packing`) where :func:`packing_matches` found
the model's packed logits equal to its padded ones.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import nn

from agents.policy.construction import hf_model
from agents.policy.packing import pack
from agents.rl.batch import TokenBatch

__all__ = ["keep_positions", "packed_outputs", "packing_matches", "padded_outputs", "unflatten"]

ResponseOutputs = tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor]
"""``(logits (R, V), hidden (R, H) or None, rows (R,), cols (R,))`` (see the module doc)."""


def keep_positions(k: int, length: int, device: torch.device) -> torch.Tensor:
    """The last ``k`` of ``length`` positions as an index tensor, for a model's
    ``logits_to_keep`` (``k = 0``: none, where the int 0 would keep all). Given an int, the
    model slices its hidden states, and ``F.linear`` on that strided ``(B, k, H)`` slice runs
    as a batched matmul over an expanded copy of the head weight: for a large vocabulary
    several times slower than on the gathered rows an index gives, more so with bf16
    weights."""
    return torch.arange(length - k, length, device=device)


def unflatten(
    x: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, shape: torch.Size
) -> torch.Tensor:
    """``x`` ``(R, ...)`` placed at ``(rows, cols)`` of zeros ``(N, T, ...)``."""
    out = x.new_zeros((*shape, *x.shape[1:]))
    return out.index_put((rows, cols), x)


def padded_outputs(
    model: nn.Module, batch: TokenBatch, hidden: bool, *, keeps_logits: bool, device: torch.device
) -> ResponseOutputs:
    """The response outputs from the right-padded ``(N, S)`` batch; ``keeps_logits``: the
    model takes ``logits_to_keep``, and projects only the positions from the first one
    predicting a response token."""
    pos = batch.logit_positions()
    s = batch.input_ids.shape[1]
    kwargs: dict[str, Any] = {"attention_mask": batch.attention_mask}
    if keeps_logits:
        first = int(batch.query_lengths.min()) - 1  # the first position predicting a response
        kwargs["logits_to_keep"] = keep_positions(s - first, s, device)
    out = model(input_ids=batch.input_ids, output_hidden_states=hidden, use_cache=False, **kwargs)
    rows, cols = batch.response_mask.nonzero(as_tuple=True)
    logits = out.logits[rows, (pos - (s - out.logits.shape[1]))[rows, cols]]
    return (logits, (out.hidden_states[-1][rows, pos[rows, cols]] if hidden else None), rows, cols)


def packed_outputs(
    model: nn.Module,
    batch: TokenBatch,
    hidden: bool,
    *,
    pad_id: int,
    attention_cost: float,
    keeps_logits: bool,
    device: torch.device,
) -> ResponseOutputs:
    """The response outputs from ``batch`` packed (:func:`agents.policy.packing.pack`, with
    ``pad_id`` and ``attention_cost``): the output head runs on the ``R`` response positions'
    hidden states alone."""
    p = pack(batch, pad_id, attention_cost)
    none = keep_positions(0, 0, device)  # the head runs below, on the response positions
    kwargs: dict[str, Any] = {"logits_to_keep": none} if keeps_logits else {}
    out = model(
        input_ids=p.input_ids,
        position_ids=p.position_ids,
        output_hidden_states=True,
        use_cache=False,
        **kwargs,
    )
    h = out.hidden_states[-1].reshape(-1, out.hidden_states[-1].shape[-1])[p.logit_index]
    return hf_model(model).get_output_embeddings()(h), (h if hidden else None), p.rows, p.cols


@torch.no_grad()
def packing_matches(
    model: nn.Module,
    batch: TokenBatch,
    *,
    dtype: str,
    pad_id: int,
    attention_cost: float,
    keeps_logits: bool,
    device: torch.device,
) -> bool:
    """Whether packed and padded logits of two of ``batch``'s sequences agree, to a
    tolerance set by the compute ``dtype`` (eval mode, so that dropout cannot differ);
    warns where they do not."""
    probe = batch.subset([0, 1])
    training = model.training
    model.eval()
    try:
        padded = padded_outputs(model, probe, False, keeps_logits=keeps_logits, device=device)[0]
        try:
            packed = packed_outputs(
                model,
                probe,
                False,
                pad_id=pad_id,
                attention_cost=attention_cost,
                keeps_logits=keeps_logits,
                device=device,
            )[0]
        except Exception as e:  # a model that takes no position_ids, say
            packed, why = None, f"{type(e).__name__}: {e}"
    finally:
        model.train(training)
    if packed is not None:
        gap = float((packed.float() - padded.float()).abs().max())
        tol = (1e-3 if dtype == "fp32" else 5e-2) * (1.0 + float(padded.float().abs().max()))
        if gap <= tol:
            return True
        why = f"packed logits differ from padded ones by {gap:.3g} (tolerance {tol:.3g})"
    warnings.warn(
        f"{type(hf_model(model)).__name__}: sequences are scored padded, not packed ({why})",
        stacklevel=3,
    )
    return False
