"""Tasks and rewards by import path (``module:function``, ``path/to/file.py:function``), the
``prompts`` task, and the worked example of docs/custom-tasks.md run as documented through
scripts/run_cory.py, with the same names through scripts/evaluate.py and scripts/sweep.py,
on the tiny model."""

from __future__ import annotations

import json
import pickle
import re
import shlex
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from helpers.configs import small_config
from helpers.scripts import load_script
from helpers.tiny import tiny_model, tiny_tokenizer

from agents.cory import CoryTrainer
from agents.run.config import TrainConfig
from cory_env.registry import Imported, PluginError, Registry, load_object
from cory_env.rewards import RewardError, make_reward, score
from cory_env.tasks import Query, Task, make_task

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "custom-tasks.md"
EXAMPLE = "examples/custom_task"

REWARDS = """
import numpy as np

CALLS = []
NOT_CALLABLE = 3


def length(queries, responses):
    out = np.array([float(len(r)) for r in responses], dtype=np.float32)
    CALLS.append(out)
    return out


def short(queries, responses):
    return [1.0] * (len(responses) - 1)


def nothing(queries, responses):
    return None


def nan(queries, responses):
    return [float("nan")] * len(responses)


def words(queries, responses):
    return ["many"] * len(responses)


def boom(queries, responses):
    raise KeyError("no such key")
"""

TASKS = """
from cory_env.tasks import GenerationConfig, Query, Task


def echo(word="hello", n=3):
    queries = [Query(f"{word} {i}") for i in range(n)]
    return Task(
        name="echo",
        train_queries=queries,
        eval_queries=queries[:1],
        reward_fn=lambda q, r: [0.0] * len(r),
        generation=GenerationConfig(max_new_tokens=3, max_prompt_tokens=32),
    )


def not_a_task():
    return {"name": "echo"}
"""

TINY_RUN = [
    "--iterations",
    "2",
    "--batch-size",
    "4",
    "--mini-batch-size",
    "2",
    "--ppo-epochs",
    "1",
    "--max-new-tokens",
    "4",
    "--min-new-tokens",
    "2",
    "--eval-every",
    "2",
    "--eval-size",
    "2",
    "--lora-r",
    "2",
    "--lora-alpha",
    "4",
    "--no-progress",
]


@pytest.fixture
def plugins(tmp_path):
    """``tmp_path`` holding ``rewards.py`` and ``tasks.py`` (loaded by file path)."""
    (tmp_path / "rewards.py").write_text(REWARDS)
    (tmp_path / "tasks.py").write_text(TASKS)
    return tmp_path


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny")
    tiny_model().save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return folder


def write_prompts(path: Path, prompts, column: str = "text") -> Path:
    path.write_text("".join(json.dumps({column: p}) + "\n" for p in prompts))
    return path


# ------------------------------------------------------------------ import paths


def test_a_file_path_and_a_module_path_resolve_to_the_same_kind_of_callable(plugins, monkeypatch):
    by_file = load_object(f"{plugins}/rewards.py:length", "reward")
    assert by_file(["q"], ["abc"]).tolist() == [3.0]
    assert load_object(f"{plugins}/rewards.py:length", "reward") is by_file  # loaded once
    (plugins / "plug_tasks_29.py").write_text(TASKS)
    monkeypatch.syspath_prepend(str(plugins))
    factory = load_object("plug_tasks_29:echo", "task")
    assert [str(q) for q in factory(word="hi", n=2).train_queries] == ["hi 0", "hi 1"]
    monkeypatch.delitem(sys.modules, "plug_tasks_29")


