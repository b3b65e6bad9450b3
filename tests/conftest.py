"""Shared test set-up."""
import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny matrices: intra-op threads only add contention on the shared 2-core runner."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
