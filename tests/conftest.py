"""Shared test set-up.

Environment first (before torch or prefect are imported anywhere): one thread per library,
since torch with two threads collapses when the other core is busy; Prefect analytics off.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
CORPORA = Path(os.environ.get("SPEECHQE_CORPORA", REPO.parent / "shared" / "corpora"))
SAMPLES = REPO / "data" / "samples"


def corpus(name: str) -> Path:
    """Path of a shared corpus, or skip the test with the reason."""
    path = CORPORA / name
    if not path.is_dir():
        pytest.skip(f"real-speech corpus {name!r} not found at {path} (set SPEECHQE_CORPORA)")
    return path


@pytest.fixture(autouse=True, scope="session")
def _torch_threads():
    try:
        import torch
    except ImportError:  # pragma: no cover
        yield
        return
    torch.set_num_threads(1)
    yield
