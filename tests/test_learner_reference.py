"""The learners give the recorded reference numbers: two updates on fixed batches, for PPO
and RLOO, full copies and LoRA, the ``kl`` and ``full`` KL estimators, compared with values
recorded at commit be69117 (``tests/data/learner_reference.json``, made by
``tests/data/record_learner_reference.py``): with the padded computation the recording used
to float32 rounding (which differs between CPUs), and within a wider float tolerance with
sequence packing (the default)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers.tiny import tiny_model, tiny_tokenizer

from agents.policy import LLMAgent
from agents.rl import LearnerConfig, PPOLearner, RLOOLearner, TokenBatch

REFERENCE = json.loads((Path(__file__).parent / "data" / "learner_reference.json").read_text())[
    "cases"
]


def batch(k: int, groups: int, seed: int) -> tuple[TokenBatch, object]:
    tok = tiny_tokenizer()
    g = torch.Generator().manual_seed(seed)
    texts = ["This movie was", "Question: Tom has 3 apples", "I loved this film"]
    queries, responses = [], []
    for i in range(groups):
        q = tok.encode(texts[i % 3])
        for _ in range(k):
            n = int(torch.randint(1, 7, (1,), generator=g))
            queries.append(q)
            responses.append(torch.randint(1, len(tok), (n,), generator=g).tolist())
    scores = torch.randn(len(queries), generator=g).numpy()
    return TokenBatch.from_lists(queries, responses, tok.pad_token_id), scores


def agent(mode: str) -> LLMAgent:
    tok = tiny_tokenizer()
    if mode == "lora":
        torch.manual_seed(0)
        return LLMAgent.lora(tiny_model(), tok, r=4, alpha=8)
    return LLMAgent.full_copy(tiny_model(), tok)


def fingerprint(a: LLMAgent) -> dict:
    ps = [p.detach().double() for p in a.trainable_parameters()]
    return {
        "sum": float(sum(p.sum() for p in ps)),
        "sq": float(sum((p * p).sum() for p in ps)),
        "first": [float(x) for x in torch.cat([p.flatten() for p in ps])[:8]],
    }


@pytest.mark.parametrize("packing", [False, True], ids=["padded", "packed"])
@pytest.mark.parametrize("case", sorted(REFERENCE))
def test_skeleton_learners_reproduce_the_recorded_numbers(case, packing):
    algo, mode, estimator = case.split("-")
    a = agent(mode)
    a.packing = packing
    # padded: the recorded computation, but float32 rounding differs between CPUs' kernels
    # (AVX2, AVX-512, AMX machines: statistics ~5e-8 apart, the weights ~4e-7 relative);
    # packed: other matmul shapes too, through two updates
    rel, abs_, w_rel = (1e-3, 1e-6, 1e-5) if packing else (1e-5, 1e-6, 2e-6)
    cfg = LearnerConfig(
        learning_rate=1e-3,
        mini_batch_size=4,
        ppo_epochs=2,
        init_kl_coef=0.1,
        kl_penalty=estimator,
        use_score_scaling=True,
        seed=3,
    )
    learner = PPOLearner(a, cfg) if algo == "ppo" else RLOOLearner(a, cfg, group_size=4)
    # exact: recorded with a separate no-grad pass; packed: the fused first mini-batch too
    learner.fuse_first_forward = packing
    rows = []
    for step in range(2):
        b, s = batch(4, 3, seed=10 + step)
        rows.append({k: float(v) for k, v in learner.update(b, s).items()})
    expected = REFERENCE[case]
    for got, want in zip(rows, expected["stats"], strict=True):
        # the same metric names, none lost; the non-finite guards added two counters
        assert set(got) - set(want) <= {f"{algo}/nonfinite_steps", f"{algo}/optimizer_steps"}
        assert set(want) <= set(got)
        for key, value in want.items():
            assert got[key] == pytest.approx(value, rel=rel, abs=abs_), key
    assert a._packs is (
        True if packing else None
    )  # packed: the model passed the check, and was packed
    weights = fingerprint(a)
    assert weights["sum"] == pytest.approx(expected["weights"]["sum"], rel=w_rel, abs=1e-9)
    assert weights["sq"] == pytest.approx(expected["weights"]["sq"], rel=w_rel)
    assert weights["first"] == pytest.approx(
        expected["weights"]["first"], rel=w_rel * 100, abs=1e-9
    )
