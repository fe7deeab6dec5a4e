"""The ``Learner`` protocol and the learner registry: one update path (``truncated`` taken
by every learner), the world given at construction, the learner's class answering what a
run needs to know before it builds one, and a registry that refuses a duplicate name."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers.fakes import SCORES, BigramAgent, cfg, make_batch

from agents.distributed import SINGLE, World
from agents.rl import learner as learner_mod
from agents.rl.grpo import GRPOLearner
from agents.rl.learner import (
    Learner,
    available_learners,
    learner_samples_per_query,
    learner_uses_values,
    make_learner,
    register_learner,
)
from agents.rl.optimise import skip_optimisation
from agents.rl.ppo import PPOLearner
from agents.rl.rloo import RLOOLearner

FLAGS = np.array([0, 1, 0, 0, 0, 0, 1, 0], bool)


@pytest.fixture
def scratch():
    """Names registered by a test, removed after it."""
    names: list[str] = []
    yield names
    for name in names:
        if name in learner_mod._REGISTRY:
            learner_mod._REGISTRY.unregister(name)


def test_a_duplicate_name_is_refused_unless_replaced(scratch):
    scratch.append("dup")
    register_learner("dup", PPOLearner.build)
    with pytest.raises(ValueError, match="already registered"):
        register_learner("dup", RLOOLearner.build)
    assert isinstance(make_learner("dup", BigramAgent(), config=cfg()), PPOLearner)
    register_learner("dup", RLOOLearner.build, replace=True)
    assert isinstance(make_learner("dup", BigramAgent(), config=cfg(), group_size=2), RLOOLearner)
    assert {"ppo", "rloo", "grpo", "dup"} <= set(available_learners())
    with pytest.raises(ValueError, match="unknown learner 'nope'"):
        make_learner("nope", BigramAgent())


def test_the_registered_class_answers_samples_per_query_and_uses_values(scratch):
    assert [learner_samples_per_query(n, 4) for n in ("ppo", "rloo", "grpo")] == [1, 4, 4]
    assert learner_samples_per_query("grpo", 3) == 3
    assert [learner_uses_values(n) for n in ("ppo", "rloo", "grpo")] == [True, False, False]

    class Pairs:
        samples_per_query, uses_values = 2, False

    scratch += ["pairs", "plain"]
    register_learner("pairs", Pairs)
    register_learner("plain", lambda agent, **options: None)
    assert learner_samples_per_query("pairs", 8) == 2 and not learner_uses_values("pairs")
    assert learner_samples_per_query("plain", 8) == 1 and learner_uses_values(
        "plain"
    )  # says nothing
    # and the built learners agree with their classes
    for name, size in (("ppo", 1), ("rloo", 4), ("grpo", 4)):
        built = make_learner(
            name, BigramAgent(), config=cfg(), **({} if name == "ppo" else {"group_size": 4})
        )
        assert built.samples_per_query == size and built.uses_values == learner_uses_values(name)
        assert isinstance(built, Learner)


def test_the_world_is_given_at_construction_and_only_where_asked(scratch):
    two = World(size=2, rank=1, kind="MULTI_CPU")
    for name, options in (("ppo", {}), ("rloo", {"group_size": 2}), ("grpo", {"group_size": 2})):
        assert make_learner(name, BigramAgent(), config=cfg(), world=two, **options).world is two
        assert make_learner(name, BigramAgent(), config=cfg(), **options).world is SINGLE
    seen = {}
    scratch.append("bare")
    register_learner("bare", lambda agent, **options: seen.update(options))
    make_learner("bare", BigramAgent(), learning_rate=1.0)
    assert seen == {"learning_rate": 1.0}  # a factory that takes no world is given none
    grpo = GRPOLearner(BigramAgent(), cfg(), 4, max_answer_length=7)
    assert grpo.max_answer_length == 7


@pytest.mark.parametrize("name", ["ppo", "rloo"])
def test_every_learner_takes_the_truncation_flags_and_ppo_rloo_ignore_them(name):
    def learner():
        options = {} if name == "ppo" else {"group_size": 4}
        return make_learner(name, BigramAgent(), config=cfg(), **options)

    plain = learner().update(make_batch(), SCORES)
    flagged = learner().update(make_batch(), SCORES, truncated=FLAGS)
    assert flagged == plain


def test_grpo_reads_the_flags_it_is_given_and_refuses_a_wrong_shape():
    def learner():
        return GRPOLearner(BigramAgent(), cfg(), 4, mask_truncated=True)

    stats = learner().update(make_batch(), SCORES, truncated=FLAGS)
    assert stats["grpo/truncated"] == 0.25 and stats["grpo/trained_fraction"] == 0.75
    with pytest.raises(ValueError, match="7 truncated"):
        learner().update(make_batch(), SCORES, truncated=FLAGS[:7])


@pytest.mark.parametrize("name", ["ppo", "rloo", "grpo"])
def test_an_update_leaves_no_state_of_its_own_in_the_learner(name):
    options = {} if name == "ppo" else {"group_size": 4}
    learner = make_learner(name, BigramAgent(), config=cfg(mini_batch_size=8), **options)
    before = set(vars(learner))
    learner.update(make_batch(), SCORES, truncated=FLAGS)
    assert set(vars(learner)) == before
    assert not any(torch.is_tensor(v) and v.requires_grad for v in vars(learner).values())


def test_an_update_with_no_row_to_learn_from_steps_only_the_schedule():
    param = torch.nn.Parameter(torch.ones(2))
    param.grad = torch.ones(2)
    opt = torch.optim.SGD([param], lr=0.5)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    out = skip_optimisation(opt, sched)
    assert out == {
        "minibatch": {},
        "grad_norm": None,
        "epochs": 0,
        "early_stop": False,
        "skipped": 0,
        "nonfinite": 0,
        "steps": 0,
        "learning_rate": 0.5,
    }
    assert opt.param_groups[0]["lr"] == 0.25 and param.grad is None
    assert torch.equal(param.detach(), torch.ones(2))
