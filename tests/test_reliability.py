"""Runs that survive anything: non-finite updates, safe and validated resume, crash-proof
run logs, full disks, signals, and bad input refused before the model loads."""

from __future__ import annotations

import dataclasses
import errno
import json
import math
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.configs import small_config
from helpers.fakes import SCORES, BigramAgent, cfg, make_batch
from helpers.tiny import tiny_model, tiny_tokenizer

from agents.cory import CoryTrainer
from agents.errors import CheckpointError, DivergedError, ResumeError
from agents.rl import PPOLearner
from agents.rl import ppo as ppo_module
from agents.run import checkpoint as ckpt_module
from agents.run import run_log as run_log_module
from agents.run.checkpoint import checkpoints, load_checkpoint, save_checkpoint
from agents.run.cli import parse, run_main
from agents.run.config import TrainConfig
from agents.run.machine import machine_kind
from baselines.ppo import SingleAgentTrainer

TIMING = ("charts/rollout_s", "charts/iteration_s")
ROOT = Path(__file__).resolve().parents[1]


def cory(config: TrainConfig) -> CoryTrainer:
    return CoryTrainer(config, model=tiny_model(), tokenizer=tiny_tokenizer())


def without_timing(rows):
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


def weights(learner) -> list[torch.Tensor]:
    return [p.detach().clone() for p in learner.agent.trainable_parameters()]


def nan_loss(self, sub, idx, rollout, targets):
    loss, stats = PPOLearner_loss(self, sub, idx, rollout, targets)
    return loss * float("nan"), stats


PPOLearner_loss = PPOLearner.loss


# ------------------------------------------------------------------ 1. non-finite updates


def test_a_nan_loss_skips_the_step_leaving_weights_and_optimiser_untouched():
    agent = BigramAgent()
    learner = PPOLearner(agent, cfg())
    before = weights(learner)
    learner.loss = nan_loss.__get__(learner)
    stats = learner.update(make_batch(), SCORES)
    assert stats["ppo/nonfinite_steps"] == 8 and stats["ppo/optimizer_steps"] == 0  # 4 epochs x 2
    assert all(torch.equal(a, b) for a, b in zip(before, agent.trainable_parameters()))
    assert learner.optimizer.state_dict()["state"] == {}  # Adam never stepped
    assert math.isfinite(learner.kl_ctl.value)


def test_an_infinite_gradient_skips_only_that_step():
    agent = BigramAgent()
    learner = PPOLearner(agent, cfg())
    calls = {"n": 0}

    def first_backward_inf(grad):
        calls["n"] += 1
        return grad * float("inf") if calls["n"] == 1 else grad

    agent.head.weight.register_hook(first_backward_inf)
    stats = learner.update(make_batch(), SCORES)
    assert stats["ppo/nonfinite_steps"] == 1 and stats["ppo/optimizer_steps"] == 7
    assert all(bool(torch.isfinite(p).all()) for p in agent.trainable_parameters())
    steps = {float(s["step"]) for s in learner.optimizer.state_dict()["state"].values()}
    assert steps == {7.0}  # the skipped step left the optimiser's state alone


def test_consecutive_nonfinite_steps_stop_the_run_and_keep_the_good_checkpoints(
    tmp_path, monkeypatch
):
    config = small_config(tmp_path, iterations=4, eval_every=0, max_nonfinite_steps=3)
    cory(config).train(stop_after=2)
    saved = [p.name for p in checkpoints(tmp_path / "run" / "checkpoints")]
    assert saved == ["iter_000001", "iter_000002"]
    monkeypatch.setattr(ppo_module.PPOLearner, "loss", nan_loss)
    with pytest.raises(
        DivergedError, match=r"diverged at iteration 2.*learning rate.*iter_000002.*--resume"
    ):
        cory(dataclasses.replace(config, resume=True)).train()
    # no checkpoint was written from the diverged iteration; the good ones are loadable
    assert [p.name for p in checkpoints(tmp_path / "run" / "checkpoints")] == saved
    iteration, state = load_checkpoint(tmp_path / "run" / "checkpoints" / "iter_000002")
    assert iteration == 2 and state["trainer"]["learners"]["model_a"]["agent"]["adapter"]
    monkeypatch.undo()
    rows = cory(dataclasses.replace(config, resume=True)).train()  # resumes fine afterwards
    assert rows[-1]["iteration"] == 3


