"""Fine-tune an LLM with stable-baselines3's PPO on the pioneer view of the CORY env.

    python scripts/run_sb3_ppo.py                                # SmolLM2-135M, sentiment, CPU
    python scripts/run_sb3_ppo.py --total-timesteps 2048 --n-envs 8 --mode full

Plain SB3 PPO on the task reward (no KL penalty to the original model; see
``baselines/sb3_ppo.py``). Writes to ``--output-dir``: config.json, metrics.jsonl/.csv and
tensorboard/ (one row per SB3 iteration: mean episode reward, SB3's train/* stats),
samples.jsonl (episodes played by the trained policy), and policy/ (the LM or its LoRA
adapter, the tokenizer, the value head).
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import tyro

from agents.policy.loading import load_model
from agents.run.run_log import RunLog
from baselines.sb3_ppo import EpisodeLog, evaluate_sb3_ppo, make_sb3_ppo, save_sb3_ppo


@dataclass
class Args:
    """SB3 PPO on the pioneer role: one env step is one generated token."""

    model: str = "smollm2-135m-instruct"
    """Hub id, local folder, GGUF file, or the embedded alias ``smollm2-135m-instruct``."""
    task: str = "sentiment"
    """Task name: ``sentiment`` and ``arith`` (offline), ``imdb``, ``gsm8k``."""
    total_timesteps: int = 512
    """Tokens to train on in all (env steps summed over the envs)."""
    n_envs: int = 4
    """Episodes played side by side (SB3 ``DummyVecEnv``); the policy batches their forwards."""
    n_steps: int = 64
    """Tokens per env per SB3 iteration (the rollout is ``n_steps * n_envs`` tokens)."""
    batch_size: int = 64
    """Tokens per PPO mini-batch."""
    n_epochs: int = 2
    """Passes over each rollout."""
    learning_rate: float | None = None
    """Adam learning rate (None: 3e-4 with LoRA, 1.41e-5 for a full fine-tune)."""
    max_new_tokens: int | None = None
    """Longest answer (None: the task's default)."""
    mode: Literal["lora", "full"] = "lora"
    """Train a LoRA adapter on all linear layers, or every weight of the LM."""
    lora_r: int = 16
    """LoRA rank."""
    lora_alpha: int = 32
    """LoRA alpha."""
    dtype: Literal["fp32", "bf16"] = "fp32"
    """fp32, or bf16 autocast over fp32 weights."""
    device: Literal["cpu", "cuda"] = "cpu"
    """Where the model runs."""
    seed: int = 0
    """Seeds SB3 (torch, numpy), the envs' queries and the LoRA init."""
    eval_episodes: int = 8
    """Episodes played by the trained policy at the end, saved as samples (0: none)."""
    threads: int = 0
    """torch CPU threads (0: torch's default)."""
    output_dir: str = "runs/sb3_ppo"
    """The run folder."""


def main(argv: list[str] | None = None) -> list[dict]:
    args = tyro.cli(Args, args=argv, description=__doc__)
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.output_dir)
    if (out / "metrics.jsonl").exists():
        raise FileExistsError(f"{out} already holds a run; choose another --output-dir")
    lr = args.learning_rate or (3e-4 if args.mode == "lora" else 1.41e-5)
    model, tokenizer = load_model(args.model, dtype=args.dtype, device=args.device)
    algo = make_sb3_ppo(
        model,
        tokenizer,
        task=args.task,
        max_new_tokens=args.max_new_tokens,
        n_steps=args.n_steps,
        batch_size=args.batch_size,
        learning_rate=lr,
        seed=args.seed,
        n_envs=args.n_envs,
        n_epochs=args.n_epochs,
        lora_r=args.lora_r if args.mode == "lora" else None,
        lora_alpha=args.lora_alpha,
        dtype=args.dtype,
    )
    log = RunLog(out)
    log.write_config({**dataclasses.asdict(args), "learning_rate": lr})

    def on_row(row: dict) -> None:
        it = len(log.rows)
        log.log(it, {**row, "charts/reward": row["ep_rew_mean"]})
        print(
            f"iter {it:3d}  tokens {int(row['timesteps']):6d}  episodes {int(row['episodes']):3d}  "
            f"mean episode reward {row['ep_rew_mean']:+.4f}  "
            f"approx_kl {row.get('train/approx_kl', float('nan')):.4f}  {row['time_s']:.0f}s",
            flush=True,
        )

    t0 = time.perf_counter()
    algo.learn(total_timesteps=args.total_timesteps, callback=EpisodeLog(on_row))
    train_s = time.perf_counter() - t0
    if args.eval_episodes:
        episodes = evaluate_sb3_ppo(algo, args.eval_episodes)
        log.log_samples(len(log.rows), episodes)
        mean = sum(e["reward"] for e in episodes) / len(episodes)
        print(
            f"trained policy: mean reward {mean:+.4f} over {len(episodes)} episodes; e.g. "
            f"{episodes[0]['query']!r} -> {episodes[0]['text']!r}"
        )
    save_sb3_ppo(algo, out / "policy", tokenizer)
    (out / "summary.json").write_text(
        json.dumps(
            {"timesteps": int(algo.num_timesteps), "train_s": train_s, "iterations": len(log.rows)},
            indent=2,
        )
    )
    log.close()
    print(f"{algo.num_timesteps} tokens in {train_s:.0f}s; run folder: {out}")
    return log.rows


if __name__ == "__main__":
    main()
