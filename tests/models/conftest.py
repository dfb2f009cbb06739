"""Shared settings for the model tests."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    """One intra-op thread: these tests run many tiny ops, where thread hand-offs cost more than
    they save (measured: ~43 s vs ~58 s for tests/models on 2 cores), and a busy machine does
    not oversubscribe. Restored afterwards so other test folders keep their own setting."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
