"""speechqe's own JSONL manifest (what ``speechqe manifest`` writes)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from ...errors import ConfigError
from ..core import AudioItem, SpeechSet, describe_file, file_sha256
from ..textio import line_error, read_lines, strip_gz


def from_jsonl(
    path: str | Path, *, name: str | None = None, rehash: bool = False,
    encoding: str | None = None,
) -> SpeechSet:
    """Read a JSONL manifest (plain or gzip).

    Each line is an object with at least ``path`` (relative paths are resolved against the
    file's folder); optional ``id`` (default: the file stem), ``system`` (default ``'default'``),
    ``ref_path`` (or ``reference``), ``prompt_path``, ``text``, ``mos``, ``listener_scores``,
    ``speaker``, ``offset`` and ``duration`` (seconds: the item is that segment of the file),
    ``channel`` (0-based: the item is that channel), and any other string fields (kept in
    ``extra``). Lines written by :meth:`SpeechSet.to_jsonl` carry headers and hashes and are
    read as they are, unless ``rehash``.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"manifest not found: {path}")
    base = path.parent
    item_fields = {f.name for f in dataclasses.fields(AudioItem)}
    items = []
    hashes: dict[str, str] = {}
    for n, line in read_lines(path, encoding):
        try:
            d = json.loads(line)
        except json.JSONDecodeError as exc:
            raise line_error(path, n, f"not JSON: {exc}") from exc
        if not isinstance(d, dict):
            raise line_error(path, n, "a line must be a JSON object")
        if "path" not in d:
            raise line_error(path, n, "an item needs a 'path'")
        if "reference" in d and "ref_path" not in d:
            d["ref_path"] = d.pop("reference")
        audio = Path(d["path"])
        audio = audio if audio.is_absolute() else (base / audio)
        d["path"] = str(audio.resolve())
        for key in ("ref_path", "prompt_path"):
            if d.get(key):
                p = Path(d[key])
                d[key] = str((p if p.is_absolute() else base / p).resolve())
        if "offset" in d or "duration" in d:
            if d.get("segment") is not None:
                raise line_error(path, n, "give either 'segment' or 'offset'/'duration'")
            try:
                offset = float(d.pop("offset", 0.0) or 0.0)
                dur = d.pop("duration", None)
                d["segment"] = (offset, None if dur is None else float(dur))
            except (TypeError, ValueError):
                raise line_error(path, n, "'offset' and 'duration' are seconds (numbers)") from None
        extra = dict(d.pop("extra", {}) or {})
        extra.update({k: d.pop(k) for k in list(d) if k not in item_fields})
        d["extra"] = extra
        d.setdefault("id", audio.stem)
        d.setdefault("system", "default")
        if rehash or not d.get("sha256"):
            seg = d.get("segment")
            header = describe_file(d["path"], item_id=d["id"], system=d["system"],
                                   segment=tuple(seg) if seg is not None else None,
                                   channel=d.get("channel"), hashes=hashes)
            for k in ("sha256", "sample_rate", "frames", "channels", "error_type", "error",
                      "segment", "channel"):
                d[k] = getattr(header, k)
            if d.get("ref_path"):
                d["ref_sha256"] = file_sha256(d["ref_path"])
            if d.get("prompt_path"):
                d["prompt_sha256"] = file_sha256(d["prompt_path"])
        try:
            items.append(AudioItem.from_dict(d))
        except (ConfigError, TypeError, ValueError) as exc:
            raise line_error(path, n, str(exc)) from exc
    stem = Path(strip_gz(path.name)).stem
    return SpeechSet(tuple(items), name=name or stem, source=str(path))
