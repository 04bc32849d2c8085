"""lhotse manifests: recordings, supervisions and cuts (``*.jsonl`` or ``*.jsonl.gz``).

Read from lhotse's JSON schema directly (``Recording.to_dict``, ``SupervisionSegment``,
``MonoCut.to_dict``), without importing lhotse: it is a large dependency for reading a few
fields, and reading the lines ourselves lets every malformed line be reported with its file and
line number.

* **Recordings** (objects with ``sources``): one item per recording, or, when the supervision
  manifest beside it exists (the same name with ``supervisions`` for ``recordings``, lhotse's
  naming), one item per supervision.
* **Supervisions** (objects with ``recording_id``): one item per supervision; the recordings
  manifest beside it (``recordings`` for ``supervisions``) is required.
* **Cuts** (``"type": "MonoCut"``): one item per cut, with the text of its supervisions.

A supervision or cut that covers its whole recording is the whole file (same content key as
the folder reader gives it); one that points into a longer recording is a segment, read
without decoding the rest of the file. A channel other than the recording's only one selects
that channel. Recordings with ``transforms`` (speed, volume, resampling applied on load) and
sources other than files (URLs, in-memory, Shar) are refused; ``command`` sources are pipes and
run only with ``--allow-pipes``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Iterator

from ...errors import AudioReadError, ConfigError
from ..core import AudioItem, SpeechSet, abspath, describe_file, error_item
from ..pipes import refuse, run_pipe
from ..textio import line_error, read_lines, resolve_listed, strip_gz

#: lhotse cut types we read (one channel or all channels of one recording).
_CUT_TYPES = ("MonoCut", "MultiCut")


def kind_of(d: dict[str, Any]) -> str | None:
    """``'recording'``, ``'supervision'``, ``'cut'`` (lhotse) or ``None`` (not lhotse)."""
    if "type" in d and isinstance(d.get("type"), str) and d["type"].endswith("Cut"):
        return "cut"
    if "sources" in d and "sampling_rate" in d:
        return "recording"
    if "recording_id" in d and "start" in d and "duration" in d:
        return "supervision"
    return None


def _objects(path: Path, encoding: str | None) -> Iterator[tuple[int, dict[str, Any]]]:
    for n, line in read_lines(path, encoding):
        try:
            d = json.loads(line)
        except json.JSONDecodeError as exc:
            raise line_error(path, n, f"not JSON: {exc}") from exc
        if not isinstance(d, dict):
            raise line_error(path, n, "a line must be a JSON object")
        yield n, d


def sibling(path: Path, this: str, other: str) -> Path | None:
    """lhotse's paired manifest: ``x_recordings_test.jsonl.gz`` <-> ``x_supervisions_test...``."""
    if this not in path.name:
        return None
    cand = path.with_name(path.name.replace(this, other))
    if cand.is_file():
        return cand
    # the pair may differ in compression
    base = strip_gz(cand.name)
    for name in (base, base + ".gz"):
        if (path.parent / name).is_file():
            return path.parent / name
    return None


def default_name(path: Path) -> str:
    """``librispeech_cuts_test-other.jsonl.gz`` -> ``librispeech_test-other``."""
    stem = Path(strip_gz(path.name)).stem
    parts = [p for p in re.split(r"_?(?:recordings|supervisions|cuts)_?", stem) if p]
    return "_".join(parts) or abspath(path).parent.name