def test_a_module_in_the_current_folder_resolves_from_a_script(plugins, monkeypatch):
    """A script's search path starts at its own folder: the current one is searched last."""
    (plugins / "cwd_rewards_29.py").write_text(REWARDS)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(plugins))])
    monkeypatch.chdir(plugins)
    fn = load_object("cwd_rewards_29:length", "reward")
    assert fn(["q"], ["ab"]).tolist() == [2.0] and sys.path[-1] == str(plugins)
    monkeypatch.delitem(sys.modules, "cwd_rewards_29")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("no_such_module_29:fn", r"no module named 'no_such_module_29' on the Python path"),
        ("{d}/missing.py:fn", r"no such file .*missing\.py"),
        (
            "{d}/rewards.py:lenght",
            r"has no attribute 'lenght' \(its callables: boom, length, nan, nothing, short, "
            r"words\)$",
        ),
        ("{d}/rewards.py:NOT_CALLABLE", r"is a int, not a callable$"),
        ("{d}/broken.py:fn", r"running .*broken\.py raised ZeroDivisionError: division by zero"),
        ("needs_dep_29:fn", r"importing needs_dep_29 raised ModuleNotFoundError: .*not_there_29"),
        (":fn", r"an import path is module:function or path/to/file\.py:function"),
    ],
)
def test_an_import_path_that_does_not_resolve_is_one_clear_error(
    plugins, monkeypatch, spec, message
):
    (plugins / "broken.py").write_text("x = 1 / 0\n")
    (plugins / "needs_dep_29.py").write_text("import not_there_29\n")
    monkeypatch.syspath_prepend(str(plugins))
    spec = spec.format(d=plugins)
    with pytest.raises(PluginError, match=message) as caught:
        load_object(spec, "reward")
    assert isinstance(caught.value, ValueError)
    assert str(caught.value).startswith(f"reward {spec!r}")


def test_a_registered_name_cannot_hold_a_colon():
    with pytest.raises(ValueError, match="must not contain ':'"):
        Registry("task").register("my:task", object())


# ------------------------------------------------------------------ rewards by import path


def test_a_reward_by_import_path_scores_and_pickles_as_its_path(plugins):
    spec = f"{plugins}/rewards.py:length"
    reward = make_reward(spec)
    assert isinstance(reward, Imported) and reward.__name__ == spec
    np.testing.assert_array_equal(score(reward, ["q", "q"], ["ab", "abcd"]), [2.0, 4.0])
    again = pickle.loads(pickle.dumps(reward))
    np.testing.assert_array_equal(score(again, ["q"], ["abc"]), [3.0])
    with pytest.raises(TypeError, match="is a function, not a factory"):
        make_reward(spec, model="x")


@pytest.mark.parametrize(
    ("name", "message"),
    [
        (
            "short",
            r"returned a list of 1 items \(1 values\) for 2 responses: a reward returns one "
            r"finite float per response, shape \(2,\)$",
        ),
        ("nothing", r"must return numbers, got None: .* shape \(2,\)$"),
        ("words", r"must return numbers, got a list of 2 items"),
        ("nan", r"non-finite value \(nan\) at index 0 \(response 'ab'\)"),
        ("boom", r"raised KeyError: 'no such key'"),
    ],
)
def test_a_bad_reward_is_refused_naming_it_what_it_returned_and_the_shape(plugins, name, message):
    spec = f"{plugins}/rewards.py:{name}"
    with pytest.raises(RewardError, match=message) as caught:
        score(make_reward(spec), ["q", "q"], ["ab", "abc"])
    assert str(caught.value).startswith(f"reward function {spec!r} ")


# ------------------------------------------------------------------ tasks by import path


def test_a_task_factory_by_import_path_takes_the_options(plugins):
    task = make_task(f"{plugins}/tasks.py:echo", word="hi", n=2)
    assert isinstance(task, Task) and [str(q) for q in task.train_queries] == ["hi 0", "hi 1"]
    with pytest.raises(PluginError, match=r"returned a dict, not a cory_env\.tasks\.Task"):
        make_task(f"{plugins}/tasks.py:not_a_task")


