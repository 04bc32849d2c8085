"""Items, sets, and attaching references and transcripts to them.

An :class:`AudioItem` is one utterance: a whole audio file, or a segment of one (``segment``:
offset and duration in seconds, e.g. a lhotse cut or a Kaldi ``segments`` line), optionally one
channel of it. Its ``sha256`` is the key of every stored score: the file's content hash for a
whole file, and a hash of the file's content hash, the segment's first frame and length and the
channel for a part of one, so two cuts of one recording never share a record.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Iterable, Iterator, Mapping

from ..audio import LoadedAudio, probe
from ..errors import AudioReadError, ConfigError, ItemError
from ..hashing import sha256_file
from .scan import AUDIO_EXTENSIONS, scan_audio
from .textio import line_error, read_lines, read_text

#: Transcript files looked for beside each audio file, in this order.
TRANSCRIPT_EXTENSIONS = (".txt", ".lab")
#: How far (seconds) a segment may run past the end of its file and be clipped to it rather
#: than refused: lhotse's default tolerance for duration mismatches (rounding in manifests).
SEGMENT_TOLERANCE_S = 0.025


def abspath(path: str | Path) -> Path:
    """``path`` made absolute with symbolic links resolved when they resolve (a link loop or
    a dangling link keeps its own absolute path, so that it can be reported)."""
    try:
        return Path(path).resolve()
    except (OSError, RuntimeError):  # RuntimeError: symlink loop (Python < 3.13)
        return Path(os.path.abspath(path))


def file_sha256(path: str | Path) -> str:
    """sha256 hex digest of a file's bytes (``'missing:<path>'`` hashed when it cannot be
    read)."""
    try:
        return sha256_file(path)
    except OSError:
        return hashlib.sha256(f"missing:{abspath(path)}".encode()).hexdigest()


def part_sha256(file_hash: str, start: int, frames: int, channel: int | None) -> str:
    """The content key of ``frames`` frames from frame ``start`` (of one channel) of a file
    whose bytes hash to ``file_hash``."""
    return hashlib.sha256(
        f"{file_hash}|start={start}|frames={frames}|channel={channel}".encode()
    ).hexdigest()


@dataclass(frozen=True)
class AudioItem:
    """One utterance of a speech set.

    Attributes:
        id: unique id within the set (for folders: the relative path without extension).
        path: absolute path of the audio file.
        system: the system (TTS model, codec, condition) that produced it.
        sample_rate, frames, channels: from the file header (``frames``: of the segment when
            the item is one); ``None`` if it cannot be read.
        sha256: the content key of every stored score: sha256 of the file's bytes, or of the
            file's hash with the segment and channel for part of a file (:func:`part_sha256`).
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
        segment: ``(offset, duration)`` in seconds when the item is part of ``path`` (a lhotse
            cut or supervision, a Kaldi ``segments`` line); ``None``: the whole file.
        channel: the channel the item is (0-based) when it is one channel of a multi-channel
            file; ``None``: all channels, averaged to mono.
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
    segment: tuple[float, float] | None = None
    channel: int | None = None

    @property
    def duration(self) -> float | None:
        """Duration in seconds (of the segment, for part of a file), or ``None``."""
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

    def span(self) -> tuple[int, int | None]:
        """``(first frame, number of frames)`` to read from :attr:`path` (``(0, None)``: the
        whole file)."""
        if self.segment is None:
            return 0, None
        if not self.sample_rate or self.frames is None:
            raise AudioReadError("the segment's header facts are unknown")
        return round(self.segment[0] * self.sample_rate), int(self.frames)

    def load(self) -> LoadedAudio:
        """Decode and validate the item's signal: the whole file, or only its segment (read
        without decoding the rest of the file) and channel.

        Raises:
            ItemError: unreadable, empty, non-finite or silent audio.
        """
        start, frames = self.span()
        return LoadedAudio.from_file(self.path, start=start, frames=frames, channel=self.channel)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["listener_scores"] = [list(p) for p in self.listener_scores]
        d["extra"] = dict(self.extra)
        d["segment"] = None if self.segment is None else list(self.segment)
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
        if d.get("segment") is not None:
            seg = d["segment"]
            if not isinstance(seg, (list, tuple)) or len(seg) != 2:
                raise ConfigError(f"segment must be [offset, duration] in seconds (got {seg!r})")
            d["segment"] = (float(seg[0]), float(seg[1]))
        return cls(**d)


