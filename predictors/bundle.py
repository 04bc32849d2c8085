"""MOS bundles: a trained ensemble on disk, loadable without unpickling any code.

Layout (all paths relative to the bundle folder)::

    bundle.json             format + version, the sha256 of every other file, training-data
                            hash, the full training config, stage-1 columns, components,
                            stacking, report (members, stage 2, nested estimate)
    strong/<name>/          config.json (SSL architecture, head config, tables) + model.pt
    whisper/<name>/         config.json (encoder spec and id) + model.pt
    weak/<feature set>/     config.json + per column: <column>.json + .skops (or .lgb.txt)
    stacking/               stage2_<learner>.json + .skops

Tensors are ``torch.save`` state dicts read with ``weights_only=True``; scikit-learn learners
are ``skops`` files loaded against an explicit allow-list of types
(:mod:`speechqe.predictors.weak.learners`); LightGBM models are its text format; the rest is
JSON. Loading checks the format version and every file's sha256 before reading any model, and
every learner re-predicts stored probe rows. :attr:`MOSBundle.bundle_id` hashes every file, so
a stored score names the exact bundle.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from speechqe.encoders import FeatureCache
from speechqe.errors import ConfigError, ItemError
from speechqe.hashing import sha256_tree

from .components import StrongComponent, WeakComponent, WhisperComponent
from .stacking import Stack

FORMAT = "speechqe-mos-bundle"
#: 2: skops learners, checksums, the non-negative stacking rule and nested estimates.
VERSION = 2


def bundle_hash(folder: str | Path) -> str:
    """sha256 over every file's relative path and bytes (sorted), first 16 hex digits."""
    return sha256_tree(folder)[:16]


def read_meta(folder: str | Path, *, verify: bool = False) -> dict[str, Any]:
    """A bundle's ``bundle.json`` (format and version checked), without loading any model;
    with ``verify``, also every file's sha256 against the checksums recorded in it.

    Raises:
        ConfigError: no ``bundle.json``, another format, another format version (an older one
            must be retrained, a newer one needs a newer speechqe), or a file that is missing
            or changed since the bundle was written.
    """
    folder = Path(folder)
    meta_path = folder / "bundle.json"
    if not meta_path.is_file():
        raise ConfigError(f"not a MOS bundle (no bundle.json): {folder}")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{meta_path}: not a readable bundle file ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ConfigError(f"{meta_path}: not a {FORMAT} file")
    try:
        version = int(meta.get("version", 0))
    except (TypeError, ValueError):
        raise ConfigError(f"{meta_path}: unreadable format version {meta.get('version')!r}") from None
    if version > VERSION:
        raise ConfigError(
            f"{folder} is bundle format version {version}; this speechqe reads version {VERSION}. "
            "Upgrade speechqe."
        )
    if version < VERSION:
        raise ConfigError(
            f"{folder} is bundle format version {version}, written by an older speechqe; this one "
            f"reads version {VERSION} (learners saved with skops, checked on load). Retrain it: "
            "speechqe mos train --config CONFIG --out NEW_FOLDER"
        )
    if verify:
        verify_files(folder, meta)
    return meta


def verify_files(folder: Path, meta: dict[str, Any]) -> None:
    """Every file recorded in ``meta['files']`` exists with its recorded sha256, and no other
    model file is present.

    Raises:
        ConfigError: naming the first files that differ.
    """
    from speechqe.hashing import sha256_file as file_sha256

    files = meta.get("files")
    if not isinstance(files, dict) or not files:
        raise ConfigError(f"{folder}/bundle.json records no file checksums; the bundle is incomplete")
    bad = []
    for rel, digest in sorted(files.items()):
        p = folder / rel
        if not p.is_file():
            bad.append(f"{rel} is missing")
        elif file_sha256(p) != digest:
            bad.append(f"{rel} has changed (sha256 differs from the one recorded)")
    extra = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                   if p.is_file() and p.name != "bundle.json" and p.relative_to(folder).as_posix() not in files)
    bad += [f"{rel} is not part of the bundle" for rel in extra]
    if bad:
        raise ConfigError(
            f"{folder}: the bundle's files do not match its checksums: {'; '.join(bad[:5])}"
            + (f" (and {len(bad) - 5} more)" if len(bad) > 5 else "")
            + ". It was damaged or edited: restore it or retrain."
        )


