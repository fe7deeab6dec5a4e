"""The named registries: ``Registry`` itself, and the task and reward registries built on it."""

from __future__ import annotations

import numpy as np
import pytest

from cory_env import rewards
from cory_env.registry import Registry
from cory_env.rewards import available_rewards, make_reward, register_reward, score
from cory_env.tasks import Query, Task, available_tasks, make_task, register_task
from cory_env.tasks import base as tasks_base

BUILTIN_TASKS = {"arith", "gsm8k", "imdb", "sentiment"}
BUILTIN_REWARDS = {"answer-match", "hf-classifier", "vader", "vader-gain"}


# ------------------------------------------------------------------ Registry


def test_a_registry_gets_lists_sorted_and_counts():
    reg: Registry[int] = Registry("shape")
    reg.register("square", 4)
    reg.register("circle", 0)
    assert reg.get("square") == 4 and reg.get("circle") == 0
    assert reg.names() == ["circle", "square"] and list(reg) == ["circle", "square"]
    assert len(reg) == 2 and "circle" in reg and "ellipse" not in reg and ["x"] not in reg


def test_a_registry_refuses_a_taken_name_unless_asked_to_replace():
    reg: Registry[int] = Registry("shape")
    reg.register("square", 4)
    with pytest.raises(
        ValueError,
        match=r"^a shape named 'square' is already registered "
        r"\(pass replace=True to replace it\)$",
    ):
        reg.register("square", 5)
    assert reg.get("square") == 4  # the refusal changed nothing
    reg.register("square", 5, replace=True)
    assert reg.get("square") == 5 and reg.names() == ["square"]
    reg.register("triangle", 3, replace=True)  # replace=True on a free name registers it
    assert reg.names() == ["square", "triangle"]


def test_an_unknown_name_is_refused_listing_the_known_ones():
    reg: Registry[int] = Registry("shape")
    with pytest.raises(ValueError, match=r"^unknown shape 'square'; available: none$"):
        reg.get("square")
    reg.register("triangle", 3)
    reg.register("circle", 0)
    with pytest.raises(ValueError, match=r"^unknown shape 'square'; available: circle, triangle$"):
        reg.get("square")
    with pytest.raises(
        ValueError, match=r"^unknown shape \['square'\]; available: circle, triangle$"
    ):
        reg.get(["square"])  # an unhashable name is unknown too, not a TypeError


@pytest.mark.parametrize("name", ["", None, 3])
def test_a_name_must_be_a_non_empty_string(name):
    reg: Registry[int] = Registry("shape")
    with pytest.raises(ValueError, match="a shape name must be a non-empty string"):
        reg.register(name, 1)
    assert len(reg) == 0


def test_unregister_removes_a_name_and_refuses_an_unknown_one():
    reg: Registry[int] = Registry("shape")
    reg.register("square", 4)
    reg.unregister("square")
    assert reg.names() == [] and "square" not in reg
    with pytest.raises(ValueError, match="unknown shape 'square'; available: none"):
        reg.unregister("square")
    reg.register("square", 6)  # a removed name is free again
    assert reg.get("square") == 6


# ------------------------------------------------------------------ tasks


def _tiny_task(name: str = "tiny", answer: str = "2") -> Task:
    return Task(
        name=name,
        train_queries=[Query("1+1", answer=answer)],
        eval_queries=[],
        reward_fn=make_reward("answer-match"),
    )


def test_register_task_refuses_a_builtin_name_and_keeps_the_builtin():
    with pytest.raises(ValueError, match="a task named 'sentiment' is already registered"):
        register_task("sentiment", _tiny_task)
    task = make_task("sentiment")
    assert task.name == "sentiment" and len(task.train_queries) + len(task.eval_queries) == 370


def test_register_task_adds_and_replaces_a_task_when_asked():
    assert "tiny-sum" not in available_tasks()
    register_task("tiny-sum", _tiny_task)
    try:
        assert "tiny-sum" in available_tasks() and set(available_tasks()) >= BUILTIN_TASKS
        assert make_task("tiny-sum").train_queries[0].answer == "2"
        assert make_task("tiny-sum", answer="3").train_queries[0].answer == "3"  # kwargs reach it
        with pytest.raises(ValueError, match="already registered"):
            register_task("tiny-sum", lambda: _tiny_task(answer="5"))
        register_task("tiny-sum", lambda: _tiny_task(answer="5"), replace=True)
        assert make_task("tiny-sum").train_queries[0].answer == "5"
    finally:
        tasks_base._TASKS.unregister("tiny-sum")
    assert "tiny-sum" not in available_tasks()


def test_make_task_refusals_keep_their_meaning():
    with pytest.raises(ValueError, match=r"^unknown task 'nope'; available: ") as err:
        make_task("nope")
    listed = str(err.value).split("available: ", 1)[1].split(", ")
    assert listed == available_tasks() and set(listed) >= BUILTIN_TASKS
    with pytest.raises(TypeError, match="task must be a name or a Task, got int"):
        make_task(3)
    task = _tiny_task()
    assert make_task(task) is task
    with pytest.raises(TypeError, match="keyword arguments are only accepted with a task name"):
        make_task(task, seed=1)


# ------------------------------------------------------------------ rewards


def test_register_reward_refuses_a_builtin_name_and_keeps_the_builtin():
    with pytest.raises(ValueError, match="a reward named 'vader' is already registered"):
        register_reward("vader", lambda: lambda queries, responses: [0.0] * len(responses))
    (got,) = score(make_reward("vader"), ["This movie was"], [" wonderful."])
    assert got > 0.5  # still VADER, not the refused constant


def test_register_reward_adds_and_replaces_a_reward_when_asked():
    def length(scale: float = 1.0) -> rewards.RewardFn:
        return lambda queries, responses: np.array([scale * len(r) for r in responses], np.float32)

    assert "tiny-length" not in available_rewards()
    register_reward("tiny-length", length)
    try:
        np.testing.assert_array_equal(
            score(make_reward("tiny-length"), ["q", "q"], ["ab", "abc"]), [2, 3]
        )
        np.testing.assert_array_equal(
            score(make_reward("tiny-length", scale=0.5), ["q"], ["abcd"]), [2]
        )
        with pytest.raises(ValueError, match="a reward named 'tiny-length' is already registered"):
            register_reward("tiny-length", lambda: length(10.0))
        register_reward("tiny-length", lambda: length(10.0), replace=True)
        np.testing.assert_array_equal(score(make_reward("tiny-length"), ["q"], ["ab"]), [20])
    finally:
        rewards._REWARDS.unregister("tiny-length")
    assert "tiny-length" not in available_rewards()


def test_make_reward_refusals_keep_their_meaning():
    with pytest.raises(ValueError, match=r"^unknown reward 'vaderr'; available: ") as err:
        make_reward("vaderr")
    listed = str(err.value).split("available: ", 1)[1].split(", ")
    assert listed == available_rewards() and set(listed) >= BUILTIN_REWARDS
    with pytest.raises(ValueError, match="unknown reward 3"):
        make_reward(3)

    def custom(queries, responses):
        return [1.0] * len(responses)

    assert make_reward(custom) is custom
    with pytest.raises(TypeError, match="keyword arguments are only accepted with a reward name"):
        make_reward(custom, scale=2)


def test_the_reward_type_is_one_object_under_both_names():
    from cory_env import tasks

    assert tasks_base.RewardFn is rewards.RewardFn and tasks.RewardFn is rewards.RewardFn
