"""Speech sets: immutable manifests of audio items.

A :class:`SpeechSet` is built from what users already have by reading file headers and hashing
file contents; samples are decoded later, lazily, by the runner. Items are frozen dataclasses
and every operation returns a new set (the lhotse ``Recording``/``Cut`` pattern).

Sources (one reader each, in :mod:`.readers`; :func:`load_speech_set` detects which):

* a folder of audio (recursive) or one audio file (:mod:`.readers.folder`);
* speechqe's JSONL (:mod:`.readers.jsonl`) and SHEET/MOS-Bench CSVs (:mod:`.readers.sheet`);
* Kaldi/ESPnet data dirs and ``wav.scp`` lists (:mod:`.readers.kaldi`);
* lhotse recording, supervision and cut manifests (:mod:`.readers.lhotse`);
* the Hugging Face ``audiofolder`` layout (:mod:`.readers.audiofolder`).

An item whose audio cannot be had (unreadable header, missing file, link loop, failed pipe)
stays in the set with :attr:`AudioItem.error` set, so the runner records the error for every
metric instead of silently dropping it. Text files are read through :mod:`.textio` (gzip,
``--text-encoding``, ``file:line`` errors).
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Sequence

from .core import (
    SEGMENT_TOLERANCE_S,
    TRANSCRIPT_EXTENSIONS,
    AudioItem,
    SpeechSet,
    attach_reference_table,
    attach_transcripts,
    candidate_keys,
    describe_file,
    error_item,
    file_sha256,
    match_references,
    normalise_whitespace,
    part_sha256,
    read_transcripts,
)
from .readers.audiofolder import from_audiofolder
from .readers.folder import from_audio_file, from_folder
from .readers.jsonl import from_jsonl
from .readers.kaldi import from_kaldi
from .readers.lhotse import from_lhotse
from .readers.sheet import from_sheet_csv
from .scan import AUDIO_EXTENSIONS, scan_audio
from .sources import FORMATS, detect_format, load_speech_set, read_source, with_references
from .textio import DEFAULT_ENCODING, check_encoding


def summarise(sset: SpeechSet) -> dict[str, Any]:
    """Counts for a quick look: items per system, header errors, references, transcripts."""
    per_system = Counter(it.system for it in sset)
    return {
        "items": len(sset),
        "systems": dict(sorted(per_system.items())),
        "header_errors": sum(1 for it in sset if not it.ok),
        "with_reference": sum(1 for it in sset if it.ref_path),
        "with_text": sum(1 for it in sset if it.text is not None),
        "hours": sum((it.duration or 0.0) for it in sset) / 3600,
    }


__all__: Sequence[str] = (
    "AUDIO_EXTENSIONS",
    "DEFAULT_ENCODING",
    "FORMATS",
    "SEGMENT_TOLERANCE_S",
    "TRANSCRIPT_EXTENSIONS",
    "AudioItem",
    "SpeechSet",
    "attach_reference_table",
    "attach_transcripts",
    "candidate_keys",
    "check_encoding",
    "describe_file",
    "detect_format",
    "error_item",
    "file_sha256",
    "from_audio_file",
    "from_audiofolder",
    "from_folder",
    "from_jsonl",
    "from_kaldi",
    "from_lhotse",
    "from_sheet_csv",
    "load_speech_set",
    "match_references",
    "normalise_whitespace",
    "part_sha256",
    "read_source",
    "read_transcripts",
    "scan_audio",
    "summarise",
    "with_references",
)
