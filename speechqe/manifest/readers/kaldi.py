"""Kaldi / ESPnet data directories and lists (what VERSA takes as ``--pred`` and ``--gt``).

A data directory holds ``wav.scp`` (``utt-id path``), and optionally ``text`` (``utt-id
transcript``), ``utt2spk`` (``utt-id speaker``) and ``segments`` (``utt-id recording-id start
end``, seconds, ``end`` -1 for the end of the file: then ``wav.scp`` lists recordings and each
segment is an item, read without decoding the rest of the recording). Other files
(``spk2utt``, ``feats.scp``, ...) are not needed and are ignored.

Conventions (Kaldi's own): fields are separated by a run of spaces, the value is the rest of
the line; ids need not be sorted here. Relative paths are taken relative to the current folder
(where Kaldi and ESPnet recipes run), else relative to the list's folder. Pipe entries (``sox
in.flac -t wav - |``) run only with ``--allow-pipes`` (see :mod:`speechqe.manifest.pipes`);
entries that point into a Kaldi archive (``raw.ark:1234``) are refused. Lines starting with
``#`` are skipped, and every malformed line is reported with ``file:line``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ...errors import AudioReadError, ConfigError
from ..core import AudioItem, SpeechSet, abspath, describe_file, error_item, match_keys
from ..pipes import is_pipe, refuse, run_pipe
from ..textio import line_error, read_lines

_ARK = re.compile(r"\.ark(\.gz)?:\d+$|^ark:")


@dataclass(frozen=True)
class ScpEntry:
    """One line of a ``wav.scp``: its key, value and line number."""

    key: str
    value: str
    line: int


def read_table(path: str | Path, encoding: str | None = None, *,
               need_value: bool = True) -> dict[str, tuple[str, int]]:
    """A Kaldi table file: ``key value...`` lines -> ``{key: (value, line)}``.

    Raises:
        ConfigError: a line without a value (when ``need_value``), or a key given twice, with
            ``file:line``.
    """
    out: dict[str, tuple[str, int]] = {}
    for n, line in read_lines(path, encoding, comments=True):
        parts = line.strip().split(maxsplit=1)
        key = parts[0]
        value = parts[1].strip() if len(parts) > 1 else ""
        if need_value and not value:
            raise line_error(path, n, f"expected '<id> <value>', got {line[:80]!r}")
        if key in out:
            raise line_error(path, n, f"id {key!r} appears twice (first on line {out[key][1]})")
        out[key] = (value, n)
    return out


def read_scp(path: str | Path, encoding: str | None = None, *,
             allow_pipes: bool = False) -> list[ScpEntry]:
    """The entries of a ``wav.scp``, checked: pipes refused unless allowed, archive entries
    refused.

    Raises:
        ConfigError: malformed, duplicate, archive or (without ``allow_pipes``) pipe entries.
    """
    entries = []
    for key, (value, n) in read_table(path, encoding).items():
        if is_pipe(value):
            if not allow_pipes:
                raise refuse(f"{path}:{n}", value)
        elif _ARK.search(value):
            raise line_error(path, n, f"{value!r} points into a Kaldi archive; speechqe reads "
                                      "audio files: extract them (e.g. 'wav-copy ark:... ark,t:' "
                                      "or ESPnet's format_wav_scp.sh) and list their paths")
        elif value == "-":
            raise line_error(path, n, "'-' (standard input) is not an audio file")
        entries.append(ScpEntry(key, value, n))
    return entries


def _audio_of(entry: ScpEntry, list_dir: Path) -> tuple[Path | None, AudioReadError | None, str | None]:
    """The file an entry reads (running a pipe when it is one), or the error; and the
    command for pipes."""
    from ..textio import resolve_listed

    if is_pipe(entry.value):
        try:
            return run_pipe(entry.value), None, entry.value
        except AudioReadError as exc:
            return None, exc, entry.value
    return resolve_listed(entry.value, list_dir), None, None


def scp_files(path: str | Path, encoding: str | None = None, *,
              allow_pipes: bool = False) -> dict[str, Path | AudioReadError]:
    """``{key: audio file}`` of a ``wav.scp`` (or a data dir's), pipes run; a failed pipe gives
    its error instead of a file. Used for reference lists (``--ref wav.scp``)."""
    path = _scp_path(Path(path))
    if (path.parent / "segments").is_file() and path.name == "wav.scp":
        raise ConfigError(
            f"{path.parent} has a 'segments' file: references must be whole files (give a "
            "wav.scp of one file per utterance)"
        )
    out: dict[str, Path | AudioReadError] = {}
    for e in read_scp(path, encoding, allow_pipes=allow_pipes):
        f, err, _ = _audio_of(e, path.parent)
        out[e.key] = f if f is not None else err  # type: ignore[assignment]
    return out


def _scp_path(source: Path) -> Path:
    if source.is_dir():
        scp = source / "wav.scp"
        if not scp.is_file():
            raise ConfigError(f"{source} is not a Kaldi data dir: it has no wav.scp")
        return scp
    return source


def is_data_dir(path: Path) -> bool:
    return path.is_dir() and (path / "wav.scp").is_file()


def from_kaldi(
    source: str | Path,
    *,
    system: str | None = None,
    name: str | None = None,
    encoding: str | None = None,
    allow_pipes: bool = False,
) -> SpeechSet:
    """Build a set from a Kaldi/ESPnet data dir or a ``wav.scp`` list.

    * A data dir: ``wav.scp`` with ``text``, ``utt2spk`` and ``segments`` when present. A
      ``wav.scp`` given as a file is read alone.
    * ``id``: the utterance id; ``system``: ``system``, else the name of the folder holding the
      list (``data/test`` -> ``test``); ``text`` and ``speaker`` from ``text`` and ``utt2spk``.

    Raises:
        ConfigError: malformed lines, pipes without ``allow_pipes``, a segment naming an
            unknown recording (all with ``file:line``).
    """
    source = Path(source)
    scp = _scp_path(source)
    folder = scp.parent
    sys_name = system or abspath(folder).name
    entries = read_scp(scp, encoding, allow_pipes=allow_pipes)
    texts: dict[str, tuple[str, int]] = {}
    speakers: dict[str, tuple[str, int]] = {}
    segments: dict[str, tuple[str, int]] | None = None
    if source.is_dir():
        if (folder / "text").is_file():
            texts = read_table(folder / "text", encoding, need_value=False)
        if (folder / "utt2spk").is_file():
            speakers = read_table(folder / "utt2spk", encoding)
        if (folder / "segments").is_file():
            segments = read_table(folder / "segments", encoding)

    def fields(utt: str) -> dict:
        t = texts.get(utt)
        s = speakers.get(utt)
        return dict(text=" ".join(t[0].split()) if t is not None else None,
                    speaker=s[0] if s is not None else None)

    hashes: dict[str, str] = {}
    items: list[AudioItem] = []
    if segments is None:
        for e in entries:
            f, err, cmd = _audio_of(e, folder)
            extra = (("command", cmd),) if cmd else ()
            if err is not None:
                items.append(error_item(e.key, e.value, sys_name, err, extra=extra, **fields(e.key)))
            else:
                items.append(describe_file(f, item_id=e.key, system=sys_name, extra=extra,
                                           hashes=hashes, **fields(e.key)))
    else:
        recordings = {e.key: e for e in entries}
        resolved: dict[str, tuple[Path | None, AudioReadError | None, str | None]] = {}
        seg_file = folder / "segments"
        for utt, (value, n) in segments.items():
            parts = value.split()
            if len(parts) != 3:
                raise line_error(seg_file, n, f"expected '<utt> <recording> <start> <end>', got "
                                              f"{utt} {value!r}")
            rec, start_s, end_s = parts
            try:
                start, end = float(start_s), float(end_s)
            except ValueError:
                raise line_error(seg_file, n, "start and end are seconds (numbers)") from None
            if rec not in recordings:
                raise line_error(seg_file, n, f"recording {rec!r} is not in {scp}")
            if end != -1 and end <= start:
                raise line_error(seg_file, n, f"end {end} is not after start {start}")
            if rec not in resolved:
                resolved[rec] = _audio_of(recordings[rec], folder)
            f, err, cmd = resolved[rec]
            extra = (("recording_id", rec),) + ((("command", cmd),) if cmd else ())
            if err is not None:
                items.append(error_item(utt, recordings[rec].value, sys_name, err, extra=extra,
                                        **fields(utt)))
                continue
            items.append(describe_file(
                f, item_id=utt, system=sys_name, extra=extra, hashes=hashes,
                segment=(start, None if end == -1 else end - start), **fields(utt),
            ))
    return SpeechSet(tuple(items), name=name or abspath(folder).name, source=str(abspath(source)))


def reference_table(speech_set: SpeechSet, ref: str | Path, encoding: str | None = None, *,
                    allow_pipes: bool = False) -> tuple[dict[str, Path], list[str]]:
    """Match items to the entries of a reference ``wav.scp`` (or data dir): by utterance id,
    else by the id without its system folder, else by its last component. Returns ``{item
    id: reference file}`` and the list's keys (for messages). A reference whose pipe fails
    is left out (the item then records ``missing_reference``)."""
    files = scp_files(ref, encoding, allow_pipes=allow_pipes)
    ok = {k: v for k, v in files.items() if isinstance(v, Path)}
    return match_keys(speech_set, ok), list(files)
