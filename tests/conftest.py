"""Test-wide settings: offline, headless, quiet progress bars."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("EOBOOK_PROGRESS", "0")

import pytest
import torch


@pytest.fixture(autouse=True)
def _restore_torch_determinism():
    """Tests that switch deterministic mode on must not leak it into the next test."""
    yield
    torch.use_deterministic_algorithms(False)
