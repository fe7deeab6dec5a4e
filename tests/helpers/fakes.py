"""A fake agent that honours the ``LLMAgent`` interface without a language model, and a
fixed batch it learns from (one token is rewarded)."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from agents.rl import LearnerConfig, TokenBatch, entropy_from_logits, logprobs_from_logits

T = torch.tensor


@dataclass
class Out:
    logprobs: torch.Tensor
    values: torch.Tensor
    entropy: torch.Tensor
    logits: torch.Tensor | None = None


class BigramAgent(nn.Module):
    """Honours the LLMAgent interface: next-token logits depend on the previous token only."""

    def __init__(self, vocab: int = 6, hidden: int = 8, seed: int = 0) -> None:
        super().__init__()
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            self.emb = nn.Embedding(vocab, hidden)
            self.head = nn.Linear(hidden, vocab)
            self.v_head = nn.Linear(hidden, 1)
        self.ref_emb = copy.deepcopy(self.emb).requires_grad_(False)
        self.ref_head = copy.deepcopy(self.head).requires_grad_(False)

    @staticmethod
    def _prev(batch: TokenBatch) -> torch.Tensor:
        return batch.input_ids.gather(
            1, batch.logit_positions()
        )  # token before each response token

    def forward(self, batch: TokenBatch, with_logits: bool = False) -> Out:
        h = torch.tanh(self.emb(self._prev(batch)))
        logits = self.head(h)
        return Out(
            logprobs_from_logits(logits, batch.response_ids),
            self.v_head(h).squeeze(-1),
            entropy_from_logits(logits),
            logits if with_logits else None,
        )

    @torch.no_grad()
    def ref_logprobs(self, batch: TokenBatch, full: bool = False) -> torch.Tensor:
        logp = torch.log_softmax(self.ref_head(torch.tanh(self.ref_emb(self._prev(batch)))), -1)
        return logp if full else logp.gather(-1, batch.response_ids.unsqueeze(-1)).squeeze(-1)

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def prob(self, prev: int, token: int) -> float:
        with torch.no_grad():
            return float(torch.softmax(self.head(torch.tanh(self.emb(T([prev])))), -1)[0, token])


QUERIES = [[1, 2]] * 4 + [[2]] * 4
RESPONSES = [[3, 4], [5], [3], [4, 5, 1], [3, 5, 4], [4], [5, 5], [3, 0]]
SCORES = np.array([1.0 if r[0] == 3 else 0.0 for r in RESPONSES], dtype=np.float32)


def make_batch() -> TokenBatch:
    return TokenBatch.from_lists(QUERIES, RESPONSES, pad_id=0)


def cfg(**kw) -> LearnerConfig:
    """The PPO config the fake-agent tests use (``kw`` overrides)."""
    base = dict(learning_rate=3e-2, mini_batch_size=4, ppo_epochs=4, init_kl_coef=0.05)
    base.update(kw)
    return LearnerConfig(**base)
