from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = (REPO.parent / "shared").resolve()  # resolved: ../shared may be a symlink

# lolctl's cache ($LOLCTL_CACHE: fitted OOD references, tiny base models) in a folder of this test run, never the
# user's ~/.cache/lolctl; subprocesses of the tests inherit it
os.environ.setdefault("LOLCTL_CACHE", tempfile.mkdtemp(prefix="lolctl-test-cache-"))


@pytest.fixture
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip("../shared is not beside this clone")
    return SHARED


@pytest.fixture
def one_thread():
    """Tiny tensors: one torch thread is much faster than two on a shared 2-core machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
