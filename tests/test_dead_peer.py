"""A dead or hung peer in a 2-process data-parallel run (gloo, the tiny model): the survivor
stops within a bounded time with one line saying what happened and how to resume, and the
run folder resumes.

Each process is started by the test with the environment ``torchrun`` gives its workers, as
on two machines: a launcher on one machine sees only its own process, so nothing but the
collective tells the survivor that its peer is gone (``torchrun`` on one machine also stops
the others once a process dies)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from helpers.launch import ROOT, free_port, untimed

from agents.distributed import DEFAULT_COLLECTIVE_TIMEOUT
from agents.errors import PeerLostError
from agents.run.checkpoint import checkpoints
from agents.run.config import TrainConfig
from agents.run.run_log import read_jsonl

WORKER = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    import torch
    torch.set_num_threads(1)
    from helpers.configs import small_config
    from helpers.tiny import tiny_model, tiny_tokenizer
    from agents.cory import CoryTrainer
    from agents.run.cli import run_main

    out, stall_rank, stall_at, timeout = Path(sys.argv[1]), *map(int, sys.argv[2:5])
    rank = int(os.environ["RANK"])

    def main(argv):
        config = small_config(out, iterations=4, eval_every=0, collective_timeout=timeout,
                              resume="--resume" in argv)
        trainer = CoryTrainer(config, model=tiny_model(), tokenizer=tiny_tokenizer())
        step = trainer.step
        def step_or_stall(it):  # the stalled process sleeps until the test kills it
            if rank == stall_rank and it == stall_at:
                (out / "stalled").write_text(str(os.getpid()))
                time.sleep(3600)
            return step(it)
        trainer.step = step_or_stall
        return trainer.train()

    sys.exit(run_main(main, sys.argv[5:], output_dir=str(out / "run")))
""")


def start(out: Path, stall_rank: int, stall_at: int, timeout: int, *flags: str) -> list:
    """The two processes of a tiny CORY run of 4 iterations in ``out/run``, process
    ``stall_rank`` stalling at the start of iteration ``stall_at`` (-1: none); each one's
    stdout and stderr in ``out/<stream><rank>.txt``."""
    out.mkdir(parents=True, exist_ok=True)
    port = str(free_port())
    args = [str(out), str(stall_rank), str(stall_at), str(timeout), *flags]
    procs = []
    for rank in (0, 1):
        env = {
            **os.environ,
            "OMP_NUM_THREADS": "1",
            "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), str(ROOT)]),
            **dict(MASTER_ADDR="127.0.0.1", MASTER_PORT=port, WORLD_SIZE="2"),
            **dict(RANK=str(rank), LOCAL_RANK="0", LOCAL_WORLD_SIZE="1"),
        }
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", WORKER, *args],
                cwd=ROOT,
                env=env,
                stdout=(out / f"stdout{rank}.txt").open("w"),
                stderr=(out / f"stderr{rank}.txt").open("w"),
            )
        )
    return procs


def stalled_pid(out: Path, procs: list, within: float = 600.0) -> int:
    """The pid of the process that stalled, once it has (``within`` seconds at most)."""
    marker, end = out / "stalled", time.monotonic() + within
    while not marker.is_file() or not marker.read_text():
        finished = [p.args[-1] for p in procs if p.poll() is not None]
        assert not finished and time.monotonic() < end, stderr(out, 0) + stderr(out, 1)
        time.sleep(0.05)
    return int(marker.read_text())


def stderr(out: Path, rank: int) -> str:
    return (out / f"stderr{rank}.txt").read_text()


def seconds_to_exit(proc, timeout: float) -> float:
    t0 = time.monotonic()
    proc.wait(timeout=timeout)
    return time.monotonic() - t0


def end(procs: list) -> None:
    """Every process of ``procs`` ended (killed where still running)."""
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait()


def test_the_default_collective_timeout_is_the_configs():
    assert TrainConfig().collective_timeout == DEFAULT_COLLECTIVE_TIMEOUT


