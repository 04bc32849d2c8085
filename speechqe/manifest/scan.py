"""Finding audio under a folder.

Everything the scanner sees that is named like audio becomes an item: regular files, and also
symbolic-link loops, dangling links and folders named ``x.wav`` that hold no audio, which
become items with a typed error rather than vanishing from the results (issue 12). Sub-folders
that are symbolic links to folders are followed (users link generated outputs from elsewhere),
each real folder at most once, so a link to an ancestor cannot loop.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import ConfigError

#: File extensions taken as audio when scanning folders (all decoded by soundfile/libsndfile).
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3")


def _is_audio_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in AUDIO_EXTENSIONS


def scan_audio(root: str | Path) -> list[Path]:
    """Every entry under ``root`` named like audio (recursive, sorted, hidden names skipped).

    Regular files, and the entries that cannot be audio but must be reported: link loops,
    dangling links, special files, and folders with an audio extension that hold no audio.
    Folder links are followed once per real folder.

    Raises:
        ConfigError: ``root`` is not a folder.
    """
    root = Path(root)
    if not root.is_dir():
        raise ConfigError(f"not a folder: {root}")
    found: list[Path] = []
    audio_named_dirs: list[Path] = []
    seen: set[tuple[int, int]] = set()
    st = os.stat(root)
    seen.add((st.st_dev, st.st_ino))
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        keep = []
        for d in sorted(dirnames):
            if d.startswith("."):
                continue
            full = os.path.join(dirpath, d)
            try:
                s = os.stat(full)
            except OSError:
                continue
            key = (s.st_dev, s.st_ino)
            if key in seen:  # a link back to a folder already walked: a loop, or a duplicate
                continue
            seen.add(key)
            keep.append(d)
            if _is_audio_name(d):
                audio_named_dirs.append(Path(full))
        dirnames[:] = keep
        for f in filenames:
            if not f.startswith(".") and _is_audio_name(f):
                found.append(Path(dirpath) / f)
    for d in audio_named_dirs:
        if not any(d in p.parents for p in found):
            found.append(d)
    return sorted(found)
