"""Shared fixtures: the tiny offline tokenizer/model and the path to ../shared/data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from helpers.tiny import tiny_model, tiny_tokenizer

# The tests' models are tiny: one thread avoids thread start-up and contention costs that
# dominate at this size (and keeps a 2-core CI machine responsive).
torch.set_num_threads(1)

# A run's default dtype (``auto``) depends on the CPU; the tests pin it to fp32 so that they
# check the same numbers on every machine, here and in the processes they start. The tests of
# ``auto`` itself (tests/test_default_dtype.py) unset it.
os.environ["CORY_DTYPE"] = "fp32"

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def tokenizer():
    return tiny_tokenizer()


@pytest.fixture
def model():
    return tiny_model()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data``; tests using it skip cleanly where it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA
