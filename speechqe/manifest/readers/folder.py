"""A folder of audio (recursive), or a single audio file."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from ...errors import ConfigError
from ..core import SpeechSet, abspath, describe_file, rel_id, sidecar_text
from ..scan import AUDIO_EXTENSIONS, scan_audio


def from_folder(
    root: str | Path,
    *,
    system: str | None = None,
    read_transcript_files: bool = True,
    name: str | None = None,
    encoding: str | None = None,
) -> SpeechSet:
    """Build a set from a folder of audio (recursive; folder links followed once).

    * ``id`` is the path relative to ``root`` without extension (``sysA/utt001``); when two
      files differ only by extension, their ids keep the extension.
    * ``system`` is the first sub-folder; files directly in ``root`` get ``system`` (default:
      the folder's name).
    * A ``.txt`` or ``.lab`` file beside an audio file (same stem) is its transcript, read in
      ``encoding`` (default UTF-8).
    * Entries named like audio that are not audio files (link loops, dangling links, folders
      named ``x.wav``) are items with an error, so that they appear in the results.
    """
    root = abspath(root)
    files = scan_audio(root)
    if not files:
        raise ConfigError(
            f"no audio files ({', '.join(AUDIO_EXTENSIONS)}) found under {root}"
        )
    flat_system = system or root.name
    stems = Counter(rel_id(p, root) for p in files)
    items = []
    for p in files:
        rel = p.relative_to(root)
        item_id = rel_id(p, root)
        if stems[item_id] > 1:
            item_id = rel.as_posix()
        sys_name = rel.parts[0] if len(rel.parts) > 1 else flat_system
        text = sidecar_text(p, encoding) if read_transcript_files and p.is_file() else None
        items.append(describe_file(p, item_id=item_id, system=sys_name, text=text))
    return SpeechSet(tuple(items), name=name or root.name, source=str(root))


def from_audio_file(
    path: str | Path, *, system: str | None = None, name: str | None = None,
    encoding: str | None = None,
) -> SpeechSet:
    """A set of one item: ``path`` (id: its stem; system: ``system``, else its folder's name;
    a ``.txt``/``.lab`` beside it is its transcript)."""
    p = Path(path)
    text = sidecar_text(p, encoding) if p.is_file() else None
    item = describe_file(p, item_id=p.stem, system=system or abspath(p).parent.name, text=text)
    return SpeechSet((item,), name=name or p.stem, source=str(abspath(p)))
