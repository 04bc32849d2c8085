"""An on-disk cache of encoder features, keyed by content.

A key is the sha256 of (the audio item's content hash, the encoder id, the layers, the
extraction parameters); values are ``.npy`` files read with ``allow_pickle=False`` (no code can
run on load). Writers write a temporary file in the same folder and ``os.replace`` it into
place, so concurrent writers of the same key never leave a torn file and readers never see one.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np


def feature_key(content_sha256: str, encoder_id: str, layers: Sequence[int] | str | None = None,
                params: dict[str, Any] | None = None) -> str:
    """The cache key (hex sha256) of one item's features."""
    blob = json.dumps(
        {"item": content_sha256, "encoder": encoder_id,
         "layers": list(layers) if isinstance(layers, (list, tuple)) else layers,
         "params": params or {}},
        sort_keys=True, default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def array_sha256(x: np.ndarray, sample_rate: int | None = None) -> str:
    """Content hash of an in-memory signal (for audio that never was a file)."""
    h = hashlib.sha256()
    h.update(f"{x.dtype}|{x.shape}|{sample_rate}".encode())
    h.update(np.ascontiguousarray(x).tobytes())
    return h.hexdigest()


class FeatureCache:
    """Features on disk under ``root`` (default: ``<speechqe cache>/features``).

    Layout: ``root/<key[:2]>/<key>.npy``. ``enabled=False`` makes every lookup a miss and every
    store a no-op (``--no-cache``).
    """

    def __init__(self, root: str | Path | None = None, *, enabled: bool = True):
        if root is None:
            from speechqe.assets import cache_dir

            root = cache_dir() / "features"
        self.root = Path(root)
        self.enabled = enabled
        self.hits = 0
        self.misses = 0

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.npy"

    def get(self, key: str) -> np.ndarray | None:
        if not self.enabled:
            return None
        p = self.path(key)
        try:
            arr = np.load(p, allow_pickle=False)
        except FileNotFoundError:
            self.misses += 1
            return None
        except (ValueError, OSError, EOFError):
            # A file that cannot be read (foreign or damaged) is a miss; the next put replaces it.
            self.misses += 1
            return None
        self.hits += 1
        return arr

    def put(self, key: str, value: np.ndarray) -> None:
        if not self.enabled:
            return
        p = self.path(key)
        p.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{key[:16]}.", suffix=".tmp", dir=p.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                np.save(f, np.ascontiguousarray(value), allow_pickle=False)
            os.replace(tmp, p)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def get_or_compute(self, key: str, compute: Callable[[], np.ndarray]) -> np.ndarray:
        hit = self.get(key)
        if hit is not None:
            return hit
        value = compute()
        self.put(key, value)
        return value
