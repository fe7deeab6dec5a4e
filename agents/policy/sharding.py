"""Fully sharded full-copy agents (FSDP2) through ``accelerate``'s FSDP configuration.

``accelerate launch --config_file configs/accelerate/fsdp.yaml ...`` (``distributed_type:
FSDP``) tells every process, through accelerate's ``ACCELERATE_USE_FSDP`` / ``FSDP_*``
environment, to shard. :func:`shard_agents` then hands each full-copy model, trained and
reference, to accelerate's own FSDP2 preparation (``fsdp2_prepare_model``: one FSDP unit per
decoder layer, the embeddings and head in their own, each parameter a ``DTensor`` holding
``1 / N`` of it); the plugin is built from that environment, so the config file's
``fsdp_reshard_after_forward``, ``fsdp_offload_params``, wrap policy and layer classes apply.
accelerate 1.15 prepares FSDP only on CUDA; calling its preparation directly also shards on
CPU processes (gloo), which is how the project tests it.

What changes for a sharded model (each point is a collective: every process calls it):

- the models are built on the CPU (:func:`agents.run.setup.loading_device`) and each process
  moves only its shards to its device, so no device ever holds a whole copy; with the
  config's ``fsdp_cpu_ram_efficient_loading: true`` (the shipped configs) only the main
  process reads the weights and the others' copies are empty until sharded
  (:func:`weights_from_main`): one whole copy per machine's CPU memory, not one per process;
- the gradient reduce-scatter *sums* (divide factor 1), as :func:`agents.distributed.
  sum_gradients` does for the other parameters, so the data-parallel loss weighting holds;
- :func:`agents.distributed.clip_grad_norm` takes the norm over sharded and plain gradients;
- :func:`model_state` / :func:`agents.distributed.full_state` gather weights and optimiser
  moments whole, to the main process's CPU memory, so checkpoints and exports keep their
  formats; loading distributes them back (:func:`load_model_state`,
  :func:`agents.distributed.load_full_state`). With the config's ``fsdp_state_dict_type:
  SHARDED_STATE_DICT`` checkpoints hold each process's shards instead (:func:`model_shards`,
  one file per process, :mod:`agents.run.checkpoint`); the exported ``models/`` stay whole;
- every forward is a collective, so an agent holds ``sharded_over`` (its world) and a
  rollout keeps decoding, its tokens discarded, until every process's turn is over;
- scoring runs padded, one forward per chunk (the packed path calls the head apart from the
  model's forward: tried, the process crashed with a segmentation fault on CPU).

- a process with fewer micro-batches than another (a token budget), or none of a
  mini-batch's rows (fewer rows than processes), runs weightless ones
  (:func:`agents.rl.optimise.optimise`), so every process runs as many forwards and
  backwards.

Refused with a message: LoRA (its frozen base is shared by the agents and switched per
call; use DDP).
"""

from __future__ import annotations

from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any, cast

import torch
from torch import nn

from agents.distributed import Shard, World, is_sharded, process_device
from agents.policy.loading import resolve_device

__all__ = [
    "check_sharding",
    "load_model_shards",
    "load_model_state",
    "model_shards",
    "model_state",
    "shard_agents",
    "shard_model",
    "weights_from_main",
]


def check_sharding(config: Any) -> None:
    """Refuse what a sharded run cannot do, before any weights are sharded."""
    if config.mode != "full":
        raise ValueError(
            "FSDP shards full-copy agents only (--mode full); LoRA agents share one "
            "frozen base switched per call: run LoRA data-parallel (configs/accelerate/"
            "cpu_ddp.yaml or gpu_ddp.yaml)"
        )


def _plugin():
    """accelerate's FSDP2 plugin, built from the launcher's environment (the config file's
    ``fsdp_*`` settings)."""
    from accelerate import FullyShardedDataParallelPlugin

    plugin = FullyShardedDataParallelPlugin(fsdp_version=2)
    if plugin.transformer_cls_names_to_wrap == []:
        plugin.transformer_cls_names_to_wrap = None  # the model's own _no_split_modules
    return plugin


