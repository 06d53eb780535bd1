"""Shared test settings: fp32, deterministic, few threads (the CI machine has 2 cores)."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _deterministic_torch():
    torch.set_num_threads(2)
    torch.manual_seed(0)
    yield
