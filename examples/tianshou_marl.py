"""Bring your own algorithm: train CORY's two roles with tianshou's multi-agent RL.

    python examples/tianshou_marl.py                     # tiny offline tokenizer, ~10 s on CPU
    python examples/tianshou_marl.py --tokenizer gpt2    # any Hugging Face tokenizer

The CORY env is a standard PettingZoo AEC env, so an off-the-shelf MARL library can drive
it unchanged. Here it is built with ``pettingzoo.make("aec", "cory/CoryText-v0", ...)``
and handed to tianshou 2.0's own machinery:

- ``tianshou.env.PettingZooEnv`` turns the AEC env into tianshou's turn-based env: each
  step is one token of the role whose turn it is, the observation carries ``agent_id``,
  and the reward is a vector over ``possible_agents`` (``[pioneer_0, observer_0]``);
- ``MultiAgentOnPolicyAlgorithm`` holds one REINFORCE learner per role and routes each
  transition to the learner of its ``agent_id``;
- ``Collector`` + ``VectorReplayBuffer`` + ``OnPolicyTrainer`` run the usual loop:
  collect whole episodes, update both policies, clear the buffer, repeat.

Each policy is a small network over the observation dict: a mean of token embeddings over
``input_ids`` masked by ``attention_mask``, plus the last token's embedding, mapped to
logits over the vocabulary. It will not write good text in a few hundred steps; the point
is that the library's real collector/trainer loop runs end to end on the env and updates
both policies from the env's (cooperative) reward.

One thin adaptation, about tianshou and not the env (the env's infos need none: they hold
the same keys from the first step, with non-null defaults, as tianshou's buffer wants):

1. :class:`TurnBasedReinforce`. tianshou's multi-agent dispatcher hands each learner
   only *its own* rows of the buffer, and ``compute_episodic_return`` then sums rewards
   along those rows. In a turn-based env the episode's reward arrives on the step that
   ends it (the observer's last token), so with stock REINFORCE the pioneer would see a
   return of 0 forever, and since none of its rows ends an episode its returns would run
   on across episodes. This subclass computes each row's Monte-Carlo return by following
   the buffer (all agents' rows) to the end of the episode, summing this agent's column
   of the reward vector: the AEC cumulative reward, undiscounted by default (gamma = 1,
   the paper's setting). The upstream issue is thu-ml/tianshou#399 ("MultiAgentPolicyManager
   misses rewards"); no env change inside the AEC contract can fix it, since the dispatcher
   slices the rows before the return is computed.

The observation dict and the ``Discrete(len(tokenizer))`` action space needed no
adaptation: tianshou passes dict observations through as nested ``Batch`` objects, and
for a Discrete space without an ``action_mask`` it adds an all-True ``mask``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# tianshou JIT-compiles a few small helpers with numba when it builds a policy and a
# vector buffer: ~10-30 s of CPU, far more than this run itself, and plain Python is plenty
# at this size (set NUMBA_DISABLE_JIT=0 to keep the JIT). Only before numba is loaded:
# numba re-reads the variable when it compiles, so flipping it later would mix both modes.
if "numba" not in sys.modules:
    os.environ.setdefault("NUMBA_DISABLE_JIT", "1")
# ruff: noqa: E402  (the imports below must come after that line)

import numpy as np
import pettingzoo
import torch
from tianshou.algorithm.modelfree.reinforce import DiscreteActorPolicy, Reinforce
from tianshou.algorithm.multiagent.marl import MultiAgentOnPolicyAlgorithm
from tianshou.algorithm.optim import AdamOptimizerFactory
from tianshou.data import Batch, Collector, ReplayBuffer, VectorReplayBuffer
from tianshou.data.collector import EpisodeRolloutHook
from tianshou.env import DummyVectorEnv, PettingZooEnv
from tianshou.trainer import OnPolicyTrainerParams
from tianshou.utils.net.common import ActionReprNet
from torch import nn

try:
    import cory_env  # registers "cory/CoryText-v0" with PettingZoo
except ModuleNotFoundError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import cory_env
sys.path.insert(0, str(Path(__file__).resolve().parent))
from offline_tokenizer import byte_level_tokenizer  # noqa: E402

ROLES = ("pioneer_0", "observer_0")


# -- the env, as tianshou sees it --------------------------------------------------------------
def make_env(tokenizer: Any, **env_kwargs: Any) -> PettingZooEnv:
    """The registered CORY env, as tianshou's own wrapper takes it (with the texts in its
    infos, which this example prints; the env's infos are numbers only by default)."""
    env = pettingzoo.make(
        "aec", "cory/CoryText-v0", tokenizer=tokenizer, info_texts=True, **env_kwargs
    )
    return PettingZooEnv(env)


