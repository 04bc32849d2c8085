"""A persistent cache of reference-side analyses, keyed by content and settings.

Metrics compare many signals with few references: a nightly run scores every system against
the same natural recordings, night after night. Whatever a metric computes from the reference
alone (WORLD F0 and mel-cepstrum for MCD/F0, a speaker embedding of the reference or prompt) is
therefore computed once and kept here, shared by the systems of a run, by worker processes and
by later runs.

A key is the sha256 of (analysis kind, the file's content sha256, the analysis settings, the
versions of what computes it, :data:`FORMAT`); the value is a ``.npz`` of named arrays read with
``allow_pickle=False`` (no code can run on load). Writers write a temporary file in the same
folder and ``os.replace`` it into place, so concurrent runs and workers never leave a torn
file and never read one; two processes that miss the same key at once both compute it and the
second write replaces the first with identical arrays. An unreadable entry is a miss.

Layout: ``root/<kind>/<key[:2]>/<key>.npz``. The runner's default root is
``analysis-cache/`` beside the results store (see :func:`default_root`).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

#: Part of every key: bump when the stored layout changes.
FORMAT = 1
#: Folder name of the default cache, beside the results store.
DEFAULT_DIRNAME = "analysis-cache"
#: Bytes of analyses kept in memory per process (least recently used dropped first).
MEMORY_BYTES = 64 * 2**20

Arrays = dict[str, np.ndarray]


def default_root(store_path: str | Path) -> Path:
    """The cache beside a results store: ``<store folder>/analysis-cache``."""
    return Path(store_path).resolve().parent / DEFAULT_DIRNAME


class AnalysisCache:
    """Named arrays on disk under ``root`` (``None``: in memory only), with a small in-memory
    layer so that the items of a run sharing a reference read it once.

    Attributes:
        hits, misses: lookups answered from memory or disk, and computed.
    """

    def __init__(self, root: str | Path | None, *, memory_bytes: int = MEMORY_BYTES):
        self.root = None if root is None else Path(root)
        self.memory_bytes = memory_bytes
        self._memory: OrderedDict[str, Arrays] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(kind: str, content_sha256: str, settings: Mapping[str, Any]) -> str:
        """The key (hex sha256) of the ``kind`` analysis of content ``content_sha256``."""
        blob = json.dumps({"format": FORMAT, "kind": kind, "content": content_sha256,
                           "settings": dict(settings)}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()

    def path(self, kind: str, key: str) -> Path | None:
        if self.root is None:
            return None
        return self.root / _safe(kind) / key[:2] / f"{key}.npz"

    def get_or_compute(
        self, kind: str, content_sha256: str, settings: Mapping[str, Any],
        compute: Callable[[], Arrays],
    ) -> Arrays:
        """The stored analysis, or ``compute()``'s (stored for next time).

        Args:
            kind: what is analysed, e.g. ``'world'`` or ``'speaker-embedding'``.
            content_sha256: the analysed file's content hash.
            settings: everything besides the content that determines the result (parameters,
                rate, library versions); JSON-serialisable.
            compute: returns the analysis as named arrays (numeric dtypes).
        """
        key = self.key(kind, content_sha256, settings)
        with self._lock:
            hit = self._memory.get(key)
            if hit is not None:
                self._memory.move_to_end(key)
                self.hits += 1
                return hit
        value = self._load(kind, key)
        if value is None:
            value = {k: np.asarray(v) for k, v in compute().items()}
            self._save(kind, key, value)
            self.misses += 1
        else:
            self.hits += 1
        self._remember(key, value)
        return value

    # --- disk --------------------------------------------------------------------------------
    def _load(self, kind: str, key: str) -> Arrays | None:
        p = self.path(kind, key)
        if p is None:
            return None
        try:
            with np.load(p, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        except FileNotFoundError:
            return None
        except (ValueError, OSError, EOFError, KeyError):
            return None  # foreign or damaged: recomputed, and replaced by the write

    def _save(self, kind: str, key: str, value: Arrays) -> None:
        p = self.path(kind, key)
        if p is None:
            return
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{key[:16]}.", suffix=".tmp", dir=p.parent)
        except OSError:
            return  # a read-only or full cache folder costs speed, never a result
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, **value)
            os.replace(tmp, p)
        except OSError:
            Path(tmp).unlink(missing_ok=True)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    # --- memory ------------------------------------------------------------------------------
    def _remember(self, key: str, value: Arrays) -> None:
        size = sum(v.nbytes for v in value.values())
        if size > self.memory_bytes:
            return
        with self._lock:
            if key in self._memory:
                return
            self._memory[key] = value
            self._size += size
            while self._size > self.memory_bytes:
                _, old = self._memory.popitem(last=False)
                self._size -= sum(v.nbytes for v in old.values())


def _safe(kind: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in kind) or "analysis"


#: One cache per root and process (worker processes keep theirs across chunks).
_CACHES: dict[str | None, AnalysisCache] = {}
_CACHES_LOCK = threading.Lock()


def shared(root: str | Path | None) -> AnalysisCache:
    """This process's cache for ``root``."""
    k = None if root is None else str(root)
    with _CACHES_LOCK:
        if k not in _CACHES:
            _CACHES[k] = AnalysisCache(k)
        return _CACHES[k]
