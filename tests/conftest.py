"""Shared test setup: deterministic Hypothesis, fixed seeds, few threads."""

from __future__ import annotations

import os

import pytest
import torch
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    derandomize=True,
    deadline=None,
    max_examples=60,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
settings.register_profile(
    "dev",
    deadline=None,
    max_examples=60,
    suppress_health_check=[HealthCheck.too_slow],
)
# By hand: HYPOTHESIS_PROFILE=thorough python -m pytest tests/test_fuzz.py (random, many examples).
settings.register_profile(
    "thorough",
    deadline=None,
    max_examples=3000,
    suppress_health_check=list(HealthCheck),
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


# The golden-value generators under tests/data/ import torchvision (they are run by hand
# in a peer environment); they are not tests and must not be collected or doctested.
collect_ignore_glob = ["data/*.py"]
