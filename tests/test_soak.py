"""A short soak (``bench/soak.py``): a tiny-model run checkpointing every iteration keeps its
descriptors, its checkpoints on disk and its memory flat, and logs one row per iteration; the
figures are computed from samples as the bench computes them."""

from __future__ import annotations

import pytest
from helpers.scripts import load_script


def test_soak_figures_from_hand_made_samples(tmp_path):
    bench = load_script("bench/soak.py")
    (tmp_path / "metrics.jsonl").write_text(
        "".join(f'{{"iteration": {i}, "charts/iteration_s": 1.0}}\n' for i in range(20))
    )
    samples = [
        {
            "rss_kib": 1000 + (100 if i >= 15 else 0),
            "fds": 5 + (i % 2) + (1 if i >= 14 else 0),
            "checkpoints": 2,
            "state_bytes": 4096,
            "logs_bytes": 1024 * i,
            "iteration": i,
        }
        for i in range(20)
    ]
    out = bench.figures(samples, tmp_path, 20, 3.0)
    # warm-up: iterations >= 2, 18 samples; tenths of one sample: 1000 KiB, then 1100 KiB
    assert out["rss_growth"] == pytest.approx(0.1)
    assert out["fd_growth"] == 1 and out["fd_range"] == 2  # a leak of one, not the mid-write one
    assert out["max_checkpoints"] == 2 and out["state_mib_growth"] == 0.0
    assert out["logs_kib_per_iteration"] == pytest.approx(1.0)
    assert out["rows_one_per_iteration"] is True
    (tmp_path / "metrics.jsonl").write_text('{"iteration": 0, "charts/iteration_s": 1.0}\n' * 20)
    assert bench.figures(samples, tmp_path, 20, 3.0)["rows_one_per_iteration"] is False


def test_a_look_survives_files_removed_and_lines_torn_mid_write(tmp_path, monkeypatch):
    """A checkpoint rotated out while the folder is measured is gone, not an exited run; a
    metrics line caught mid-write is not a row yet."""
    import os

    bench = load_script("bench/soak.py")
    (tmp_path / "checkpoints" / "iter_000001").mkdir(parents=True)
    (tmp_path / "checkpoints" / "iter_000001" / "state.json").write_text("x" * 10)
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "w.bin").write_text("y" * 7)
    (tmp_path / "metrics.jsonl").write_text('{"iteration": 0, "charts/iteration_s": 1.0}\n{"iter')
    stat = os.stat

    def gone(path, *a, **k):
        if str(path).endswith("state.json"):
            raise FileNotFoundError(path)
        return stat(path, *a, **k)

    monkeypatch.setattr(bench.os, "stat", gone)
    look = bench.sample(os.getpid(), tmp_path)
    assert look["state_bytes"] == 7 and look["iteration"] == 1 and look["checkpoints"] == 1


@pytest.mark.slow
def test_a_short_soak_stays_flat():
    bench = load_script("bench/soak.py")
    out = bench.main(bench.Args(iterations=40, every=0.5))
    assert out["rows_one_per_iteration"] is True
    assert out["fd_growth"] <= 0 and out["max_checkpoints"] <= bench.KEEP + 1
    assert out["state_mib_growth"] == pytest.approx(0.0, abs=0.01)
    assert out["rss_growth"] < 0.05, out
