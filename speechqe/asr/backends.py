"""The ASR backend factory.

Backends are expensive to load, so :func:`load_backend` keeps one instance per configuration
and process: the ``wer`` and ``cer`` metrics of one run share the same model (and, through
:meth:`~.base.ASRBackend.cache_key`, the same hypotheses).
"""

from __future__ import annotations

import threading

from .base import (  # noqa: F401  (re-exported: the interface and its factory in one place)
    BACKENDS,
    DEFAULT_MODELS,
    SAMPLE_RATE,
    ASRBackend,
    BackendConfig,
    file_fingerprint,
)

_instances: dict[BackendConfig, ASRBackend] = {}
_lock = threading.Lock()


def load_backend(config: BackendConfig) -> ASRBackend:
    """The backend for ``config``, loaded once per process.

    Raises:
        ConfigError / AssetError: unknown model, missing weights (with how to provide them).
        MissingDependencyError: the backend's package is not installed.
    """
    with _lock:
        inst = _instances.get(config)
        if inst is None:
            if config.backend == "faster-whisper":
                from .whisper_faster import FasterWhisperBackend as cls
            else:
                from .whisper_openai import OpenAIWhisperBackend as cls  # type: ignore[no-redef]
            inst = cls(config)
            _instances[config] = inst
        return inst


def release_backends() -> None:
    """Drop every loaded backend (frees their memory once no metric holds them)."""
    with _lock:
        _instances.clear()
