"""Train CORY's seats with TorchRL: its PettingZoo wrapper, collector, GAE and ClipPPOLoss.

    python examples/torchrl_marl.py                      # tiny offline LM and tokenizer, seconds on CPU
    python examples/torchrl_marl.py --iterations 10 --num-agents 3

The env goes to TorchRL unchanged: ``PettingZooWrapper(env=..., use_mask=True,
categorical_actions=True)`` makes one group per seat (``pioneer_0``, ``observer_0``, ...)
with its observation, action mask, reward and the env's numeric infos. Each seat gets a
policy of its own, a tiny Hugging Face causal LM (random weights, built from a config)
whose next-token logits at the last real position of the observation are the action
distribution, and a value head on the same hidden state. TorchRL's own pieces do the rest:

- ``Collector`` plays whole episodes with every seat's ``ProbabilisticActor`` (a seat's
  action is used only on its turns: the wrapper's mask);
- ``GAE`` computes each seat's advantages over the collected steps, all of them, so the
  pioneer's turns get the cooperative reward that arrives at the episode's end;
- ``ClipPPOLoss`` optimises each seat on the steps where it acted.

It will not write good text in a few iterations; the point is that the library's own
collector / estimator / loss loop runs end to end on the env and updates every seat.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import pettingzoo
import torch
from tensordict.nn import TensorDictModule, TensorDictSequential
from torch import nn
from torchrl.collectors import Collector
from torchrl.envs.libs.pettingzoo import PettingZooWrapper
from torchrl.modules import ProbabilisticActor, ValueOperator
from torchrl.objectives import ClipPPOLoss
from torchrl.objectives.value import GAE

try:
    import cory_env  # registers "cory/CoryText-v0" with PettingZoo
except ModuleNotFoundError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import cory_env
sys.path.insert(0, str(Path(__file__).resolve().parent))
from offline_tokenizer import byte_level_tokenizer  # noqa: E402


def tiny_lm(vocab_size: int, seed: int, hidden: int = 32) -> nn.Module:
    """A 1-layer Llama with random weights (no download)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=True,
    )
    return LlamaForCausalLM(cfg).eval()


class LastToken(nn.Module):
    """``(logits, value)`` of a causal LM at each observation's last real token."""

    def __init__(self, lm: nn.Module) -> None:
        super().__init__()
        self.lm = lm
        self.value = nn.Linear(lm.config.hidden_size, 1)
        nn.init.zeros_(self.value.weight)
        nn.init.zeros_(self.value.bias)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        shape = input_ids.shape[:-1]
        ids, mask = (
            input_ids.reshape(-1, input_ids.shape[-1]),
            attention_mask.reshape(-1, input_ids.shape[-1]).long(),
        )
        mask = mask.clone()
        mask[:, 0] = torch.where(mask.sum(1) == 0, 1, mask[:, 0])  # a seat before its turn: empty
        out = self.lm(input_ids=ids, attention_mask=mask, output_hidden_states=True)
        last = (mask * torch.arange(mask.shape[1])).argmax(1)
        rows = torch.arange(len(ids))
        logits, hidden = out.logits[rows, last], out.hidden_states[-1][rows, last]
        return logits.reshape(*shape, -1), self.value(hidden).reshape(*shape, 1)


def seat_modules(
    group: str, vocab_size: int, seed: int
) -> tuple[ProbabilisticActor, ValueOperator]:
    """The seat's actor (Categorical over the vocabulary) and critic, sharing one LM."""
    body = LastToken(tiny_lm(vocab_size, seed))
    obs = [(group, "observation", "input_ids"), (group, "observation", "attention_mask")]

    class Logits(nn.Module):
        def forward(self, ids, mask):
            return body(ids, mask)[0]

    class Value(nn.Module):
        def forward(self, ids, mask):
            return body(ids, mask)[1]

    actor = ProbabilisticActor(
        TensorDictModule(Logits(), in_keys=obs, out_keys=[(group, "logits")]),
        in_keys={"logits": (group, "logits")},
        out_keys=[(group, "action")],
        distribution_class=torch.distributions.Categorical,
        return_log_prob=True,
        log_prob_key=(group, "action_log_prob"),
    )
    critic = ValueOperator(Value(), in_keys=obs, out_keys=[(group, "state_value")])
    actor.body = body  # keep the parameters reachable from the actor
    return actor, critic


