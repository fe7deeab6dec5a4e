"""``TokenBatch``: query + response token ids of N trajectories, as the learners consume them.

Sequences are ``query ++ response``, right-padded, so positions are plain ``arange`` for
every row. Per-token quantities (log-probs, values, rewards, advantages) are
*response-aligned*: shape ``(N, T)`` with ``T`` the longest response, left-aligned, and
``response_mask`` marks the real tokens. The response includes the EOS token when the
policy emitted it (ending the turn is an action too).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np
import torch


@dataclass
class TokenBatch:
    input_ids: torch.Tensor
    """(N, S) int64: query followed by response, right-padded with the pad id."""
    attention_mask: torch.Tensor
    """(N, S) int64: 1 on real tokens."""
    query_lengths: torch.Tensor
    """(N,) int64."""
    response_ids: torch.Tensor
    """(N, T) int64: the response tokens, left-aligned, right-padded."""
    response_mask: torch.Tensor
    """(N, T) float32: 1 on real response tokens."""

    @classmethod
    def from_lists(
        cls,
        queries: Sequence[Sequence[int] | np.ndarray],
        responses: Sequence[Sequence[int] | np.ndarray],
        pad_id: int,
        device: torch.device | str = "cpu",
    ) -> TokenBatch:
        """Build a batch from unpadded per-row token id lists."""
        if len(queries) != len(responses):
            raise ValueError(f"{len(queries)} queries but {len(responses)} responses")
        if not queries:
            raise ValueError("a TokenBatch needs at least one trajectory")
        q_lens = [len(q) for q in queries]
        r_lens = [len(r) for r in responses]
        if min(q_lens) == 0:
            raise ValueError("every query needs at least one token")
        if min(r_lens) == 0:
            raise ValueError("every response needs at least one token")
        n, s, t = len(queries), max(a + b for a, b in zip(q_lens, r_lens)), max(r_lens)
        input_ids = np.full((n, s), pad_id, dtype=np.int64)
        attention = np.zeros((n, s), dtype=np.int64)
        response_ids = np.full((n, t), pad_id, dtype=np.int64)
        response_mask = np.zeros((n, t), dtype=np.float32)
        for i, (q, r) in enumerate(zip(queries, responses)):
            lq, lr = len(q), len(r)
            input_ids[i, :lq] = q
            input_ids[i, lq : lq + lr] = r
            attention[i, : lq + lr] = 1
            response_ids[i, :lr] = r
            response_mask[i, :lr] = 1.0
        as_t = lambda a: torch.from_numpy(a).to(device)  # noqa: E731
        return cls(
            input_ids=as_t(input_ids),
            attention_mask=as_t(attention),
            query_lengths=torch.tensor(q_lens, dtype=torch.int64, device=device),
            response_ids=as_t(response_ids),
            response_mask=as_t(response_mask),
        )

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    @property
    def device(self) -> torch.device:
        return self.input_ids.device

    def logit_positions(self) -> torch.Tensor:
        """(N, T) int64: index into the sequence dim of the logits predicting each response token.

        Padded positions are clamped into range; mask them with ``response_mask``.
        """
        t = self.response_ids.shape[1]
        pos = self.query_lengths[:, None] - 1 + torch.arange(t, device=self.device)[None, :]
        return pos.clamp(max=self.input_ids.shape[1] - 1)

    def subset(self, index: torch.Tensor | Sequence[int]) -> TokenBatch:
        """The rows in ``index``, trimmed to their longest sequence and response."""
        index = torch.as_tensor(index, dtype=torch.int64, device=self.device)
        rows = {f.name: getattr(self, f.name)[index] for f in fields(self)}
        s = int(rows["attention_mask"].sum(1).max())
        t = int(rows["response_mask"].sum(1).max())
        rows["input_ids"], rows["attention_mask"] = (
            rows["input_ids"][:, :s],
            rows["attention_mask"][:, :s],
        )
        rows["response_ids"], rows["response_mask"] = (
            rows["response_ids"][:, :t],
            rows["response_mask"][:, :t],
        )
        return TokenBatch(**rows)

    def to(self, device: torch.device | str) -> TokenBatch:
        return TokenBatch(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})
