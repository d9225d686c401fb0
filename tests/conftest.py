"""Shared test set-up.

* GPU-only tests carry ``@pytest.mark.gpu``; where no CUDA device exists they are skipped with the
  reason "needs a CUDA GPU", so the report says which checks did not run here.
* Under pytest-xdist each worker gets one intra-op thread, so two workers do not fight over the
  two cores of the CI machine.
* ``data_dir`` points at ``../shared/data`` (REFERENCE data: MNIST, Fashion-MNIST).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU (none on this machine)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.fail(f"shared data directory not found at {SHARED_DATA}; it must sit beside the repository")
    return SHARED_DATA


@pytest.fixture(scope="module")
def one_thread():
    """For modules of tiny problems: one intra-op thread (on a loaded 2-core machine a second
    thread only adds synchronisation, milliseconds per small GEMM).  Restored afterwards."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
