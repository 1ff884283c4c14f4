"""Science tests share two CPU cores with other work: keep torch to one thread (several threads spin against each other on a busy machine)."""

import pytest


@pytest.fixture(autouse=True, scope="session")
def _few_torch_threads():
    try:
        import torch
    except ImportError:  # evaluation tests need no torch
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
