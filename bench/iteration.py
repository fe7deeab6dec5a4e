"""Cost of CORY next to single-agent PPO, on the same model and batch.

    python bench/iteration.py                         # SmolLM2-135M on CPU (a few minutes)
    python bench/iteration.py --model tiny            # the tests' tiny model (seconds)
    python bench/iteration.py --device cuda --batch-size 32 --new-tokens 16
    python bench/iteration.py --device cuda --model random:gpt2-large   # offline, random weights

Measures, in one run (the trainers step in turn, so machine noise hits all of them alike):
CORY's iteration next to PPO's, CORY without knowledge transfer (which isolates the cost
of the observer's longer prompt), with activation checkpointing and as a chain of three,
single-agent GRPO, the env's rollout next to raw ``model.generate``, a role swap, and the
peak memory of each configuration. The goals are :data:`GOALS` (rendered in
``docs/benchmarks.md#iteration``).

Peak memory is measured in a fresh subprocess per configuration, over building the
trainer and one iteration (CUDA: peak allocated bytes; CPU: peak RSS sampled every 2 ms),
both for the whole process and as the memory added on top of the loaded model (its weights
read once, so that lazily mapped weights count as loaded). The last line printed is one
JSON object of the metrics.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the checkout and its tests.helpers

from bench import record  # noqa: E402

GOALS = record.goals("""
cory_over_ppo_iteration | one CORY iteration / one PPO iteration | <= 2.0
cory_iteration_s | one CORY iteration, seconds | report
ppo_iteration_s | one PPO iteration, seconds | report
cory_no_transfer_over_ppo_iteration | CORY without knowledge transfer / PPO | report
cory_ckpt_over_cory_iteration | CORY with activation checkpointing / CORY | report
cory_k3_over_cory_iteration | a chain of three agents / the pair | report
rollout_over_generate | rollout through the env / raw ``model.generate`` of the same tokens | <= 1.15
swap_ms | one role swap, ms | < 10
peak_mem_cory_lora_over_ppo_lora | peak memory, CORY (LoRA) / PPO (LoRA) | <= 1.25
peak_mem_cory_lora_over_ppo_full | peak memory, CORY (LoRA) / PPO (full fine-tune) | <= 1.25
peak_mem_cory_lora_over_ppo_lora_ckpt | the same, both LoRA with activation checkpointing | <= 1.25
peak_mb_cory-lora | peak memory of CORY (LoRA), MB | report
grpo_over_ppo_iteration | single-agent GRPO (``batch_size / 4`` queries x 4 answers), ``kl_beta`` 0.04, / PPO | report
grpo_kl0_over_ppo_iteration | the same with ``kl_beta`` 0 (no reference forward) | report
peak_mem_grpo_lora_over_ppo_lora | peak memory, GRPO (LoRA) / PPO (LoRA) | report
""")
"""The figures the benchmarks page shows, with their goals."""
GOAL = {metric: goal for metric, _, goal in GOALS}


@dataclass
class Args:
    model: str = "smollm2-135m-instruct"
    """Model id/alias, ``tiny`` (the tests' tiny model), or ``random:<shape>`` (random weights of
    a shape of :data:`bench.models.SHAPES`, e.g. ``random:gpt2-large``; offline)."""
    tokenizer: str | None = None
    """The tokenizer of a ``random:`` model (default: the embedded SmolLM2's)."""
    batch_size: int = 8
    """Queries per iteration."""
    new_tokens: int = 8
    """Answer length per turn (fixed, so both algorithms generate the same number of tokens)."""
    iterations: int = 3
    """Timed iterations per trainer (after one warm-up iteration each)."""
    device: str = "cpu"
    """cpu or cuda."""
    dtype: str = "fp32"
    """fp32 or bf16 (autocast)."""
    observer_token_budget: bool = False
    """Cut the observers' mini-batches to the pioneer's padded tokens (``TrainConfig``'s option)."""
    save: bool = False
    """Write the printed object, with the command, machine, date and commit, to
    ``bench/results/iteration/<machine kind>.json`` (then: ``python bench/render.py``)."""
    child: str = ""
    """Internal: measure peak memory of one configuration in this process."""


GROUP = 4
"""GRPO's group size in the bench: ``batch_size / GROUP`` queries, so as many answers as PPO."""


def config(
    args: Args,
    mode: str = "lora",
    out: str = "/tmp/cory-bench",
    checkpointing: bool = False,
    knowledge_transfer: bool = True,
    grpo_kl_beta: float | None = None,
    num_agents: int = 2,
):
    """The bench's run config; ``grpo_kl_beta`` set: the GRPO learner with that ``kl_beta``."""
    from agents.run.config import TrainConfig

    grpo = (
        {}
        if grpo_kl_beta is None
        else dict(
            learner="grpo",
            group_size=GROUP,
            kl_beta=grpo_kl_beta,
            batch_size=max(1, args.batch_size // GROUP),
        )
    )
    return TrainConfig(
        **{
            **dict(
                activation_checkpointing=checkpointing,
                knowledge_transfer=knowledge_transfer,
                model=args.model,
                task="sentiment",
                iterations=args.iterations + 1,
                batch_size=args.batch_size,
                mini_batch_size=args.batch_size,
                ppo_epochs=1,
                max_new_tokens=args.new_tokens,
                min_new_tokens=args.new_tokens,
                mode=mode,
                device=args.device,
                dtype=args.dtype,
                eval_every=0,
                progress=False,
                output_dir=out,
                num_agents=num_agents,
                observer_token_budget=args.observer_token_budget,
            ),
            **grpo,
        }
    )


def load(args: Args):
    from bench.models import load_bench_model

    return load_bench_model(args.model, args.device, args.dtype, args.tokenizer)


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def time_steps(trainers: dict, args: Args) -> dict[str, float]:
    """Seconds per iteration of each trainer. They step in turn (one warm-up step each,
    then ``iterations`` rounds), so a load spike on a noisy machine hits all of them."""
    for trainer in trainers.values():
        trainer.step(0)
    totals = dict.fromkeys(trainers, 0.0)
    for it in range(1, args.iterations + 1):
        for name, trainer in trainers.items():
            sync(args.device)
            t0 = time.perf_counter()
            trainer.step(it)
            sync(args.device)
            totals[name] += time.perf_counter() - t0
    return {name: total / args.iterations for name, total in totals.items()}


@torch.no_grad()
def rollout_vs_generate(trainer, args: Args, repeats: int = 5) -> tuple[float, float, int]:
    """Seconds of one pioneer rollout through the env, and of ``generate`` of the same
    number of new tokens on the same left-padded prompts, with the same sampling: the
    fastest of ``repeats`` runs each, the two alternating."""
    from agents.run.rollout import rollout_alone

    run, agent = trainer.run, trainer.learner.agent
    queries, n = run.sample_queries()
    tok = run.tokenizer
    tok.padding_side = "left"
    enc = tok([run.task.pioneer_prompt(q) for q in queries], return_tensors="pt", padding=True).to(
        args.device
    )
    model = agent.model
    times, gens, steps = [], [], n
    for _ in range(repeats):
        sync(args.device)
        t0 = time.perf_counter()
        turns = rollout_alone(run.venv, agent, queries, run.generation, n, run.generator)
        sync(args.device)
        times.append(time.perf_counter() - t0)
        steps = max(len(r) for r in turns.responses)
        if agent.is_lora:
            model.set_adapter(agent.adapter)
        sync(args.device)
        t0 = time.perf_counter()
        model.generate(
            **enc,
            max_new_tokens=steps,
            min_new_tokens=steps,
            do_sample=True,
            top_k=0,
            top_p=1.0,
            pad_token_id=run.pad_id,
        )
        sync(args.device)
        gens.append(time.perf_counter() - t0)
    return min(times), min(gens), steps


def swap_ms(trainer) -> float:
    n = 10_000
    t0 = time.perf_counter()
    for _ in range(n):
        trainer.roles.swap()
    return (time.perf_counter() - t0) / n * 1e3


def touch_weights(model) -> None:
    """Read every weight once: ``from_pretrained`` maps safetensors lazily, so the first
    forward would otherwise page the weights in (0.5 GB for SmolLM2-135M) and count them as
    memory the trainer added."""
    with torch.no_grad():
        for p in model.parameters():
            p.sum()


def _rss() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))