def test_a_diverging_learning_rate_writes_no_checkpoint_and_a_lower_one_starts_over(tmp_path):
    config = small_config(tmp_path, iterations=4, eval_every=0, learning_rate=1e3)
    with pytest.raises(
        DivergedError, match="run starts over: run it again with a lower --learning-rate"
    ):
        cory(config).train()
    assert checkpoints(tmp_path / "run" / "checkpoints") == []  # never from suspect weights
    rows = cory(dataclasses.replace(config, learning_rate=1e-2, resume=True)).train()
    assert [r["iteration"] for r in rows] == [0, 1, 2, 3]
    assert all(r["pioneer/ppo/nonfinite_steps"] == 0 for r in rows)


def test_a_checkpoint_is_never_written_from_non_finite_weights(tmp_path):
    root = tmp_path / "checkpoints"
    save_checkpoint(root, 1, {"w": torch.ones(3)})
    with pytest.raises(DivergedError, match=r"NaN or inf.*/w.*previous checkpoint"):
        save_checkpoint(root, 2, {"w": torch.tensor([1.0, float("nan"), 0.0])})
    assert [p.name for p in checkpoints(root)] == ["iter_000001"]
    assert not any(p.name.startswith(".") for p in root.iterdir())


def test_the_previous_checkpoint_is_kept(tmp_path):
    rows = cory(small_config(tmp_path, iterations=3, eval_every=0, keep_checkpoints=2)).train()
    assert len(rows) == 3
    names = [p.name for p in checkpoints(tmp_path / "run" / "checkpoints")]
    assert names == ["iter_000002", "iter_000003"]


@pytest.mark.parametrize("lr", [float("inf"), float("nan"), 0.0, -1e-3])
def test_infinite_and_non_positive_learning_rates_are_refused(lr):
    with pytest.raises(ValueError, match="learning_rate"):
        TrainConfig(learning_rate=lr)


def test_the_sampler_names_diverged_weights_instead_of_a_multinomial_error():
    from agents.policy import sample_tokens
    from cory_env import GenerationConfig

    logits = torch.tensor([[0.0, float("nan"), 1.0]])
    with pytest.raises(DivergedError, match="diverged"):
        sample_tokens(logits, GenerationConfig(), torch.Generator().manual_seed(0))


# ------------------------------------------------------------------ 2. no pickle


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("where", ["checkpoints/last.pt", "checkpoints/iter_000001/state.pt"])
def test_a_crafted_pickle_is_refused_not_executed(tmp_path, where):
    config = small_config(tmp_path, iterations=2, eval_every=0)
    cory(config).train(stop_after=1)
    marker = tmp_path / "pwned"
    target = tmp_path / "run" / where
    target.write_bytes(pickle.dumps(_Exploit(marker)))
    with pytest.raises(CheckpointError, match=r"pickle.*refused"):
        cory(dataclasses.replace(config, resume=True)).train()
    assert not marker.exists()


# ------------------------------------------------------------------ 3. resume checks the config


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("batch_size", 8),
        ("mini_batch_size", 4),
        ("lora_r", 8),
        ("seed", 1),
        ("mode", "full"),
        ("task", "arith"),
        ("model", "other-model"),
        ("learner", "rloo"),
        ("reward_mode", "independent"),
        ("ppo_epochs", 1),
        ("max_new_tokens", 6),
    ],
)
def test_resume_refuses_a_changed_fixed_setting_naming_it(tmp_path, field, value):
    config = small_config(tmp_path, iterations=2, eval_every=0)
    cory(config).train(stop_after=1)
    saved = (tmp_path / "run" / "config.json").read_bytes()
    changed = dataclasses.replace(config, resume=True, **{field: value})
    with pytest.raises(ResumeError, match=rf"{field}: {getattr(config, field)!r} -> {value!r}"):
        cory(changed)  # refused while building, before anything is loaded or trained
    assert (tmp_path / "run" / "config.json").read_bytes() == saved  # not rewritten


