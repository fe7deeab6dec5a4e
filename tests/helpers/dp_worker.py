"""One process of a data-parallel test run, started by ``torchrun`` (see
``tests/test_distributed.py``): ``python dp_worker.py SCENARIO OUT [options]``; each rank
writes what it saw to ``OUT/rank<r>.pt``.

Scenarios: ``update`` (one PPO update of an agent on :func:`fixed_batch`), ``cory`` and
``ppo`` (a tiny run in ``OUT/run``, ``--iterations``, ``--stop-after``, ``--resume``);
``--mode full`` for full copies (sharded when launched with an FSDP config); ``--model
FOLDER``: the run loads its model from there (else the tiny model is handed in), and each
rank records whether it read weights or built an empty model (``loaded``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from agents import distributed
from agents.rl import PPOLearner
from agents.rl.batch import TokenBatch
from agents.rl.config import LearnerConfig
from agents.run import setup as setup_module
from agents.run import trainer as trainer_module
from agents.run.setup import build_agents
from helpers.configs import small_config
from helpers.tiny import tiny_model, tiny_tokenizer


def fixed_batch() -> tuple[TokenBatch, torch.Tensor]:
    """8 trajectories, prompts of 2-4 tokens, responses of exactly 3 (equal token counts per
    row make every token-mean loss a mean over rows), and their scores."""
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(5, 60, (2 + i % 3,), generator=g).tolist() for i in range(8)]
    responses = [torch.randint(5, 60, (3,), generator=g).tolist() for _ in range(8)]
    scores = torch.linspace(-1, 1, 8)
    return TokenBatch.from_lists(prompts, responses, pad_id=0), scores


def update_learner(
    tmp: Path,
    world: distributed.World,
    update: bool = True,
    mode: str = "lora",
    mini_batch_size: int = 4,
    budget: int | None = None,
) -> PPOLearner:
    """The agent (LoRA or a full copy, sharded where ``world`` asks for FSDP) and PPO learner
    both the test and the workers build, after one update. SGD, not Adam: Adam's step is
    about the sign of each gradient, so a parameter whose gradient is float noise around
    zero would move by a whole learning rate either way."""
    config = small_config(tmp, mode=mode)
    (agent,) = build_agents(config, tiny_model(), tiny_tokenizer(), n=1, world=world)
    optimizer = torch.optim.SGD(agent.trainable_parameters(), lr=0.5)
    learner = PPOLearner.build(
        agent,
        optimizer=optimizer,
        world=world,
        config=LearnerConfig(
            mini_batch_size=mini_batch_size, ppo_epochs=2, seed=0, max_tokens_per_microbatch=budget
        ),
    )
    batch, scores = fixed_batch()
    if update:
        learner.stats = learner.update(batch, scores)
    return learner


def flat_trainable(learner) -> torch.Tensor:
    """The learner's trainable weights in one vector (sharded ones gathered whole)."""
    return torch.cat(
        [
            (p.full_tensor() if distributed.is_sharded(p) else p).detach().flatten()
            for p in learner.agent.trainable_parameters()
        ]
    )


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("scenario", choices=["update", "cory", "ppo"])
    p.add_argument("out", type=Path)
    p.add_argument("--iterations", type=int, default=2)
    p.add_argument("--stop-after", type=int, default=None)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--mode", default="lora", choices=["lora", "full"])
    p.add_argument("--mini-batch-size", type=int, default=4)
    p.add_argument("--budget", type=int, default=None, help="max_tokens_per_microbatch (update)")
    p.add_argument("--model", default=None, help="a model folder the run loads (cory, ppo)")
    args = p.parse_args()
    torch.set_num_threads(1)
    w = distributed.world()
    seen: dict = {"world": (w.size, w.rank, w.kind), "fsdp": w.fsdp}
    if args.scenario == "update":
        learner = update_learner(
            args.out, w, mode=args.mode, mini_batch_size=args.mini_batch_size, budget=args.budget
        )
        seen["params"] = flat_trainable(learner)
        seen["stats"] = learner.stats
    else:
        shards = seen["shards"] = []
        real_shard = trainer_module.shard

        def recording_shard(items, world):
            mine = real_shard(items, world)
            shards.append(([str(q) for q in items], [str(q) for q in mine]))
            return mine

        trainer_module.shard = recording_shard
        config = small_config(
            args.out,
            iterations=args.iterations,
            eval_every=2,
            resume=args.resume,
            mode=args.mode,
            **({"model": args.model} if args.model else {}),
        )
        given = {} if args.model else {"model": tiny_model(), "tokenizer": tiny_tokenizer()}
        real_load = setup_module.load_model

        def recording_load(*a, **kw):
            model, tokenizer = real_load(*a, **kw)
            seen["loaded"] = "meta" if next(model.parameters()).is_meta else "weights"
            return model, tokenizer

        setup_module.load_model = recording_load
        if args.scenario == "cory":
            from agents.cory import CoryTrainer

            trainer = CoryTrainer(config, **given)
        else:
            from baselines.ppo import SingleAgentTrainer

            trainer = SingleAgentTrainer(config, **given)
        seen["rows"] = trainer.train(stop_after=args.stop_after)
        seen["params"] = {m: flat_trainable(lr) for m, lr in trainer.learners.items()}
    learners = [learner] if args.scenario == "update" else list(trainer.learners.values())
    params = [p for lr in learners for p in lr.agent.trainable_parameters()]
    seen["held"] = sum((p.to_local() if distributed.is_sharded(p) else p).numel() for p in params)
    seen["numel"] = sum(p.numel() for p in params)
    torch.save(seen, args.out / f"rank{w.rank}.pt")
    distributed.leave(w)


if __name__ == "__main__":
    main()
