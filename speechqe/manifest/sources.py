"""Which reader reads a source (auto-detected where unambiguous, else ``--format``), and the
one entry point that builds a set with its references and transcripts."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from ..errors import ConfigError
from .core import (
    SpeechSet,
    attach_reference_table,
    attach_transcripts,
    match_references,
    no_match_error,
    read_transcripts,
)
from .readers import audiofolder, kaldi, lhotse
from .readers.folder import from_audio_file, from_folder
from .readers.jsonl import from_jsonl
from .readers.sheet import SHEET_COLUMNS, from_sheet_csv
from .scan import AUDIO_EXTENSIONS
from .textio import check_encoding, read_lines, strip_gz

#: What ``--format`` accepts (``auto``: detect).
FORMATS = ("auto", "folder", "file", "jsonl", "sheet", "kaldi", "lhotse", "audiofolder")
_KALDI_PARTS = ("text", "utt2spk", "spk2utt", "segments", "reco2dur", "utt2dur", "spk2gender")
_HOW = ("give a folder of audio, an audio file, a Kaldi data dir or wav.scp, a lhotse "
        "manifest (.jsonl/.jsonl.gz), an audiofolder (metadata.csv/.jsonl with file_name), a "
        "speechqe .jsonl manifest or a SHEET/MOS-Bench .csv")


def _first_object(path: Path, encoding: str | None) -> dict | None:
    for n, line in read_lines(path, encoding):
        try:
            d = json.loads(line)
        except json.JSONDecodeError:
            raise ConfigError(f"{path}:{n}: not JSON") from None
        return d if isinstance(d, dict) else None
    return None


def _csv_columns(path: Path, encoding: str | None) -> list[str]:
    for _, line in read_lines(path, encoding):
        return [c.strip() for c in next(csv.reader([line]), [])]
    return []


def detect_format(source: str | Path, encoding: str | None = None) -> str:
    """The format of ``source`` (one of :data:`FORMATS` but ``auto``).

    Raises:
        ConfigError: the source does not exist, is none of the formats, or fits several
            (then ``--format`` decides).
    """
    p = Path(source)
    if not p.exists():
        raise ConfigError(f"no such file or folder: {p}")
    if p.is_dir():
        found = []
        if kaldi.is_data_dir(p):
            found.append("kaldi (it has a wav.scp)")
        if audiofolder.metadata_files(p):
            found.append("audiofolder (it has a metadata file with file_name)")
        if len(found) > 1:
            raise ConfigError(f"{p} could be read as {' or as '.join(found)}: choose with "
                              "--format kaldi or --format audiofolder")
        return found[0].split()[0] if found else "folder"
    name = strip_gz(p.name).lower()
    suffix = Path(name).suffix
    if suffix in AUDIO_EXTENSIONS:
        return "file"
    if suffix == ".scp":
        return "kaldi"
    if name in _KALDI_PARTS:
        raise ConfigError(f"{p} is part of a Kaldi data dir: give the folder ({p.parent}) or "
                          "its wav.scp")
    if suffix == ".csv":
        cols = _csv_columns(p, encoding)
        if set(SHEET_COLUMNS) <= set(cols):
            return "sheet"
        if "file_name" in cols:
            return "audiofolder"
        raise ConfigError(f"{p}: a SHEET/MOS-Bench CSV needs columns {list(SHEET_COLUMNS)} "
                          f"and an audiofolder metadata.csv a 'file_name' column; found {cols}")
    if suffix in (".jsonl", ".ndjson"):
        d = _first_object(p, encoding)
        if d is None:
            raise ConfigError(f"{p} holds no JSON object")
        if lhotse.kind_of(d):
            return "lhotse"
        if "file_name" in d and "path" not in d:
            return "audiofolder"
        return "jsonl"
    raise ConfigError(f"cannot build a speech set from {p}: {_HOW}")


def read_source(
    source: str | Path,
    *,
    format: str = "auto",
    system: str | None = None,
    text_encoding: str | None = None,
    allow_pipes: bool = False,
) -> SpeechSet:
    """Build a set from ``source`` in ``format`` (``auto``: :func:`detect_format`)."""
    if format not in FORMATS:
        raise ConfigError(f"unknown --format {format!r}; known: {', '.join(FORMATS)}")
    enc = check_encoding(text_encoding)
    p = Path(source)
    if not p.exists():
        raise ConfigError(f"no such file or folder: {p}")
    fmt = detect_format(p, enc) if format == "auto" else format
    if fmt == "folder":
        if not p.is_dir():
            raise ConfigError(f"--format folder needs a folder (got {p})")
        return from_folder(p, system=system, encoding=enc)
    if fmt == "file":
        if not p.is_file():
            raise ConfigError(f"--format file needs an audio file (got {p})")
        return from_audio_file(p, system=system, encoding=enc)
    if fmt == "jsonl":
        return from_jsonl(p, encoding=enc)
    if fmt == "sheet":
        return from_sheet_csv(p, encoding=enc)
    if fmt == "kaldi":
        return kaldi.from_kaldi(p, system=system, encoding=enc, allow_pipes=allow_pipes)
    if fmt == "lhotse":
        if not p.is_file():
            raise ConfigError(f"--format lhotse needs a manifest file (got {p})")
        return lhotse.from_lhotse(p, system=system, encoding=enc, allow_pipes=allow_pipes)
    return audiofolder.from_audiofolder(p, system=system, encoding=enc)


def with_references(
    sset: SpeechSet, ref: str | Path, *, text_encoding: str | None = None,
    allow_pipes: bool = False,
) -> SpeechSet:
    """Attach references from a folder of audio, a Kaldi ``wav.scp`` or data dir, or (for a
    set of one item) one audio file.

    Raises:
        ConfigError: not one item finds its reference (an id from each side is shown).
    """
    r = Path(ref)
    if not r.exists():
        raise ConfigError(f"no such reference file or folder: {r}")
    if r.is_file() and Path(strip_gz(r.name)).suffix.lower() in AUDIO_EXTENSIONS:
        if len(sset) != 1:
            raise ConfigError(f"--ref {r} is one audio file; it can be the reference of a single "
                              f"input file, not of {len(sset)} items: give a folder or a wav.scp")
        return attach_reference_table(sset, {sset[0].id: r.resolve()})
    if (r.is_file() and strip_gz(r.name).lower().endswith(".scp")) or kaldi.is_data_dir(r):
        table, keys = kaldi.reference_table(sset, r, text_encoding, allow_pipes=allow_pipes)
        if len(sset) and not table:
            raise no_match_error(
                "--ref", str(r), sset, keys,
                "A wav.scp entry matches an item by its utterance id (or the item id without "
                "its system folder, or its last component).",
            )
        return attach_reference_table(sset, table)
    if r.is_dir():
        return match_references(sset, r)
    raise ConfigError(f"--ref takes a folder of audio, a wav.scp, a Kaldi data dir or one audio "
                      f"file (got {r})")


def load_speech_set(
    source: str | Path,
    *,
    ref_dir: str | Path | None = None,
    text_file: str | Path | None = None,
    system: str | None = None,
    format: str = "auto",
    text_encoding: str | None = None,
    allow_pipes: bool = False,
) -> SpeechSet:
    """Build a set from ``source`` (see :func:`read_source`), then attach references
    (``ref_dir``: see :func:`with_references`) and transcripts (``text_file``: ``id<TAB>text``
    or Kaldi ``text``), both of which must match at least one item.

    Args:
        text_encoding: the encoding of every text file read (lists, transcripts, metadata);
            default UTF-8.
        allow_pipes: run Kaldi/lhotse pipe commands (refused otherwise).
    """
    sset = read_source(source, format=format, system=system, text_encoding=text_encoding,
                       allow_pipes=allow_pipes)
    if ref_dir is not None:
        sset = with_references(sset, ref_dir, text_encoding=text_encoding, allow_pipes=allow_pipes)
    if text_file is not None:
        sset = attach_transcripts(sset, read_transcripts(text_file, text_encoding), str(text_file))
    return sset
