"""Science tests share two CPU cores with other work: keep torch to one thread (several threads spin against each other on a busy machine)."""

from pathlib import Path

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


def pytest_collection_modifyitems(config, items):
    """Slow science tests run only when asked for (`-m slow` or LOCUS_RUN_SLOW=1): CI stays in minutes."""
    import os

    if "slow" in (config.getoption("-m") or "") or os.environ.get("LOCUS_RUN_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow: run with -m slow or LOCUS_RUN_SLOW=1")
    here = Path(__file__).parent
    for item in items:
        if "slow" in item.keywords and here in Path(item.path).parents:
            item.add_marker(skip)
