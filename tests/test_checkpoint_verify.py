"""Verified checkpoints with fallback: every file's size and sha256 in ``state.json``; a
damaged newest checkpoint (short, empty, changed or missing files, a missing, unreadable,
unparsable or changed ``state.json``; a sharded run's per-process file) is set aside and
the run resumes from the newest intact one, with one line; none intact is one clear error
naming the files, and nothing is renamed."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from helpers.configs import small_config
from helpers.launch import launch, untimed
from helpers.tiny import tiny_model, tiny_tokenizer
from helpers.two_ranks import as_two_ranks, threaded_gather

from agents.cory import CoryTrainer
from agents.distributed import Shard, World
from agents.errors import CheckpointError
from agents.run import checkpoint as ckpt_module
from agents.run.checkpoint import (
    checkpoint_folders,
    checkpoints,
    intact_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from agents.run.cli import run_main
from agents.run.config import TrainConfig
from agents.run.integrity import verify_checkpoint
from agents.run.run_log import read_jsonl

TIMING = ("charts/rollout_s", "charts/iteration_s")


def cory(config: TrainConfig) -> CoryTrainer:
    return CoryTrainer(config, model=tiny_model(), tokenizer=tiny_tokenizer())


def untimed_rows(rows):
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


def config_at(base: Path, **kw) -> TrainConfig:
    return small_config(base, iterations=4, eval_every=0, keep_checkpoints=3, **kw)


def copy_run(trained: Path, dest: Path) -> TrainConfig:
    """The trained run copied to ``dest/run`` (its config naming that folder), to resume."""
    shutil.copytree(trained / "run", dest / "run")
    path = dest / "run" / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "output_dir": str(dest / "run")}))
    return config_at(dest, resume=True)


def resumed(config: TrainConfig) -> tuple[list[dict], list[torch.Tensor]]:
    """The resumed run's metric rows (untimed) and final trainable weights."""
    trainer = cory(config)
    rows = trainer.train()
    params = [
        p.detach().clone()
        for lr in trainer.learners.values()
        for p in lr.agent.trainable_parameters()
    ]
    return untimed_rows(rows), params


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A 4-iteration run stopped after 3, holding iter_000001..3."""
    base = tmp_path_factory.mktemp("trained")
    cory(config_at(base)).train(stop_after=3)
    return base


@pytest.fixture(scope="module")
def from_iter_2(trained, tmp_path_factory) -> tuple[list[dict], list[torch.Tensor]]:
    """What resuming from iter_000002 gives (the run's copy without iter_000003)."""
    dest = tmp_path_factory.mktemp("reference")
    config = copy_run(trained, dest)
    shutil.rmtree(dest / "run" / "checkpoints" / "iter_000003")
    return resumed(config)


def _truncate(folder: Path) -> None:
    path = folder / "tensors.safetensors"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _flip(folder: Path) -> None:
    path = folder / "tensors.safetensors"
    data = bytearray(path.read_bytes())
    data[-100] ^= 0x01  # a bit inside the data, the header intact
    path.write_bytes(bytes(data))


def _edit_state(folder: Path) -> None:
    path = folder / "state.json"
    text = path.read_text()
    path.write_text(text.replace('"iteration": 3', '"iteration": 4', 1))  # still valid JSON


def _unrecorded_and_short(folder: Path) -> None:
    """A checkpoint as a version without digests wrote it, then cut short."""
    path = folder / "state.json"
    meta = json.loads(path.read_text())
    del meta["files"], meta["state_sha256"]
    path.write_text(json.dumps(meta))
    _truncate(folder)


DAMAGE = {
    "truncated": (_truncate, r"tensors\.safetensors is \d+ bytes where state\.json records \d+"),
    "emptied": (
        lambda f: (f / "tensors.safetensors").write_bytes(b""),
        r"tensors\.safetensors is 0 bytes where state\.json records \d+",
    ),
    "byte flipped": (_flip, r"tensors\.safetensors's sha256 differs from the one state\.json"),
    "tensors missing": (
        lambda f: (f / "tensors.safetensors").unlink(),
        r"tensors\.safetensors is missing",
    ),
    "state.json missing": (lambda f: (f / "state.json").unlink(), r"state\.json is missing"),
    "state.json garbage": (
        lambda f: (f / "state.json").write_text('{"format": "cory-check'),
        r"state\.json is not JSON \(Unterminated string",
    ),
    "state.json unreadable": (
        lambda f: (f / "state.json").write_bytes(b"\xff\xfe\x00garbage"),
        r"state\.json cannot be read",
    ),
    "state.json changed": (_edit_state, r"state\.json changed after it was written"),
    "unrecorded and short": (
        _unrecorded_and_short,
        r"tensors\.safetensors is not a whole safetensors file \(.*incomplete metadata",
    ),
}


@pytest.mark.parametrize("case", list(DAMAGE))
def test_a_damaged_newest_checkpoint_is_set_aside_and_the_run_resumes_from_the_one_before(
    trained, from_iter_2, tmp_path, capsys, case
):
    damage, reason = DAMAGE[case]
    config = copy_run(trained, tmp_path)
    root = tmp_path / "run" / "checkpoints"
    damage(root / "iter_000003")
    capsys.readouterr()
    rows, params = resumed(config)
    expected_rows, expected_params = from_iter_2
    assert rows == expected_rows and [r["iteration"] for r in rows] == [0, 1, 2, 3]
    assert all(torch.equal(a, b) for a, b in zip(params, expected_params, strict=True))
    lines = [x for x in capsys.readouterr().out.splitlines() if "checkpoint" in x]
    assert len(lines) == 1, lines
    assert lines[0].startswith("skipping checkpoint iter_000003: ")
    assert lines[0].endswith("(set aside as damaged-iter_000003); resuming from iter_000002")
    assert re.search(reason, lines[0]), lines[0]
    aside = root / "damaged-iter_000003"  # renamed, not deleted; not counted by the rotation
    assert re.search(reason, (aside / "reason.txt").read_text())
    assert [p.name for p in checkpoints(root)] == ["iter_000002", "iter_000003", "iter_000004"]
    assert verify_checkpoint(root / "iter_000003") is None  # written anew by the resumed run


def test_two_damaged_checkpoints_are_named_on_one_line_and_the_third_resumes(
    trained, from_iter_2, tmp_path, capsys
):
    config = copy_run(trained, tmp_path)
    root = tmp_path / "run" / "checkpoints"
    size = (root / "iter_000003" / "tensors.safetensors").stat().st_size
    (root / "iter_000003" / "tensors.safetensors").write_bytes(b"")
    (root / "iter_000002" / "state.json").unlink()
    capsys.readouterr()
    rows, params = resumed(config)
    # resuming from any checkpoint reproduces the run: from iter_000001 as from iter_000002
    assert rows == from_iter_2[0]
    assert all(torch.equal(a, b) for a, b in zip(params, from_iter_2[1], strict=True))
    lines = [x for x in capsys.readouterr().out.splitlines() if "checkpoint" in x]
    assert lines == [
        "skipping checkpoint iter_000003: tensors.safetensors is 0 bytes where state.json "
        f"records {size} (set aside as damaged-iter_000003); skipping checkpoint iter_000002: "
        "state.json is missing (set aside as damaged-iter_000002); resuming from iter_000001"
    ]


def test_no_intact_checkpoint_is_one_line_naming_each_file_and_nothing_is_renamed(
    trained, tmp_path, capsys
):
    config = copy_run(trained, tmp_path)
    root = tmp_path / "run" / "checkpoints"
    (root / "iter_000003" / "tensors.safetensors").write_bytes(b"")
    (root / "iter_000002" / "state.json").write_text("{")
    (root / "iter_000001" / "tensors.safetensors").unlink()
    with pytest.raises(CheckpointError) as caught:
        cory(config)
    message = str(caught.value)
    assert message.startswith(f"no intact checkpoint to resume from in {root}: ")
    for named in (
        "iter_000003/tensors.safetensors is 0 bytes",
        "iter_000002/state.json is not JSON",
        "iter_000001/tensors.safetensors is missing",
    ):
        assert named in message
    assert [p.name for p in checkpoint_folders(root)] == [
        "iter_000001",
        "iter_000002",
        "iter_000003",
    ]
    assert not list(root.glob("damaged-*"))
    code = run_main(lambda argv: cory(config).train(), ["--output-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and err[0].startswith("error: no intact checkpoint")
    assert "Traceback" not in err[0]


def test_state_json_records_each_files_size_and_sha256_and_its_own(tmp_path):
    folder = save_checkpoint(tmp_path, 1, {"w": torch.arange(6.0)})
    text = (folder / "state.json").read_text()
    meta = json.loads(text)
    data = (folder / "tensors.safetensors").read_bytes()
    assert meta["files"] == {
        "tensors.safetensors": {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    }
    tail = f', "state_sha256": "{meta["state_sha256"]}"}}'
    assert text.endswith(tail)
    assert meta["state_sha256"] == hashlib.sha256((text[: -len(tail)] + "}").encode()).hexdigest()


def test_loading_a_damaged_checkpoint_directly_is_a_checkpoint_error_naming_the_file(tmp_path):
    folder = save_checkpoint(tmp_path, 1, {"w": torch.arange(6.0)})
    (folder / "tensors.safetensors").write_bytes(b"\0" * 8)
    with pytest.raises(CheckpointError, match=r"iter_000001: tensors\.safetensors is 8 bytes"):
        load_checkpoint(folder)


def test_a_checkpoint_without_digests_still_loads(tmp_path):
    folder = save_checkpoint(tmp_path, 1, {"w": torch.arange(6.0)})
    meta = json.loads((folder / "state.json").read_text())
    del meta["files"], meta["state_sha256"]
    (folder / "state.json").write_text(json.dumps(meta))
    assert verify_checkpoint(folder) is None
    iteration, state = load_checkpoint(folder)
    assert iteration == 1 and torch.equal(state["w"], torch.arange(6.0))


def test_a_run_over_damaged_checkpoints_without_resume_is_still_refused(tmp_path):
    save_checkpoint(tmp_path / "run" / "checkpoints", 1, {"w": torch.ones(2)})
    (tmp_path / "run" / "checkpoints" / "iter_000001" / "state.json").unlink()
    with pytest.raises(FileExistsError, match="already holds a run.*iter_000001"):
        cory(small_config(tmp_path))


# ------------------------------------------------------------------ sharded (per-process files)


def two_processes(monkeypatch, fn) -> list:
    """``fn(world)`` as ranks 0 and 1 of a 2-process sharded world, in two threads whose
    ``gather`` meets at a barrier; each rank's result, or its exception."""
    monkeypatch.setattr(ckpt_module, "gather", threaded_gather())
    return as_two_ranks(
        lambda rank: fn(World(2, rank, "MULTI_CPU", fsdp=True, sharded_checkpoints=True))
    )


def sharded_state(iteration: int, rank: int) -> dict:
    return {"w": Shard(torch.full((3,), 10.0 * iteration + rank)), "b": torch.ones(2) * iteration}


def test_a_sharded_checkpoint_records_every_processs_file_and_a_damaged_one_falls_back(
    tmp_path, monkeypatch
):
    root = tmp_path / "checkpoints"
    for it in (1, 2):
        two_processes(
            monkeypatch,
            lambda w, it=it: save_checkpoint(root, it, sharded_state(it, w.rank), world=w),
        )
    meta = json.loads((root / "iter_000002" / "state.json").read_text())
    rank1 = (root / "iter_000002" / "tensors.rank1.safetensors").read_bytes()
    assert set(meta["files"]) == {"tensors.safetensors", "tensors.rank1.safetensors"}
    assert meta["files"]["tensors.rank1.safetensors"]["sha256"] == hashlib.sha256(rank1).hexdigest()
    (root / "iter_000002" / "tensors.rank1.safetensors").write_bytes(rank1[: len(rank1) - 4])
    # the process that reads the damaged file refuses it; process 0 does not read it
    loads = two_processes(monkeypatch, lambda w: load_checkpoint(root / "iter_000002", w))
    assert loads[0][1]["w"].tolist() == [20.0] * 3
    assert isinstance(loads[1], CheckpointError)
    assert "tensors.rank1.safetensors is" in str(loads[1])
    said: list[str] = []
    assert intact_checkpoint(root, say=said.append) == root / "iter_000001"  # process 0 checks all
    assert said == [
        f"skipping checkpoint iter_000002: tensors.rank1.safetensors is {len(rank1) - 4} bytes "
        f"where state.json records {len(rank1)} (set aside as damaged-iter_000002); "
        "resuming from iter_000001"
    ]
    loads = two_processes(monkeypatch, lambda w: load_checkpoint(root / "iter_000001", w))
    assert [state["w"].tolist() for _, state in loads] == [[10.0] * 3, [11.0] * 3]


@pytest.mark.slow
def test_a_two_process_sharded_run_resumes_past_a_damaged_per_process_file(tmp_path):
    sharded = ("--fsdp_state_dict_type", "SHARDED_STATE_DICT")
    args = ("cory", "--mode", "full", "--iterations", "3")
    launch(tmp_path / "whole", *args, config="cpu_fsdp.yaml")
    launch(tmp_path / "cut", *args, "--stop-after", "2", config="cpu_fsdp.yaml", launcher=sharded)
    root = tmp_path / "cut" / "run" / "checkpoints"
    (root / "iter_000002" / "tensors.rank1.safetensors").write_bytes(b"")
    launch(tmp_path / "cut", *args, "--resume", config="cpu_fsdp.yaml", launcher=sharded)
    assert (
        "tensors.rank1.safetensors is 0 bytes"
        in (root / "damaged-iter_000002" / "reason.txt").read_text()
    )
    assert untimed(read_jsonl(tmp_path / "cut" / "run" / "metrics.jsonl")) == untimed(
        read_jsonl(tmp_path / "whole" / "run" / "metrics.jsonl")
    )
