"""One ``.safetensors`` file holding a speechqe object: its tensors, and a JSON header (with a
``format`` tag) in the file's metadata under the key ``speechqe``.

Used by the objects that are pure arrays plus settings (the layer aggregator, the WORLD unit
vocoder): safetensors never runs code when a file is read, unlike a pickle, and the write is
atomic (a temporary name, then a rename), so a killed process leaves no half-written file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

from speechqe.errors import ConfigError

SUFFIX = ".safetensors"


def write(path: str | Path, tensors: Mapping[str, Any], header: Mapping[str, Any],
          framework: str = "numpy") -> Path:
    """Write ``tensors`` (numpy arrays, or torch tensors with ``framework='pt'``) and
    ``header`` to ``path`` (``.safetensors`` added when missing), atomically. Returns the path."""
    if framework == "pt":
        from safetensors.torch import save_file
    else:
        from safetensors.numpy import save_file

    path = Path(path)
    if path.suffix != SUFFIX:
        path = path.with_suffix(SUFFIX)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file(dict(tensors), str(tmp), metadata={"speechqe": json.dumps(dict(header), default=str)})
    os.replace(tmp, path)
    return path


def read(path: str | Path, what: str, fmt: str,
         framework: str = "numpy") -> tuple[dict[str, Any], dict[str, Any]]:
    """Read a :func:`write` file -> ``(tensors, header)``.

    Args:
        what: the object's name in messages (``'layer aggregator'``).
        fmt: the ``format`` tag the header must carry.

    Raises:
        ConfigError: a missing file, one that is not safetensors, or another object's file.
    """
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} not found: {path}")
    try:
        with safe_open(str(path), framework=framework) as f:
            header = json.loads((f.metadata() or {}).get("speechqe", "{}"))
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (OSError, SafetensorError, ValueError) as exc:
        raise ConfigError(f"{path} is not a {what}: {exc}") from None
    if not isinstance(header, dict) or header.get("format") != fmt:
        found = header.get("format") if isinstance(header, dict) else None
        raise ConfigError(f"{path}: not a speechqe {what} (format {found!r})")
    return tensors, header
