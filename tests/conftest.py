"""Shared test set-up.

Environment first (before torch or prefect are imported anywhere): one thread per library,
since torch with two threads collapses when the other core is busy; Prefect analytics off.
"""

from __future__ import annotations

import os
import signal

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# A test session started in the background by a shell (`make test &`, nohup) inherits SIGINT
# ignored, and so would every command the tests start (an ignored signal stays ignored across
# exec), so the Ctrl-C tests would see it ignored: give the session Python's default.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

# Property tests: CI runs a fixed, derandomized sequence of examples (a failure there is
# reproducible and never flaky); a developer's run explores new examples each time.
# `.ci/run` sets HYPOTHESIS_PROFILE=ci; set it yourself to reproduce CI.
settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))

REPO = Path(__file__).resolve().parent.parent
CORPORA = Path(os.environ.get("SPEECHQE_CORPORA", REPO.parent / "shared" / "corpora"))
SAMPLES = REPO / "data" / "samples"


def corpus(name: str) -> Path:
    """Path of a shared corpus, or skip the test with the reason."""
    path = CORPORA / name
    if not path.is_dir():
        pytest.skip(f"real-speech corpus {name!r} not found at {path} (set SPEECHQE_CORPORA)")
    return path


@pytest.fixture(autouse=True)
def _drop_unresolvable_lazy_modules():
    """speechbrain registers lazy placeholders for optional integrations (k2, ...) in
    sys.modules whose attribute access raises ImportError; Hypothesis scans sys.modules for
    constants and trips over them. Drop the ones that cannot resolve after each test."""
    import sys
    import warnings

    yield
    for name, mod in list(sys.modules.items()):
        if type(mod).__name__ in ("LazyModule", "DeprecatedModuleRedirect"):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    getattr(mod, "__file__", None)
            except ImportError:
                del sys.modules[name]


@pytest.fixture(autouse=True, scope="session")
def _torch_threads():
    try:
        import torch
    except ImportError:  # pragma: no cover
        yield
        return
    torch.set_num_threads(1)
    yield


@pytest.fixture
def toy_metrics(monkeypatch):
    """Register tests/plugins/toy_metrics.py through $SPEECHQE_PLUGINS (in this process and
    in subprocesses, which get tests/ on PYTHONPATH)."""
    from speechqe import plugins

    tests_dir = str(Path(__file__).resolve().parent)
    monkeypatch.setenv("SPEECHQE_PLUGINS", "plugins.toy_metrics")
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(filter(None, [tests_dir, os.environ.get("PYTHONPATH")]))
    )
    plugins.refresh()
    yield plugins
    monkeypatch.delenv("SPEECHQE_PLUGINS")
    plugins.refresh()


def write_tone(path, seconds=0.5, sr=16000, freq=220.0, amp=0.5, seed=None, channels=1):
    """Write a tone (plus a little seeded noise, so contents differ) and return the array."""
    import numpy as np
    import soundfile as sf

    t = np.arange(int(seconds * sr)) / sr
    x = amp * np.sin(2 * np.pi * freq * t)
    if seed is not None:
        x = x + 0.01 * np.random.default_rng(seed).standard_normal(x.size)
    x = x.astype(np.float32)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.stack([x] * channels, axis=1) if channels > 1 else x
    sf.write(path, data, sr, subtype="PCM_16" if path.suffix != ".ogg" else "VORBIS")
    return x