def test_resume_applies_and_records_a_new_learning_rate(tmp_path):
    config = small_config(tmp_path, iterations=3, eval_every=0)
    cory(config).train(stop_after=1)
    trainer = cory(dataclasses.replace(config, resume=True, learning_rate=5e-3, iterations=4))
    rows = trainer.train(stop_after=2)
    assert rows[-1]["pioneer/ppo/learning_rate"] == 5e-3
    for learner in trainer.learners.values():
        assert [g["lr"] for g in learner.optimizer.param_groups] == [5e-3]
    events = [json.loads(x) for x in (tmp_path / "run" / "events.jsonl").read_text().splitlines()]
    assert [e for e in events if e["event"] == "resume"] == [
        {
            "iteration": 1,
            "event": "resume",
            "changes": {"iterations": [3, 4], "learning_rate": [0.01, 0.005]},
        }
    ]
    # each sitting (the first and the resumed one) says where it ran and in which dtype
    sittings = [e for e in events if e["event"] == "sitting"]
    assert [e["iteration"] for e in sittings] == [0, 1]
    assert {(e["machine"], e["dtype"], e["processes"]) for e in sittings} == {
        (machine_kind("cpu"), config.dtype, 1)
    }
    assert json.loads((tmp_path / "run" / "config.json").read_text())["learning_rate"] == 5e-3


def test_the_cli_resumes_with_the_saved_config_and_only_the_new_flags(tmp_path):
    config = small_config(tmp_path, iterations=2, eval_every=0)
    cory(config).train(stop_after=1)
    out = str(tmp_path / "run")
    parsed = parse("", ["--resume", "--output-dir", out, "--learning-rate", "0.002"])
    assert parsed == dataclasses.replace(config, resume=True, learning_rate=0.002)


def test_resume_with_fewer_iterations_than_done_is_refused(tmp_path):
    config = small_config(tmp_path, iterations=3, eval_every=0)
    cory(config).train(stop_after=2)
    with pytest.raises(ResumeError, match="--iterations 1 is below the 2 iterations"):
        cory(dataclasses.replace(config, resume=True, iterations=1))


# ------------------------------------------------------------------ 4. the run log


def test_a_torn_last_log_line_is_dropped_and_the_run_resumes(tmp_path):
    full = without_timing(cory(small_config(tmp_path / "a")).train())
    config = small_config(tmp_path / "b")
    cory(config).train(stop_after=2)
    with (tmp_path / "b" / "run" / "metrics.jsonl").open("a") as f:
        f.write('{"iteration": 2, "charts/rew')  # killed mid-write
    with pytest.warns(UserWarning, match="cut off mid-write"):
        rows = cory(dataclasses.replace(config, resume=True)).train()
    assert without_timing(rows) == full


def test_a_kill_during_log_truncation_loses_nothing(tmp_path, monkeypatch):
    config = small_config(tmp_path, iterations=3, eval_every=0)
    cory(config).train(stop_after=2)
    path = tmp_path / "run" / "metrics.jsonl"
    before = path.read_text()

    def killed(src, dst):
        raise KeyboardInterrupt  # the process dies between writing the new file and renaming

    monkeypatch.setattr(run_log_module.os, "replace", killed)
    log = run_log_module.RunLog(tmp_path / "run", tensorboard=False)
    with pytest.raises(KeyboardInterrupt):
        log.truncate(1)
    assert path.read_text() == before


def test_no_duplicate_tensorboard_steps_after_resume(tmp_path, monkeypatch):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    config = small_config(tmp_path, iterations=4, eval_every=0, checkpoint_every=2)
    trainer = cory(config)
    real_step = trainer.step

    def dies_at_3(it):
        if it == 3:
            raise RuntimeError("killed")
        return real_step(it)

    monkeypatch.setattr(trainer, "step", dies_at_3)
    with pytest.raises(RuntimeError, match="killed"):
        trainer.train()  # logged iterations 0-2, the checkpoint holds 2
    cory(dataclasses.replace(config, resume=True)).train()
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    steps = [e.step for e in events.Scalars("charts/reward")]
    assert steps == [0, 1, 2, 3]


# ------------------------------------------------------------------ 5. killed before the first checkpoint


