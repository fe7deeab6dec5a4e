"""Data parallelism through Hugging Face ``accelerate``: the processes ``accelerate launch``
or ``torchrun`` started, and the collectives a data-parallel run needs.

What a run with N processes does (:class:`World` of size N):

- every process draws the same global batch of queries (the data stream is seeded alike) and
  rolls out its contiguous shard (:func:`shard`) with its own sampling stream; the episodes
  are gathered (:func:`gather`) so every process holds the global batch, its scores and
  rewards;
- the no-grad pass (old log-probs, values, reference) is sharded and gathered the same way;
  advantages, whitening, score statistics and the KL controller's update are computed from
  the global batch, identically everywhere;
- each mini-batch of the shared shuffle is split across the processes; each back-propagates
  its share's loss weighted by its share of the step, and the gradients are summed across
  processes (:func:`sum_gradients`, accelerate's all-reduce) before clipping and the
  optimiser step: for losses that are means over rows, the step equals the single-process
  step on the same batch (tested), and every process keeps identical weights;
- one process (rank 0) writes the logs, samples, plots, checkpoints and exported models;
- launched with an FSDP config (``World.fsdp``), the full-copy models are sharded
  (:mod:`agents.policy.sharding`): their gradients are reduce-scattered by FSDP, the others'
  summed here, clipped together (:func:`clip_grad_norm`), and checkpoints hold full tensors
  (:func:`full_state`), or with ``fsdp_state_dict_type: SHARDED_STATE_DICT`` each process's
  own shards (:class:`Shard`, ``World.sharded_checkpoints``).

A single process (no launcher) is a :class:`World` of size 1 and none of this runs. On a
machine without GPUs, ``accelerate launch --cpu`` starts **one** process; ``accelerate launch
--multi_gpu --num_processes N`` (or ``configs/accelerate/cpu_ddp.yaml``) and ``torchrun
--nproc_per_node N`` start N on gloo: the world size a run had is what ``config.json``
records as ``num_processes``, never what the flags asked for.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import math
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar, cast

import torch

from agents.errors import PeerLostError

if TYPE_CHECKING:
    from torch.distributed.tensor import DTensor

__all__ = [
    "DEFAULT_COLLECTIVE_TIMEOUT",
    "SINGLE",
    "Shard",
    "World",
    "all_finished",
    "clip_grad_norm",
    "fsdp_requested",
    "full_state",
    "gather",
    "gather_rows",
    "is_sharded",
    "leave",
    "load_full_state",
    "main_first",
    "peer_lost",
    "process_device",
    "reduce_sum",
    "refuse_deepspeed",
    "shard",
    "share",
    "sharded_checkpoints_requested",
    "sum_gradients",
    "world",
]

T = TypeVar("T")
S = TypeVar("S", torch.Tensor, Sequence)
F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_COLLECTIVE_TIMEOUT = 300.0
"""Seconds a collective waits for the other processes (``--collective-timeout``; a peer that
died is seen at once, its connections closing, one that hangs after this)."""
_timeout = [DEFAULT_COLLECTIVE_TIMEOUT]  # the process group's, in seconds


def peer_lost(err: BaseException) -> PeerLostError | None:
    """``err`` as a :class:`~agents.errors.PeerLostError` where a collective lost a peer, else None."""
    return PeerLostError.of(err, _timeout[0])


def _collective(fn: F) -> F:
    """``fn`` (a collective) raising :func:`peer_lost`'s error where a peer is lost."""

    @functools.wraps(fn)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except RuntimeError as err:
            if (lost := peer_lost(err)) is None:
                raise
            raise lost from err

    return cast(F, wrapped)


@dataclass(frozen=True)
class World:
    """The processes of this run: ``size`` of them, this one ``rank``; ``kind`` is
    accelerate's distributed type (``NO``, ``MULTI_CPU``, ``MULTI_GPU`` ...); ``fsdp``: the
    launcher asked for FSDP (full-copy models are then sharded over the processes)."""

    size: int = 1
    rank: int = 0
    kind: str = "NO"
    fsdp: bool = False
    sharded_checkpoints: bool = False
    """FSDP with ``fsdp_state_dict_type: SHARDED_STATE_DICT``: each process checkpoints its
    own shards (:class:`Shard`) instead of the main process gathering them whole."""

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def parallel(self) -> bool:
        return self.size > 1

    @_collective
    def barrier(self) -> None:
        if self.parallel:
            _state().wait_for_everyone()


SINGLE = World()
"""One process: every collective is the identity."""


@dataclass(frozen=True)
class Shard:
    """This process's part of a tensor sharded over the run's processes, as a sharded
    checkpoint stores it (each process writes its own, :mod:`agents.run.checkpoint`)."""

    local: torch.Tensor


def _state():
    from accelerate import PartialState

    # cpu=True on a machine without CUDA: accelerate then joins the launcher's processes on
    # gloo (without it, each process of `--multi_gpu` on a CPU machine thinks it is alone)
    timeout = datetime.timedelta(seconds=_timeout[0])
    return PartialState(cpu=not torch.cuda.is_available(), timeout=timeout)


