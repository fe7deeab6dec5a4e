"""One writer per run folder: a second process starting or resuming a folder another
process holds is refused at once, naming that process; the lock dies with its holder (a
``kill -9`` leaves none); in a data-parallel run process 0 holds it and every process
hears the refusal."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from helpers.configs import small_config
from helpers.tiny import tiny_model, tiny_tokenizer
from helpers.two_ranks import as_two_ranks, threaded_gather

from agents.cory import CoryTrainer
from agents.distributed import World
from agents.run import resume as resume_module
from agents.run.cli import run_main
from agents.run.run_lock import LOCK_FILE, FolderInUse, hold_run_folder, release_run_folder

ROOT = Path(__file__).resolve().parents[1]
HOLD = textwrap.dedent("""
    import sys, time
    from agents.run.run_lock import hold_run_folder
    hold_run_folder(sys.argv[1])
    print("held", flush=True)
    if sys.argv[2] == "stay":
        time.sleep(300)
""")


def holder(folder: Path, stay: bool = True) -> subprocess.Popen:
    """A process that takes ``folder``'s lock (and, ``stay``, keeps it until killed)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(folder), "stay" if stay else "go"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    return proc


@pytest.fixture
def held(tmp_path):
    """``(folder, process)``: another process holds ``tmp_path/run``."""
    folder = tmp_path / "run"
    proc = holder(folder)
    assert proc.stdout.readline().strip() == "held", proc.stderr.read()
    yield folder, proc
    proc.kill()
    proc.wait()


def test_a_second_process_is_refused_naming_the_holder_and_a_kill_frees_the_lock(held):
    folder, proc = held
    with pytest.raises(FolderInUse) as caught:
        hold_run_folder(folder)
    message = str(caught.value)
    assert message.startswith(f"run folder {folder} is in use by process {proc.pid} on ")
    assert "hold_run_folder" in message and message.endswith(
        "wait for it to finish, or pass another --output-dir"
    )
    proc.kill()  # SIGKILL: the holder gets no chance to let go
    proc.wait()
    hold_run_folder(folder)  # free at once
    assert json.loads((folder / LOCK_FILE).read_text())["pid"] == os.getpid()
    hold_run_folder(folder)  # this process again: a no-op
    release_run_folder(folder)
    assert (folder / LOCK_FILE).read_text() == ""


def test_starting_or_resuming_a_held_folder_is_refused_before_anything_is_written(held, capsys):
    folder, proc = held
    for resume in (False, True):
        config = small_config(folder.parent, resume=resume)
        with pytest.raises(FolderInUse, match=rf"in use by process {proc.pid} "):
            CoryTrainer(config, model=tiny_model(), tokenizer=tiny_tokenizer())
    assert sorted(p.name for p in folder.iterdir()) == [LOCK_FILE]
    code = run_main(
        lambda argv: CoryTrainer(config, model=tiny_model(), tokenizer=tiny_tokenizer()),
        ["--output-dir", str(folder)],
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1
    assert err[0].startswith(f"error: run folder {folder} is in use by process {proc.pid} ")
    assert not (folder / "config.json").exists() and not (folder / "checkpoints").exists()


def test_a_run_holds_its_folder_while_it_trains_and_lets_it_go_when_it_ends(tmp_path):
    config = small_config(tmp_path, iterations=2, eval_every=0)
    trainer = CoryTrainer(config, model=tiny_model(), tokenizer=tiny_tokenizer())
    step, during = trainer.step, []

    def step_and_try(it):
        if it == 0:  # another process tries the folder while this one trains
            proc = holder(tmp_path / "run", stay=False)
            during.append((proc.wait(timeout=60), proc.stderr.read()))
        return step(it)

    trainer.step = step_and_try
    trainer.train()
    code, err = during[0]
    assert code == 1 and f"FolderInUse: run folder {tmp_path / 'run'} is in use by process " in err
    assert f"process {os.getpid()} " in err
    after = holder(tmp_path / "run", stay=False)
    assert after.wait(timeout=60) == 0 and after.stdout.read().strip() == "held"


def test_in_a_data_parallel_run_process_0_holds_the_lock_and_every_process_is_refused(
    held, monkeypatch
):
    folder, proc = held
    monkeypatch.setattr(resume_module, "gather", threaded_gather())
    taken: list = []
    monkeypatch.setattr(
        resume_module, "hold_run_folder", lambda out: (taken.append(out), hold_run_folder(out))
    )
    errors = as_two_ranks(
        lambda rank: resume_module.check_output(
            small_config(folder.parent), World(2, rank, "MULTI_CPU")
        )
    )
    assert taken == [folder]  # process 0 only
    assert [type(e) for e in errors] == [FolderInUse, FolderInUse]
    assert str(errors[0]) == str(errors[1]) and f"process {proc.pid} " in str(errors[1])
