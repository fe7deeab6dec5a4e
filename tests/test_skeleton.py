"""The learner skeleton: the docs' learner built on it runs, and what the skeleton shares
(the opening, the loop, the statistics) holds for any learner on it."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.fakes import SCORES, BigramAgent, cfg, make_batch

from agents.rl import Learner, LearnerBase, learner, make_learner

DOCS = Path(__file__).resolve().parents[1] / "docs" / "learners.md"


@pytest.fixture
def seqmean():
    blocks = re.findall(r"```python\n(.*?)```", DOCS.read_text(), flags=re.S)
    example = next(b for b in blocks if "class SequenceMeanBaseline" in b)
    namespace: dict = {}
    exec(compile(example, str(DOCS), "exec"), namespace)
    yield namespace["SequenceMeanBaseline"]
    if "seqmean" in learner._REGISTRY:
        learner._REGISTRY.unregister("seqmean")


def test_the_docs_skeleton_learner_trains_with_the_shared_statistics(seqmean):
    agent = BigramAgent()
    built = make_learner("seqmean", agent, config=cfg(), learning_rate=1e-1)
    assert isinstance(built, seqmean) and isinstance(built, Learner)
    assert built.config.learning_rate == 1e-1 and built.config.mini_batch_size == 4
    p_before = agent.prob(2, 3)
    for _ in range(5):
        stats = built.update(make_batch(), SCORES)
    assert agent.prob(2, 3) > p_before  # responses starting with 3 are the rewarded ones
    # the skeleton's statistics under the learner's namespace, the shared ones as named
    for key in (
        "seqmean/policy/ratio",
        "seqmean/epochs",
        "seqmean/skipped_minibatches",
        "seqmean/learning_rate",
        "objective/kl",
        "ppo/mean_scores",
        "env/reward_mean",
    ):
        assert key in stats
    assert stats["env/reward_mean"] == pytest.approx(float(SCORES.mean()))
    assert built.num_updates == 5


def test_the_skeleton_refuses_bad_scores_before_any_pass():
    class Counting(LearnerBase):
        name, uses_values = "counting", False
        calls = 0

        def advantages(self, batch, rollout):
            Counting.calls += 1
            return {"advantages": torch.zeros_like(rollout.mask)}

    learner_ = Counting(BigramAgent(), cfg())
    with pytest.raises(ValueError, match="finite"):
        learner_.update(make_batch(), np.full(8, np.nan, np.float32))
    with pytest.raises(ValueError, match="7 scores"):
        learner_.update(make_batch(), np.zeros(7, np.float32))
    assert Counting.calls == 0 and learner_.num_updates == 0
