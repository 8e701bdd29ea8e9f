import os
import sys

import pytest
import torch

# Tests import the packages from the checkout even when it is not installed.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def one_thread():
    """Tiny models and small solves: one thread is as fast, and on shared, busy cores torch's
    thread pool made them 10-50x slower (measured). Modules opt in with
    `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def balls_8px(tmp_path_factory):
    """A small bouncing-balls dataset on disk: 3 train + 1 test videos of 24 frames at 8 px."""
    from fdm_engine.datasets import make_dataset

    root = tmp_path_factory.mktemp("data") / "balls"
    make_dataset("bouncing-balls", root, num_videos=3, num_test=1, length=24, size=8, seed=0)
    return root