class RssSampler:
    """Peak resident memory of this process while active, sampled every 2 ms (CPU runs:
    ``ru_maxrss`` cannot be reset, and loading a model peaks above a small model's training)."""

    def __enter__(self):
        import threading

        self.peak, self._stop = _rss(), threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, _rss())

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss())


def child(args: Args) -> None:
    """Peak memory of one configuration (``cory-lora``, ``ppo-lora``, ``ppo-full``, ``grpo-lora``
    (GRPO, ``kl_beta`` 0.04), ``grpo0-lora`` (``kl_beta`` 0), and with ``-ckpt`` appended, with
    activation checkpointing): building the trainer and one
    iteration, counted from the loaded model (CUDA: peak allocated bytes; CPU: peak RSS
    above the RSS right after loading)."""
    import gc

    model, tokenizer = load(args)
    gc.collect()
    algo, mode, *ckpt = args.child.split("-")
    beta = {"grpo": 0.04, "grpo0": 0.0}.get(algo)
    cfg = config(
        args,
        mode=mode,
        out=f"/tmp/cory-bench-{args.child}",
        checkpointing=bool(ckpt),
        grpo_kl_beta=beta,
    )
    if algo == "cory":
        from agents.cory import CoryTrainer as Trainer
    else:
        from baselines.ppo import SingleAgentTrainer as Trainer
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        start = torch.cuda.memory_allocated()
    touch_weights(model)
    base = _rss()
    with RssSampler() as sampler:
        trainer = Trainer(cfg, model=model, tokenizer=tokenizer)
        trainer.step(0)
    if args.device == "cuda":
        print(
            json.dumps(
                {
                    "peak_bytes": torch.cuda.max_memory_allocated(),
                    "net_bytes": torch.cuda.max_memory_allocated() - start,
                }
            )
        )
    else:
        print(json.dumps({"peak_bytes": sampler.peak, "net_bytes": sampler.peak - base}))


