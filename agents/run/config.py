"""The run configuration of CORY and of the PPO baseline: one flat dataclass, one docstring
per field, saved flat as the run folder's ``config.json``.

``scripts/run_cory.py`` and ``scripts/run_ppo.py`` parse it into a CLI
(:func:`agents.run.cli.parse`) whose ``--help`` shows the flags in the groups of
:data:`FLAG_GROUPS`. The defaults are sized for a CPU: SmolLM2-135M-Instruct (embedded), the
offline ``sentiment`` task, LoRA (how long that takes: ``docs/benchmarks.md``). ``--preset
NAME`` loads the paper's settings from ``configs/presets/NAME.yaml``, ``--config FILE`` a
run's settings from a YAML or JSON file (a run's own ``config.json`` is one).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import tyro

from agents.policy.loading import default_dtype
from agents.run.learner_config import grpo_options, learner_config
from agents.run.schema import read_settings
from agents.run.validate import check_config


@dataclass
class TrainConfig:
    """Everything a CORY or PPO run needs; saved as ``config.json`` in the run folder."""

    # --- what to train
    model: str = "smollm2-135m-instruct"
    """Hub id, local folder, GGUF file, or the embedded alias ``smollm2-135m-instruct``."""
    models: str | None = None
    """A model of its own for each agent, comma-separated in model order (``model_a``,
    ``model_b``, ...; any mix of sizes, sharing one tokenizer), e.g. ``A,B,C``; None: every
    agent starts from ``--model``."""
    task: str = "sentiment"
    """Task name: ``sentiment`` and ``arith`` (offline), ``imdb``, ``gsm8k``, ``prompts`` (your
    own prompts: ``--task-path``), or a factory of your own, ``module:factory`` or
    ``path/to/file.py:factory`` (docs/custom-tasks.md)."""
    task_path: str | None = None
    """Data of ``imdb`` / ``gsm8k`` / ``prompts``: a local CSV/JSON/JSONL/Parquet file, or for
    ``prompts`` a hub dataset id; None means the task's hub dataset."""
    task_options: str | None = None
    """More keyword arguments of the task's factory, ``key=value`` comma-separated (numbers,
    ``true``/``false``, else text), e.g. ``max_steps=1`` for one-operation ``arith``,
    ``column=text,split=train`` for ``prompts``."""
    reward: str | None = None
    """Override the task's reward: a name (``vader``, ``vader-gain``, ``hf-classifier``,
    ``answer-match``) or a reward function of your own, ``module:function`` or
    ``path/to/file.py:function`` (batch in, one float per answer out)."""
    reward_model: str | None = None
    """Model of the ``hf-classifier`` reward (the paper: ``lvwerra/distilbert-imdb``)."""
    preset: str = "none"
    """The defaults of a paper preset, ``configs/presets/<name>.yaml`` (``imdb-gpt2-large``,
    ``gsm8k-llama2``: GPU machines); ``--config`` and explicit flags still override; ``none``:
    the CPU defaults."""

    # --- the schedule
    iterations: int = 24
    """PPO iterations (each: one batch of queries rolled out and learned from)."""
    batch_size: int = 16
    """Queries per iteration (episodes in the vector env)."""
    mini_batch_size: int = 8
    """Trajectories per PPO gradient step."""
    gradient_accumulation_steps: int = 1
    """Mini-batches accumulated per optimiser step."""
    max_tokens_per_microbatch: int | None = None
    """Cut each mini-batch into micro-batches of at most this many padded tokens, one backward
    each: the same optimiser step in less activation memory (gradient accumulation by a token
    budget). None, the default: the mini-batch in one piece, since each extra micro-batch
    costs a forward and a backward of its own whatever its size (``docs/benchmarks.md``)."""
    observer_token_budget: bool = False
    """Cut each observer's mini-batches into micro-batches of at most the pioneer's padded
    tokens per mini-batch of the iteration (its mini-batch size x its longest prompt +
    answer), so that the observers' longer prompts (they hold the earlier answers) need no
    more activation memory than the pioneer's: the same optimiser steps within float
    tolerance (with ``max_tokens_per_microbatch``, the smaller budget). Off by default: it
    buys a lower peak memory with more time per update, a trade for runs that would not fit
    otherwise (``docs/benchmarks.md``)."""
    ppo_epochs: int = 4
    """Passes over each batch (the paper: 4)."""
    seed: int = 0
    """Seeds queries, sampling, mini-batch order and LoRA init."""

    # --- PPO (the paper / TRL 0.7 defaults unless the CPU default needs otherwise)
    learning_rate: float = 3e-4
    """Adam learning rate. The CPU default suits LoRA adapters in a short run: large enough to
    move the policy, with ``ratio_threshold`` skipping the odd runaway mini-batch of the first
    iterations (``docs/benchmarks.md``). The paper's full fine-tune (the presets): 1.41e-5."""
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
    whiten_rewards: bool = False
    """Whiten the per-token rewards (scaled to unit variance, the mean kept) before GAE;
    off, as in the paper."""

    # --- generation
    max_new_tokens: int | None = None
    """Longest answer per turn (None: the task's default)."""
    min_new_tokens: int | None = None
    """If set, each batch's answer length is sampled in [min, max] (None: the task's default)."""

    # --- CORY
    learner: Literal["ppo", "rloo", "grpo"] = "ppo"
    """Learning algorithm of both agents."""
    observer_learner: Literal["ppo", "rloo", "grpo"] | None = None
    """A different algorithm for the model that starts as observer (None: same as ``learner``)."""
    swap_period: int = 5
    """T_REx: exchange roles every this many iterations."""
    role_exchange: bool = True
    """False: the no-role-exchange ablation."""
    knowledge_transfer: bool = True
    """False: the ablation where the observer sees only the query."""
    reward_mode: Literal["cooperative", "independent"] = "cooperative"
    """Cooperative: every agent gets the sum of all answers' rewards (the paper's
    r(q,a1)+r(q,a2)); independent: each its own."""
    num_agents: int = 2
    """K: the chain pioneer -> observer -> ... of K agents, one model each (the paper: 2)."""
    role_schedule: Literal["rotate", "random"] = "rotate"
    """Every T_REx iterations, each model moves one seat along the chain (for K = 2: the
    paper's swap), or the seats are dealt as a random permutation."""
    seat_max_new_tokens: list[int] | None = None
    """Longest answer per seat, in chain order (e.g. ``4 16``: a short pioneer, a longer
    final observer); None: ``--max-new-tokens`` (or the task's) for every seat."""
    seat_temperature: list[float] | None = None
    """Sampling temperature per seat; None: the task's."""
    seat_top_k: list[int] | None = None
    """Top-k per seat (0: off); None: the task's."""
    seat_top_p: list[float] | None = None
    """Top-p per seat; None: the task's."""

    # --- the GRPO family (``--learner grpo``; recipes in docs/learners.md)
    learners: str | None = None
    """One learner per model, comma-separated in model order (``grpo,ppo``: model_a GRPO,
    model_b PPO; any registered name), for runs whose models differ (``--models``); overrides
    ``--learner``; default None (``--learner`` / ``--observer-learner``)."""
    group_size: Annotated[int, tyro.conf.arg(aliases=("--rloo-k",))] = 4
    """Answers sampled per query by the group learners ``grpo`` (GRPO, Shao et al. 2024) and
    ``rloo`` (Ahmadian et al. 2024); default 4; ``--rloo-k`` is an alias."""
    scale_rewards: Literal["group", "batch", "none"] = "group"
    """Advantage = (R - group mean) / group std (GRPO), / batch std (Liu et al. 2025), or
    unscaled (Dr. GRPO, Liu et al. 2025); default group."""
    loss_aggregation: Literal["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"] = (
        "seq-mean-token-mean"
    )
    """Mean over all tokens (DAPO, Yu et al. 2025), per answer then over answers (GRPO), or token
    sums over the maximum answer length (Dr. GRPO); default seq-mean-token-mean."""
    cliprange_high: float | None = None
    """Upper ratio clip eps_high, clip-higher (DAPO: 0.28 with ``--cliprange`` 0.2 as eps_low);
    default None: equal to ``--cliprange``."""
    dual_clip: float | None = None
    """Cap -A*ratio at -A*c for negative advantages, c > 1 (dual-clip PPO, Ye et al. 2020;
    verl: 3); default None: off."""
    importance_sampling: Literal["token", "sequence"] = "token"
    """Per-token ratio (GRPO) or the length-normalised sequence ratio clipped as a whole (GSPO,
    Zheng et al. 2025; use its small clips, ``--cliprange 3e-4 --cliprange-high 4e-4``);
    default token."""
    kl_beta: float = 0.04
    """GRPO's KL coefficient (DeepSeekMath: 0.04); 0: no KL and no reference forward at all
    (DAPO, Dr. GRPO); default 0.04."""
    kl_estimator: Literal["k1", "k2", "k3"] = "k3"
    """Per-token KL estimator of the loss term (Schulman 2020; GRPO uses k3); default k3."""
    kl_in: Literal["loss", "reward"] = "loss"
    """KL as a loss term (GRPO) or folded into the per-token reward with the KL controller from
    ``kl_beta`` and the ``--kl-penalty`` estimator (PPO, Ziegler et al. 2019); default loss."""
    drop_uniform_groups: bool = False
    """Leave groups whose rewards are all equal out of the loss, counted (DAPO's dynamic
    sampling filter); default False."""
    refill_rounds: int = 0
    """With ``--drop-uniform-groups``: roll out up to this many extra batches until
    ``batch_size`` informative groups are in (DAPO's dynamic sampling); default 0."""
    mask_truncated: bool = False
    """Leave answers cut at ``max_new_tokens`` without EOS out of the loss (DAPO's overlong
    filtering); default False."""

    # --- model handling
    mode: Literal["lora", "full"] = "lora"
    """LoRA: both agents share one frozen base (the reference); full: the paper's full copies."""
    lora_r: int = 16
    """LoRA rank."""
    lora_alpha: int = 32
    """LoRA alpha."""
    load_in_4bit: bool = False
    """LoRA on a 4-bit (NF4, double-quantised) frozen base through bitsandbytes, computing in
    ``dtype`` (the paper's Llama-2-7b setup; the ``quant`` extra and a CUDA device)."""
    activation_checkpointing: bool = False
    """Recompute activations in the backward pass instead of storing them: the memory of
    an update stops growing with layers x tokens (the observer's prompt holds the pioneer's
    answer, so its update is the larger one), for about one more forward pass per update."""
    pack_sequences: bool = True
    """Score sequences packed end to end in a few rows instead of right-padded
    (:mod:`agents.policy.packing`: no padded work, the output head on response positions
    only), where the model's packed logits match its padded ones (checked once per model;
    else padded, with a warning); False: always padded."""
    fast_lora: bool = True
    """Run each LoRA agent's adapter merged into a copy of the linear weights it samples with
    (one extra copy of those weights during a turn; only where the base is in the adapter's
    dtype) and as one fused call per layer when scoring in fp32
    (:mod:`agents.policy.lora_calls`: the same numbers in fewer calls; the shared base is
    never written); False: peft's layers."""
    dtype: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    """Compute dtype. LoRA: the frozen base (the reference) loads in it, adapters and value
    heads train in fp32 (peft's mixed setup); full: fp32 master weights under autocast.
    ``auto`` resolves when the config is made (:func:`agents.policy.loading.default_dtype`):
    bf16 for LoRA on a CPU that computes bf16 natively, fp32 elsewhere (``$CORY_DTYPE``, where
    set, names it instead); ``config.json`` records the resolved dtype, which a resume keeps."""
    device: Literal["cpu", "cuda"] = "cpu"
    """Where the models run."""
    collective_timeout: float = 300.0
    """Seconds a collective of a data-parallel run waits for the other processes; past it this
    process stops with one line, its run folder resumable with ``--resume`` (a killed peer is
    seen at once, its connections closing; a hung one after this). Long enough for the main
    process's solo work between collectives (a checkpoint of full copies); gloo's own: 30 min."""

    # --- evaluation, logging, checkpoints
    eval_every: int = 6
    """Evaluate each model alone every this many iterations (and at the end); 0: never."""
    eval_size: int = 64
    """Held-out queries per evaluation."""
    checkpoint_every: int = 1
    """Write the resumable checkpoint every this many iterations."""
    keep_checkpoints: int = 2
    """Checkpoints kept (the newest ones): the previous good one survives a bad newest one."""
    max_nonfinite_steps: int = 8
    """Stop the run once a learner has skipped this many optimiser steps in a row for a
    non-finite loss or gradient (each is skipped, weights and optimiser untouched)."""
    num_samples: int = 4
    """Sample texts logged per iteration."""
    output_dir: str = "runs/cory"
    """The run folder: config, metrics, samples, plots, checkpoints."""
    resume: bool = False
    """Continue the run in ``output_dir`` from its newest checkpoint; its saved config is the
    run's config, and only settings that may change mid-run may be given anew."""
    progress: bool = True
    """Show a progress bar with reward, KL and ETA."""
    log_with: tuple[Literal["tensorboard", "wandb"], ...] = ("tensorboard",)
    """Where the metrics go besides the run folder's JSONL/CSV: ``tensorboard`` (its
    ``tensorboard/``), ``wandb`` (the ``wandb`` extra; offline by default), or both."""
    wandb_project: str = "cory"
    """The wandb project."""
    wandb_group: str | None = None
    """The wandb group (``scripts/sweep.py`` sets it to the sweep's name)."""
    wandb_mode: Literal["offline", "online"] = "offline"
    """wandb's mode: ``offline`` needs no account or network (upload later: ``wandb sync``)."""
    debug: bool = False
    """Show the full traceback of an error (by default one line, the traceback in the run
    folder's ``error.log``)."""

    def __post_init__(self) -> None:
        """Refuse a config out of range (:func:`agents.run.validate.check_config`) or one the
        learners' configs cannot be built from (their own rules), naming the field."""
        self.log_with = tuple(self.log_with)  # a saved config.json holds a list
        self.dtype_was_auto = self.dtype == "auto"
        if self.dtype_was_auto:
            self.dtype = default_dtype(self.device, self.mode)
        check_config(self)
        learner_config(self)
        grpo_options(self)


