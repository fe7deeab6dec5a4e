"""``--log-with wandb``: the same metric names, config and samples as the run folder, one
wandb run continued on resume, a sweep's runs in one group; offline, no network."""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import types

import pytest
from helpers.configs import small_config
from helpers.scripts import load_script
from helpers.tiny import tiny_model, tiny_tokenizer

from agents.cory import CoryTrainer
from agents.run.run_log import read_jsonl


class FakeRun:
    def __init__(self, calls: dict, **kwargs) -> None:
        self.calls, self.step, self.finished = calls, 0, False
        calls["init"].append(kwargs)
        self.config = types.SimpleNamespace(
            update=lambda c, allow_val_change: calls["config"].append(c)
        )

    def log(self, values: dict, step: int) -> None:
        self.step = step
        self.calls["log"].append((step, values))

    def finish(self) -> None:
        self.calls["finish"] += 1


@pytest.fixture
def fake_wandb(monkeypatch):
    """A stand-in ``wandb`` module recording every call (the real one is tested below)."""
    calls = {"init": [], "config": [], "log": [], "finish": 0, "teardown": 0}
    module = types.ModuleType("wandb")
    module.init = lambda **kw: FakeRun(calls, **kw)
    module.Settings = lambda **kw: kw
    module.Table = lambda columns, data: {"columns": list(columns), "data": [list(r) for r in data]}
    module.run = None
    module.teardown = lambda: calls.__setitem__("teardown", calls["teardown"] + 1)
    monkeypatch.setitem(sys.modules, "wandb", module)
    return calls


def train(config, stop_after=None):
    return CoryTrainer(config, model=tiny_model(), tokenizer=tiny_tokenizer()).train(
        stop_after=stop_after
    )


def test_wandb_gets_the_run_folders_metrics_config_and_samples(tmp_path, fake_wandb):
    config = small_config(tmp_path, iterations=2, log_with=("wandb",), wandb_group="g1")
    train(config)
    out = tmp_path / "run"
    (init,) = fake_wandb["init"]
    assert (init["mode"], init["group"], init["project"], init["name"]) == (
        "offline",
        "g1",
        "cory",
        "run",
    )
    assert init["dir"] == str(out) and (out / "wandb_id").read_text().strip() == init["id"]
    assert fake_wandb["config"] == [json.loads((out / "config.json").read_text())]
    assert not (out / "tensorboard").exists()  # only wandb asked for
    rows = read_jsonl(out / "metrics.jsonl")
    metrics = [(step, values) for step, values in fake_wandb["log"] if "samples" not in values]
    assert [step for step, _ in metrics] == [r["iteration"] for r in rows]
    for (_, values), row in zip(metrics, rows):
        assert values == {k: v for k, v in row.items() if k != "iteration" and math.isfinite(v)}
    tables = [values["samples"] for _, values in fake_wandb["log"] if "samples" in values]
    samples = read_jsonl(out / "samples.jsonl")
    assert len(tables[-1]["data"]) == len(samples) > 0
    assert tables[-1]["columns"][0] == "iteration"
    assert [r[0] for r in tables[-1]["data"]] == [s["iteration"] for s in samples]
    assert fake_wandb["finish"] == fake_wandb["teardown"] == 1


def test_another_active_wandb_run_of_the_process_is_left_running(tmp_path, fake_wandb):
    sys.modules["wandb"].run = object()  # the user's own run, which teardown would finish
    train(small_config(tmp_path, iterations=1, eval_every=0, log_with=("wandb",)))
    assert (fake_wandb["finish"], fake_wandb["teardown"]) == (1, 0)


def test_a_resumed_run_continues_the_same_wandb_run(tmp_path, fake_wandb):
    config = small_config(tmp_path, iterations=3, eval_every=0, log_with=("tensorboard", "wandb"))
    train(config, stop_after=1)
    train(dataclasses.replace(config, resume=True))
    first, again = (i["id"] for i in fake_wandb["init"])
    assert first == again == (tmp_path / "run" / "wandb_id").read_text().strip()
    assert all(i["resume"] == "allow" for i in fake_wandb["init"])
    assert (tmp_path / "run" / "tensorboard").is_dir()
    assert [s for s, v in fake_wandb["log"] if "samples" not in v] == [0, 1, 2]


def test_a_sweep_groups_its_runs_under_its_name(tmp_path):
    sweep = load_script("scripts/sweep.py")
    cmd = sweep.command(tmp_path / "study", "cory", 0, ["--log-with", "wandb"])
    assert cmd[cmd.index("--wandb-group") + 1] == "study"
    assert "--wandb-group" not in sweep.command(tmp_path / "study", "cory", 0, [])


def test_without_the_wandb_package_the_error_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)
    with pytest.raises(ModuleNotFoundError, match=r"pip install -e \"\.\[wandb\]\""):
        train(small_config(tmp_path, iterations=1, log_with=("wandb",)))


def test_the_real_wandb_writes_an_offline_run_in_the_run_folder(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_SILENT", "true")
    config = small_config(tmp_path, iterations=2, eval_every=0, log_with=("wandb",))
    out = tmp_path / "run" / "wandb"
    for run_config, stop_after, count in (
        (config, 1, 1),
        (dataclasses.replace(config, resume=True), None, 2),
    ):
        train(run_config, stop_after=stop_after)
        runs = sorted(out.glob("offline-run-*"))
        assert len(runs) == count
        (log,) = runs[-1].glob(
            "run-*.wandb"
        )  # written out when train returns, not at the process's exit
        assert log.stat().st_size > 1000
    run_id = (tmp_path / "run" / "wandb_id").read_text().strip()
    assert all(r.name.endswith(run_id) for r in runs)
