"""SHEET / MOS-Bench CSV lists."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from ...errors import ConfigError
from ..core import SpeechSet, describe_file
from ..textio import line_error, read_text

#: The columns a SHEET CSV must have.
SHEET_COLUMNS = ("wav_path", "system_id", "sample_id")


def from_sheet_csv(
    csv_path: str | Path, *, audio_root: str | Path | None = None, name: str | None = None,
    encoding: str | None = None,
) -> SpeechSet:
    """Read a SHEET / MOS-Bench CSV (``wav_path, system_id, sample_id, avg_score``).

    ``wav_path`` is resolved against ``audio_root`` (default: the CSV's folder). A ``speaker``
    column fills :attr:`AudioItem.speaker` and a ``text`` column :attr:`AudioItem.text`; other
    columns are kept in :attr:`AudioItem.extra`.
    When a ``listener_id``/``score`` column pair is present (one row per rating), rows are
    grouped per sample and the ratings kept as listener scores.
    """
    csv_path = Path(csv_path)
    root = Path(audio_root) if audio_root else csv_path.parent
    if not csv_path.is_file():
        raise ConfigError(f"no such file: {csv_path}")
    reader = csv.DictReader(io.StringIO(read_text(csv_path, encoding), newline=""))
    cols = {c.strip() for c in (reader.fieldnames or [])}
    need = set(SHEET_COLUMNS)
    if not need <= cols:
        raise ConfigError(
            f"{csv_path}: a SHEET CSV needs columns {sorted(need)}; found {sorted(cols)}"
        )
    grouped: dict[str, list[tuple[int, dict[str, str]]]] = {}
    for row in reader:
        row = {(k or "").strip(): (v or "").strip() if isinstance(v, str) else "" for k, v in row.items()}
        grouped.setdefault(row["sample_id"], []).append((reader.line_num, row))
    known = {"wav_path", "system_id", "sample_id", "avg_score", "listener_id", "score", "speaker",
             "text"}
    items = []
    for sample_id, group in grouped.items():
        line, first = group[0]
        path = Path(first["wav_path"])
        path = path if path.is_absolute() else root / path
        try:
            listeners = tuple(
                (r["listener_id"], float(r["score"]))
                for _, r in group
                if r.get("listener_id") and r.get("score")
            )
            mos = _float_or_none(first.get("avg_score"))
        except ValueError as exc:
            raise line_error(csv_path, line, f"sample {sample_id!r}: a score is not a number "
                                             f"({exc})") from None
        if mos is None and listeners:
            mos = sum(s for _, s in listeners) / len(listeners)
        extra = tuple(sorted((k, v) for k, v in first.items() if k not in known and v))
        items.append(
            describe_file(
                path, item_id=sample_id, system=first["system_id"], mos=mos,
                listener_scores=listeners, speaker=first.get("speaker") or None,
                text=first.get("text") or None, extra=extra,
            )
        )
    return SpeechSet(tuple(items), name=name or csv_path.stem, source=str(csv_path))


def _float_or_none(v: str | None) -> float | None:
    if v is None or v == "":
        return None
    return float(v)
