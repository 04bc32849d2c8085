"""Reading the text files that describe speech sets: one line reader for every format.

Every list, transcript and manifest is read through :func:`read_lines`, so they share:

* gzip: a file whose name ends in ``.gz`` *or* whose first bytes are the gzip magic number is
  decompressed on the fly (lhotse writes ``*.jsonl.gz``; some Kaldi recipes gzip their lists);
* the encoding: UTF-8 by default (a leading byte-order mark is dropped); ``--text-encoding``
  picks another one (``latin-1``, ``cp1252``, ...). A line that does not decode stops the
  command with the file, the line, the offending byte and both ways to fix it, instead of a
  Python traceback (issue 12);
* ``file:line`` in every error about a malformed line (:func:`line_error`).
"""

from __future__ import annotations

import codecs
import gzip
import os
from pathlib import Path
from typing import Iterator

from ..errors import ConfigError

#: The encoding of text inputs unless ``--text-encoding`` says otherwise.
DEFAULT_ENCODING = "utf-8"
_GZIP_MAGIC = b"\x1f\x8b"


def check_encoding(name: str | None) -> str:
    """``name`` if Python knows the codec (``None``: :data:`DEFAULT_ENCODING`).

    Raises:
        ConfigError: unknown codec.
    """
    name = name or DEFAULT_ENCODING
    try:
        codecs.lookup(name)
    except LookupError:
        raise ConfigError(
            f"unknown text encoding {name!r} (try utf-8, latin-1, cp1252, utf-16)"
        ) from None
    return name


def is_gzip(path: str | Path) -> bool:
    """Whether ``path`` is gzip-compressed (by its first two bytes)."""
    try:
        with open(path, "rb") as f:
            return f.read(2) == _GZIP_MAGIC
    except OSError:
        return False


def strip_gz(name: str) -> str:
    """``cuts.jsonl.gz`` -> ``cuts.jsonl``."""
    return name[:-3] if name.lower().endswith(".gz") else name


def _open_binary(path: Path):
    return gzip.open(path, "rb") if is_gzip(path) else open(path, "rb")


def read_lines(
    path: str | Path, encoding: str | None = None, *, comments: bool = False
) -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, line)`` of a text file (gzip or plain), without the line end.

    Blank lines are skipped; with ``comments``, so are lines whose first non-blank character
    is ``#``.

    Raises:
        ConfigError: the file is missing, is not valid gzip, or a line does not decode in
            ``encoding`` (the message names the file, the line and the byte).
    """
    path = Path(path)
    enc = check_encoding(encoding)
    if not path.is_file():
        raise ConfigError(f"no such file: {path}")
    if codecs.lookup(enc).name.startswith(("utf-16", "utf-32")):
        # bytes of a newline are not b"\n" alone in these: decode the whole file first
        for n, line in enumerate(read_text(path, enc).splitlines(), 1):
            if line.strip() and not (comments and line.lstrip().startswith("#")):
                yield n, line
        return
    decoder = codecs.getincrementaldecoder(enc)()
    try:
        with _open_binary(path) as f:
            for n, raw in enumerate(f, 1):
                try:
                    line = decoder.decode(raw)
                except UnicodeDecodeError as exc:
                    raise decode_error(path, n, raw, exc, enc) from None
                if n == 1 and line.startswith("\ufeff"):
                    line = line[1:]
                line = line.rstrip("\r\n")
                if not line.strip():
                    continue
                if comments and line.lstrip().startswith("#"):
                    continue
                yield n, line
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from exc


def read_text(path: str | Path, encoding: str | None = None) -> str:
    """The whole text of a (small) file, decoded like :func:`read_lines` decodes lines."""
    path = Path(path)
    enc = check_encoding(encoding)
    with _open_binary(path) as f:
        data = f.read()
    try:
        text = data.decode(enc)
    except UnicodeDecodeError as exc:
        n = data.count(b"\n", 0, exc.start) + 1
        line_start = data.rfind(b"\n", 0, exc.start) + 1
        line_end = data.find(b"\n", exc.start)
        raw = data[line_start: None if line_end < 0 else line_end]
        exc.start -= line_start
        raise decode_error(path, n, raw, exc, enc) from None
    return text[1:] if text.startswith("\ufeff") else text


def decode_error(
    path: Path, line: int, raw: bytes, exc: UnicodeDecodeError, encoding: str
) -> ConfigError:
    """The message for a line that is not valid ``encoding``: where, which byte, what to do."""
    col = exc.start + 1
    byte = raw[exc.start: exc.start + 1]
    shown = raw.rstrip(b"\r\n")[:120].decode(encoding, errors="replace")
    return ConfigError(
        f"{path}:{line}: byte 0x{byte.hex() or '??'} at column {col} is not valid {encoding} "
        f"({shown!r}). Re-save the file as UTF-8 (e.g. 'iconv -f latin1 -t utf-8'), or read it "
        f"in its own encoding with --text-encoding (e.g. --text-encoding latin-1)"
    )


def line_error(path: str | Path, line: int, message: str) -> ConfigError:
    """A :class:`ConfigError` about one line of one file: ``path:line: message``."""
    return ConfigError(f"{path}:{line}: {message}")


def resolve_listed(value: str, list_dir: Path) -> Path:
    """The file a relative path written in a list or manifest points to.

    Kaldi and lhotse write paths relative to the directory the recipe runs in (``data/...``,
    ``dump/raw/...``), not to the list's folder, while hand-written manifests usually mean the
    list's folder. A relative path is therefore taken relative to the current directory when
    it exists there, else relative to ``list_dir`` (where it is reported missing if it is not
    there either). Absolute paths are kept.
    """
    p = Path(os.path.expanduser(value))
    if p.is_absolute():
        return Path(os.path.abspath(p))
    here = Path.cwd() / p
    if os.path.lexists(here):
        return Path(os.path.abspath(here))
    return Path(os.path.abspath(list_dir / p))
