"""MOS bundles: a trained ensemble on disk, loadable without unpickling any code.

Layout (all paths relative to the bundle folder)::

    bundle.json             format + version, training-data hash, the full training config,
                            stage-1 columns, components, feature specs, stacking, report
    strong/<name>/          config.json (SSL architecture, head config, tables) + model.pt
    whisper/<name>/         config.json (encoder spec and id) + model.pt
    weak/<feature set>/     config.json + per learner: <column>.json [.npz] [.lgb.txt]
    stacking/               stage2_<learner>.* and stage3.*

Tensors are ``torch.save`` state dicts read with ``weights_only=True``; arrays are ``.npz``
read with ``allow_pickle=False``; LightGBM models are its text format; the rest is JSON.
:attr:`MOSBundle.bundle_id` hashes every file, so a stored score names the exact bundle.
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
VERSION = 1


def bundle_hash(folder: str | Path) -> str:
    """sha256 over every file's relative path and bytes (sorted), first 16 hex digits."""
    return sha256_tree(folder)[:16]


def read_meta(folder: str | Path) -> dict[str, Any]:
    """A bundle's ``bundle.json`` (format and version checked), without loading any model.

    Raises:
        ConfigError: no ``bundle.json``, another format, or a newer format version.
    """
    folder = Path(folder)
    meta_path = folder / "bundle.json"
    if not meta_path.is_file():
        raise ConfigError(f"not a MOS bundle (no bundle.json): {folder}")
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    if meta.get("format") != FORMAT:
        raise ConfigError(f"{meta_path}: not a {FORMAT} file")
    if int(meta.get("version", 0)) > VERSION:
        raise ConfigError(
            f"{folder} is bundle format version {meta['version']}; this speechqe reads up to "
            f"{VERSION}. Upgrade speechqe."
        )
    return meta


@dataclass
class MOSBundle:
    """A loaded bundle: components, the stacking ensemble and metadata."""

    meta: dict[str, Any]
    strong: list[StrongComponent] = field(default_factory=list)
    whisper: list[WhisperComponent] = field(default_factory=list)
    weak: list[WeakComponent] = field(default_factory=list)
    stack: Stack | None = None
    bundle_id: str = ""

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
            want |= set(self.columns)
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
                    col[ok] = comp.learners[name].predict(X[ok])
                out[name] = col
        if ensemble:
            Z = np.column_stack([out[c] for c in self.columns])
            ens = np.full(n, np.nan)
            ok = np.isfinite(Z).all(axis=1)
            if ok.any():
                ens[ok] = self.stack.predict(Z[ok])
            out["ensemble"] = ens
        return out, errors

    # --- files ------------------------------------------------------------------------------
    @classmethod
    def load(cls, folder: str | Path, *, device: str = "cpu", cache: FeatureCache | None = None) -> "MOSBundle":
        folder = Path(folder)
        meta_path = folder / "bundle.json"
        meta = read_meta(folder)
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
        meta["stacking"] = self.stack.save(folder / "stacking")
        meta["format"], meta["version"] = FORMAT, VERSION
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
