"""The learners' default Adam: fused on the CPU, the same update as torch's per-parameter
Adam to float rounding; torch's own choice where the fused kernel does not apply."""

from __future__ import annotations

import torch
from helpers.tiny import tiny_model, tiny_tokenizer

from agents.policy import LLMAgent
from agents.rl import LearnerConfig, PPOLearner
from agents.rl.adam import default_adam, fuses


def _params(seed: int = 0) -> list[torch.nn.Parameter]:
    g = torch.Generator().manual_seed(seed)
    return [
        torch.nn.Parameter(torch.randn(shape, generator=g))
        for shape in ((64, 32), (32,), (7, 5, 3))
    ]


def test_the_fused_adam_takes_the_per_parameter_adams_steps():
    fused, loop = _params(), _params()
    a, b = default_adam(fused, 1e-2), torch.optim.Adam(loop, lr=1e-2, foreach=False)
    assert a.param_groups[0]["fused"] is True and not b.param_groups[0]["fused"]
    for step in range(20):
        g = torch.Generator().manual_seed(100 + step)
        grads = [torch.randn(p.shape, generator=g) for p in fused]
        for p, q, grad in zip(fused, loop, grads, strict=True):
            p.grad, q.grad = grad.clone(), grad.clone()
        a.step()
        b.step()
    for p, q, start in zip(fused, loop, _params(), strict=True):
        assert not torch.equal(p, start)  # it stepped
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
    assert float(a.state[fused[0]]["step"]) == 20.0


def test_the_fused_kernel_only_for_floating_cpu_tensors():
    assert fuses(_params())
    assert not fuses([])
    assert not fuses([torch.zeros(3, dtype=torch.int64)])
    assert not fuses([torch.nn.Parameter(torch.zeros(3, device="meta"))])
    assert (
        default_adam([torch.nn.Parameter(torch.zeros(3, device="meta"))], 1e-3).param_groups[0][
            "fused"
        ]
        is None
    )


def test_a_learner_on_the_cpu_is_built_with_the_fused_adam_and_keeps_it_through_its_state():
    agent = LLMAgent.lora(tiny_model(), tiny_tokenizer(), r=4, alpha=8)
    learner = PPOLearner(agent, LearnerConfig(learning_rate=1e-3))
    assert learner.optimizer.param_groups[0]["fused"] is True
    other = PPOLearner(
        LLMAgent.lora(tiny_model(), tiny_tokenizer(), r=4, alpha=8),
        LearnerConfig(learning_rate=1e-3),
    )
    other.load_state_dict(learner.state_dict())
    assert other.optimizer.param_groups[0]["fused"] is True
