"""Fixtures shared by the test files."""

import pytest
import torch


@pytest.fixture
def one_thread():
    """Small tensors: one torch thread is faster and immune to a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def darcy17(tmp_path_factory):
    """A small generated Darcy set (48 samples at 17 x 17), made once per test session."""
    from modelcheck import darcy

    return darcy(tmp_path_factory.mktemp("darcy17"), 17)