@pytest.mark.slow
def test_a_killed_peer_stops_the_other_at_once_and_the_run_resumes(tmp_path):
    timeout = 60
    procs = start(tmp_path, 1, 2, timeout)
    try:
        victim = stalled_pid(tmp_path, procs)
        run = tmp_path / "run"
        assert [p.name for p in checkpoints(run / "checkpoints")] == ["iter_000001", "iter_000002"]
        assert victim == procs[1].pid
        os.kill(victim, signal.SIGKILL)
        seconds = seconds_to_exit(procs[0], timeout)
    finally:
        end(procs)
    err = stderr(tmp_path, 0)
    print(f"\nthe survivor of a killed peer exited {seconds:.2f} s after the kill")
    assert procs[0].returncode == 1 and seconds < timeout / 2
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: a peer process (rank 1) died"), err[-2000:]
    assert "this process (rank 0) stops too" in last and "with --resume" in last
    assert "Traceback" not in err
    assert "PeerLostError" in (run / "error.log").read_text()
    before = read_jsonl(run / "metrics.jsonl")
    assert [r["iteration"] for r in before] == [0, 1]

    resumed = start(tmp_path, -1, -1, timeout, "--resume")
    try:
        for p in resumed:
            p.wait(timeout=600)
    finally:
        end(resumed)
    assert [p.returncode for p in resumed] == [0, 0], stderr(tmp_path, 0)[-3000:]
    rows = read_jsonl(run / "metrics.jsonl")
    assert [r["iteration"] for r in rows] == [0, 1, 2, 3]
    assert untimed(rows[:2]) == untimed(before)
    resumes = [e for e in read_jsonl(run / "events.jsonl") if e.get("event") == "resume"]
    assert [e["iteration"] for e in resumes] == [2]


@pytest.mark.slow
def test_a_hung_peer_stops_the_other_after_the_collective_timeout(tmp_path):
    timeout = 10
    procs = start(tmp_path, 0, 1, timeout)
    try:
        stalled_pid(tmp_path, procs)
        seconds = seconds_to_exit(procs[1], timeout + 60)
    finally:
        end(procs)
    err = stderr(tmp_path, 1)
    print(f"\nthe survivor of a hung peer exited {seconds:.2f} s after the peer stalled")
    assert procs[1].returncode == 1 and timeout - 1 < seconds < timeout + 30
    last = err.strip().splitlines()[-1]
    assert last.startswith(
        f"error: a peer process (rank 0) did not answer within --collective-timeout {timeout} s"
    ), err[-2000:]
    assert "this process (rank 1) stops too" in last and "with --resume" in last
    assert "Traceback" not in err
    assert [p.name for p in checkpoints(tmp_path / "run" / "checkpoints")] == ["iter_000001"]


CLOSED = "[gloo/transport/tcp/pair.cc:553] Connection closed by peer [127.0.0.1]:4229."
TIMED_OUT = "[gloo/transport/tcp/unbound_buffer.cc:78] Timed out waiting 5000ms for recv"


def in_group(monkeypatch, rank: int, size: int) -> None:
    """This process as ``rank`` of a process group of ``size``, as torch.distributed says."""
    import torch.distributed as dist

    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_rank", lambda: rank)
    monkeypatch.setattr(dist, "get_world_size", lambda: size)


def test_gloos_lost_peer_errors_become_one_line_naming_the_peer_and_resume(monkeypatch):
    in_group(monkeypatch, 1, 2)
    died = PeerLostError.of(RuntimeError(CLOSED), 60)
    assert str(died) == (
        "a peer process (rank 0) died: its connection closed during a collective; this process "
        "(rank 1) stops too. The run folder is resumable from its newest checkpoint: rerun the "
        "same launch with --resume"
    )
    hung = str(PeerLostError.of(RuntimeError(TIMED_OUT), 7.5))
    assert hung.startswith(
        "a peer process (rank 0) did not answer within --collective-timeout 7.5 s (it died or "
        "hung; if it was only slow, raise --collective-timeout); this process (rank 1)"
    )
    in_group(monkeypatch, 2, 4)
    assert str(PeerLostError.of(RuntimeError(CLOSED), 60)).startswith(
        "a peer process (one of the other 3) died"
    )


def test_other_errors_and_errors_outside_a_group_are_left_alone(monkeypatch):
    assert PeerLostError.of(RuntimeError(CLOSED), 60) is None  # no process group
    in_group(monkeypatch, 0, 2)
    assert PeerLostError.of(RuntimeError("shape mismatch"), 60) is None
    assert PeerLostError.of(ValueError(TIMED_OUT), 60) is None
    in_group(monkeypatch, 0, 1)
    assert PeerLostError.of(RuntimeError(CLOSED), 60) is None  # no peer to lose


def test_the_cli_reports_a_lost_peer_in_one_line_with_exit_code_1(monkeypatch, tmp_path, capsys):
    """A collective's failure outside agents.distributed's wrappers (FSDP's own) too."""
    from agents.run.cli import run_main

    def main(argv):
        in_group(monkeypatch, 0, 2)
        raise RuntimeError(CLOSED)

    (tmp_path / "run").mkdir()
    code = run_main(main, ["--output-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1
    assert err[0].startswith("error: a peer process (rank 1) died") and "--resume" in err[0]
    assert "Connection closed by peer" in (tmp_path / "run" / "error.log").read_text()