def _path_problem(path: Path) -> ItemError | None:
    """Why ``path`` is not a regular file, or ``None`` if it is one."""
    if path.is_symlink():
        try:
            path.resolve(strict=True)
        except RuntimeError:
            return AudioReadError("symbolic link loop")
        except OSError as exc:
            if "loop" in str(exc).lower() or getattr(exc, "errno", None) == 40:  # ELOOP
                return AudioReadError("symbolic link loop")
            return AudioReadError(f"broken symbolic link (to {os.readlink(path)})")
    if path.is_dir():
        return AudioReadError("is a folder, not an audio file")
    if not path.exists():
        return AudioReadError(f"no such file: {path}")
    if not path.is_file():
        return AudioReadError("not a regular file (a device, pipe or socket)")
    return None


def describe_file(
    path: str | Path,
    *,
    item_id: str,
    system: str,
    segment: tuple[float, float | None] | None = None,
    channel: int | None = None,
    hashes: dict[str, str] | None = None,
    **fields: Any,
) -> AudioItem:
    """Build an :class:`AudioItem` from a file's header and content hash.

    A file whose header is unreadable (or a link loop, a folder, a missing file) still gives
    an item, with ``error`` set.

    Args:
        segment: ``(offset, duration)`` seconds of the part of the file the item is
            (``duration`` ``None``: to the end of the file). A segment that covers the whole
            file gives a whole-file item (so its scores are shared with the file read whole).
        channel: keep only this channel (0-based) of a multi-channel file.
        hashes: a cache of file hashes by path, shared by the items of one manifest (many
            cuts of one long recording hash it once).
    """
    abs_path = abspath(path)
    problem = _path_problem(Path(path))
    fh = None
    if problem is None:
        key = str(abs_path)
        if hashes is not None and key in hashes:
            fh = hashes[key]
        else:
            fh = file_sha256(abs_path)
            if hashes is not None:
                hashes[key] = fh
    else:
        fh = file_sha256(path)
    base = dict(id=item_id, path=str(abs_path), system=system, sha256=fh, **fields)
    if problem is not None:
        return AudioItem(**base, error_type=problem.code, error=str(problem),
                         segment=_seg_or_none(segment), channel=channel)
    try:
        info = probe(abs_path)
    except ItemError as exc:
        return AudioItem(**base, error_type=exc.code, error=str(exc),
                         segment=_seg_or_none(segment), channel=channel)
    header = dict(sample_rate=info.sample_rate, frames=info.frames, channels=info.channels)
    if channel is not None and info.channels == 1 and channel == 0:
        channel = None  # the one channel of a mono file is the file
    if channel is not None and not 0 <= channel < info.channels:
        exc = AudioReadError(f"channel {channel} requested, the file has {info.channels}")
        return AudioItem(**base, **header, error_type=exc.code, error=str(exc),
                         segment=_seg_or_none(segment), channel=channel)
    if segment is None and channel is None:
        return AudioItem(**base, **header)
    sr = info.sample_rate
    offset, duration = segment if segment is not None else (0.0, None)
    start = round(offset * sr)
    n = info.frames - start if duration is None else round(duration * sr)
    problem = None
    if offset < 0 or (duration is not None and duration <= 0):
        problem = f"segment offset {offset} s, duration {duration} s: both must be positive"
    elif start >= info.frames:
        problem = f"segment starts at {offset:.3f} s, after the end of the file ({info.duration:.3f} s)"
    elif start + n > info.frames:
        if (start + n - info.frames) / sr > SEGMENT_TOLERANCE_S:
            problem = (f"segment [{offset:.3f}, {offset + n / sr:.3f}] s runs past the end "
                       f"of the file ({info.duration:.3f} s)")
        else:
            n = info.frames - start
    if problem is not None:
        exc = AudioReadError(problem)
        return AudioItem(**base, **header, error_type=exc.code, error=str(exc),
                         segment=(float(offset), float(duration or 0.0)), channel=channel)
    if start == 0 and n == info.frames and channel is None:
        return AudioItem(**base, **header)  # the whole file
    return AudioItem(
        **{**base, "sha256": part_sha256(fh, start, n, channel)},
        sample_rate=sr, frames=n, channels=info.channels,
        segment=(start / sr, n / sr), channel=channel,
    )


