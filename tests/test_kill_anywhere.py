"""``kill -9`` anywhere (``bench/kill_anywhere.py``): a tiny-model run SIGKILLed at random
moments and resumed each time finishes with the uninterrupted run's metrics and weights, and
the comparison it makes does see a run that differs."""

from __future__ import annotations

import random
import time

import pytest
from helpers.scripts import load_script


@pytest.mark.slow
def test_random_sigkills_lose_nothing(tmp_path):
    bench = load_script("bench/kill_anywhere.py")
    model = bench.tiny_model_folder(tmp_path / "model")
    reference = tmp_path / "reference"
    start = time.perf_counter()
    code, err = bench.run_to_end(bench.command(model, reference, 4))
    life = time.perf_counter() - start
    assert code == 0, err
    want = bench.finished_state(reference)
    assert len(want[0]) >= 4 and want[1]  # a row per iteration (and evaluations), weights
    out = tmp_path / "killed"
    rounds = bench.kill_rounds(
        bench.command(model, out, 4), out, want, life, kills=4, rng=random.Random(1)
    )
    assert rounds["kills"] == 4 and rounds["lost"] == 0, rounds
    assert bench.same(bench.finished_state(out), want)
    # a run that differs (another seed) is seen as different
    other = tmp_path / "other"
    code, err = bench.run_to_end([*bench.command(model, other, 4), "--seed", "1"])
    assert code == 0, err
    assert not bench.same(bench.finished_state(other), want)
