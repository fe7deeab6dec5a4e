"""The run configuration of CORY and of the PPO baseline: one dataclass, one docstring per field.

``scripts/run_cory.py`` and ``scripts/run_ppo.py`` parse it into a CLI with tyro. The
defaults are sized for a CPU: SmolLM2-135M-Instruct (embedded), the offline ``sentiment``
task, LoRA, about 12 minutes on 2 cores. ``--preset`` loads the paper's settings.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal


@dataclass
class TrainConfig:
    """Everything a CORY or PPO run needs; saved as ``config.json`` in the run folder."""

    # --- what to train
    model: str = "smollm2-135m-instruct"
    """Hub id, local folder, GGUF file, or the embedded alias ``smollm2-135m-instruct``."""
    task: str = "sentiment"
    """Task name: ``sentiment`` and ``arith`` (offline), ``imdb``, ``gsm8k``."""
    task_path: str | None = None
    """Local data file for ``imdb`` / ``gsm8k`` (CSV/JSON/JSONL/Parquet); None means the hub."""
    reward: str | None = None
    """Override the task's reward by name (``vader``, ``vader-gain``, ``hf-classifier``,
    ``answer-match``)."""
    reward_model: str | None = None
    """Model of the ``hf-classifier`` reward (the paper: ``lvwerra/distilbert-imdb``)."""
    preset: Literal["none", "imdb-gpt2-large", "gsm8k-llama2"] = "none"
    """Load the paper's hyper-parameters (GPU machines); explicit flags still override."""

    # --- the schedule
    iterations: int = 24
    """PPO iterations (each: one batch of queries rolled out and learned from)."""
    batch_size: int = 16
    """Queries per iteration (episodes in the vector env)."""
    mini_batch_size: int = 8
    """Trajectories per PPO gradient step."""
    gradient_accumulation_steps: int = 1
    """Mini-batches accumulated per optimiser step."""
    ppo_epochs: int = 4
    """Passes over each batch (the paper: 4)."""
    seed: int = 0
    """Seeds queries, sampling, mini-batch order and LoRA init."""

    # --- PPO (the paper / TRL 0.7 defaults unless the CPU default needs otherwise)
    learning_rate: float = 3e-4
    """Adam learning rate. The CPU default (LoRA) is 3e-4: the clip fraction then runs at
    0.3-0.5 and the PPO ratio threshold (10) skips the odd runaway mini-batch of the first
    iterations; 1e-4 keeps it near 0.1-0.2 but barely moved the policy (KL 0.08 after 8
    iterations). The paper's full fine-tune: 1.41e-5."""
    init_kl_coef: float = 0.05
    """Initial KL coefficient eta of the per-token penalty (the paper: 0.3 for IMDB's
    classifier logits; VADER scores live in [-1, 1], hence a smaller default)."""
    adap_kl_ctrl: bool = True
    """Adaptive KL controller (Ziegler et al.); False keeps eta fixed."""
    target: float = 6.0
    """Target KL of the adaptive controller."""
    horizon: float = 10000.0
    """Horizon of the adaptive controller."""
    kl_penalty: Literal["kl", "abs", "mse", "full"] = "kl"
    """Per-token KL estimator."""
    gamma: float = 1.0
    """Discount."""
    lam: float = 0.95
    """GAE lambda."""
    cliprange: float = 0.2
    """Policy ratio clip."""
    cliprange_value: float = 0.2
    """Value clip."""
    vf_coef: float = 0.1
    """Value loss coefficient."""
    max_grad_norm: float | None = 1.0
    """Gradient clipping (None: off)."""
    ratio_threshold: float = 10.0
    """Skip (no backward) a PPO mini-batch whose mean probability ratio exceeds this (TRL's
    guard against runaway updates); skips are counted in ``<seat>/<learner>/skipped_minibatches``
    and printed as one line per iteration."""
    target_kl: float | None = None
    """Stop the PPO epochs early once the approximate KL passes 1.5x this (None: off)."""
    use_score_scaling: bool = False
    """Divide scores by their running std."""
    use_score_norm: bool = False
    """Also subtract the running mean (with scaling)."""
    score_clip: float | None = None
    """Clip scores to +-this after scaling (None: off)."""

    # --- generation
    max_new_tokens: int | None = None
    """Longest answer per turn (None: the task's default)."""
    min_new_tokens: int | None = None
    """If set, each batch's answer length is sampled in [min, max] (None: the task's default)."""

    # --- CORY
    learner: Literal["ppo", "rloo"] = "ppo"
    """Learning algorithm of both agents."""
    observer_learner: Literal["ppo", "rloo"] | None = None
    """A different algorithm for the model that starts as observer (None: same as ``learner``)."""
    rloo_k: int = 4
    """Samples per query for the RLOO learner."""
    swap_period: int = 5
    """T_REx: exchange roles every this many iterations."""
    role_exchange: bool = True
    """False: the no-role-exchange ablation."""
    knowledge_transfer: bool = True
    """False: the ablation where the observer sees only the query."""
    reward_mode: Literal["cooperative", "independent"] = "cooperative"
    """Cooperative: both get r(q,a1)+r(q,a2) (the paper); independent: each its own."""

    # --- model handling
    mode: Literal["lora", "full"] = "lora"
    """LoRA: both agents share one frozen base (the reference); full: the paper's full copies."""
    lora_r: int = 16
    """LoRA rank."""
    lora_alpha: int = 32
    """LoRA alpha."""
    activation_checkpointing: bool = False
    """Recompute activations in the backward pass instead of storing them: the memory of
    an update stops growing with layers x tokens (the observer's prompt holds the pioneer's
    answer, so its update is the larger one), for about one more forward pass per update."""
    dtype: Literal["fp32", "bf16"] = "fp32"
    """fp32, or bf16 autocast over fp32 weights."""
    device: Literal["cpu", "cuda"] = "cpu"
    """Where the models run."""

    # --- evaluation, logging, checkpoints
    eval_every: int = 6
    """Evaluate each model alone every this many iterations (and at the end); 0: never."""
    eval_size: int = 64
    """Held-out queries per evaluation."""
    checkpoint_every: int = 1
    """Write the resumable checkpoint every this many iterations."""
    num_samples: int = 4
    """Sample texts logged per iteration."""
    output_dir: str = "runs/cory"
    """The run folder: config, metrics, samples, plots, checkpoints."""
    resume: bool = False
    """Continue from ``output_dir/checkpoints/last.pt``."""
    progress: bool = True
    """Show a progress bar with reward, KL and ETA."""

    def __post_init__(self) -> None:
        positive = ("iterations", "batch_size", "mini_batch_size", "ppo_epochs", "swap_period",
                    "gradient_accumulation_steps", "rloo_k", "eval_size", "checkpoint_every")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        if not self.ratio_threshold > 0:
            raise ValueError(f"ratio_threshold must be > 0, got {self.ratio_threshold}")
        if self.eval_every < 0:
            raise ValueError(f"eval_every must be >= 0, got {self.eval_every}")