def error_item(item_id: str, path: str, system: str, exc: ItemError, **fields: Any) -> AudioItem:
    """An item whose audio cannot be had (a failed pipe command, a missing entry): it stays
    in the set with the error, keyed by a hash of where it should have come from."""
    return AudioItem(id=item_id, path=path, system=system,
                     sha256=hashlib.sha256(f"missing:{path}".encode()).hexdigest(),
                     error_type=exc.code, error=str(exc), **fields)


def _seg_or_none(segment: tuple[float, float | None] | None) -> tuple[float, float] | None:
    if segment is None:
        return None
    return float(segment[0]), float(segment[1] or 0.0)


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
        """Attach references from the folder ``ref_dir`` (see :func:`match_references`)."""
        return match_references(self, ref_dir)

    def with_transcripts(self, source: str | Path, encoding: str | None = None) -> "SpeechSet":
        """Attach transcripts from an ``id<TAB>text`` or Kaldi ``text`` file (see
        :func:`read_transcripts` and :func:`attach_transcripts`)."""
        return attach_transcripts(self, read_transcripts(source, encoding), str(source))

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
# Matching items to references and transcripts
# ------------------------------------------------------------------------------------------
def rel_id(path: Path, root: Path) -> str:
    """``root/sysA/u1.wav`` -> ``sysA/u1``."""
    return PurePosixPath(path.relative_to(root).with_suffix("").as_posix()).as_posix()


def normalise_whitespace(text: str) -> str:
    return " ".join(text.split())


def candidate_keys(item_id: str) -> list[str]:
    """Keys tried, in order, to match an item to a reference or transcript: the id, the id
    without its first folder (the system), the last path component."""
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


def no_match_error(what: str, source: str, items: SpeechSet, keys: Iterable[str],
                   how: str) -> ConfigError:
    """'--text FILE matched 0 of N items', with an id from each side (issue 16)."""
    keys = list(keys)
    item_ex = next(iter(items)).id if len(items) else "-"
    key_ex = keys[0] if keys else "(none: it lists nothing)"
    return ConfigError(
        f"{what} {source} matched 0 of {len(items)} items: an item id is {item_ex!r}, an id "
        f"there is {key_ex!r}. {how}"
    )


_TEXT_MATCH_HOW = ("A transcript matches an item by the item's id, its id without the system "
                   "folder, or its file stem (an audio extension on the transcript id is ignored).")


def match_references(speech_set: SpeechSet, ref_dir: str | Path) -> SpeechSet:
    """Attach a reference to each item from the folder ``ref_dir``.

    An item ``sysA/sub/utt1`` is matched to the reference with the same relative path
    (``sysA/sub/utt1.*``), else the same path without the system folder (``sub/utt1.*``), else
    the same stem (``utt1.*``) when that stem is unique in ``ref_dir``. Items with no match keep
    ``ref_path=None`` (intrusive metrics then record a ``missing_reference`` error for them).

    Raises:
        ConfigError: the folder holds no audio, or not one item finds its reference there.
    """
    ref_dir = abspath(ref_dir)
    refs = [p for p in scan_audio(ref_dir) if p.is_file()]
    if not refs:
        raise ConfigError(f"no reference audio found under {ref_dir}")
    by_key: dict[str, Path] = {}
    by_stem: defaultdict[str, list[Path]] = defaultdict(list)
    for p in refs:
        by_key.setdefault(rel_id(p, ref_dir), p)
        by_stem[p.stem].append(p)
    unique_stems = {s: ps[0] for s, ps in by_stem.items() if len(ps) == 1}

    def find(it: AudioItem) -> Path | None:
        keys = candidate_keys(it.id)
        match = next((by_key[k] for k in keys[:-1] if k in by_key), None)
        if match is None:
            match = by_key.get(keys[-1]) or unique_stems.get(PurePosixPath(it.id).name)
        return match

    table = {it.id: m for it in speech_set if (m := find(it)) is not None}
    if speech_set.items and not table:
        raise no_match_error(
            "--ref", str(ref_dir), speech_set, sorted(by_key),
            "A reference matches an item by the same relative path, the path without the "
            "system folder, or a stem that is unique in the reference folder.",
        )
    return attach_reference_table(speech_set, table)


