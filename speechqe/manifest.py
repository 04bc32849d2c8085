"""Speech sets: immutable manifests of audio items.

A :class:`SpeechSet` is built from what users already have (a folder of audio, a reference
folder, transcripts, SHEET/MOS-Bench CSVs, JSONL) by reading file headers and hashing file
contents; samples are decoded later, lazily, by the runner. Items are frozen dataclasses and
every operation returns a new set (the lhotse ``Recording``/``Cut`` pattern).

An item whose header cannot be read stays in the set with :attr:`AudioItem.error` set, so the
runner can record the error for every metric instead of silently dropping the file.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

from .audio import probe
from .errors import ConfigError, ItemError
from .hashing import sha256_file

#: File extensions taken as audio when scanning folders (all decoded by soundfile/libsndfile).
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3")
#: Transcript files looked for beside each audio file, in this order.
TRANSCRIPT_EXTENSIONS = (".txt", ".lab")



def file_sha256(path: str | Path) -> str:
    """sha256 hex digest of a file's bytes (``'missing:<path>'`` hashed when it does not exist)."""
    try:
        return sha256_file(path)
    except OSError:
        return hashlib.sha256(f"missing:{Path(path).resolve()}".encode()).hexdigest()


@dataclass(frozen=True)
class AudioItem:
    """One utterance of a speech set.

    Attributes:
        id: unique id within the set (for folders: the relative path without extension).
        path: absolute path of the audio file.
        system: the system (TTS model, codec, condition) that produced it.
        sample_rate, frames, channels: from the file header; ``None`` if it cannot be read.
        sha256: sha256 of the file's bytes; the key of every stored score.
        ref_path, ref_sha256: the clean/natural reference, for intrusive metrics.
        prompt_path, prompt_sha256: a speaker prompt (zero-shot TTS, voice conversion target),
            used by speaker similarity instead of the reference when given.
        text: the intended transcript, for ASR metrics.
        mos: mean opinion score label (training and evaluation of MOS predictors).
        listener_scores: ``(listener_id, score)`` pairs behind ``mos``, when known.
        speaker: speaker id, when known (used to group cross-validation folds).
        error_type, error: set when the header could not be read; the item is then scored as
            an error for every metric (it never disappears from a run).
        extra: other string fields carried from the source manifest.
    """

    id: str
    path: str
    system: str
    sample_rate: int | None = None
    frames: int | None = None
    channels: int | None = None
    sha256: str = ""
    ref_path: str | None = None
    ref_sha256: str | None = None
    prompt_path: str | None = None
    prompt_sha256: str | None = None
    text: str | None = None
    mos: float | None = None
    listener_scores: tuple[tuple[str, float], ...] = ()
    speaker: str | None = None
    error_type: str | None = None
    error: str | None = None
    extra: tuple[tuple[str, str], ...] = ()

    @property
    def duration(self) -> float | None:
        """Duration in seconds from the header, or ``None``."""
        if self.sample_rate and self.frames is not None:
            return self.frames / self.sample_rate
        return None

    @property
    def ok(self) -> bool:
        return self.error is None

    def replace(self, **changes: Any) -> "AudioItem":
        return dataclasses.replace(self, **changes)

    def get(self, key: str, default: str | None = None) -> str | None:
        """Look up a field of :attr:`extra`."""
        return dict(self.extra).get(key, default)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["listener_scores"] = [list(p) for p in self.listener_scores]
        d["extra"] = dict(self.extra)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "AudioItem":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ConfigError(f"unknown item fields {sorted(unknown)}; known: {sorted(names)}")
        d = dict(d)
        d["listener_scores"] = tuple((str(a), float(b)) for a, b in d.get("listener_scores", ()))
        d["extra"] = tuple(sorted((str(k), str(v)) for k, v in dict(d.get("extra", {})).items()))
        return cls(**d)


def describe_file(
    path: str | Path, *, item_id: str, system: str, **fields: Any
) -> AudioItem:
    """Build an :class:`AudioItem` from a file's header and content hash.

    A file whose header is unreadable still gives an item, with ``error`` set.
    """
    path = Path(path).resolve()
    base = dict(id=item_id, path=str(path), system=system, sha256=file_sha256(path), **fields)
    try:
        info = probe(path)
    except ItemError as exc:
        return AudioItem(**base, error_type=exc.code, error=str(exc))
    return AudioItem(
        **base, sample_rate=info.sample_rate, frames=info.frames, channels=info.channels
    )