class _Context:
    """What every item of one manifest shares: where relative paths start, pipes, hashes."""

    def __init__(self, path: Path, allow_pipes: bool):
        self.path = path
        self.dir = path.parent
        self.allow_pipes = allow_pipes
        self.hashes: dict[str, str] = {}
        self.audio: dict[str, tuple[Path | None, AudioReadError | None, str | None]] = {}

    def source(self, rec: dict[str, Any], where: str) -> tuple[Path | None, AudioReadError | None, str | None, list[int]]:
        """The file a recording reads (pipes run), its error, the command, its channel ids."""
        rid = str(rec.get("id", ""))
        if rec.get("transforms"):
            kinds = [t.get("name", "?") if isinstance(t, dict) else "?" for t in rec["transforms"]]
            raise ConfigError(
                f"{where}: recording {rid!r} applies transforms {kinds} on load (speed, volume, "
                "resampling, ...); speechqe scores the stored audio as it is: save the "
                "transformed audio and list it instead"
            )
        sources = rec.get("sources")
        if not isinstance(sources, list) or len(sources) != 1:
            raise ConfigError(
                f"{where}: recording {rid!r} has {len(sources) if isinstance(sources, list) else 'no'} "
                "sources; speechqe reads recordings held in one file (one source)"
            )
        src = sources[0]
        kind, value = src.get("type"), src.get("source")
        channels = list(src.get("channels") or [0])
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{where}: recording {rid!r} has no source path")
        if kind == "file":
            key = "file:" + value
            if key not in self.audio:
                self.audio[key] = (resolve_listed(value, self.dir), None, None)
        elif kind == "command":
            if not self.allow_pipes:
                raise refuse(where, value)
            key = "command:" + value
            if key not in self.audio:
                try:
                    self.audio[key] = (run_pipe(value), None, value)
                except AudioReadError as exc:
                    self.audio[key] = (None, exc, value)
        else:
            raise ConfigError(
                f"{where}: recording {rid!r} has a {kind!r} source; speechqe reads 'file' "
                "sources (and 'command' ones with --allow-pipes)"
            )
        f, err, cmd = self.audio[key]
        return f, err, cmd, channels

    def item(self, *, item_id: str, rec: dict[str, Any], where: str, system: str,
             segment: tuple[float, float] | None, channel: Any, fields: dict[str, Any]) -> AudioItem:
        f, err, cmd, channels = self.source(rec, where)
        ch = _channel(channel, channels, where, item_id)
        extra = dict(fields.pop("extra", {}))
        extra["recording_id"] = str(rec.get("id", ""))
        if cmd:
            extra["command"] = cmd
        extra_t = tuple(sorted((k, str(v)) for k, v in extra.items() if v is not None))
        if err is not None:
            return error_item(item_id, cmd or "", system, err, extra=extra_t, **fields)
        return describe_file(f, item_id=item_id, system=system, segment=segment, channel=ch,
                             hashes=self.hashes, extra=extra_t, **fields)


def _channel(channel: Any, channels: list[int], where: str, item_id: str) -> int | None:
    """Index of the selected channel in the file, or ``None`` for all (mixed to mono)."""
    if channel is None:
        return None
    if isinstance(channel, list):
        if sorted(channel) == sorted(channels):
            return None
        if len(channel) == 1:
            channel = channel[0]
        else:
            raise ConfigError(f"{where}: {item_id!r} selects channels {channel} of "
                              f"{channels}; speechqe scores one channel, or all mixed to mono")
    if len(channels) == 1 and channel == channels[0]:
        return None
    if channel not in channels:
        raise ConfigError(f"{where}: {item_id!r} selects channel {channel}, the recording has "
                          f"channels {channels}")
    return channels.index(channel)


def _sup_fields(sups: list[dict[str, Any]]) -> dict[str, Any]:
    """Text, speaker and extra fields from the supervisions of one item."""
    sups = sorted(sups, key=lambda s: float(s.get("start", 0.0)))
    texts = [" ".join(str(s["text"]).split()) for s in sups if s.get("text") is not None]
    speakers = sorted({str(s["speaker"]) for s in sups if s.get("speaker") is not None})
    extra: dict[str, Any] = {}
    for key in ("language", "gender"):
        vals = sorted({str(s[key]) for s in sups if s.get(key) is not None})
        if vals:
            extra[key] = ",".join(vals)
    if len(speakers) > 1:
        extra["speakers"] = ",".join(speakers)
    for s in sups:
        for k, v in (s.get("custom") or {}).items():
            if isinstance(v, (str, int, float, bool)) and k != "system":
                extra.setdefault(k, v)
    return dict(text=" ".join(texts) if texts else None,
                speaker=speakers[0] if len(speakers) == 1 else None, extra=extra)


def _system(default: str, *objs: dict[str, Any] | None) -> str:
    for o in objs:
        if o and isinstance(o.get("custom"), dict) and o["custom"].get("system"):
            return str(o["custom"]["system"])
    return default


def _num(d: dict[str, Any], key: str, where: str) -> float:
    try:
        return float(d[key])
    except (KeyError, TypeError, ValueError):
        raise ConfigError(f"{where}: needs a number '{key}' (seconds)") from None


