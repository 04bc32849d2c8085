"""Content hashing: the one place that reads files into sha256 digests (store keys, asset
checksums, bundle and checkpoint identities all go through it)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Iterable

#: Bytes read at a time.
CHUNK = 1 << 20


def update_file(h: "hashlib._Hash", path: str | Path) -> None:
    """Feed the bytes of ``path`` into ``h`` in :data:`CHUNK`-sized pieces (raises ``OSError``)."""
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            h.update(chunk)


def sha256_file(path: str | Path) -> str:
    """sha256 hex digest of a file's bytes (raises ``OSError``)."""
    h = hashlib.sha256()
    update_file(h, path)
    return h.hexdigest()


def sha256_files(paths: Iterable[str | Path], root: str | Path | None = None) -> str:
    """sha256 hex digest over several files, in the order given: each file's name (relative to
    ``root`` when given, else none) and bytes, separated so that moving bytes between files
    changes the digest."""
    h = hashlib.sha256()
    for p in paths:
        p = Path(p)
        if root is not None:
            h.update(p.relative_to(root).as_posix().encode() + b"\x00")
        update_file(h, p)
        h.update(b"\x00")
    return h.hexdigest()


def sha256_tree(folder: str | Path) -> str:
    """sha256 hex digest over every file below ``folder`` (sorted relative paths and bytes)."""
    folder = Path(folder)
    return sha256_files(sorted(q for q in folder.rglob("*") if q.is_file()), root=folder)


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
