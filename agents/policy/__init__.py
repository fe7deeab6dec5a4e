"""The model side: loading, the policy with its value head, its construction, sampling.

- :mod:`~agents.policy.loading` — a hub id, a local folder, a GGUF file or the embedded alias
  into a model and tokenizer; devices and dtypes;
- :mod:`~agents.policy.construction` — LoRA adapters or full copies, the zero value head,
  dropout and activation checkpointing (also used by :mod:`baselines.sb3_ppo`);
- :mod:`~agents.policy.agent` — ``LLMAgent``: scoring (log-probs, values, entropy,
  reference log-probs) and state;
- :mod:`~agents.policy.sampler` — temperature / top-k / top-p sampling and the KV-cache
  sampler;
- :mod:`~agents.policy.tokenizers` — the shared-tokenizer check of several models;
- :mod:`~agents.policy.export` — agents out as peft adapters or transformers models.
"""

from .agent import AgentOutput, LLMAgent
from .construction import enable_activation_checkpointing, zero_value_head
from .loading import ModelNotFoundError, load_model, load_tokenizer
from .sampler import KVCacheSampler, sample_tokens

__all__ = [
    "AgentOutput",
    "KVCacheSampler",
    "LLMAgent",
    "ModelNotFoundError",
    "enable_activation_checkpointing",
    "load_model",
    "load_tokenizer",
    "sample_tokens",
    "zero_value_head",
]