def process_device() -> torch.device:
    """This process's device as accelerate sees it (its CUDA device, or the CPU)."""
    return _state().device


def world(timeout: float | None = None) -> World:
    """This run's processes, as the launcher (``accelerate launch``, ``torchrun``) made them;
    size 1 without a launcher. A DeepSpeed launch is refused (:func:`refuse_deepspeed`).
    ``timeout``: the seconds each collective waits for the other processes before it fails
    with :func:`peer_lost`'s error (None: as set before, at first the default)."""
    refuse_deepspeed()
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return SINGLE
    state = _state()
    if timeout is not None:  # the group's own (gloo's, NCCL's)
        torch.distributed.distributed_c10d._set_pg_timeout(datetime.timedelta(seconds=timeout))
        _timeout[0] = timeout
    return World(
        state.num_processes,
        state.process_index,
        state.distributed_type.name,
        fsdp_requested(),
        sharded_checkpoints_requested(),
    )


@contextlib.contextmanager
def main_first(w: World) -> Iterator[None]:
    """Run the block on the main process first and on the others after it (as accelerate's
    ``main_process_first``; the block itself for one process)."""
    if not w.is_main:
        w.barrier()
    yield
    if w.is_main:
        w.barrier()


def leave(w: World) -> None:
    """This process's end of a run of several: after the others, the process group torn
    down (a gloo group left to the interpreter's exit can abort it: "terminate called
    without an active exception")."""
    if not w.parallel:
        return
    import torch.distributed as dist

    w.barrier()
    if dist.is_initialized():
        dist.destroy_process_group()


def fsdp_requested() -> bool:
    """Whether the launcher asked for FSDP (accelerate's ``ACCELERATE_USE_FSDP``, which
    ``accelerate launch`` sets from a config's ``distributed_type: FSDP``)."""
    return _env_flag("ACCELERATE_USE_FSDP")


def sharded_checkpoints_requested() -> bool:
    """Whether the launcher asked for FSDP with sharded checkpoints (a config's
    ``fsdp_state_dict_type: SHARDED_STATE_DICT``, which ``accelerate launch`` passes on as
    ``FSDP_STATE_DICT_TYPE``)."""
    return (
        fsdp_requested()
        and os.environ.get("FSDP_STATE_DICT_TYPE", "").upper() == "SHARDED_STATE_DICT"
    )


def _env_flag(name: str) -> bool:
    """Whether the launcher set the environment variable ``name`` to a true value."""
    return os.environ.get(name, "false").lower() in ("1", "true", "yes")


def refuse_deepspeed() -> None:
    """A clear error where ``accelerate launch`` was given a DeepSpeed config (it sets
    ``ACCELERATE_USE_DEEPSPEED``), which would otherwise run as plain data parallelism
    without a word: DeepSpeed's engine owns backward, clipping and the optimiser step, and
    :func:`agents.rl.optimise.optimise` needs the gradients in hand (its ratio and
    non-finite guards put a skipped mini-batch's gradients back)."""
    if _env_flag("ACCELERATE_USE_DEEPSPEED"):
        raise ValueError(
            "DeepSpeed launches are not supported: the PPO optimisation loop keeps the gradients "
            "in hand, which DeepSpeed's engine owns. For ZeRO-style sharding of full copies use "
            "accelerate's FSDP configs: configs/accelerate/fsdp_zero2.yaml (SHARD_GRAD_OP, like "
            "ZeRO-2) or configs/accelerate/fsdp.yaml (FULL_SHARD, like ZeRO-3); for LoRA copies, "
            "plain data parallelism (configs/accelerate/cpu_ddp.yaml or --multi_gpu)."
        )


def is_sharded(x: Any) -> bool:
    """Whether ``x`` (a tensor or a module) is FSDP-sharded (a ``DTensor`` / ``FSDPModule``)."""
    from torch.distributed.fsdp import FSDPModule
    from torch.distributed.tensor import DTensor

    return isinstance(x, (DTensor, FSDPModule))


