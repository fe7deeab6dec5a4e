"""scripts/sweep.py's method table: PPO at twice the batch, the method's flags after the
sweep's own, and bf16 arms refused where the CPU emulates bf16."""

from __future__ import annotations

import pytest
from helpers.scripts import load_script

from agents.run.config import TrainConfig


@pytest.fixture
def sweep():
    return load_script("scripts/sweep.py")


def flag(cmd: list[str], name: str) -> list[str]:
    return [cmd[i + 1] for i, c in enumerate(cmd) if c == name]


def test_twice_the_batch_doubles_the_sweeps_batch_or_the_default(sweep, tmp_path):
    cmd = sweep.command(tmp_path, "ppo-2x-batch", 0, ["--batch-size", "12"])
    assert flag(cmd, "--batch-size") == ["12", "24"]  # the last one is the run's
    assert "scripts/run_ppo.py" in " ".join(cmd)
    cmd = sweep.command(tmp_path, "ppo-2x-batch", 0, ["--batch-size=5"])
    assert flag(cmd, "--batch-size") == ["10"]
    cmd = sweep.command(tmp_path, "ppo-2x-batch", 1, [])
    assert flag(cmd, "--batch-size") == [str(2 * TrainConfig.batch_size)]
    assert "--batch-size=2x" not in cmd


def test_a_methods_flags_come_after_the_sweeps_so_they_win(sweep, tmp_path):
    cmd = sweep.command(tmp_path, "cory-bf16", 2, ["--dtype", "fp32", "--iterations", "3"])
    assert flag(cmd, "--dtype") == ["fp32", "bf16"]
    assert str(tmp_path / "cory-bf16" / "seed_2") in cmd


def test_bf16_arms_are_refused_where_bf16_is_emulated(sweep, tmp_path, monkeypatch, capsys):
    from agents.policy import loading

    monkeypatch.setattr(loading, "computes_natively", lambda dtype, device="cpu": False)
    with pytest.raises(SystemExit):
        sweep.main([str(tmp_path), "--methods", "cory", "cory-bf16", "--seeds", "0"])
    assert "cory-bf16: this machine emulates bf16" in capsys.readouterr().err
    assert not (tmp_path / "cory").exists()  # nothing ran
    sweep.main(
        [str(tmp_path), "--methods", "cory-bf16", "--seeds", "0", "--print"]
    )  # printing is fine
    assert "--dtype bf16" in capsys.readouterr().out
    seen = []
    monkeypatch.setattr(
        loading,
        "computes_natively",
        lambda dtype, device="cpu": seen.append((dtype, device)) or True,
    )
    assert sweep.bf16_is_native(["--device", "cuda:1", "--seed", "3"]) and seen == [
        ("bf16", "cuda:1")
    ]