@pytest.mark.parametrize("resume", [False, True])
def test_a_run_killed_before_its_first_checkpoint_starts_over(
    tmp_path, monkeypatch, capsys, resume
):
    config = small_config(tmp_path, iterations=2, eval_every=0, checkpoint_every=5)
    trainer = cory(config)
    monkeypatch.setattr(trainer, "step", lambda it: (_ for _ in ()).throw(RuntimeError("killed")))
    with pytest.raises(RuntimeError):
        trainer.train()
    assert (tmp_path / "run" / "config.json").exists()
    monkeypatch.undo()
    rows = cory(dataclasses.replace(config, resume=resume)).train()
    assert [r["iteration"] for r in rows] == [0, 1]
    assert (
        "holds no checkpoint (its run stopped before the first one): starting that run over"
        in capsys.readouterr().out
    )


# ------------------------------------------------------------------ 6. a full disk


def test_a_full_disk_keeps_the_previous_checkpoint_and_removes_the_partial_one(
    tmp_path, monkeypatch
):
    root = tmp_path / "checkpoints"
    save_checkpoint(root, 1, {"w": torch.ones(3)})
    real = ckpt_module.save_file

    def full_disk(tensors, filename):
        real(tensors, filename)  # part of it is written, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ckpt_module, "save_file", full_disk)
    with pytest.raises(
        CheckpointError,
        match=r"the disk is full.*iter_000002.*MiB free.*previous checkpoint is kept",
    ):
        save_checkpoint(root, 2, {"w": torch.zeros(3)})
    assert sorted(p.name for p in root.iterdir()) == ["iter_000001"]  # no .tmp left behind
    assert torch.equal(load_checkpoint(root / "iter_000001")[1]["w"], torch.ones(3))


# ------------------------------------------------------------------ 7. bad values, refused early


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_new_tokens", 0),
        ("min_new_tokens", 0),
        ("mini_batch_size", 32),
        ("cliprange", -0.2),
        ("cliprange_value", 0.0),
        ("gamma", 1.5),
        ("gamma", -0.1),
        ("lam", -0.1),
        ("lam", 2.0),
        ("init_kl_coef", -1.0),
        ("vf_coef", float("nan")),
        ("max_grad_norm", 0.0),
        ("target_kl", -1.0),
        ("score_clip", 0.0),
        ("lora_r", 0),
        ("keep_checkpoints", 0),
        ("max_nonfinite_steps", 0),
        ("num_samples", -1),
        ("target", float("inf")),
        ("horizon", 0.0),
    ],
)
def test_silently_accepted_values_are_refused(field, value):
    with pytest.raises(ValueError, match=field):
        TrainConfig(**{field: value})


def test_min_above_max_new_tokens_is_refused():
    with pytest.raises(ValueError, match="min_new_tokens"):
        TrainConfig(min_new_tokens=9, max_new_tokens=4)


