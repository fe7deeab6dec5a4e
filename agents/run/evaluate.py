"""Evaluation of one model alone, from the query-only prompt, on held-out queries: it plays
a one-agent env (the chain of one), whose reward for the pioneer is the task's ``r(q, a)``."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np
import torch

from agents.rl.batch import TokenBatch
from agents.run.rollout import Turns, rollout_chain
from cory_env.tasks.base import GenerationConfig


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Distinct-n: unique word n-grams over all n-grams of ``texts`` (0 when there are none)."""
    grams = [tuple(w[i : i + n]) for w in (t.split() for t in texts) for i in range(len(w) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def repeat_fraction(texts: Sequence[str]) -> float:
    """The fraction of answers identical to another answer of the batch (0: all distinct)."""
    if not texts:
        return 0.0
    counts = Counter(t.strip() for t in texts)
    return sum(n for n in counts.values() if n > 1) / len(texts)


def collapse_stats(texts: Sequence[str]) -> dict[str, float]:
    """Signs of distribution collapse in a batch of answers: distinct-1/2 and the fraction of
    answers that repeat another one (the learner's ``objective/entropy`` is the third)."""
    return {
        "distinct1": distinct_n(texts, 1),
        "distinct2": distinct_n(texts, 2),
        "repeat_fraction": repeat_fraction(texts),
    }


def pass_at_k(n: int, c: int, k: int) -> float:
    """The unbiased pass@k of one problem from ``n`` samples of which ``c`` are correct
    (Chen et al. 2021): ``1 - C(n - c, k) / C(n, k)``, computed as a stable product."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - float(np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


@torch.no_grad()
def sequence_kl(agent, turns: Turns, pad_id: int) -> np.ndarray:
    """Per-answer KL to the reference, sum over tokens of log pi - log pi_ref (the
    estimator the paper plots), for answers sampled from the policy."""
    batch = TokenBatch.from_lists(turns.prompts, turns.responses, pad_id, device=agent.device)
    logprobs = agent.forward(batch).logprobs
    ref = agent.ref_logprobs(batch)
    return ((logprobs - ref) * batch.response_mask).sum(1).float().cpu().numpy()


def evaluate_alone(
    agent,
    venv,
    queries: Sequence[str],
    generation: GenerationConfig,
    max_new_tokens: int,
    seed: int,
    pad_id: int,
) -> tuple[dict[str, float], Turns]:
    """Task reward, KL to the reference, answer length and distinct-1/2 of ``agent`` alone,
    playing ``venv`` (an env of one agent: its episodes end, and are scored, after the answer).

    Sampling uses a generator seeded with ``seed`` so every evaluation of a run draws with
    the same random numbers (differences come from the model, not the dice).
    """
    generator = torch.Generator(device=agent.device).manual_seed(seed)
    was_training = agent.training
    agent.eval()
    (turns,) = rollout_chain(venv, [agent], queries, [generation], max_new_tokens, generator)
    kl = sequence_kl(agent, turns, pad_id)
    agent.train(was_training)
    assert turns.scores is not None, "rollout_chain scores every turn"
    return {
        "reward": float(turns.scores.mean()),
        "reward_std": float(turns.scores.std()),
        "kl": float(kl.mean()),
        "length": float(np.mean([len(r) for r in turns.responses])),
        "distinct1": distinct_n(turns.texts, 1),
        "distinct2": distinct_n(turns.texts, 2),
    }, turns
