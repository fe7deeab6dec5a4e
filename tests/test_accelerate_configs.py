"""Every shipped ``configs/accelerate/*.yaml`` as accelerate's own launcher reads it (its
argument parser, its config-file validation and the environment it hands each process;
no process started, so the GPU configs are checked on a machine without GPUs too), and
what the library then does with that environment: FSDP or not, sharded checkpoints or
whole, only process 0 reading the weights or every process, the FSDP layout."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agents.distributed import fsdp_requested, refuse_deepspeed, sharded_checkpoints_requested
from agents.policy.sharding import _plugin

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs" / "accelerate").glob("*.yaml"))

# name -> (processes, FSDP, sharded checkpoints, reshard after forward)
EXPECTED = {
    "cpu_ddp": (2, False, False, None),
    "gpu_ddp": (8, False, False, None),
    "cpu_fsdp": (2, True, False, True),
    "fsdp": (8, True, True, True),
    "fsdp_zero2": (8, True, True, False),
}


def _launch_env(config: Path) -> tuple[int, bool, dict[str, str]]:
    """``(processes, multi_gpu, environment)`` accelerate's launcher would start each process with."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import prepare_multi_gpu_env

    args = launch_command_parser().parse_args(["--config_file", str(config), "scripts/run_cory.py"])
    args, _, _ = _validate_launch_command(args)
    return args.num_processes, bool(args.multi_gpu), prepare_multi_gpu_env(args)


def test_every_shipped_config_is_expected():
    assert sorted(c.stem for c in CONFIGS) == sorted(EXPECTED)


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c.stem)
def test_the_launcher_reads_each_config_into_what_the_library_acts_on(config, monkeypatch):
    processes, fsdp, sharded, reshard = EXPECTED[config.stem]
    n, multi_gpu, env = _launch_env(config)
    assert n == processes
    assert multi_gpu == (not fsdp)  # DDP configs start N processes (multi_gpu, gloo without GPUs)
    for key in [k for k in os.environ if k.startswith(("FSDP_", "ACCELERATE_USE_"))]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    refuse_deepspeed()  # no shipped config is a DeepSpeed one
    assert fsdp_requested() == fsdp
    assert sharded_checkpoints_requested() == sharded
    if fsdp:
        plugin = _plugin()
        assert plugin.fsdp_version == 2 and plugin.cpu_ram_efficient_loading is True
        assert plugin.reshard_after_forward is reshard