def share(rows: S, w: World) -> S:
    """This process's contiguous share of ``rows`` (a tensor or a sequence; shares differ by
    at most one row when ``len(rows)`` does not divide; all of them for one process)."""
    if not w.parallel:
        return rows
    n = len(rows)
    return rows[n * w.rank // w.size : n * (w.rank + 1) // w.size]


def shard(items: Sequence[T], w: World) -> list[T]:
    """This process's contiguous share of ``items`` (``len(items)`` divisible by the size)."""
    if len(items) % w.size:
        raise ValueError(f"{len(items)} items do not split evenly over {w.size} processes")
    return list(share(items, w))


@_collective
def gather(obj: Any, w: World) -> list[Any]:
    """Every process's ``obj`` (any picklable object), in rank order."""
    if not w.parallel:
        return [obj]
    from accelerate.utils import gather_object

    return gather_object([obj])


@_collective
def reduce_sum(t: torch.Tensor, w: World) -> torch.Tensor:
    """``t`` summed over the processes (the same shape and device everywhere)."""
    if not w.parallel:
        return t
    from accelerate.utils import reduce

    return reduce(t.contiguous(), "sum")


@_collective
def gather_rows(t: torch.Tensor, w: World) -> torch.Tensor:
    """Every process's ``(n, ...)`` rows stacked in rank order (``(size * n, ...)``)."""
    if not w.parallel:
        return t
    from accelerate.utils import gather as acc_gather

    return acc_gather(t.contiguous())


def sum_gradients(params: Sequence[torch.nn.Parameter], w: World) -> None:
    """Sum the gradients of ``params`` over the processes, in one all-reduce of one flat
    buffer (a parameter without a gradient counts as zeros); sharded parameters' gradients
    are FSDP's (already reduce-scattered) and left alone."""
    params = [p for p in params if not is_sharded(p)]
    if not w.parallel or not params:
        return
    flat = torch.cat(
        [
            (p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1).float()
            for p in params
        ]
    )
    flat = reduce_sum(flat, w)
    offset = 0
    for p in params:
        n = p.numel()
        p.grad = flat[offset : offset + n].view_as(p).to(p.dtype).clone()
        offset += n


def clip_grad_norm(params: Iterable[torch.nn.Parameter], max_norm: float) -> torch.Tensor:
    """``torch.nn.utils.clip_grad_norm_`` over sharded and plain parameters together: the
    total L2 norm of every gradient (the sharded ones' over all processes), all clipped by
    it; returns the norm before clipping."""
    grads = [p for p in params if p.grad is not None]
    sharded = [p for p in grads if is_sharded(p)]
    if not sharded:
        return torch.nn.utils.clip_grad_norm_(grads, max_norm)
    plain = [p for p in grads if not is_sharded(p)]
    # the norm of DTensor gradients is a DTensor (torch types it as a plain Tensor)
    sharded_norm = cast("DTensor", torch.nn.utils.get_total_norm(_grads(sharded)))
    squares = sharded_norm.full_tensor().float() ** 2
    if plain:
        squares = squares + torch.nn.utils.get_total_norm(_grads(plain)).float() ** 2
    total = squares.sqrt()
    if math.isfinite(max_norm):
        for group in (sharded, plain):
            if group:
                torch.nn.utils.clip_grads_with_norm_(group, max_norm, total)
    return total


def _grads(params: Iterable[torch.nn.Parameter]) -> list[torch.Tensor]:
    """The gradients of ``params`` that have one."""
    return [p.grad for p in params if p.grad is not None]


def full_state(tree: Any, w: World) -> Any:
    """``tree`` (a state dict, nested) with every sharded tensor gathered whole to CPU on the
    main process (an empty tensor on the others, which write nothing); a collective, in the
    tree's order, the same on every process. With ``w.sharded_checkpoints``, each is this
    process's :class:`Shard` instead (nothing gathered). Without FSDP, ``tree`` itself."""
    if not w.fsdp:
        return tree

    def whole(x: Any) -> Any:
        if isinstance(x, dict):
            return {k: whole(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return type(x)(whole(v) for v in x)
        if not is_sharded(x):
            return x
        if w.sharded_checkpoints:
            return Shard(x.to_local().cpu())
        full = x.full_tensor()
        return full.cpu() if w.is_main else torch.empty(0)

    return whole(tree)


def load_full_state(optimizer: torch.optim.Optimizer, w: World = SINGLE) -> None:
    """After ``optimizer.load_state_dict`` of a :func:`full_state`: each sharded parameter's
    moments back to its shard: plain full tensors distributed to ``DTensor``'s of its
    placement, or (``w.sharded_checkpoints``) this process's shards wrapped as its own."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    for group in optimizer.param_groups:
        for p in group["params"]:
            if not is_sharded(p):
                continue
            state = optimizer.state.get(p, {})
            for k, v in state.items():
                if not torch.is_tensor(v) or is_sharded(v):
                    continue
                if w.sharded_checkpoints and v.shape == p.to_local().shape and v.dim():
                    state[k] = DTensor.from_local(
                        v.to(p.to_local().device, p.dtype),
                        p.device_mesh,
                        p.placements,
                        run_check=False,
                        shape=p.shape,
                        stride=p.stride(),
                    )
                elif not w.sharded_checkpoints and v.shape == p.shape:
                    state[k] = distribute_tensor(v.to(p.dtype), p.device_mesh, p.placements)


def all_finished(finished: bool, w: World, device: torch.device | str = "cpu") -> bool:
    """Whether every process of ``w`` is ``finished`` (a collective; ``device``: where the
    backend reduces, the model's)."""
    if not w.parallel:
        return finished
    return int(reduce_sum(torch.tensor([0 if finished else 1], device=device), w)) == 0