@dataclass
class MOSBundle:
    """A loaded bundle: components, the stacking ensemble and metadata."""

    meta: dict[str, Any]
    strong: list[StrongComponent] = field(default_factory=list)
    whisper: list[WhisperComponent] = field(default_factory=list)
    weak: list[WeakComponent] = field(default_factory=list)
    stack: Stack | None = None
    bundle_id: str = ""
    #: a few training rows of stage-1 predictions, stored so that stage 2 is checked on load
    probe_Z: np.ndarray | None = None

    @property
    def columns(self) -> list[str]:
        return list(self.meta["columns"])

    @property
    def score_range(self) -> tuple[float, float]:
        lo, hi = self.meta["score_range"]
        return float(lo), float(hi)

    # --- prediction -----------------------------------------------------------------------------
    def predict(
        self,
        signals: Sequence[np.ndarray],
        hashes: Sequence[str],
        texts: Sequence[str | None] | None = None,
        *,
        columns: Sequence[str] | None = None,
        ensemble: bool = True,
        domain: str | None = None,
    ) -> tuple[dict[str, np.ndarray], list[ItemError | None]]:
        """Stage-1 predictions per column (only ``columns`` when given) and, with
        ``ensemble``, the stacked score under ``'ensemble'``. Items whose features fail are
        NaN in every output and their error is returned at their position. ``domain``: the
        listening-test domain strong learners condition on (default: their first)."""
        want = set(columns) if columns is not None else set(self.columns)
        if ensemble:
            want |= set(self.stack.used)
        n = len(signals)
        out: dict[str, np.ndarray] = {}
        errors: list[ItemError | None] = [None] * n
        sigs = list(signals)
        for comp in self.strong:
            if comp.spec.name in want:
                out[comp.spec.name] = comp.predict(sigs, hashes, texts, domain=domain)
        for comp in self.whisper:
            if comp.spec.name in want:
                out[comp.spec.name] = comp.predict(sigs, hashes, texts)
        for comp in self.weak:
            names = [c for c in comp.columns() if c in want]
            if not names:
                continue
            X, errs = comp.matrix(lambda i: sigs[i], hashes)
            ok = np.array([e is None for e in errs])
            for i, e in enumerate(errs):
                if e is not None and errors[i] is None:
                    errors[i] = e
            for name in names:
                col = np.full(n, np.nan)
                if ok.any():
                    sl, learner = comp.learners[name]
                    col[ok] = learner.predict(X[ok][:, sl])
                out[name] = col
        lo, hi = self.score_range
        for k in list(out):
            out[k] = np.clip(out[k], lo, hi)  # NaN stays NaN
        if ensemble:
            # columns the ensemble does not use are not computed; they do not affect it
            Z = np.column_stack([out[c] if c in out else np.zeros(n) for c in self.columns])
            used = [self.columns.index(c) for c in self.stack.used]
            ens = np.full(n, np.nan)
            ok = np.isfinite(Z[:, used]).all(axis=1)
            if ok.any():
                ens[ok] = self.stack.predict(Z[ok])
            out["ensemble"] = ens
            for k in [k for k in out if k not in want and k != "ensemble"]:
                del out[k]
        return out, errors

    # --- files ------------------------------------------------------------------------------
    @classmethod
    def load(cls, folder: str | Path, *, device: str = "cpu", cache: FeatureCache | None = None) -> "MOSBundle":
        folder = Path(folder)
        meta_path = folder / "bundle.json"
        meta = read_meta(folder, verify=True)
        b = cls(meta=meta, bundle_id=bundle_hash(folder))
        for c in meta["components"]:
            if c["type"] == "strong":
                b.strong.append(StrongComponent.load(folder / "strong" / c["path"], device))
            elif c["type"] == "whisper":
                b.whisper.append(WhisperComponent.load(folder / "whisper" / c["path"], device, cache))
            elif c["type"] == "weak":
                b.weak.append(WeakComponent.load(folder / "weak" / c["path"], device, cache))
            else:
                raise ConfigError(f"unknown component type {c['type']!r} in {meta_path}")
        b.stack = Stack.load(folder / "stacking", meta["stacking"])
        return b

    def save(self, folder: str | Path) -> str:
        folder = Path(folder)
        if (folder / "bundle.json").exists():
            raise ConfigError(f"{folder} already holds a bundle; choose a new folder")
        folder.mkdir(parents=True, exist_ok=True)
        comps = []
        for c in self.strong:
            comps.append(c.save(folder / "strong" / c.spec.name))
        for c in self.whisper:
            comps.append(c.save(folder / "whisper" / c.spec.name))
        for c in self.weak:
            comps.append(c.save(folder / "weak" / c.spec.name))
        meta = dict(self.meta)
        meta["components"] = comps
        meta["stacking"] = self.stack.save(
            folder / "stacking", self.probe_Z if self.probe_Z is not None else np.zeros((0, len(self.stack.columns))))
        meta["format"], meta["version"] = FORMAT, VERSION
        from speechqe.hashing import sha256_file as file_sha256

        meta["files"] = {p.relative_to(folder).as_posix(): file_sha256(p)
                         for p in sorted(folder.rglob("*")) if p.is_file() and p.name != "bundle.json"}
        (folder / "bundle.json").write_text(json.dumps(meta, indent=1, default=_default), encoding="utf-8")
        self.meta = meta
        self.bundle_id = bundle_hash(folder)
        return self.bundle_id


def _default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, tuple):
        return list(o)
    raise TypeError(type(o).__name__)