def peak(args: Args, what: str) -> dict[str, int]:
    cmd = [
        sys.executable,
        __file__,
        "--child",
        what,
        "--model",
        args.model,
        "--batch-size",
        str(args.batch_size),
        "--new-tokens",
        str(args.new_tokens),
        "--device",
        args.device,
        "--dtype",
        args.dtype,
        *(["--tokenizer", args.tokenizer] if args.tokenizer else []),
        "--observer-token-budget" if args.observer_token_budget else "--no-observer-token-budget",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(args: Args) -> dict:
    if args.child:
        child(args)
        return {}
    from agents.cory import CoryTrainer
    from baselines.ppo import SingleAgentTrainer
    from bench.machine import machine

    model, tokenizer = load(args)
    import copy

    def trainer(kind, out: str, **options):
        """A trainer of ``kind`` on its own copy of the model (PPO, built last, takes the model)."""
        own = model if out == "ppo" else copy.deepcopy(model)
        return kind(
            config(args, out=f"/tmp/cory-bench-{out}", **options), model=own, tokenizer=tokenizer
        )

    trainers = {
        "cory": trainer(CoryTrainer, "cory"),
        # the observer reads only the query: the same prompt lengths as the pioneer's
        "cory_no_transfer": trainer(CoryTrainer, "cory-nokt", knowledge_transfer=False),
        "cory_ckpt": trainer(CoryTrainer, "cory-ckpt", checkpointing=True),
        # a chain of three: pioneer -> observer -> observer (one LoRA adapter more on the base)
        "cory_k3": trainer(CoryTrainer, "cory-k3", num_agents=3),
        "grpo": trainer(SingleAgentTrainer, "grpo", grpo_kl_beta=0.04),
        "grpo_kl0": trainer(SingleAgentTrainer, "grpo0", grpo_kl_beta=0.0),
        "ppo": trainer(SingleAgentTrainer, "ppo"),
    }
    cory = trainers["cory"]
    times = time_steps(trainers, args)
    t_cory, t_ppo = times["cory"], times["ppo"]
    ppo = trainers["ppo"]
    t_roll, t_gen, steps = rollout_vs_generate(ppo, args)
    swap = swap_ms(cory)
    measured = {
        w: peak(args, w)
        for w in (
            "cory-lora",
            "ppo-lora",
            "ppo-full",
            "cory-lora-ckpt",
            "ppo-lora-ckpt",
            "grpo-lora",
            "grpo0-lora",
        )
    }
    mem = {w: m["peak_bytes"] for w, m in measured.items()}
    net = {w: m["net_bytes"] for w, m in measured.items()}
    metrics = {
        "model": args.model,
        "device": args.device,
        "batch_size": args.batch_size,
        "new_tokens": args.new_tokens,
        "cory_iteration_s": t_cory,
        "ppo_iteration_s": t_ppo,
        "cory_over_ppo_iteration": t_cory / t_ppo,
        "cory_no_transfer_iteration_s": times["cory_no_transfer"],
        "cory_no_transfer_over_ppo_iteration": times["cory_no_transfer"] / t_ppo,
        "cory_ckpt_iteration_s": times["cory_ckpt"],
        "cory_ckpt_over_cory_iteration": times["cory_ckpt"] / t_cory,
        "cory_k3_iteration_s": times["cory_k3"],
        "cory_k3_over_cory_iteration": times["cory_k3"] / t_cory,
        "rollout_s": t_roll,
        "generate_s": t_gen,
        "rollout_steps": steps,
        "rollout_over_generate": t_roll / t_gen,
        "swap_ms": swap,
        **{f"peak_mb_{w}": round(v / 2**20, 1) for w, v in mem.items()},
        **{f"net_mb_{w}": round(v / 2**20, 1) for w, v in net.items()},
        "peak_mem_cory_lora_over_ppo_lora": mem["cory-lora"] / mem["ppo-lora"],
        "peak_mem_cory_lora_over_ppo_full": mem["cory-lora"] / mem["ppo-full"],
        "peak_mem_cory_lora_over_ppo_lora_ckpt": mem["cory-lora-ckpt"] / mem["ppo-lora-ckpt"],
        "net_mem_cory_lora_over_ppo_lora": net["cory-lora"] / max(net["ppo-lora"], 1),
        "net_mem_cory_lora_over_ppo_full": net["cory-lora"] / max(net["ppo-full"], 1),
        "net_mem_cory_lora_over_ppo_lora_ckpt": net["cory-lora-ckpt"]
        / max(net["ppo-lora-ckpt"], 1),
        **{f"{g}_iteration_s": times[g] for g in ("grpo", "grpo_kl0")},
        **{f"{g}_over_ppo_iteration": times[g] / t_ppo for g in ("grpo", "grpo_kl0")},
        **{
            f"peak_mem_{w.replace('-', '_')}_over_ppo_lora": mem[w] / mem["ppo-lora"]
            for w in ("grpo-lora", "grpo0-lora")
        },
        **{
            f"net_mem_{w.replace('-', '_')}_over_ppo_lora": net[w] / max(net["ppo-lora"], 1)
            for w in ("grpo-lora", "grpo0-lora")
        },
    }
    metrics["machine"] = machine(args.device)
    print(
        f"model {args.model} on {args.device} ({metrics['machine']}), batch {args.batch_size}, "
        f"{args.new_tokens} new tokens"
    )
    print(
        f"  CORY iteration {t_cory:8.3f} s   PPO iteration {t_ppo:8.3f} s   ratio {t_cory / t_ppo:.2f} (goal {GOAL['cory_over_ppo_iteration']})"
    )
    print(
        f"  CORY without knowledge transfer {times['cory_no_transfer']:8.3f} s   "
        f"ratio to PPO {metrics['cory_no_transfer_over_ppo_iteration']:.2f}"
    )
    print(
        f"  CORY, chain of 3 agents {times['cory_k3']:8.3f} s   "
        f"ratio to CORY of 2 {metrics['cory_k3_over_cory_iteration']:.2f}"
    )
    print(
        f"  CORY with activation checkpointing {times['cory_ckpt']:8.3f} s   "
        f"ratio to CORY {metrics['cory_ckpt_over_cory_iteration']:.2f}"
    )
    print(
        f"  rollout {t_roll:8.3f} s   generate {t_gen:8.3f} s ({steps} tokens)   ratio {t_roll / t_gen:.2f} (goal {GOAL['rollout_over_generate']})"
    )
    print(f"  role swap {swap * 1e3:.2f} us (goal {GOAL['swap_ms']} ms)")
    print(
        f"  peak memory MB (process) { {w: metrics[f'peak_mb_{w}'] for w in mem} }: CORY-LoRA/PPO-LoRA {metrics['peak_mem_cory_lora_over_ppo_lora']:.2f}, "
        f"CORY-LoRA/PPO-full {metrics['peak_mem_cory_lora_over_ppo_full']:.2f} (goal {GOAL['peak_mem_cory_lora_over_ppo_full']})"
    )
    print(
        f"  with activation checkpointing (both): CORY-LoRA/PPO-LoRA "
        f"{metrics['peak_mem_cory_lora_over_ppo_lora_ckpt']:.2f} (goal {GOAL['peak_mem_cory_lora_over_ppo_lora_ckpt']})"
    )
    print(
        f"  memory added by training, MB { {w: metrics[f'net_mb_{w}'] for w in net} }: "
        f"CORY-LoRA/PPO-LoRA {metrics['net_mem_cory_lora_over_ppo_lora']:.2f}, "
        f"CORY-LoRA/PPO-full {metrics['net_mem_cory_lora_over_ppo_full']:.2f}"
    )
    print(
        f"  GRPO ({max(1, args.batch_size // GROUP)} queries x {GROUP}) iteration {times['grpo']:8.3f} s "
        f"(ratio to PPO {metrics['grpo_over_ppo_iteration']:.2f}), with --kl-beta 0 {times['grpo_kl0']:8.3f} s "
        f"({metrics['grpo_kl0_over_ppo_iteration']:.2f})"
    )
    print(
        f"  GRPO peak memory MB {metrics['peak_mb_grpo-lora']} / {metrics['peak_mb_grpo0-lora']} (--kl-beta 0), "
        f"ratio to PPO-LoRA {metrics['peak_mem_grpo_lora_over_ppo_lora']:.2f} / "
        f"{metrics['peak_mem_grpo0_lora_over_ppo_lora']:.2f}; added by training "
        f"{metrics['net_mb_grpo-lora']} / {metrics['net_mb_grpo0-lora']} MB against PPO's {metrics['net_mb_ppo-lora']}"
    )
    return record.emit(metrics, "iteration", GOALS, args.save, __doc__, args.device)


if __name__ == "__main__":
    import tyro

    main(tyro.cli(Args))
