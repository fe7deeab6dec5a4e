"""Speed of stable-baselines3 PPO (``baselines/sb3_ppo.py``) against the project's PPO
(``baselines/ppo.py``'s ``SingleAgentTrainer``) on the same model, task and amount of work.

Both train the pioneer role of ``sentiment`` on the same number of tokens, counted as env
steps (generated tokens), with the same episodes per iteration (SB3: ``n_envs``; PPO:
``batch_size`` queries), the same answer length, the same PPO epochs and mini-batches of
the same number of tokens (PPO: ``mini_batch_size`` trajectories; SB3: that many times
``max_new_tokens`` token steps), and the same LoRA (or full) setting. What differs is the
algorithm as each library runs it:

- SB3: one env step per token, the LM re-run over the whole observation at every step (no
  KV cache), then per-token mini-batches, one LM forward per token in the update;
- SingleAgentTrainer: batched generation with a KV cache through the vector env, then one forward
  per *sequence* in the update, plus the frozen reference forward of its KL penalty.

One untimed warm-up iteration each, then the timed iterations interleaved (PPO, SB3, PPO,
...) so that load on the machine hits both alike. ``--model tiny`` (default) is the tests'
2-layer model (CPU, seconds); ``--model smollm2-135m-instruct`` the embedded SmolLM2.

    python bench/sb3_vs_ppo.py                       # tiny model (seconds)
    python bench/sb3_vs_ppo.py --model smollm2-135m-instruct --iterations 2   # (minutes)

Prints a table, then as its last line one JSON object of the metrics; the figures the
benchmarks page shows are :data:`GOALS` (rendered in ``docs/benchmarks.md#sb3_vs_ppo``).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agents.run.config import TrainConfig  # noqa: E402
from baselines.ppo import SingleAgentTrainer  # noqa: E402
from baselines.sb3_ppo import make_sb3_ppo  # noqa: E402
from bench import record  # noqa: E402

GOALS = record.goals("""
sb3_over_ppo | SB3 PPO / the project's PPO, time per generated token | report
sb3_s_per_1k_tokens | SB3 PPO, seconds per 1k tokens | report
ppo_s_per_1k_tokens | the project's PPO, seconds per 1k tokens | report
sb3_rollout_s_per_1k_tokens | SB3 PPO's rollout, seconds per 1k tokens | report
ppo_rollout_s_per_1k_tokens | the project's PPO's rollout, seconds per 1k tokens | report
torch_threads | torch CPU threads | report
""")
"""The figures the benchmarks page shows."""


def load(name: str):
    """A fresh ``(model, tokenizer)``: the tests' tiny model, or ``agents.policy.loading.load_model``."""
    if name == "tiny":
        from tests.helpers.tiny import tiny_model, tiny_tokenizer

        return tiny_model(), tiny_tokenizer()
    from agents.policy.loading import load_model

    return load_model(name)


class Clock:
    """Wall time split into rollout and update for SB3 (as a callback would)."""

    def __init__(self) -> None:
        self.rollout = 0.0

    def callback(self):
        from stable_baselines3.common.callbacks import BaseCallback

        clock = self

        class _Timer(BaseCallback):
            def _on_rollout_start(self) -> None:
                self._t = time.perf_counter()

            def _on_rollout_end(self) -> None:
                clock.rollout += time.perf_counter() - self._t

            def _on_step(self) -> bool:
                return True

        return _Timer()


