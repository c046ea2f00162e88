import pytest
import torch


@pytest.fixture(scope="module")
def one_torch_thread():
    """Thousands of tiny forwards: one intra-op thread avoids OpenMP spin contention on a busy machine."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)