# -- the policy network ------------------------------------------------------------------------
class TokenBagActor(ActionReprNet):
    """Logits over the vocabulary from a masked mean of token embeddings + the last token's."""

    def __init__(self, vocab_size: int, dim: int = 32) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, dim)
        self.head = nn.Linear(2 * dim, vocab_size)

    def forward(self, obs: Batch, state: Any = None, info: Any = None) -> tuple[torch.Tensor, Any]:
        # tianshou's PettingZooEnv observation: Batch(agent_id, obs=<the env's dict>, mask)
        ids = torch.as_tensor(obs.obs.input_ids, dtype=torch.long)
        mask = torch.as_tensor(obs.obs.attention_mask, dtype=torch.float32)
        emb = self.embed(ids)
        n = mask.sum(1, keepdim=True).clamp(min=1.0)
        mean = (emb * mask.unsqueeze(-1)).sum(1) / n
        last = emb[torch.arange(len(ids)), n.squeeze(1).long() - 1]
        logits = self.head(torch.tanh(torch.cat([mean, last], dim=-1)))
        legal = torch.as_tensor(np.asarray(obs.mask, dtype=bool))
        return logits.masked_fill(~legal, torch.finfo(logits.dtype).min), state


# -- the learner -------------------------------------------------------------------------------
def turn_based_returns(buffer: ReplayBuffer, indices: np.ndarray, gamma: float = 1.0) -> np.ndarray:
    """Return-to-go of each row: ``buffer.rew`` summed along ``buffer.next`` to the episode end.

    ``buffer.next`` walks every agent's rows of the episode in order, so a reward emitted on
    another agent's turn still reaches this agent. Inside the multi-agent dispatcher
    ``buffer.rew`` is this agent's column of the reward vector. ``gamma`` discounts per
    env step, whichever role took it.
    """
    idx = np.asarray(indices).copy()
    ret = np.zeros(len(idx))
    discount = np.ones(len(idx))
    alive = np.ones(len(idx), dtype=bool)
    rew = np.asarray(buffer.rew, dtype=np.float64)
    while alive.any():
        ret[alive] += discount[alive] * rew[idx[alive]]
        nxt = buffer.next(idx)
        alive &= nxt != idx  # next(i) == i at an episode's end (or the unfinished tail)
        discount *= gamma
        idx = nxt
    return ret


class TurnBasedReinforce(Reinforce):
    """tianshou's REINFORCE with :func:`turn_based_returns` for its Monte-Carlo returns."""

    def _preprocess_batch(self, batch: Batch, buffer: ReplayBuffer, indices: np.ndarray) -> Batch:
        comp = self.discounted_return_computation
        returns = turn_based_returns(buffer, indices, comp.gamma)
        if comp.return_standardization:  # as tianshou does: running mean/std as a baseline
            batch.returns = (returns - comp.ret_rms.mean) / np.sqrt(comp.ret_rms.var + comp.eps)
            comp.ret_rms.update(returns)
        else:
            batch.returns = returns
        return batch


# -- what the run records ----------------------------------------------------------------------
@dataclass
class EpisodeRecord:
    """One finished episode as tianshou saw it, next to what the env put in its infos."""

    returns: np.ndarray  # (2,) summed reward vector, one entry per role in ROLES
    pioneer_reward: float  # r(q, a1) from infos
    observer_reward: float  # r(q, a2) from infos
    steps: dict[str, int]  # buffer rows per agent_id
    tokens: dict[str, int]  # pioneer_tokens / observer_tokens from infos
    query: str
    pioneer_text: str
    observer_text: str