def test_the_config_resolves_import_paths_when_it_is_built(plugins):
    with pytest.raises(PluginError, match="no module named 'no_such_module_29'"):
        TrainConfig(task="no_such_module_29:make")
    with pytest.raises(PluginError, match="not a callable"):
        TrainConfig(reward=f"{plugins}/rewards.py:NOT_CALLABLE")
    with pytest.raises(ValueError, match="reward_model is the classifier of --reward hf-class"):
        TrainConfig(reward=f"{plugins}/rewards.py:length", reward_model="some/classifier")
    config = TrainConfig(task=f"{plugins}/tasks.py:echo", reward=f"{plugins}/rewards.py:length")
    assert config.reward.endswith("rewards.py:length")


# ------------------------------------------------------------------ the prompts task


def test_prompts_from_a_file_with_the_default_column_and_a_held_out_share(tmp_path):
    texts = [f"Prompt number {i}" for i in range(10)]
    path = write_prompts(tmp_path / "p.jsonl", texts, column="prompt")
    task = make_task("prompts", path=path, eval_fraction=0.2, reward="vader")
    train, evals = [str(q) for q in task.train_queries], [str(q) for q in task.eval_queries]
    assert len(train) == 8 and len(evals) == 2 and sorted(train + evals) == sorted(texts)
    assert task.pioneer_prompt("Q") == "Q"
    assert task.observer_prompt("Q", "A") == "Reference answer: A\n\nQ"
    assert task.chain_prompt("Q", ["A", "B"]) == "Reference answers:\n1. A\n2. B\n\nQ"
    assert task.has_reward and task.generation.max_new_tokens == 16


def test_prompts_options_column_template_eval_file_and_answers(tmp_path):
    rows = [{"q": "2+2", "gold": "4"}, {"q": "3+3", "gold": "6"}, {"q": "  ", "gold": "0"}]
    train = tmp_path / "train.csv"
    train.write_text("q,gold\n" + "".join(f"{r['q']},{r['gold']}\n" for r in rows))
    evals = tmp_path / "eval.jsonl"
    evals.write_text(json.dumps({"q": "5+5", "gold": "10"}) + "\n")
    with pytest.warns(UserWarning, match=r"skipped 1 row\(s\) with an empty 'q'"):
        task = make_task(
            "prompts",
            path=train,
            column="q",
            answer_column="gold",
            template="Question: {q}\nAnswer:",
            eval_path=evals,
            reward="answer-match",
            max_new_tokens=8,
        )
    assert [(str(q), q.answer) for q in task.train_queries] == [("2+2", "4"), ("3+3", "6")]
    assert [(str(q), q.answer) for q in task.eval_queries] == [("5+5", "10")]
    assert task.observer_prompt("2+2", "4") == "Reference answer: 4\n\nQuestion: 2+2\nAnswer:"
    np.testing.assert_array_equal(task.score(["2+2", "3+3"], ["it is 4", "7"]), [1.0, 0.0])
    assert task.generation.max_new_tokens == 8


def test_prompts_refusals(tmp_path):
    path = write_prompts(tmp_path / "p.jsonl", ["a", "b"])
    with pytest.raises(ValueError, match="needs path= "):
        make_task("prompts")
    with pytest.raises(ValueError, match="a local file has one split, 'train'; split='test'"):
        make_task("prompts", path=path, split="test")
    with pytest.raises(ValueError, match=r"no 'body' column \(columns: text\)"):
        make_task("prompts", path=path, column="body")
    chat = tmp_path / "chat.jsonl"
    chat.write_text(json.dumps({"prompt": [{"role": "user", "content": "hi"}]}) + "\n")
    with pytest.raises(ValueError, match=r"row 0: column 'prompt' holds a list, not text"):
        make_task("prompts", path=chat)