FLAG_GROUPS: dict[str, tuple[str, ...]] = {
    "model": ("model", "models", "mode", "lora_r", "lora_alpha", "load_in_4bit", "dtype", "device"),
    "task and reward": (
        "task",
        "task_path",
        "task_options",
        "reward",
        "reward_model",
        "reward_mode",
    ),
    "generation": (
        "max_new_tokens",
        "min_new_tokens",
        "seat_max_new_tokens",
        "seat_temperature",
        "seat_top_k",
        "seat_top_p",
    ),
    "learner": (
        "learner",
        "observer_learner",
        "learners",
        "learning_rate",
        "mini_batch_size",
        "gradient_accumulation_steps",
        "ppo_epochs",
        "init_kl_coef",
        "adap_kl_ctrl",
        "target",
        "horizon",
        "kl_penalty",
        "gamma",
        "lam",
        "cliprange",
        "cliprange_value",
        "vf_coef",
        "max_grad_norm",
        "ratio_threshold",
        "target_kl",
        "use_score_scaling",
        "use_score_norm",
        "score_clip",
        "whiten_rewards",
    ),
    "GRPO": (
        "group_size",
        "scale_rewards",
        "loss_aggregation",
        "cliprange_high",
        "dual_clip",
        "importance_sampling",
        "kl_beta",
        "kl_estimator",
        "kl_in",
        "drop_uniform_groups",
        "refill_rounds",
        "mask_truncated",
    ),
    "CORY": ("num_agents", "swap_period", "role_exchange", "role_schedule", "knowledge_transfer"),
    "run and logging": (
        "preset",
        "iterations",
        "batch_size",
        "seed",
        "output_dir",
        "resume",
        "checkpoint_every",
        "keep_checkpoints",
        "max_nonfinite_steps",
        "num_samples",
        "progress",
        "log_with",
        "wandb_project",
        "wandb_group",
        "wandb_mode",
        "debug",
    ),
    "evaluation": ("eval_every", "eval_size"),
    "scale-out": (
        "max_tokens_per_microbatch",
        "observer_token_budget",
        "activation_checkpointing",
        "pack_sequences",
        "fast_lora",
        "collective_timeout",
    ),
}
"""The CLI's flag groups, in ``--help`` order: group title -> :class:`TrainConfig` fields (every
field in exactly one group; tyro heads each ``<title> options``). The config itself stays flat:
the groups shape the help, not the fields."""

PRESET_DIR = Path(__file__).resolve().parents[2] / "configs" / "presets"
"""The paper presets (appendix A), one ``<name>.yaml`` each, read by ``--preset <name>``."""

RUN_RECORD = frozenset({"num_processes"})
"""Keys a run's ``config.json`` holds beside its settings (what the run recorded): skipped
where the file is read back as settings (``--config``, ``--resume``)."""

PRESETS: dict[str, dict] = {
    path.stem: read_settings(path, TrainConfig) for path in sorted(PRESET_DIR.glob("*.yaml"))
}
"""The paper's settings by preset name (``configs/presets/*.yaml``), used as the CLI's defaults
when ``--preset`` is given."""


def preset_config(preset: str = "none", **overrides) -> TrainConfig:
    """A config holding ``preset``'s values (the CLI's defaults), then ``overrides``."""
    if preset != "none" and preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; available: none, {', '.join(PRESETS)}")
    return TrainConfig(**{"preset": preset, **PRESETS.get(preset, {}), **overrides})


def to_dict(config: TrainConfig) -> dict:
    """The config as plain JSON-able data."""
    return dataclasses.asdict(config)
