"""Record PPO/RLOO learner numbers on fixed batches at commit be69117 (the reference values).

How ``learner_reference.json`` was made (kept as a record; it imports the old module paths):

    git worktree add /tmp/old be69117
    cd /tmp/old && PYTHONPATH=/tmp/old python tests/data/record_learner_reference.py learner_reference.json

``tests/test_learner_reference.py`` rebuilds the same cases on today's code and compares.
"""

import json
import sys

import torch

sys.path.insert(0, "/tmp/old/tests")
from agents.batch import TokenBatch
from agents.llm_agent import LLMAgent
from agents.ppo import LearnerConfig, PPOLearner
from agents.rloo import RLOOLearner
from tiny import tiny_model, tiny_tokenizer

torch.set_num_threads(1)


def batch(k, groups, seed):
    tok = tiny_tokenizer()
    g = torch.Generator().manual_seed(seed)
    texts = ["This movie was", "Question: Tom has 3 apples", "I loved this film"]
    qs, rs = [], []
    for i in range(groups):
        q = tok.encode(texts[i % 3])
        for _ in range(k):
            n = int(torch.randint(1, 7, (1,), generator=g))
            qs.append(q)
            rs.append(torch.randint(1, len(tok), (n,), generator=g).tolist())
    scores = torch.randn(len(qs), generator=g).numpy()
    return TokenBatch.from_lists(qs, rs, tok.pad_token_id), scores


def agent(mode):
    tok = tiny_tokenizer()
    if mode == "lora":
        torch.manual_seed(0)
        return LLMAgent.lora(tiny_model(), tok, r=4, alpha=8)
    return LLMAgent.full_copy(tiny_model(), tok)


def fingerprint(a):
    ps = [p.detach().double() for p in a.trainable_parameters()]
    return {
        "sum": float(sum(p.sum() for p in ps)),
        "sq": float(sum((p * p).sum() for p in ps)),
        "first": [float(x) for x in torch.cat([p.flatten() for p in ps])[:8]],
    }


cases = {}
for mode in ("full", "lora"):
    for algo in ("ppo", "rloo"):
        for est in ("kl", "full"):
            a = agent(mode)
            cfg = LearnerConfig(
                learning_rate=1e-3,
                mini_batch_size=4,
                ppo_epochs=2,
                init_kl_coef=0.1,
                kl_penalty=est,
                use_score_scaling=True,
                seed=3,
            )
            learner = PPOLearner(a, cfg) if algo == "ppo" else RLOOLearner(a, cfg, k=4)
            rows = []
            for step in range(2):
                b, s = batch(4, 3, seed=10 + step)
                rows.append({k: float(v) for k, v in learner.update(b, s).items()})
            cases[f"{algo}-{mode}-{est}"] = {"stats": rows, "weights": fingerprint(a)}
with open(sys.argv[1], "w") as f:
    json.dump(
        {"recorded_at": "be69117 (before the agents/ restructure)", "cases": cases}, f, indent=1
    )
print(len(cases), "cases")