def from_lhotse(
    path: str | Path,
    *,
    system: str | None = None,
    name: str | None = None,
    encoding: str | None = None,
    allow_pipes: bool = False,
) -> SpeechSet:
    """Build a set from a lhotse recording, supervision or cut manifest (see the module
    docstring).

    ``system``: ``system``, else a ``custom.system`` field, else the manifest's name without
    lhotse's ``recordings``/``supervisions``/``cuts`` part.

    Raises:
        ConfigError: malformed or unsupported lines (with ``file:line``), a supervision
            manifest without its recordings, a supervision naming an unknown recording.
    """
    path = Path(path)
    first = next(_objects(path, encoding), None)
    if first is None:
        raise ConfigError(f"{path} is empty")
    kind = kind_of(first[1])
    if kind is None:
        raise line_error(path, first[0], "not a lhotse recording, supervision or cut")
    set_name = name or default_name(path)
    sys_default = system or set_name
    items: list[AudioItem] = []
    if kind == "cut":
        ctx = _Context(path, allow_pipes)
        for n, d in _objects(path, encoding):
            where = f"{path}:{n}"
            if kind_of(d) != "cut":
                raise line_error(path, n, "expected a cut like the first line")
            if d.get("type") not in _CUT_TYPES:
                raise line_error(path, n, f"{d.get('type')} cuts (mixes, padding) are not "
                                          f"supported; speechqe reads {', '.join(_CUT_TYPES)}")
            rec = d.get("recording")
            if not isinstance(rec, dict):
                raise line_error(path, n, f"cut {d.get('id')!r} has no recording")
            cid = str(d.get("id") or "")
            if not cid:
                raise line_error(path, n, "a cut needs an 'id'")
            fields = _sup_fields(list(d.get("supervisions") or []))
            items.append(ctx.item(
                item_id=cid, rec=rec, where=where,
                system=system or _system(sys_default, d, *(d.get("supervisions") or [])),
                segment=(_num(d, "start", where), _num(d, "duration", where)),
                channel=d.get("channel"), fields=fields,
            ))
        return SpeechSet(tuple(items), name=set_name, source=str(abspath(path)))

    if kind == "recording":
        rec_path, sup_path = path, sibling(path, "recordings", "supervisions")
    else:
        rec_path, sup_path = sibling(path, "supervisions", "recordings"), path
        if rec_path is None:
            raise ConfigError(
                f"{path} is a lhotse supervision manifest; its recordings manifest (the same "
                "name with 'recordings' for 'supervisions') is not beside it"
            )
    ctx = _Context(rec_path, allow_pipes)
    recordings: dict[str, tuple[dict[str, Any], str]] = {}
    for n, d in _objects(rec_path, encoding):
        if kind_of(d) != "recording":
            raise line_error(rec_path, n, "expected a recording like the first line")
        rid = str(d.get("id") or "")
        if not rid:
            raise line_error(rec_path, n, "a recording needs an 'id'")
        if rid in recordings:
            raise line_error(rec_path, n, f"recording {rid!r} appears twice (first at "
                                          f"{recordings[rid][1]})")
        recordings[rid] = (d, f"{rec_path}:{n}")
    if sup_path is None:
        for rid, (rec, where) in recordings.items():
            items.append(ctx.item(item_id=rid, rec=rec, where=where,
                                  system=system or _system(sys_default, rec), segment=None,
                                  channel=None, fields=dict(extra={})))
        return SpeechSet(tuple(items), name=set_name, source=str(abspath(rec_path)))
    seen: dict[str, int] = {}
    for n, d in _objects(sup_path, encoding):
        where = f"{sup_path}:{n}"
        if kind_of(d) != "supervision":
            raise line_error(sup_path, n, "expected a supervision like the first line")
        sid = str(d.get("id") or "")
        if not sid:
            raise line_error(sup_path, n, "a supervision needs an 'id'")
        if sid in seen:
            raise line_error(sup_path, n, f"supervision {sid!r} appears twice (first on line "
                                          f"{seen[sid]})")
        seen[sid] = n
        rid = str(d["recording_id"])
        if rid not in recordings:
            raise line_error(sup_path, n, f"recording {rid!r} is not in {rec_path}")
        rec, _ = recordings[rid]
        items.append(ctx.item(
            item_id=sid, rec=rec, where=where, system=system or _system(sys_default, d, rec),
            segment=(_num(d, "start", where), _num(d, "duration", where)),
            channel=d.get("channel", 0), fields=_sup_fields([d]),
        ))
    return SpeechSet(tuple(items), name=set_name, source=str(abspath(sup_path)))