def weights_from_main(world: World) -> bool:
    """Whether only the main process reads the models' weights from disk: under FSDP with
    ``fsdp_cpu_ram_efficient_loading: true``, the others build the architecture on ``meta``
    (``load_model(empty=True)``) and receive their shards from it when sharded (accelerate
    broadcasts them), so a machine holds one whole copy, not one per process. The same
    answer on every process."""
    return world.fsdp and bool(_plugin().cpu_ram_efficient_loading)


def _plugin_host(world: World) -> SimpleNamespace:
    """What accelerate's ``fsdp2_prepare_model`` reads from an ``Accelerator``: the FSDP
    plugin, the device, the main-process flag; mixed precision stays the run's own
    (``--dtype``), so none here."""
    return SimpleNamespace(
        state=SimpleNamespace(fsdp_plugin=_plugin()),
        mixed_precision="no",
        is_main_process=world.is_main,
        device=process_device(),
    )


def shard_model(model: nn.Module, world: World) -> nn.Module:
    """``model`` sharded in place over ``world`` by accelerate's FSDP2 preparation, its
    gradient reduce-scatter summing."""
    from accelerate.utils import fsdp2_prepare_model
    from torch.distributed.fsdp import FSDPModule

    model = fsdp2_prepare_model(_plugin_host(world), model)
    for m in model.modules():
        if isinstance(m, FSDPModule):
            m.set_gradient_divide_factor(1.0)
            m.set_force_sum_reduction_for_comms(True)  # a plain SUM: gloo has no PREMUL_SUM
    return model


def shard_agents(agents: Sequence[Any], world: World, device: str | torch.device) -> None:
    """Shard every distinct full-copy model and reference of ``agents`` (built on the CPU)
    over ``world``: FSDP moves each process's shards to ``device``'s kind (CUDA where there is
    one), the agents and their value heads go to ``device``; each agent then scores padded
    and decodes in lockstep (``sharded_over``)."""
    dev = resolve_device(device)
    done: set[int] = set()
    for agent in agents:
        for model in (agent.model, agent.reference):
            if id(model) not in done:
                shard_model(model, world)
                done.add(id(model))
        agent.device = dev
        if agent.value_head is not None:
            agent.value_head.to(dev)
        agent.packing = False
        agent.sharded_over = world


def model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """A sharded model's full state dict, gathered to CPU (every process calls; the main
    process gets the tensors, the others an empty dict)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    state = get_model_state_dict(model, options=options)
    return cast("dict[str, torch.Tensor]", state)  # full state dicts hold plain tensors


def load_model_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load a full state dict (every process holds it) into a sharded model."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    options = StateDictOptions(full_state_dict=True)
    # torch types this read-only argument as an invariant dict of its ValueType union
    set_model_state_dict(model, state, options=options)  # type: ignore[arg-type]


def model_shards(model: nn.Module) -> dict[str, Shard]:
    """A sharded model's state dict as this process's shards (nothing gathered), for a
    sharded checkpoint."""
    return {
        k: Shard(v.to_local().detach().cpu()) if is_sharded(v) else v
        for k, v in model.state_dict().items()
    }


def load_model_shards(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load what :func:`model_shards` gave (read back as plain tensors) into ``model``'s shards."""
    own = model.state_dict()
    if set(own) != set(state):
        raise ValueError(
            f"sharded state mismatch: missing {sorted(set(own) - set(state))[:3]}, "
            f"unexpected {sorted(set(state) - set(own))[:3]}"
        )
    with torch.no_grad():
        for k, v in own.items():
            local = v.to_local() if is_sharded(v) else v
            if local.shape != state[k].shape:
                raise ValueError(
                    f"{k}: this process's shard is {tuple(local.shape)}, the checkpoint's "
                    f"{tuple(state[k].shape)} (written with another layout)"
                )
            local.copy_(state[k])