class EpisodeRecorder(EpisodeRolloutHook):
    """A collector hook that records every finished episode (it adds nothing to the buffer)."""

    def __init__(self) -> None:
        self.episodes: list[EpisodeRecord] = []

    def __call__(self, episode_batch: Batch) -> None:
        info = episode_batch.info[-1]
        agent_ids = np.asarray(episode_batch.obs.agent_id)
        self.episodes.append(
            EpisodeRecord(
                returns=np.asarray(episode_batch.rew, dtype=np.float64).sum(0),
                pioneer_reward=float(info.pioneer_reward),
                observer_reward=float(info.observer_reward),
                steps={r: int((agent_ids == r).sum()) for r in ROLES},
                tokens={r: int(info[f"{r.split('_')[0]}_tokens"]) for r in ROLES},
                query=str(info.query),
                pioneer_text=str(info.pioneer_text),
                observer_text=str(info.observer_text),
            )
        )
        return None


@dataclass
class RunResult:
    """What :func:`main` trained and saw."""

    episodes: list[EpisodeRecord]
    update_starts: list[int]  # index into ``episodes`` where each training step began
    env_steps: int
    weight_change: dict[str, float]  # L2 norm of each role's parameter change
    algorithm: MultiAgentOnPolicyAlgorithm
    seconds: float
    info: Any = field(repr=False, default=None)  # tianshou's InfoStats

    def mean_return(self, first: int, last: int) -> float:
        """Mean (over roles and episodes) return of the training steps ``first:last``."""
        starts = [*self.update_starts, len(self.episodes)]
        eps = self.episodes[starts[first] : starts[last]]
        return float(np.mean([e.returns for e in eps])) if eps else float("nan")


# -- the run -----------------------------------------------------------------------------------
def build(
    tokenizer: Any,
    env_kwargs: dict[str, Any],
    num_envs: int = 4,
    episodes_per_update: int = 8,
    lr: float = 1e-2,
    dim: int = 32,
    return_standardization: bool = True,
) -> tuple[MultiAgentOnPolicyAlgorithm, Collector, EpisodeRecorder]:
    """One REINFORCE learner per role behind tianshou's multi-agent algorithm, and a
    collector over ``num_envs`` CORY envs that records every finished episode."""
    spec_env = make_env(tokenizer, **env_kwargs)
    learners = [
        TurnBasedReinforce(
            policy=DiscreteActorPolicy(
                actor=TokenBagActor(spec_env.action_space.n, dim),
                action_space=spec_env.action_space,
                observation_space=spec_env.observation_space,
            ),
            gamma=1.0,
            return_standardization=return_standardization,
            optim=AdamOptimizerFactory(lr=lr),
        )
        for _ in spec_env.agents  # in the env's agent order: pioneer_0, observer_0
    ]
    algorithm = MultiAgentOnPolicyAlgorithm(algorithms=learners, env=spec_env)
    spec_env.close()

    envs = DummyVectorEnv([lambda: make_env(tokenizer, **env_kwargs) for _ in range(num_envs)])
    # room for every episode of one collection in each sub-buffer (an episode is <= 2 turns)
    max_len = 2 * int(env_kwargs.get("max_new_tokens") or 64)
    buffer = VectorReplayBuffer(num_envs * episodes_per_update * max_len, num_envs)
    recorder = EpisodeRecorder()
    collector = Collector(algorithm, envs, buffer, on_episode_done_hook=recorder)
    return algorithm, collector, recorder


