"""bench/update.py on the tiny model: its phase split adds up and its counts are sane (the
bench prints measured ratios; no wall time is asserted)."""

from __future__ import annotations

import pytest
from helpers.scripts import load_script


def test_the_update_bench_splits_an_iteration_into_its_phases():
    bench = load_script("bench/update.py")
    out = bench.main(bench.Args(model="tiny", iterations=1, batch_size=4, mini_batch_size=2, ppo_epochs=1))
    for name in ("cory", "ppo"):
        parts = sum(out[f"{name}_{k}"] for k in ("rollout_s", "old_pass_s", "ref_pass_s", "optimisation_s"))
        assert parts == pytest.approx(out[f"{name}_iteration_s"], rel=1e-6)
        assert 0.0 <= out[f"{name}_padding_fraction"] < 1.0 and out[f"{name}_update_flops"] > 0
        assert out[f"{name}_old_pass_s"] > 0 and out[f"{name}_ref_pass_s"] > 0
    assert out["cory_update_flops"] > out["ppo_update_flops"]  # two updates, the observer's longer prompts