@dataclass(frozen=True)
class SpeechSet:
    """An immutable, ordered set of :class:`AudioItem` with unique ids."""

    items: tuple[AudioItem, ...]
    name: str = "speech-set"
    source: str = ""
    _index: Mapping[str, int] = field(default=None, repr=False, compare=False)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        ids = Counter(it.id for it in self.items)
        dup = [i for i, n in ids.items() if n > 1]
        if dup:
            raise ConfigError(f"duplicate item ids in {self.name}: {sorted(dup)[:10]}")
        object.__setattr__(self, "_index", {it.id: k for k, it in enumerate(self.items)})

    # --- container protocol -----------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[AudioItem]:
        return iter(self.items)

    def __getitem__(self, key: str | int) -> AudioItem:
        if isinstance(key, int):
            return self.items[key]
        return self.items[self._index[key]]

    def __contains__(self, key: object) -> bool:
        return key in self._index

    @property
    def systems(self) -> tuple[str, ...]:
        return tuple(sorted({it.system for it in self.items}))

    @property
    def has_references(self) -> bool:
        return any(it.ref_path for it in self.items)

    @property
    def has_prompts(self) -> bool:
        return any(it.prompt_path for it in self.items)

    @property
    def has_text(self) -> bool:
        return any(it.text is not None for it in self.items)

    def content_hash(self) -> str:
        """sha256 over the ids, content hashes and labels: identifies the data, not the paths."""
        h = hashlib.sha256()
        for it in sorted(self.items, key=lambda i: i.id):
            h.update(
                json.dumps(
                    [it.id, it.system, it.sha256, it.ref_sha256, it.prompt_sha256, it.text, it.mos,
                     list(it.listener_scores)],
                    ensure_ascii=False,
                ).encode()
            )
        return h.hexdigest()

    # --- operations returning new sets ------------------------------------------------------
    def replace_items(self, items: Iterable[AudioItem]) -> "SpeechSet":
        return SpeechSet(tuple(items), name=self.name, source=self.source)

    def filter(self, predicate: Callable[[AudioItem], bool]) -> "SpeechSet":
        return self.replace_items(it for it in self.items if predicate(it))

    def map(self, fn: Callable[[AudioItem], AudioItem]) -> "SpeechSet":
        return self.replace_items(fn(it) for it in self.items)

    def with_references(self, ref_dir: str | Path) -> "SpeechSet":
        """Attach references from ``ref_dir`` (see :func:`match_references`)."""
        return match_references(self, ref_dir)

    def with_transcripts(self, source: str | Path) -> "SpeechSet":
        """Attach transcripts from a ``id<TAB>text`` file (see :func:`read_transcripts`)."""
        table = read_transcripts(source)
        return self.map(
            lambda it: it.replace(text=t) if (t := _lookup(table, it)) is not None else it
        )

    # --- serialisation ---------------------------------------------------------------------
    def to_jsonl(self, path: str | Path) -> None:
        """Write one JSON object per item (absolute paths)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            for it in self.items:
                f.write(json.dumps(it.to_dict(), ensure_ascii=False) + "\n")
        tmp.replace(path)


# ------------------------------------------------------------------------------------------
# Builders
# ------------------------------------------------------------------------------------------
def _rel_id(path: Path, root: Path) -> str:
    return PurePosixPath(path.relative_to(root).with_suffix("").as_posix()).as_posix()


def scan_audio(root: str | Path) -> list[Path]:
    """All audio files under ``root`` (recursive, sorted, hidden files skipped)."""
    root = Path(root)
    if not root.is_dir():
        raise ConfigError(f"not a folder: {root}")
    out = []
    for p in sorted(root.rglob("*")):
        if p.suffix.lower() in AUDIO_EXTENSIONS and p.is_file():
            if any(part.startswith(".") for part in p.relative_to(root).parts):
                continue
            out.append(p)
    return out


def from_folder(
    root: str | Path,
    *,
    system: str | None = None,
    read_transcript_files: bool = True,
    name: str | None = None,
) -> SpeechSet:
    """Build a set from a folder of audio (recursive).

    * ``id`` is the path relative to ``root`` without extension (``sysA/utt001``); when two
      files differ only by extension, their ids keep the extension.
    * ``system`` is the first sub-folder; files directly in ``root`` get ``system`` (default:
      the folder's name).
    * A ``.txt`` or ``.lab`` file beside an audio file (same stem) is its transcript.
    """
    root = Path(root).resolve()
    files = scan_audio(root)
    if not files:
        raise ConfigError(
            f"no audio files ({', '.join(AUDIO_EXTENSIONS)}) found under {root}"
        )
    flat_system = system or root.name
    stems = Counter(_rel_id(p, root) for p in files)
    items = []
    for p in files:
        rel = p.relative_to(root)
        item_id = _rel_id(p, root)
        if stems[item_id] > 1:
            item_id = rel.as_posix()
        sys_name = rel.parts[0] if len(rel.parts) > 1 else flat_system
        text = _sidecar_text(p) if read_transcript_files else None
        items.append(describe_file(p, item_id=item_id, system=sys_name, text=text))
    return SpeechSet(tuple(items), name=name or root.name, source=str(root))


def _sidecar_text(audio_path: Path) -> str | None:
    for ext in TRANSCRIPT_EXTENSIONS:
        t = audio_path.with_suffix(ext)
        if t.is_file():
            return normalise_whitespace(t.read_text(encoding="utf-8"))
    return None


def normalise_whitespace(text: str) -> str:
    return " ".join(text.split())


def _candidate_keys(item_id: str, system: str | None = None) -> list[str]:
    """Keys tried, in order, to match an item to a reference or transcript."""
    p = PurePosixPath(item_id)
    keys = [item_id]
    if len(p.parts) > 1:
        keys.append(PurePosixPath(*p.parts[1:]).as_posix())  # without the system folder
    keys.append(p.name)  # stem
    out: list[str] = []
    for k in keys:
        if k not in out:
            out.append(k)
    return out


def match_references(speech_set: SpeechSet, ref_dir: str | Path) -> SpeechSet:
    """Attach a reference to each item from ``ref_dir``.

    An item ``sysA/sub/utt1`` is matched to the reference with the same relative path
    (``sysA/sub/utt1.*``), else the same path without the system folder (``sub/utt1.*``), else
    the same stem (``utt1.*``) when that stem is unique in ``ref_dir``. Items with no match keep
    ``ref_path=None`` (intrusive metrics then record a ``missing_reference`` error for them).
    """
    ref_dir = Path(ref_dir).resolve()
    refs = scan_audio(ref_dir)
    if not refs:
        raise ConfigError(f"no reference audio found under {ref_dir}")
    by_key: dict[str, Path] = {}
    by_stem: defaultdict[str, list[Path]] = defaultdict(list)
    for p in refs:
        by_key.setdefault(_rel_id(p, ref_dir), p)
        by_stem[p.stem].append(p)
    unique_stems = {s: ps[0] for s, ps in by_stem.items() if len(ps) == 1}

    hashes: dict[Path, str] = {}

    def attach(it: AudioItem) -> AudioItem:
        keys = _candidate_keys(it.id)
        match = next((by_key[k] for k in keys[:-1] if k in by_key), None)
        if match is None:
            match = by_key.get(keys[-1]) or unique_stems.get(PurePosixPath(it.id).name)
        if match is None:
            return it
        if match not in hashes:
            hashes[match] = file_sha256(match)
        return it.replace(ref_path=str(match), ref_sha256=hashes[match])

    return speech_set.map(attach)


def read_transcripts(source: str | Path) -> dict[str, str]:
    """Read ``id<TAB>text`` lines (UTF-8). A first line ``id<TAB>text`` is taken as a header.

    Raises:
        ConfigError: the file is missing, a line has no tab, or an id repeats.
    """
    source = Path(source)
    if not source.is_file():
        raise ConfigError(f"transcript file not found: {source}")
    table: dict[str, str] = {}
    with open(source, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.rstrip("\n\r")
            if not line.strip():
                continue
            if "\t" not in line:
                raise ConfigError(f"{source}:{n}: expected 'id<TAB>text', got {line[:60]!r}")
            key, text = line.split("\t", 1)
            key = key.strip()
            if n == 1 and key.lower() in ("id", "item_id", "utt_id") and text.strip().lower() in (
                "text", "transcript"
            ):
                continue
            key = PurePosixPath(key).with_suffix("").as_posix() if _has_audio_ext(key) else key
            if key in table:
                raise ConfigError(f"{source}:{n}: id {key!r} appears twice")
            table[key] = normalise_whitespace(text)
    return table


def _has_audio_ext(key: str) -> bool:
    return PurePosixPath(key).suffix.lower() in AUDIO_EXTENSIONS


def _lookup(table: Mapping[str, str], it: AudioItem) -> str | None:
    for k in _candidate_keys(it.id):
        if k in table:
            return table[k]
    return None


def from_sheet_csv(
    csv_path: str | Path, *, audio_root: str | Path | None = None, name: str | None = None
) -> SpeechSet:
    """Read a SHEET / MOS-Bench CSV (``wav_path, system_id, sample_id, avg_score``).

    ``wav_path`` is resolved against ``audio_root`` (default: the CSV's folder). A ``speaker``
    column fills :attr:`AudioItem.speaker` and a ``text`` column :attr:`AudioItem.text`; other
    extra columns are kept in :attr:`AudioItem.extra`. When a ``listener_id``/``score`` column pair is present
    (one row per rating), rows are grouped per sample and the ratings kept as listener scores.
    """
    csv_path = Path(csv_path)
    root = Path(audio_root) if audio_root else csv_path.parent
    with open(csv_path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        cols = {c.strip() for c in (reader.fieldnames or [])}
        need = {"wav_path", "system_id", "sample_id"}
        if not need <= cols:
            raise ConfigError(
                f"{csv_path}: a SHEET CSV needs columns {sorted(need)}; found {sorted(cols)}"
            )
        rows = [{k.strip(): (v or "").strip() for k, v in row.items()} for row in reader]
    grouped: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        grouped.setdefault(row["sample_id"], []).append(row)
    known = {"wav_path", "system_id", "sample_id", "avg_score", "listener_id", "score", "speaker", "text"}
    items = []
    for sample_id, group in grouped.items():
        first = group[0]
        path = Path(first["wav_path"])
        path = path if path.is_absolute() else root / path
        listeners = tuple(
            (r["listener_id"], float(r["score"]))
            for r in group
            if r.get("listener_id") and r.get("score")
        )
        mos = _float_or_none(first.get("avg_score"))
        if mos is None and listeners:
            mos = sum(s for _, s in listeners) / len(listeners)
        extra = tuple(sorted((k, v) for k, v in first.items() if k not in known and v))
        items.append(
            describe_file(
                path, item_id=sample_id, system=first["system_id"], mos=mos,
                listener_scores=listeners, extra=extra,
                speaker=first.get("speaker") or None, text=first.get("text") or None,
            )
        )
    return SpeechSet(tuple(items), name=name or csv_path.stem, source=str(csv_path))


def from_jsonl(path: str | Path, *, name: str | None = None, rehash: bool = False) -> SpeechSet:
    """Read a JSONL manifest.

    Each line is an object with at least ``path`` (relative paths are resolved against the
    file's folder); optional ``id`` (default: the file stem), ``system`` (default ``'default'``),
    ``ref_path`` (or ``reference``), ``prompt_path``, ``text``, ``mos``, ``listener_scores``, ``speaker`` and any
    other string fields (kept in ``extra``). Lines written by :meth:`SpeechSet.to_jsonl` carry
    headers and hashes and are read as they are, unless ``rehash``.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"manifest not found: {path}")
    base = path.parent
    item_fields = {f.name for f in dataclasses.fields(AudioItem)}
    items = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                d = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{path}:{n}: not JSON: {exc}") from exc
            if "path" not in d:
                raise ConfigError(f"{path}:{n}: an item needs a 'path'")
            if "reference" in d and "ref_path" not in d:
                d["ref_path"] = d.pop("reference")
            audio = Path(d["path"])
            audio = audio if audio.is_absolute() else (base / audio)
            d["path"] = str(audio.resolve())
            for key in ("ref_path", "prompt_path"):
                if d.get(key):
                    p = Path(d[key])
                    d[key] = str((p if p.is_absolute() else base / p).resolve())
            extra = dict(d.pop("extra", {}) or {})
            extra.update({k: d.pop(k) for k in list(d) if k not in item_fields})
            d["extra"] = extra
            d.setdefault("id", audio.stem)
            d.setdefault("system", "default")
            if rehash or not d.get("sha256"):
                header = describe_file(d["path"], item_id=d["id"], system=d["system"])
                for k in ("sha256", "sample_rate", "frames", "channels", "error_type", "error"):
                    d[k] = getattr(header, k)
                if d.get("ref_path"):
                    d["ref_sha256"] = file_sha256(d["ref_path"])
                if d.get("prompt_path"):
                    d["prompt_sha256"] = file_sha256(d["prompt_path"])
            items.append(AudioItem.from_dict(d))
    return SpeechSet(tuple(items), name=name or path.stem, source=str(path))


def _float_or_none(v: str | None) -> float | None:
    if v is None or v == "":
        return None
    return float(v)


def load_speech_set(
    source: str | Path,
    *,
    ref_dir: str | Path | None = None,
    text_file: str | Path | None = None,
    system: str | None = None,
) -> SpeechSet:
    """Build a set from a folder, a ``.jsonl`` manifest or a SHEET ``.csv``; then attach
    references and transcripts when given."""
    source = Path(source)
    if source.is_dir():
        sset = from_folder(source, system=system)
    elif source.suffix.lower() == ".jsonl":
        sset = from_jsonl(source)
    elif source.suffix.lower() == ".csv":
        sset = from_sheet_csv(source)
    elif not source.exists():
        raise ConfigError(f"no such file or folder: {source}")
    else:
        raise ConfigError(
            f"cannot build a speech set from {source}: give a folder of audio, a .jsonl "
            "manifest or a SHEET/MOS-Bench .csv"
        )
    if ref_dir is not None:
        sset = sset.with_references(ref_dir)
    if text_file is not None:
        sset = sset.with_transcripts(text_file)
    return sset


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
    "AudioItem",
    "SpeechSet",
    "describe_file",
    "file_sha256",
    "from_folder",
    "from_jsonl",
    "from_sheet_csv",
    "load_speech_set",
    "match_references",
    "read_transcripts",
    "scan_audio",
    "summarise",
)