def test_prompts_without_a_reward_is_refused_before_the_model_loads(tmp_path, monkeypatch):
    from agents.run import setup

    path = write_prompts(tmp_path / "p.jsonl", ["a", "b", "c"])
    task = make_task("prompts", path=path)
    assert not task.has_reward
    with pytest.raises(RewardError, match="task 'prompts' has no reward of its own: pass --rew"):
        task.score(["a"], ["b"])
    monkeypatch.setattr(setup, "load_model", lambda *a, **k: pytest.fail("the model was loaded"))
    config = small_config(tmp_path, task="prompts", task_path=str(path), model="no/such")
    with pytest.raises(ValueError, match="has no reward of its own"):
        CoryTrainer(config)


def test_prompts_from_the_hub(monkeypatch):
    import datasets

    calls = []

    def fake(name, config=None, split=None):
        calls.append((name, config, split))
        return [{"text": f"{split} prompt {i}"} for i in range(3)]

    monkeypatch.setattr(datasets, "load_dataset", fake)
    task = make_task(
        "prompts", path="user/prompts", subset="main", split="train[:3]", eval_split="test"
    )
    assert calls == [("user/prompts", "main", "train[:3]"), ("user/prompts", "main", "test")]
    assert str(task.train_queries[0]) == "train[:3] prompt 0"
    assert [str(q) for q in task.eval_queries] == [f"test prompt {i}" for i in range(3)]


# ------------------------------------------------------------------ the worked example


def documented_command() -> list[str]:
    """The run_cory.py command of docs/custom-tasks.md's worked example, as argv."""
    blocks = re.findall(r"```bash\n(.*?)```", DOCS.read_text(), flags=re.S)
    block = next(b for b in blocks if "scripts/run_cory.py --task prompts" in b)
    return shlex.split(block.replace("\\\n", " "))


def with_output(argv: list[str], out: Path) -> list[str]:
    """``argv`` with its ``--output-dir`` pointed at ``out``."""
    i = argv.index("--output-dir")
    return [*argv[:i], "--output-dir", str(out), *argv[i + 2 :]]


def check_scores_are_the_example_reward(out: Path) -> None:
    kindness = load_object(f"{ROOT}/{EXAMPLE}/my_rewards.py:kindness", "reward")
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert {s["iteration"] for s in samples} == {0, 1} and len(samples) == 8
    for s in samples:
        mine = kindness([s["query"]] * 2, [s["pioneer"], s["observer"]])
        assert [s["pioneer_score"], s["observer_score"]] == pytest.approx(mine.tolist())
        assert s["reward"] == pytest.approx(float(mine.sum()), abs=1e-5)  # cooperative
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    first = [s["pioneer_score"] for s in samples if s["iteration"] == 0]
    assert rows[0]["pioneer/score"] == pytest.approx(np.mean(first), abs=1e-6)
    assert json.loads((out / "config.json").read_text())["reward"] == (
        f"{EXAMPLE}/my_rewards.py:kindness"
    )


def test_the_documented_example_trains_on_its_prompts_with_its_reward(
    tiny_dir, tmp_path, monkeypatch
):
    argv = documented_command()
    assert argv[:2] == ["python", "scripts/run_cory.py"]
    monkeypatch.chdir(ROOT)  # the docs run it from the repository root
    out = tmp_path / "custom"
    run_cory = load_script("scripts/run_cory.py")
    run_cory.main([*with_output(argv[2:], out), "--model", str(tiny_dir), *TINY_RUN])
    check_scores_are_the_example_reward(out)
    lines = (ROOT / EXAMPLE / "prompts.jsonl").read_text().splitlines()
    prompts = {json.loads(line)["text"] for line in lines}
    samples = (out / "samples.jsonl").read_text().splitlines()
    assert {json.loads(s)["query"] for s in samples} <= prompts and len(prompts) == 12


@pytest.mark.slow
def test_the_documented_example_runs_as_a_script(tiny_dir, tmp_path):
    """The command itself, as a fresh process from the repository root."""
    argv = documented_command()
    out = tmp_path / "custom"
    command = [sys.executable, *with_output(argv[1:], out), "--model", str(tiny_dir), *TINY_RUN]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    check_scores_are_the_example_reward(out)


