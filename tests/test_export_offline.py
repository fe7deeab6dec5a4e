"""A run's exports open with the ecosystem's one-liners, offline: the adapter records a base
that resolves without the project (an absolute folder, a GGUF's converted folder),
``scripts/export.py --with-base`` makes the run folder self-contained and movable, the merged
model runs in ``transformers.pipeline``, and the model card names the base, task and command."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers.configs import small_config
from helpers.gguf import write_tiny_gguf
from helpers.scripts import load_script
from helpers.tiny import tiny_model, tiny_tokenizer
from peft import AutoPeftModelForCausalLM
from transformers import pipeline

from agents.cory import CoryTrainer
from agents.policy.export import base_of
from agents.policy.sampler import KVCacheSampler
from agents.rl.batch import TokenBatch

PROMPT = "This movie was"
ROOT = Path(__file__).resolve().parents[1]


def _save_tiny(folder: Path) -> Path:
    tiny_model().save_pretrained(str(folder))
    tiny_tokenizer().save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path, CoryTrainer]:
    """A 2-iteration CORY run started from a model *folder* (the real loading path):
    ``(base folder, run folder, trainer)``."""
    root = tmp_path_factory.mktemp("exported")
    base = _save_tiny(root / "tiny-base")
    trainer = CoryTrainer(small_config(root, model=str(base), iterations=2, eval_every=0))
    trainer.train()
    return base, root / "run", trainer


@torch.no_grad()
def response_logprobs(model, tok, prompt: str, answer: str) -> torch.Tensor:
    q, r = tok(prompt).input_ids, tok(answer).input_ids
    b = TokenBatch.from_lists([q], [r], tok.pad_token_id)
    logits = model(input_ids=b.input_ids, attention_mask=b.attention_mask).logits
    pos = b.logit_positions()
    lp = logits.gather(1, pos.unsqueeze(-1).expand(-1, -1, logits.shape[-1])).log_softmax(-1)
    return lp.gather(-1, b.response_ids.unsqueeze(-1)).squeeze(-1)


@torch.no_grad()
def agent_logprobs(agent, tok, prompt: str, answer: str) -> torch.Tensor:
    b = TokenBatch.from_lists([tok(prompt).input_ids], [tok(answer).input_ids], tok.pad_token_id)
    agent.eval()
    return agent.forward(b).logprobs


def agent_greedy(agent, tok, prompt: str, n: int) -> list[int]:
    """``n`` greedy tokens of ``agent`` after ``prompt``, through the project's own sampler."""
    import numpy as np

    out = []
    with KVCacheSampler.open(agent, [np.array(tok(prompt).input_ids)], n) as s:
        for _ in range(n):
            t = s.logits.argmax(-1)
            out.append(int(t[0]))
            s.advance(t)
    return out


def test_adapter_records_the_absolute_base_folder_and_loads_with_the_one_liner(trained):
    base, run, trainer = trained
    tok = tiny_tokenizer()
    for name, learner in trainer.learners.items():
        folder = run / "models" / name
        config = json.loads((folder / "adapter_config.json").read_text())
        assert config["base_model_name_or_path"] == str(base.resolve())
        loaded = AutoPeftModelForCausalLM.from_pretrained(str(folder)).eval()
        want = agent_logprobs(learner.agent, tok, PROMPT, " great and fun")
        torch.testing.assert_close(
            response_logprobs(loaded, tok, PROMPT, " great and fun"), want, atol=1e-5, rtol=1e-5
        )


def test_the_one_liner_works_offline_in_a_fresh_process(trained):
    _, run, _ = trained
    code = (
        "from peft import AutoPeftModelForCausalLM as A; "
        f"m = A.from_pretrained({str(run / 'models' / 'model_a')!r}); print(type(m).__name__)"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("PeftModelForCausalLM")


def test_model_card_names_base_task_and_command(trained):
    base, run, _ = trained
    card = (run / "models" / "model_b" / "README.md").read_text()
    assert f"base_model: {json.dumps(str(base.resolve()))}" in card
    assert "- **Task:** `sentiment`" in card
    assert "- **Command:** `" in card and "trained with CORY" in card


def test_with_base_makes_the_run_folder_self_contained_and_movable(trained, tmp_path):
    _, run, trainer = trained
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    export = load_script("scripts/export.py")
    written = export.main(copy, with_base=True)
    assert written == [copy / "models" / "base"]
    moved = tmp_path / "elsewhere" / "run"
    moved.parent.mkdir()
    shutil.move(str(copy), str(moved))  # the old path is gone
    adapter = moved / "models" / "model_a"
    assert json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"] == (
        "../base"
    )
    assert base_of(adapter) == str((moved / "models" / "base").resolve())
    tok = tiny_tokenizer()
    want = agent_logprobs(trainer.learners["model_a"].agent, tok, PROMPT, " a film")
    cwd = os.getcwd()
    os.chdir(adapter)  # peft resolves the relative base against the working directory
    try:
        loaded = AutoPeftModelForCausalLM.from_pretrained(".").eval()
    finally:
        os.chdir(cwd)
    torch.testing.assert_close(
        response_logprobs(loaded, tok, PROMPT, " a film"), want, atol=1e-5, rtol=1e-5
    )
    merged = export.main(moved, merge=True)  # the relative base resolves for merging too
    assert [p.name for p in merged] == ["model_a-merged", "model_b-merged"]


def test_merged_export_runs_in_a_text_generation_pipeline(trained, tmp_path):
    _, run, trainer = trained
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    load_script("scripts/export.py").main(copy, merge=True)
    merged = copy / "models" / "model_b-merged"
    card = (merged / "README.md").read_text()
    assert "A causal language model trained with CORY" in card and "- **Task:** `sentiment`" in card
    generate = pipeline("text-generation", model=str(merged), device="cpu")
    out = generate(PROMPT, max_new_tokens=6, do_sample=False, return_full_text=False)
    tok = tiny_tokenizer()
    want = tok.decode(agent_greedy(trainer.learners["model_b"].agent, tok, PROMPT, 6))
    assert out[0]["generated_text"] == want


def test_a_gguf_base_is_recorded_as_its_converted_folder(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("CORY_CACHE_DIR", str(cache))
    # transformers' GGUF tokenizer adds <|endoftext|> as one more id: a row for it keeps peft's
    # one-liner from resizing the embeddings
    gguf = write_tiny_gguf(tmp_path / "tiny.gguf", tiny_model(vocab_size=321), tiny_tokenizer())
    trainer = CoryTrainer(small_config(tmp_path, model=str(gguf), iterations=1, eval_every=0))
    trainer.train()
    folder = tmp_path / "run" / "models" / "model_a"
    base = json.loads((folder / "adapter_config.json").read_text())["base_model_name_or_path"]
    assert Path(base).parent == cache and (Path(base) / "config.json").is_file()
    loaded = AutoPeftModelForCausalLM.from_pretrained(str(folder)).eval()
    tok = tiny_tokenizer()
    torch.testing.assert_close(
        response_logprobs(loaded, tok, PROMPT, " great"),
        agent_logprobs(trainer.learners["model_a"].agent, tok, PROMPT, " great"),
        atol=1e-5,
        rtol=1e-5,
    )