def attach_reference_table(speech_set: SpeechSet, table: Mapping[str, Path]) -> SpeechSet:
    """Attach ``table[item.id]`` (a reference file) to each item it names; hashes each
    reference file once."""
    hashes: dict[Path, str] = {}

    def attach(it: AudioItem) -> AudioItem:
        match = table.get(it.id)
        if match is None:
            return it
        match = Path(match)
        if match not in hashes:
            hashes[match] = file_sha256(match)
        return it.replace(ref_path=str(match), ref_sha256=hashes[match])

    return speech_set.map(attach)


def match_keys(speech_set: SpeechSet, table: Mapping[str, Any]) -> dict[str, Any]:
    """``item id -> table value`` for the items that some :func:`candidate_keys` key of theirs
    finds in ``table``."""
    out = {}
    for it in speech_set:
        for k in candidate_keys(it.id):
            if k in table:
                out[it.id] = table[k]
                break
    return out


def attach_transcripts(speech_set: SpeechSet, table: Mapping[str, str], source: str) -> SpeechSet:
    """Attach ``table``'s transcripts (see :func:`match_keys`).

    Raises:
        ConfigError: not one item matches (the message shows an id from each side).
    """
    found = match_keys(speech_set, table)
    if speech_set.items and not found:
        raise no_match_error("--text", source, speech_set, table, _TEXT_MATCH_HOW)
    return speech_set.map(lambda it: it.replace(text=found[it.id]) if it.id in found else it)


def has_audio_ext(key: str) -> bool:
    return PurePosixPath(key).suffix.lower() in AUDIO_EXTENSIONS


def read_transcripts(source: str | Path, encoding: str | None = None) -> dict[str, str]:
    """Read a transcript file: ``id<TAB>text`` lines, or Kaldi/ESPnet ``text`` (``id text``,
    split at the first run of spaces), gzip or plain, in ``encoding`` (default UTF-8).

    The file is tab-separated when its first line holds a tab (then every line must); a first
    line ``id<TAB>text`` is a header. Lines starting with ``#`` are comments. An audio extension
    on an id is dropped (``u1.wav`` -> ``u1``). Whitespace in the text is collapsed.

    Raises:
        ConfigError: the file is missing or undecodable, a line is malformed, or an id
            repeats (each with ``file:line``).
    """
    source = Path(source)
    if not source.is_file():
        raise ConfigError(f"transcript file not found: {source}")
    table: dict[str, str] = {}
    first_line: dict[str, int] = {}
    tabbed: bool | None = None
    for n, line in read_lines(source, encoding, comments=True):
        if tabbed is None:
            tabbed = "\t" in line
        if tabbed:
            if "\t" not in line:
                raise line_error(source, n, f"expected 'id<TAB>text' like the first line, "
                                            f"got {line[:60]!r}")
            key, text = line.split("\t", 1)
        else:
            parts = line.strip().split(maxsplit=1)
            key, text = parts[0], (parts[1] if len(parts) > 1 else "")
        key = key.strip()
        if not key:
            raise line_error(source, n, "empty id")
        if not table and tabbed and key.lower() in ("id", "item_id", "utt_id") and \
                text.strip().lower() in ("text", "transcript"):
            continue
        key = PurePosixPath(key).with_suffix("").as_posix() if has_audio_ext(key) else key
        if key in table:
            raise line_error(source, n, f"id {key!r} appears twice (first on line "
                                        f"{first_line[key]})")
        table[key] = normalise_whitespace(text)
        first_line[key] = n
    return table


def sidecar_text(audio_path: Path, encoding: str | None = None) -> str | None:
    """The transcript in a ``.txt``/``.lab`` file beside ``audio_path``, if there is one."""
    for ext in TRANSCRIPT_EXTENSIONS:
        t = audio_path.with_suffix(ext)
        if t.is_file():
            return normalise_whitespace(read_text(t, encoding))
    return None
