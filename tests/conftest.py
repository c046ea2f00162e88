import pytest
import torch

from egbas_fast import _core


@pytest.fixture(scope="module")
def one_torch_thread():
    """Thousands of tiny forwards: one intra-op thread avoids OpenMP spin contention on a busy machine."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


@pytest.fixture(params=["scalar", "avx2", "avx512"])
def isa(request):
    """Runs a core test once per instruction set the CPU has (the others skip)."""
    got = _core._limit_isa(request.param)
    if got != request.param:
        _core._limit_isa("avx512")
        pytest.skip(f"CPU lacks {request.param}")
    yield got
    _core._limit_isa("avx512")  # back to the best the CPU has