def make_env(tokenizer: Any, num_agents: int, seed: int, **env_kwargs: Any) -> PettingZooWrapper:
    env = pettingzoo.make(
        "aec", "cory/CoryText-v0", tokenizer=tokenizer, num_agents=num_agents, **env_kwargs
    )
    return PettingZooWrapper(env=env, use_mask=True, categorical_actions=True, seed=seed)


def main(argv: list[str] | None = None, reward_fn: Any = None) -> dict[str, Any]:
    """Run the example; ``reward_fn`` overrides the task's reward (the env's ``reward_fn``)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--iterations", type=int, default=3)
    p.add_argument("--frames", type=int, default=64, help="env steps (tokens) per iteration")
    p.add_argument("--num-agents", type=int, default=2)
    p.add_argument("--max-new-tokens", type=int, default=4)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--tokenizer", default=None, help="a Hugging Face tokenizer (default: a tiny offline one)"
    )
    args = p.parse_args(argv)
    torch.manual_seed(args.seed)
    if args.tokenizer:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    else:
        tokenizer = byte_level_tokenizer(cory_env.make_task("sentiment").queries("train"))
    t0 = time.perf_counter()
    env_kwargs = dict(task="sentiment", max_new_tokens=args.max_new_tokens, reward_fn=reward_fn)
    probe = make_env(tokenizer, args.num_agents, args.seed, **env_kwargs)
    groups = list(probe.group_map)
    vocab = int(probe.full_action_spec[groups[0], "action"].space.n)
    seats = {g: seat_modules(g, vocab, args.seed + i) for i, g in enumerate(groups)}
    policy = TensorDictSequential(*(actor for actor, _ in seats.values()))
    losses, optims, estimators = {}, {}, {}
    for g, (actor, critic) in seats.items():
        loss = ClipPPOLoss(
            actor, critic, clip_epsilon=0.2, entropy_coeff=0.0, normalize_advantage=False
        )
        loss.set_keys(
            action=(g, "action"),
            sample_log_prob=(g, "action_log_prob"),
            value=(g, "state_value"),
            advantage=(g, "advantage"),
            value_target=(g, "value_target"),
            reward=(g, "reward"),
            done=(g, "done"),
            terminated=(g, "terminated"),
        )
        estimator = GAE(
            gamma=1.0, lmbda=0.95, value_network=critic, deactivate_vmap=True
        )  # an HF LM: no vmap
        estimator.set_keys(
            reward=(g, "reward"),
            done=(g, "done"),
            terminated=(g, "terminated"),
            value=(g, "state_value"),
            advantage=(g, "advantage"),
            value_target=(g, "value_target"),
        )
        losses[g], estimators[g] = loss, estimator
        optims[g] = torch.optim.Adam(actor.body.parameters(), lr=args.lr)
    before = {
        g: [q.detach().clone() for q in actor.body.parameters()] for g, (actor, _) in seats.items()
    }
    collector = Collector(
        lambda: make_env(tokenizer, args.num_agents, args.seed, **env_kwargs),
        policy,
        frames_per_batch=args.frames,
        total_frames=args.frames * args.iterations,
    )
    history = []
    for it, batch in enumerate(collector):
        row: dict[str, float] = {"iteration": it}
        done = batch["next", "done"].reshape(len(batch))
        for g in groups:
            with torch.no_grad():
                estimators[g](batch)
            acted = batch[g, "mask"].reshape(len(batch))
            out = losses[g](batch[acted])
            total = out["loss_objective"] + out["loss_critic"]
            optims[g].zero_grad()
            total.backward()
            optims[g].step()
            row[f"{g}/loss"] = float(total.detach())
            rewards = batch["next", g, "reward"].reshape(len(batch))[done]
            row[f"{g}/reward"] = float(rewards.mean()) if len(rewards) else float("nan")
        collector.update_policy_weights_()
        history.append(row)
        print(
            "  ".join(
                f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()
            )
        )
    collector.shutdown()
    change = {
        g: float(sum((q - b).norm() for q, b in zip(actor.body.parameters(), before[g])))
        for g, (actor, _) in seats.items()
    }
    print(f"parameter change per seat: {change}; {time.perf_counter() - t0:.1f} s")
    return {"history": history, "weight_change": change, "groups": groups}


if __name__ == "__main__":
    main()
