"""The learners' configs from the run's config: explicit tables that cover every learner
field, and every mapped flag reaching the learner's config with its value."""

from __future__ import annotations

from dataclasses import fields

import pytest

from agents.rl.config import LearnerConfig
from agents.rl.grpo import GRPOOptions
from agents.run.cli import parse
from agents.run.config import TrainConfig
from agents.run.learner_config import (
    GRPO_FROM_RUN,
    GRPO_NOT_FROM_RUN,
    LEARNER_FROM_RUN,
    LEARNER_NOT_FROM_RUN,
    grpo_options,
    learner_config,
)
from agents.run.validate import samples_per_query

LEARNER_FLAGS = {  # LearnerConfig field: (flags, the value it must hold)
    "learning_rate": (["--learning-rate", "0.002"], 0.002),
    "mini_batch_size": (["--mini-batch-size", "4"], 4),
    "ppo_epochs": (["--ppo-epochs", "3"], 3),
    "gamma": (["--gamma", "0.9"], 0.9),
    "lam": (["--lam", "0.8"], 0.8),
    "cliprange": (["--cliprange", "0.3"], 0.3),
    "cliprange_value": (["--cliprange-value", "0.4"], 0.4),
    "vf_coef": (["--vf-coef", "0.7"], 0.7),
    "init_kl_coef": (["--init-kl-coef", "0.6"], 0.6),
    "adap_kl_ctrl": (["--no-adap-kl-ctrl"], False),
    "target": (["--target", "3.5"], 3.5),
    "horizon": (["--horizon", "500"], 500.0),
    "kl_penalty": (["--kl-penalty", "abs"], "abs"),
    "use_score_scaling": (["--use-score-scaling"], True),
    "use_score_norm": (["--use-score-norm"], True),
    "score_clip": (["--score-clip", "2.5"], 2.5),
    "whiten_rewards": (["--whiten-rewards"], True),
    "max_grad_norm": (["--max-grad-norm", "0.5"], 0.5),
    "target_kl": (["--target-kl", "0.25"], 0.25),
    "ratio_threshold": (["--ratio-threshold", "7"], 7.0),
    "gradient_accumulation_steps": (["--gradient-accumulation-steps", "2"], 2),
    "max_tokens_per_microbatch": (["--max-tokens-per-microbatch", "64"], 64),
    "seed": (["--seed", "11"], 11),
}

GRPO_FLAGS = {  # GRPOOptions field: (flags, the value it must hold)
    "scale_rewards": (["--scale-rewards", "batch"], "batch"),
    "loss_aggregation": (["--loss-aggregation", "token-mean"], "token-mean"),
    "cliprange_high": (["--cliprange-high", "0.28"], 0.28),
    "dual_clip": (["--dual-clip", "3"], 3.0),
    "importance_sampling": (["--importance-sampling", "sequence"], "sequence"),
    "kl_beta": (["--kl-beta", "0.5"], 0.5),
    "kl_estimator": (["--kl-estimator", "k1"], "k1"),
    "kl_in": (["--kl-in", "reward"], "reward"),
    "drop_uniform_groups": (["--drop-uniform-groups"], True),
    "mask_truncated": (["--mask-truncated"], True),
}


@pytest.mark.parametrize(
    ("learner_cls", "mapped", "unset"),
    [
        (LearnerConfig, LEARNER_FROM_RUN, LEARNER_NOT_FROM_RUN),
        (GRPOOptions, GRPO_FROM_RUN, GRPO_NOT_FROM_RUN),
    ],
)
def test_every_learner_field_is_mapped_or_deliberately_unset(learner_cls, mapped, unset):
    names = [f.name for f in fields(learner_cls)]
    assert sorted(mapped) + sorted(unset) == sorted([*mapped, *unset])
    assert set(mapped) | set(unset) == set(names) and not set(mapped) & set(unset)
    assert all(reason.strip() for reason in unset.values())
    assert set(mapped.values()) <= {f.name for f in fields(TrainConfig)}


@pytest.mark.parametrize(
    ("build", "mapped", "flags"),
    [(learner_config, LEARNER_FROM_RUN, LEARNER_FLAGS), (grpo_options, GRPO_FROM_RUN, GRPO_FLAGS)],
)
def test_each_mapped_flag_reaches_the_learners_config(build, mapped, flags):
    assert set(flags) == set(mapped)  # a new mapping needs its value here
    default = build(TrainConfig())
    argv = [arg for args, _ in flags.values() for arg in args]
    built = build(parse("", [*argv, "--learner", "grpo"]))
    for name, (_, value) in flags.items():
        assert getattr(built, name) == value != getattr(default, name), name


def test_the_run_batch_size_is_not_a_learner_setting():
    assert "batch_size" not in LEARNER_FROM_RUN
    assert learner_config(TrainConfig(batch_size=5, mini_batch_size=5)).mini_batch_size == 5


@pytest.mark.parametrize(
    ("learners", "expected"),
    [
        (dict(learner="ppo"), 1),
        (dict(learner="grpo"), 3),
        (dict(learner="rloo"), 3),
        (dict(learner="ppo", observer_learner="grpo"), 3),
        (dict(learners="ppo,ppo"), 1),
    ],
)
def test_samples_per_query_asks_the_learners(learners, expected):
    assert samples_per_query(TrainConfig(group_size=3, **learners)) == expected


def test_a_learner_that_samples_no_groups_is_not_a_group_learner():
    from agents.rl import learner
    from agents.rl.ppo import PPOLearner

    class Alone(PPOLearner):
        pass

    learner.register_learner("alone-test", Alone.build)
    try:
        cfg = TrainConfig(learners="alone-test,ppo", group_size=5, batch_size=2, mini_batch_size=2)
        assert samples_per_query(cfg) == 1  # not "any learner but ppo samples groups"
    finally:
        learner._REGISTRY.unregister("alone-test")
