"""Record a fixed-seed 3-iteration CORY run on the tiny model before the K-agent trainer
(commit after "The env takes num_agents=K"); ``tests/test_chains_training.py`` compares.

    cd tests && PYTHONPATH=. python data/record_cory_k2_reference.py data/cory_k2_reference.json
"""

import json
import sys
from pathlib import Path
from tempfile import TemporaryDirectory

import torch
from helpers.configs import small_config
from helpers.tiny import tiny_model, tiny_tokenizer

from agents.cory import CoryTrainer

torch.set_num_threads(1)
TIMING = ("charts/rollout_s", "charts/iteration_s")
cases = {}
for mode in ("lora", "full"):
    with TemporaryDirectory() as tmp:
        trainer = CoryTrainer(
            small_config(Path(tmp), mode=mode), model=tiny_model(), tokenizer=tiny_tokenizer()
        )
        rows = [{k: v for k, v in r.items() if k not in TIMING} for r in trainer.train()]
        weights = {
            m: float(sum(p.double().sum() for p in lr.agent.trainable_parameters()))
            for m, lr in trainer.learners.items()
        }
        cases[mode] = {"rows": rows, "weights": weights}
with open(sys.argv[1], "w") as f:
    json.dump({"recorded_at": "before the K-agent trainer", "cases": cases}, f, indent=1)
