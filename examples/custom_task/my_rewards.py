"""A reward of your own for the custom-task example: a batch in, one float per answer out."""

import numpy as np

KIND_WORDS = ("thank", "please", "kind", "glad", "happy", "welcome", "great", "love")


def kindness(queries: list[str], responses: list[str]) -> np.ndarray:
    """One point per kind word in the answer, less 0.01 per character: kind and brief."""
    scores = [sum(r.lower().count(w) for w in KIND_WORDS) - 0.01 * len(r) for r in responses]
    return np.array(scores, dtype=np.float32)