PRESETS: dict[str, dict] = {
    # Appendix A, IMDB: GPT-2 large, distilbert-imdb logit, 4-16 tokens, full fine-tune.
    "imdb-gpt2-large": dict(
        model="gpt2-large", task="imdb", reward="hf-classifier",
        reward_model="lvwerra/distilbert-imdb", iterations=100, batch_size=256,
        mini_batch_size=256, ppo_epochs=4, learning_rate=1.41e-5, init_kl_coef=0.3,
        adap_kl_ctrl=True, gamma=1.0, lam=0.95, cliprange=0.2, cliprange_value=0.2,
        vf_coef=0.1, min_new_tokens=4, max_new_tokens=16, swap_period=5, mode="full",
        device="cuda", dtype="bf16", eval_every=5, eval_size=256,
    ),
    # Appendix A, GSM8K: Llama-2-7b-chat (4-bit in the paper; LoRA over bf16 here).
    "gsm8k-llama2": dict(
        model="meta-llama/Llama-2-7b-chat-hf", task="gsm8k", iterations=100, batch_size=32,
        mini_batch_size=2, gradient_accumulation_steps=16, ppo_epochs=4, learning_rate=1e-4,
        init_kl_coef=0.01, adap_kl_ctrl=False, gamma=1.0, lam=0.95, cliprange=0.2,
        cliprange_value=0.2, vf_coef=0.1, max_new_tokens=256, swap_period=5, mode="lora",
        device="cuda", dtype="bf16", eval_every=5, eval_size=128,
    ),
}
"""The paper's settings (appendix A), used as the CLI defaults when ``--preset`` is given.
The paper's PPO control for IMDB is the larger GPT-2 XL: ``run_ppo.py --model gpt2-xl``."""


def preset_config(preset: str = "none", **overrides) -> TrainConfig:
    """A config holding ``preset``'s values (the CLI's defaults), then ``overrides``."""
    if preset != "none" and preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; available: none, {', '.join(PRESETS)}")
    return TrainConfig(**{"preset": preset, **PRESETS.get(preset, {}), **overrides})


def to_dict(config: TrainConfig) -> dict:
    """The config as plain JSON-able data."""
    return dataclasses.asdict(config)
