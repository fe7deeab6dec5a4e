"""Evaluate a model alone on a task's evaluation split: reward (mean and standard error), KL
to a reference, distinct-n, answer length and, for answer-checked tasks (``arith``,
``gsm8k``), pass@1 and pass@k from ``--samples`` answers per question (the unbiased
estimator). A JSON file out, a table printed.

    python scripts/evaluate.py --model smollm2-135m-instruct --task arith --samples 4 --k 1 4
    python scripts/evaluate.py --model runs/cory/models/model_a --task sentiment   # a run's adapter
    python scripts/evaluate.py --model runs/cory/models/model_a-merged --reference smollm2-135m-instruct
    python scripts/evaluate.py --model runs/custom/models/model_a --task prompts \
        --task-path examples/custom_task/prompts.jsonl --reward examples/custom_task/my_rewards.py:kindness

``--model`` takes a hub id, a folder, a GGUF file, the alias, or an exported peft adapter
folder (its base is read from ``adapter_config.json``, or ``--base``). The KL reference is
``--reference``, else the adapter's base, else the model itself (KL 0). ``--task`` and
``--reward`` take the names and import paths ``scripts/run_cory.py`` takes; the task is
built (its data read, its reward resolved) before any model loads.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import tyro

from agents.policy import LLMAgent
from agents.policy.export import base_of
from agents.policy.loading import load_model
from agents.run.config import TrainConfig
from agents.run.evaluate import distinct_n, pass_at_k, sequence_kl
from agents.run.generation import generation_of
from agents.run.rollout import rollout_alone
from agents.run.setup import build_task
from cory_env.vector import CoryTextVecEnv


@dataclass
class Args:
    model: str
    """The model to evaluate (hub id, folder, GGUF file, alias, or an exported adapter folder)."""
    task: str = "sentiment"
    """Task name (``sentiment``, ``arith``, ``imdb``, ``gsm8k``, ``prompts``) or a factory's
    import path, ``module:factory`` or ``path/to/file.py:factory``."""
    task_path: str | None = None
    """Data of ``imdb`` / ``gsm8k`` / ``prompts`` (a local file; for ``prompts`` also a hub id)."""
    task_options: str | None = None
    """More task factory arguments, ``key=value`` comma-separated (e.g. ``max_steps=1``)."""
    reward: str | None = None
    """Override the task's reward: a name or ``module:function`` / ``path/to/file.py:function``."""
    reward_model: str | None = None
    """Model of the ``hf-classifier`` reward."""
    base: str | None = None
    """The base model of an adapter folder (default: its ``adapter_config.json``)."""
    reference: str | None = None
    """The KL reference (default: an adapter's base, else the model itself)."""
    eval_size: int = 64
    """Questions from the evaluation split."""
    samples: int = 1
    """Answers sampled per question (pass@k needs k <= samples)."""
    k: list[int] = field(default_factory=lambda: [1])
    """The k of pass@k (answer-checked tasks)."""
    max_new_tokens: int | None = None
    """Longest answer (None: the task's)."""
    seed: int = 0
    """Sampling seed."""
    out: Path | None = None
    """The JSON file (default: ``evaluation.json`` beside an adapter folder, else printed only)."""


def load(args: Args) -> tuple[torch.nn.Module, torch.nn.Module, object]:
    """``(policy, reference, tokenizer)``; an adapter is merged into a copy of its base."""
    adapter = Path(args.model) / "adapter_config.json"
    if adapter.is_file():
        from peft import PeftModel

        base_name = args.base or base_of(args.model)
        if not base_name:
            raise SystemExit(f"{adapter} records no base model: pass --base")
        base, tokenizer = load_model(base_name)
        policy = PeftModel.from_pretrained(load_model(base_name)[0], args.model).merge_and_unload()
        reference = load_model(args.reference)[0] if args.reference else base
        return policy.eval(), reference, tokenizer
    policy, tokenizer = load_model(args.model)
    reference = load_model(args.reference)[0] if args.reference else load_model(args.model)[0]
    return policy, reference, tokenizer


def evaluate(args: Args, policy=None, reference=None, tokenizer=None, task=None) -> dict:
    """The metrics of ``args.model`` (or of the given ``policy`` / ``reference`` / ``tokenizer``;
    ``task``: a :class:`cory_env.Task` instead of ``args.task``)."""
    if max(args.k) > args.samples or min(args.k) < 1:
        raise SystemExit(f"--k must lie in 1..--samples ({args.samples}), got {args.k}")
    config = TrainConfig(
        task=args.task,
        task_path=args.task_path,
        task_options=args.task_options,
        reward=args.reward,
        reward_model=args.reward_model,
        max_new_tokens=args.max_new_tokens,
        eval_every=0,
        batch_size=1,
        mini_batch_size=1,
        progress=False,
    )
    task = build_task(config, task)
    if policy is None:
        policy, reference, tokenizer = load(args)
    generation = generation_of(config, task)
    questions = list(task.queries("eval"))[: args.eval_size]
    queries = [q for q in questions for _ in range(args.samples)]
    agent = LLMAgent.full_copy(policy, tokenizer, reference=reference)
    agent.eval()
    venv = CoryTextVecEnv(
        num_envs=len(queries),
        task=task,
        tokenizer=tokenizer,
        max_new_tokens=generation.max_new_tokens,
    )
    generator = torch.Generator().manual_seed(args.seed)
    turns = rollout_alone(
        venv, agent, queries, generation, generation.max_new_tokens, generator, task=task
    )
    kl = sequence_kl(agent, turns, venv.pad_token_id)
    scores = turns.scores.astype(np.float64)
    result = {
        "model": args.model,
        "task": args.task,
        "questions": len(questions),
        "samples": args.samples,
        "reward": float(scores.mean()),
        "reward_se": float(scores.std(ddof=1) / np.sqrt(len(scores))) if len(scores) > 1 else 0.0,
        "kl": float(kl.mean()),
        "length": float(np.mean([len(r) for r in turns.responses])),
        "distinct1": distinct_n(turns.texts, 1),
        "distinct2": distinct_n(turns.texts, 2),
    }
    if all(q.answer is not None for q in questions):  # answer-checked: a score of 1 is correct
        correct = (scores > 0.5).reshape(len(questions), args.samples).sum(1)
        for k in args.k:
            result[f"pass@{k}"] = float(
                np.mean([pass_at_k(args.samples, int(c), k) for c in correct])
            )
    return result


def main(args: Args) -> dict:
    result = evaluate(args)
    width = max(len(k) for k in result)
    for key, value in result.items():
        print(
            f"{key:{width}s}  {value:.4f}"
            if isinstance(value, float)
            else f"{key:{width}s}  {value}"
        )
    out = args.out or (Path(args.model) / "evaluation.json" if Path(args.model).is_dir() else None)
    if out is not None:
        Path(out).write_text(json.dumps(result, indent=2) + "\n")
        print("wrote", out)
    return result


if __name__ == "__main__":
    main(tyro.cli(Args))