def test_an_unknown_preset_is_the_clis_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_:
        parse("", ["--preset", "imdb-gpt9"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "unknown --preset 'imdb-gpt9'" in err and "Traceback" not in err


def test_an_empty_model_folder_and_an_empty_gguf_get_clear_messages(tmp_path):
    from agents.policy import ModelNotFoundError, load_model

    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFoundError, match="no config.json"):
        load_model(tmp_path / "empty")
    (tmp_path / "m.gguf").write_bytes(b"")
    with pytest.raises(ModelNotFoundError, match=r"empty \(0 bytes\)"):
        load_model(tmp_path / "m.gguf")
    (tmp_path / "bad.gguf").write_bytes(b"not a gguf file")
    with pytest.raises(ModelNotFoundError, match="not a GGUF file"):
        load_model(tmp_path / "bad.gguf")


@pytest.mark.parametrize(
    ("kw", "error", "match"),
    [
        ({"output_dir": "FILE"}, NotADirectoryError, "is a file"),
        ({"task": "imdb", "task_path": "missing.csv"}, FileNotFoundError, "missing.csv"),
        ({"reward": "vaderr"}, ValueError, "unknown reward 'vaderr'"),
        ({"task": "gsm8k", "task_path": "EMPTY"}, ValueError, "EMPTY.jsonl"),
    ],
)
def test_inputs_are_checked_before_the_model_loads(tmp_path, monkeypatch, kw, error, match):
    (tmp_path / "FILE").write_text("not a folder")
    (tmp_path / "EMPTY.jsonl").write_text("")
    names = {"FILE": "FILE", "missing.csv": "missing.csv", "EMPTY": "EMPTY.jsonl"}
    kw = {k: str(tmp_path / names[v]) if v in names else v for k, v in kw.items()}
    config = small_config(tmp_path, **{"model": "no/such-model-anywhere", **kw})
    from agents.run import setup

    monkeypatch.setattr(setup, "load_model", lambda *a, **k: pytest.fail("the model was loaded"))
    with pytest.raises(error, match=match):
        CoryTrainer(config)


# ------------------------------------------------------------------ 8. one-line errors, signals


def test_the_cli_prints_one_line_and_keeps_the_traceback_in_the_run_folder(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()

    def main(argv):
        raise ValueError("bad input, and what to do")

    code = run_main(main, ["--output-dir", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1
    assert (
        err[0].startswith("error: bad input, and what to do (traceback in ") and "--debug" in err[0]
    )
    assert "Traceback" in (out / "error.log").read_text()
    with pytest.raises(ValueError):
        run_main(main, ["--output-dir", str(out), "--debug"])


def test_a_deepspeed_launch_is_refused_in_one_line_before_the_run_starts(
    tmp_path, capsys, monkeypatch
):
    """accelerate's DeepSpeed launcher sets ACCELERATE_USE_DEEPSPEED: without the refusal the
    run would be plain data parallelism under a ZeRO config, silently."""
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    ran = []
    code = run_main(ran.append, ["--output-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and ran == [] and len(err) == 1
    assert "DeepSpeed launches are not supported" in err[0] and "fsdp_zero2.yaml" in err[0]


SIGTERM_SCRIPT = textwrap.dedent("""
    import os, signal, sys
    import torch
    torch.set_num_threads(1)  # as the tests' conftest: the same numbers as the in-process runs
    from helpers.configs import small_config
    from helpers.tiny import tiny_model, tiny_tokenizer
    from agents.cory import CoryTrainer
    from agents.run.cli import run_main
    from pathlib import Path

    trainer = CoryTrainer(small_config(Path(sys.argv[1]), iterations=4, eval_every=0),
                          model=tiny_model(), tokenizer=tiny_tokenizer())
    step = trainer.step
    def step_then_sigterm(it):
        metrics = step(it)
        if it == 1:
            os.kill(os.getpid(), signal.SIGTERM)
        return metrics
    trainer.step = step_then_sigterm
    sys.exit(run_main(lambda argv: trainer.train(), [], output_dir=sys.argv[1]))
""")


def test_sigterm_stops_after_the_step_with_a_checkpoint_and_one_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-c", SIGTERM_SCRIPT, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])},
    )
    assert proc.returncode == 128 + 15, proc.stderr
    lines = [x for x in proc.stderr.splitlines() if "stopped by SIGTERM" in x]
    assert len(lines) == 1 and "after iteration 1" in lines[0] and "--resume" in lines[0]
    assert "Traceback" not in proc.stderr
    assert [p.name for p in checkpoints(tmp_path / "run" / "checkpoints")] == [
        "iter_000001",
        "iter_000002",
    ]
    config = small_config(tmp_path, iterations=4, eval_every=0)
    resumed = cory(dataclasses.replace(config, resume=True)).train()
    full = cory(small_config(tmp_path / "full", iterations=4, eval_every=0)).train()
    assert without_timing(resumed) == without_timing(full)


def test_ppo_baseline_checkpoints_in_the_same_format(tmp_path):
    config = small_config(tmp_path, iterations=2, eval_every=0)
    SingleAgentTrainer(config, model=tiny_model(), tokenizer=tiny_tokenizer()).train(stop_after=1)
    iteration, state = load_checkpoint(tmp_path / "run" / "checkpoints" / "iter_000001")
    assert iteration == 1 and set(state["trainer"]["learners"]) == {"policy"}
    rows = SingleAgentTrainer(
        dataclasses.replace(config, resume=True), model=tiny_model(), tokenizer=tiny_tokenizer()
    ).train()
    assert [r["iteration"] for r in rows] == [0, 1]
    assert np.isfinite(rows[-1]["policy/ppo/loss/total"])
