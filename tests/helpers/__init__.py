"""What the tests and benches share: the tiny offline model and tokenizer
(:mod:`helpers.tiny`), a fake agent and its batch (:mod:`helpers.fakes`), a deterministic
test task (:mod:`helpers.tasks`) and run configs (:mod:`helpers.configs`).

Tests import it as ``helpers`` (pytest puts ``tests/`` on the path, as the root of its
test modules); benches, run from the repository root, as ``tests.helpers``.
"""

from .tiny import tiny_model, tiny_tokenizer

__all__ = ["tiny_model", "tiny_tokenizer"]
