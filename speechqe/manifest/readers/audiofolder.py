"""The Hugging Face ``audiofolder`` layout: audio files plus ``metadata.csv`` or
``metadata.jsonl`` with a ``file_name`` column (paths relative to the metadata file).

Metadata files are looked for in the folder and in its direct sub-folders (the layout's
``train/``, ``test/`` splits). Each row is an item:

* ``id``: the audio path relative to the folder, without extension (as the folder reader
  gives it), ``system``: a ``system``/``system_id`` column, else the first sub-folder (a split,
  or a system folder), else ``--system`` or the folder's name;
* ``text``: the first of the columns ``text``, ``transcription``, ``sentence``;
* ``speaker``: ``speaker`` or ``speaker_id``; other columns go to ``extra``.

Only listed files are items (the layout's metadata defines the set); a listed file that is
missing is an item with an error.
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any, Iterator

from ...errors import ConfigError
from ..core import AudioItem, SpeechSet, describe_file, rel_id
from ..textio import line_error, read_lines, read_text

METADATA_NAMES = ("metadata.csv", "metadata.jsonl")
TEXT_COLUMNS = ("text", "transcription", "sentence")
SPEAKER_COLUMNS = ("speaker", "speaker_id")
SYSTEM_COLUMNS = ("system", "system_id")


def metadata_files(root: Path) -> list[Path]:
    """The metadata files of an audiofolder rooted at ``root`` (itself and direct
    sub-folders) that have a ``file_name`` column."""
    found = []
    for folder in [root] + sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for n in METADATA_NAMES:
            f = folder / n
            if f.is_file() and has_file_name(f):
                found.append(f)
    return found


def has_file_name(path: Path) -> bool:
    """Whether a metadata file's first row has a ``file_name`` field (cheap: one line)."""
    try:
        with open(path, "rb") as fh:
            first = fh.readline().decode("utf-8", "replace")
    except OSError:
        return False
    if path.suffix == ".csv":
        return "file_name" in [c.strip() for c in next(csv.reader([first]), [])]
    try:
        return isinstance(d := json.loads(first), dict) and "file_name" in d
    except json.JSONDecodeError:
        return False


def _rows(path: Path, encoding: str | None) -> Iterator[tuple[int, dict[str, Any]]]:
    if path.suffix == ".csv":
        reader = csv.DictReader(io.StringIO(read_text(path, encoding), newline=""))
        if "file_name" not in [c.strip() for c in (reader.fieldnames or [])]:
            raise ConfigError(f"{path}: an audiofolder metadata.csv needs a 'file_name' column")
        for row in reader:
            if None in row:
                raise line_error(path, reader.line_num, "more fields than the header has")
            yield reader.line_num, {(k or "").strip(): v for k, v in row.items()}
        return
    for n, line in read_lines(path, encoding):
        try:
            d = json.loads(line)
        except json.JSONDecodeError as exc:
            raise line_error(path, n, f"not JSON: {exc}") from exc
        if not isinstance(d, dict):
            raise line_error(path, n, "a line must be a JSON object")
        yield n, d


def _first(row: dict[str, Any], names: tuple[str, ...]) -> Any:
    for n in names:
        if row.get(n) not in (None, ""):
            return row[n]
    return None


def from_audiofolder(
    source: str | Path,
    *,
    system: str | None = None,
    name: str | None = None,
    encoding: str | None = None,
) -> SpeechSet:
    """Build a set from an audiofolder (a folder, or one of its metadata files).

    Raises:
        ConfigError: no metadata file with ``file_name``; a row without ``file_name``, or a
            file listed twice (with ``file:line``).
    """
    source = Path(source)
    if source.is_file():
        root, metas = Path(os.path.abspath(source.parent)), [source]
    else:
        root = Path(os.path.abspath(source))
        metas = metadata_files(root)
        if not metas:
            raise ConfigError(f"{root} has no metadata.csv or metadata.jsonl with a 'file_name' column")
    flat = system or root.name
    items: list[AudioItem] = []
    seen: dict[Path, str] = {}
    for meta in metas:
        for n, row in _rows(meta, encoding):
            fname = row.get("file_name")
            if not isinstance(fname, str) or not fname.strip():
                raise line_error(meta, n, "a row needs a 'file_name'")
            audio = Path(os.path.abspath(Path(os.path.abspath(meta.parent)) / fname.strip()))
            if audio in seen:
                raise line_error(meta, n, f"{fname!r} is listed twice (also at {seen[audio]})")
            seen[audio] = f"{meta}:{n}"
            try:
                rel = audio.relative_to(root)
            except ValueError:
                raise line_error(meta, n, f"{fname!r} lies outside {root}") from None
            sys_col = _first(row, SYSTEM_COLUMNS)
            sys_name = str(sys_col) if sys_col is not None else (
                rel.parts[0] if len(rel.parts) > 1 else flat)
            text = _first(row, TEXT_COLUMNS)
            speaker = _first(row, SPEAKER_COLUMNS)
            used = {"file_name", *TEXT_COLUMNS, *SPEAKER_COLUMNS, *SYSTEM_COLUMNS}
            extra = tuple(sorted((k, str(v)) for k, v in row.items()
                                 if k not in used and v not in (None, "")
                                 and isinstance(v, (str, int, float, bool))))
            items.append(describe_file(
                audio, item_id=rel_id(audio, root), system=sys_name,
                text=" ".join(str(text).split()) if text is not None else None,
                speaker=str(speaker) if speaker is not None else None, extra=extra,
            ))
    return SpeechSet(tuple(items), name=name or root.name, source=str(root))