def main(
    tokenizer: Any = None,
    task: str = "sentiment",
    reward: str = "vader",
    reward_mode: str = "cooperative",
    max_new_tokens: int = 4,
    num_envs: int = 4,
    episodes_per_update: int = 8,
    epochs: int = 4,
    steps_per_epoch: int = 64,
    lr: float = 1e-2,
    dim: int = 32,
    seed: int = 0,
    verbose: bool = True,
) -> RunResult:
    """Train one REINFORCE policy per role through tianshou's PettingZoo wrapper.

    ``tokenizer``: a Hugging Face tokenizer or a path/hub id; default: a byte-level BPE
    tokenizer trained offline on the task's queries. Each training step collects
    ``episodes_per_update`` whole episodes and updates both policies once; an epoch is
    ``steps_per_epoch`` env steps (token steps of either role).
    """
    start = time.perf_counter()
    # tianshou logs a warning for every 2-D (episodes x agents) return array before
    # `multi_agent_return_reduction` reduces it; that is expected here.
    logging.getLogger("tianshou.data.stats").setLevel(logging.ERROR)
    torch.manual_seed(seed)
    if tokenizer is None:
        tokenizer = byte_level_tokenizer(cory_env.make_task(task).queries("train"))
    elif isinstance(tokenizer, str):
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(tokenizer)
    env_kwargs = dict(
        task=task, reward_fn=reward, reward_mode=reward_mode, max_new_tokens=max_new_tokens
    )
    algorithm, collector, recorder = build(
        tokenizer, env_kwargs, num_envs, episodes_per_update, lr, dim
    )
    collector.env.seed(seed)
    before = {a: _flat_params(algorithm.get_algorithm(a)) for a in ROLES}
    update_starts: list[int] = []
    info = algorithm.run_training(
        OnPolicyTrainerParams(
            training_collector=collector,
            max_epochs=epochs,
            epoch_num_steps=steps_per_epoch,
            collection_step_num_env_steps=None,
            collection_step_num_episodes=episodes_per_update,
            batch_size=None,  # one gradient step per role on all it collected
            training_fn=lambda epoch, step: update_starts.append(len(recorder.episodes)),
            multi_agent_return_reduction=lambda r: r.mean(axis=1),
            verbose=False,
            show_progress=False,
        )
    )
    collector.close()
    result = RunResult(
        episodes=recorder.episodes,
        update_starts=update_starts,
        env_steps=int(collector.collect_step),
        weight_change={
            a: float((_flat_params(algorithm.get_algorithm(a)) - before[a]).norm()) for a in ROLES
        },
        algorithm=algorithm,
        seconds=time.perf_counter() - start,
        info=info,
    )
    if verbose:
        _report(result)
    return result


def _flat_params(module: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten().clone() for p in module.parameters()])


def _report(result: RunResult) -> None:
    n_updates = len(result.update_starts)
    n_params = {a: _flat_params(result.algorithm.get_algorithm(a)).numel() for a in ROLES}
    print(
        f"tianshou MultiAgentOnPolicyAlgorithm: one REINFORCE policy per role "
        f"({', '.join(f'{a}: {n:,} params' for a, n in n_params.items())})"
    )
    print(
        f"{len(result.episodes)} episodes, {result.env_steps} env steps, {n_updates} updates "
        f"in {result.seconds:.1f} s"
    )
    k = max(1, n_updates // 4)
    print(
        f"mean return: first {k} update(s) {result.mean_return(0, k):+.3f}, "
        f"last {k} {result.mean_return(n_updates - k, n_updates):+.3f}"
    )
    print(
        "weight change (L2): " + ", ".join(f"{a} {d:.3f}" for a, d in result.weight_change.items())
    )
    for e in result.episodes[-2:]:
        print(
            f"  {e.query!r} -> pioneer {e.pioneer_text!r} ({e.pioneer_reward:+.3f}), "
            f"observer {e.observer_text!r} ({e.observer_reward:+.3f}); "
            f"returns {e.returns.round(3).tolist()}"
        )


def _parse(argv: Sequence[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tokenizer", default=None, help="HF tokenizer path or hub id")
    p.add_argument("--task", default="sentiment")
    p.add_argument("--reward", default="vader")
    p.add_argument("--reward-mode", default="cooperative", choices=["cooperative", "independent"])
    p.add_argument("--max-new-tokens", type=int, default=4)
    p.add_argument("--num-envs", type=int, default=4)
    p.add_argument("--episodes-per-update", type=int, default=8)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--steps-per-epoch", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--dim", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    return vars(p.parse_args(argv))


if __name__ == "__main__":
    main(**_parse())
