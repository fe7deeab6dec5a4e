"""The sampler's draw on the CPU (:func:`agents.policy.sampler.exponential_race`) is
``torch.multinomial``'s: the same tokens at a fixed seed and the same generator state
after, under every sampling setting; non-finite probabilities are a clear error."""

from __future__ import annotations

import pytest
import torch

from agents.errors import DivergedError
from agents.policy.sampler import exponential_race, race_matches, sample_tokens
from cory_env import GenerationConfig


def multinomial_tokens(logits: torch.Tensor, generation, generator) -> torch.Tensor:
    """``sample_tokens`` as it would be with ``torch.multinomial`` drawing."""
    from agents.policy import sampler

    draw = sampler.race_matches
    try:
        sampler.race_matches = lambda: False
        return sample_tokens(logits, generation, generator)
    finally:
        sampler.race_matches = draw


@pytest.mark.parametrize(
    "generation",
    [
        GenerationConfig(),
        GenerationConfig(temperature=0.7),
        GenerationConfig(top_k=50),
        GenerationConfig(top_p=0.9, temperature=1.3),
    ],
    ids=["full", "temperature", "top-k", "top-p"],
)
def test_the_draw_is_torch_multinomial_s(generation):
    assert race_matches()
    logits = torch.randn(16, 49152, generator=torch.Generator().manual_seed(0)) * 3
    a, b = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    for _ in range(20):
        assert torch.equal(
            sample_tokens(logits, generation, a), multinomial_tokens(logits, generation, b)
        )
    assert torch.equal(torch.rand(3, generator=a), torch.rand(3, generator=b))


def test_the_race_draws_in_proportion_to_the_probabilities():
    probs = torch.tensor([[0.1, 0.6, 0.3]]).expand(20000, 3).contiguous()
    counts = torch.bincount(exponential_race(probs, torch.Generator().manual_seed(0)), minlength=3)
    torch.testing.assert_close(counts / 20000, probs[0], atol=0.015, rtol=0)


def test_non_finite_logits_are_a_clear_error():
    logits = torch.zeros(2, 10)
    logits[1, 3] = float("nan")
    with pytest.raises(DivergedError, match="diverged"):
        sample_tokens(logits, GenerationConfig(), torch.Generator().manual_seed(0))