def test_a_task_factory_by_path_trains_through_run_cory(tiny_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    out = tmp_path / "letters"
    run_cory = load_script("scripts/run_cory.py")
    argv = ["--task", f"{EXAMPLE}/my_tasks.py:letters", "--task-options", "max_new_tokens=3"]
    run_cory.main([*argv, "--output-dir", str(out), "--model", str(tiny_dir), *TINY_RUN[2:]])
    openings = load_object(f"{EXAMPLE}/my_tasks.py:letters", "task")().train_queries
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert samples and {s["query"] for s in samples} <= set(openings)
    assert all(s["observer"] is not None for s in samples)


def test_evaluate_takes_the_same_names(plugins, monkeypatch):
    script = load_script("scripts/evaluate.py")
    prompts = write_prompts(plugins / "p.jsonl", [f"Say hello to {n}" for n in "ABCDEFGHIJ"])
    spec = f"{plugins}/rewards.py:length"
    args = script.Args(
        model="tiny",
        task="prompts",
        task_path=str(prompts),
        task_options="column=text,eval_fraction=0.3",
        reward=spec,
        eval_size=3,
        max_new_tokens=3,
    )
    calls = load_object(spec, "reward").__globals__["CALLS"]
    result = script.evaluate(
        args, policy=tiny_model(), reference=tiny_model(), tokenizer=tiny_tokenizer()
    )
    assert result["questions"] == 3 and len(calls) == 1 and calls[0].shape == (3,)
    assert result["reward"] == pytest.approx(float(calls[0].mean())) and result["reward"] > 0
    by_factory = script.evaluate(
        script.Args(model="tiny", task=f"{plugins}/tasks.py:echo", eval_size=1),
        policy=tiny_model(),
        reference=tiny_model(),
        tokenizer=tiny_tokenizer(),
    )
    assert by_factory["questions"] == 1 and by_factory["reward"] == 0.0
    monkeypatch.setattr(script, "load", lambda a: pytest.fail("the model was loaded"))
    with pytest.raises(ValueError, match="has no reward of its own"):
        script.evaluate(script.Args(model="no/such", task="prompts", task_path=str(prompts)))


@pytest.mark.slow
def test_sweep_takes_the_same_names_relative_to_where_it_starts(plugins, tiny_dir, monkeypatch):
    """Every run starts in the sweep's folder: a relative --task-path and a module there
    (found by its runs, which are scripts) mean what they mean to the sweep's command."""
    (plugins / "sweep_rewards_29.py").write_text(REWARDS)
    write_prompts(plugins / "p.jsonl", [f"Write to {n}" for n in "ABCDEFGH"])
    monkeypatch.chdir(plugins)
    sweep = load_script("scripts/sweep.py")
    flags = ["--task", "prompts", "--task-path", "p.jsonl", "--reward", "sweep_rewards_29:length"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = sweep.main(
            ["sw", "--methods", "cory", "--seeds", "0", *flags, "--model", str(tiny_dir)]
            + ["--iterations", "1", *TINY_RUN[2:-1]]
        )
    assert [r["status"] for r in results] == ["done"]
    samples = (plugins / "sw" / "cory" / "seed_0" / "samples.jsonl").read_text().splitlines()
    for s in map(json.loads, samples):
        assert s["pioneer_score"] == float(len(s["pioneer"]))
        assert s["query"].startswith("Write to ")


def test_queries_of_a_plugin_task_are_queries():
    task = make_task(f"{ROOT}/{EXAMPLE}/my_tasks.py:letters", max_new_tokens=5)
    assert all(isinstance(q, Query) for q in task.train_queries)
    assert task.generation.max_new_tokens == 5 and task.observer_prompt("Hi,", " x").startswith(
        'A first draft: "Hi, x"'
    )