def main(argv: list[str] | None = None) -> dict[str, float]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="tiny", help="'tiny' (tests' model) or a load_model name")
    p.add_argument("--task", default="sentiment")
    p.add_argument("--episodes", type=int, default=16, help="episodes per iteration")
    p.add_argument("--max-new-tokens", type=int, default=8)
    p.add_argument("--mini-batch", type=int, default=8, help="trajectories per mini-batch")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--iterations", type=int, default=3, help="timed iterations of each")
    p.add_argument("--mode", choices=["lora", "full"], default="lora")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (0: torch's default). 1 by default: the timings are "
        "steadier, and 2 threads on a 2-core machine that is also running "
        "something else slow down many times",
    )
    p.add_argument("--save", action="store_true", help=record.SAVE_HELP)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    B, T = args.episodes, args.max_new_tokens

    with tempfile.TemporaryDirectory() as tmp:
        model, tok = load(args.model)
        config = TrainConfig(
            model=args.model,
            task=args.task,
            batch_size=B,
            mini_batch_size=args.mini_batch,
            ppo_epochs=args.epochs,
            max_new_tokens=T,
            min_new_tokens=T,
            mode=args.mode,
            learning_rate=3e-4 if args.mode == "lora" else 1.41e-5,
            eval_every=0,
            progress=False,
            output_dir=tmp,
        )
        ppo = SingleAgentTrainer(config, model=model, tokenizer=tok)
        model2, _ = load(args.model)
        sb3 = make_sb3_ppo(
            model2,
            tok,
            task=args.task,
            max_new_tokens=T,
            n_steps=T,
            n_envs=B,
            batch_size=args.mini_batch * T,
            n_epochs=args.epochs,
            learning_rate=config.learning_rate,
            seed=0,
            lora_r=config.lora_r if args.mode == "lora" else None,
            lora_alpha=config.lora_alpha,
        )
        clock = Clock()
        ppo.step(0)  # warm-up
        sb3.learn(B * T)

        ppo_s = ppo_roll = 0.0
        ppo_tokens = 0
        sb3_s, sb3_tokens = 0.0, 0
        for it in range(args.iterations):
            t0 = time.perf_counter()
            m = ppo.step(it + 1)
            ppo_s += time.perf_counter() - t0
            ppo_roll += m["charts/rollout_s"]
            ppo_tokens += round(m["policy/length"] * B)

            n0, t0 = sb3.num_timesteps, time.perf_counter()
            sb3.learn(B * T, reset_num_timesteps=False, callback=clock.callback())
            sb3_s += time.perf_counter() - t0
            sb3_tokens += sb3.num_timesteps - n0

    k_ppo, k_sb3 = ppo_tokens / 1000, sb3_tokens / 1000
    metrics = {
        "sb3_s_per_1k_tokens": sb3_s / k_sb3,
        "ppo_s_per_1k_tokens": ppo_s / k_ppo,
        "sb3_over_ppo": (sb3_s / k_sb3) / (ppo_s / k_ppo),
        "sb3_rollout_s_per_1k_tokens": clock.rollout / k_sb3,
        "sb3_update_s_per_1k_tokens": (sb3_s - clock.rollout) / k_sb3,
        "ppo_rollout_s_per_1k_tokens": ppo_roll / k_ppo,
        "ppo_update_s_per_1k_tokens": (ppo_s - ppo_roll) / k_ppo,
        "sb3_tokens": float(sb3_tokens),
        "ppo_tokens": float(ppo_tokens),
        "torch_threads": float(torch.get_num_threads()),
    }
    print(
        f"model {args.model}, task {args.task}, {args.mode}; per iteration {B} episodes x "
        f"<= {T} tokens, {args.epochs} epochs, mini-batches of {args.mini_batch} episodes; "
        f"{args.iterations} timed iterations each, {torch.get_num_threads()} torch threads"
    )
    print(f"{'':14s}{'tokens':>8s}{'s / 1k tok':>12s}{'rollout':>10s}{'update':>10s}")
    for name, label in (("sb3", "SB3 PPO"), ("ppo", "SingleAgentTrainer")):
        print(
            f"{label:14s}{int(metrics[f'{name}_tokens']):8d}"
            f"{metrics[f'{name}_s_per_1k_tokens']:12.2f}{metrics[f'{name}_rollout_s_per_1k_tokens']:10.2f}"
            f"{metrics[f'{name}_update_s_per_1k_tokens']:10.2f}"
        )
    print(f"SB3 PPO / SingleAgentTrainer, time per token: {metrics['sb3_over_ppo']:.2f}x")
    record.emit(
        {k: round(v, 4) for k, v in metrics.items()}, "sb3_vs_ppo", GOALS, args.save, __doc__
    )
    return metrics


if __name__ == "__main__":
    main()
