"""The SB3 actor-critic policy whose actor is a causal LM (used by :mod:`baselines.sb3_ppo`).

:class:`LMActorCriticPolicy` reads the LM's logits at the last real position of each
observation (found from its ``attention_mask``) as the Categorical action distribution over
the vocabulary; a linear value head on the final hidden state there gives the value (zero at
start, as :class:`agents.policy.agent.LLMAgent`'s, from :mod:`agents.policy.construction`).
SB3's features extractor and MLP are not used. Observations of a batch that are prefixes of
another one (steps of the same episode) share its forward pass.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from gymnasium import spaces
from stable_baselines3.common.distributions import CategoricalDistribution, Distribution
from stable_baselines3.common.policies import ActorCriticPolicy
from torch import nn

from agents.policy.construction import hidden_size, zero_value_head
from agents.policy.loading import autocast

Obs = dict[str, torch.Tensor]


class LMActorCriticPolicy(ActorCriticPolicy):
    """An SB3 actor-critic whose policy is a causal LM's next-token distribution.

    Built by SB3 as ``policy_class(observation_space, action_space, lr_schedule, **policy_kwargs)``;
    pass ``policy_kwargs={"lm": model}`` (an ``nn.Module`` returning ``.logits``, e.g. a
    Hugging Face ``*ForCausalLM``, possibly a PEFT model). The optimiser holds the LM's
    trainable parameters (all of them, or only a LoRA adapter's) plus the value head, at
    ``lr_schedule(1)``; SB3 updates the learning rate from the schedule as it trains.

    The observation must be ``{"input_ids": (B, L), "attention_mask": (B, L)}``,
    right-padded; its tensors are cast to ``long`` whatever SB3 hands over (int tensors
    from the env and SB3 2.x's buffers, float ones where a buffer or wrapper converts).
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        lr_schedule,
        lm: nn.Module,
        dtype: str = "fp32",
        share_prefixes: bool = True,
        **kwargs: Any,
    ) -> None:
        if not isinstance(action_space, spaces.Discrete):
            raise TypeError(f"the action space must be Discrete (token ids), got {action_space}")
        if not isinstance(observation_space, spaces.Dict) or {"input_ids", "attention_mask"} - set(
            observation_space.spaces
        ):
            raise TypeError(
                "the observation space must be a Dict with input_ids and attention_mask"
            )
        super().__init__(observation_space, action_space, lr_schedule, **kwargs)  # _build: no-op
        self.lm = lm
        self.dtype = dtype
        self.value_head = zero_value_head(hidden_size(lm)).to(device_of(lm))  # as LLMAgent's
        self.share_prefixes = share_prefixes
        self._gather_logits = True  # logits_to_keep=(R, K) positions; off if the model lacks it
        self.optimizer = self.optimizer_class(
            [p for p in self.parameters() if p.requires_grad],
            lr=lr_schedule(1),
            **self.optimizer_kwargs,
        )

    def _build(self, lr_schedule) -> None:
        """SB3's MLP extractor / action net / optimiser are replaced by the LM (``__init__``)."""

    def set_training_mode(self, mode: bool) -> None:
        """As SB3's, but the LM stays in eval mode: dropout off, so a rollout's log-probs are
        reproduced exactly in the update (ratio 1 before the first step), as in RLHF."""
        super().set_training_mode(mode)
        self.lm.eval()

    # --- the LM as actor and critic

    def lm_outputs(self, obs: Obs) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits ``(B, V)`` (float32) at each observation's last real token and the values ``(B,)``.

        Observations that are prefixes of another one in the batch (earlier steps of the same
        episode, as in SB3's update mini-batches) are read off that one's forward pass: a
        causal LM's outputs at a position depend only on the tokens up to it.
        """
        ids, mask = obs["input_ids"].long(), obs["attention_mask"].long()
        if ids.dim() == 1:
            ids, mask = ids[None], mask[None]
        positions = torch.arange(mask.shape[1], device=mask.device)
        last = (mask * positions).argmax(dim=1)  # 0 for an all-padding row
        root, slot = _prefix_roots(ids, last) if self.share_prefixes else (None, None)
        if root is None:  # every row runs
            root = torch.arange(len(ids), device=ids.device)
            slot = torch.zeros_like(root)
            run = root
        else:
            run, root = torch.unique(root, return_inverse=True)  # root: row -> index into run
        ids, mask, run_last = ids[run], mask[run], last[run]
        width = int(run_last.max()) + 1
        ids, mask = ids[:, :width], mask[:, :width].clone()
        mask[:, 0] = torch.where(mask.sum(1) == 0, 1, mask[:, 0])  # no fully-masked rows
        logits = None
        if self._gather_logits:  # project only the needed positions onto the vocabulary
            keep = run_last[:, None].repeat(1, int(slot.max()) + 1)  # (R, K) positions
            keep[root, slot] = last
            with contextlib.suppress(TypeError):  # TypeError: the model takes no logits_to_keep
                logits, hidden = self._run_lm(ids, mask, keep=keep)
            if logits is None or logits.shape[:2] != keep.shape or hidden.shape[:2] != keep.shape:
                self._gather_logits, logits = False, None
            else:
                logits, hidden = logits[root, slot], hidden[root, slot]
        if logits is None:
            logits, hidden = self._run_lm(ids, mask)
            logits, hidden = logits[root, last], hidden[root, last]
        values = self.value_head(hidden.to(self.value_head.weight.dtype)).squeeze(-1)
        return logits.float(), values

    def _run_lm(self, ids: torch.Tensor, mask: torch.Tensor, keep: torch.Tensor | None = None):
        """The LM's logits and the input of its output layer (the final hidden states)."""
        captured: list[torch.Tensor] = []
        head = self.lm.get_output_embeddings()
        hook = head.register_forward_pre_hook(lambda _m, args: captured.append(args[0]))
        extra = {} if keep is None else {"logits_to_keep": keep}
        try:
            with autocast(self.dtype, ids.device):
                out = self.lm(input_ids=ids, attention_mask=mask, use_cache=False, **extra)
        finally:
            hook.remove()
        return out.logits, captured[-1]

    def _dist(self, logits: torch.Tensor) -> Distribution:
        assert isinstance(self.action_dist, CategoricalDistribution)
        return self.action_dist.proba_distribution(action_logits=logits)

    # --- what SB3 calls

    def forward(self, obs: Obs, deterministic: bool = False):
        logits, values = self.lm_outputs(obs)
        dist = self._dist(logits)
        actions = dist.get_actions(deterministic=deterministic)
        return actions, values[:, None], dist.log_prob(actions)

    def evaluate_actions(self, obs: Obs, actions: torch.Tensor):
        logits, values = self.lm_outputs(obs)
        dist = self._dist(logits)
        return values[:, None], dist.log_prob(actions.long().flatten()), dist.entropy()

    def get_distribution(self, obs: Obs) -> Distribution:
        return self._dist(self.lm_outputs(obs)[0])

    def predict_values(self, obs: Obs) -> torch.Tensor:
        return self.lm_outputs(obs)[1][:, None]

    def _predict(self, observation: Obs, deterministic: bool = False) -> torch.Tensor:
        return self.get_distribution(observation).get_actions(deterministic=deterministic)


def _prefix_roots(ids: torch.Tensor, last: torch.Tensor, max_rows: int = 1024):
    """For each row, the row whose forward pass gives its outputs and its slot there.

    ``root[i]`` is the longest row (ties: the smallest index) of which row ``i`` is a
    prefix, itself included; ``slot[i]`` numbers the rows sharing a root. ``(None, None)``
    when every row is its own root or the batch is too large to compare all pairs.
    """
    n, width = last + 1, int(last.max()) + 1
    if len(ids) < 2 or len(ids) > max_rows:
        return None, None
    ids = ids[:, :width]
    inside = torch.arange(width, device=ids.device)[None, :] < n[:, None]  # (B, W) row i's tokens
    same = ((ids[:, None, :] == ids[None, :, :]) | ~inside[:, None, :]).all(-1)  # j starts with i
    extends = same & (n[None, :] >= n[:, None])
    rows = torch.arange(len(ids), device=ids.device)
    key = torch.where(extends, n[None, :] * len(ids) + (len(ids) - 1 - rows)[None, :], -1)
    root = key.argmax(dim=1)
    if bool((root == rows).all()):
        return None, None
    order = torch.argsort(root, stable=True)
    counts = torch.bincount(root, minlength=len(ids))
    starts = torch.cumsum(counts, 0) - counts
    slot = torch.empty_like(root)
    slot[order] = rows - starts[root[order]]
    return root, slot


def device_of(lm: nn.Module) -> torch.device:
    """The device of ``lm``'s first parameter (where its inputs and the value head go)."""
    return next(lm.parameters()).device
