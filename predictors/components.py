"""The trained parts of a MOS bundle, each able to fit, predict, save and load.

* :class:`StrongComponent`: a strong learner (SSL + BLSTM head); saved as its SSL architecture
  (:func:`~speechqe.encoders.ssl.torchaudio_arch`), head config and a ``torch.save`` state dict
  loaded with ``weights_only=True``, so it reloads without the original SSL checkpoint.
* :class:`WhisperComponent`: the Whisper head (and trainable top blocks); the frozen encoder is
  referenced by its spec and fingerprint (it is a public asset), checked on load.
* :class:`WeakComponent`: one feature set and the learners trained on it.

Every ``predict`` takes 16 kHz signals and their content hashes (feature-cache keys).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from speechqe.encoders import FeatureCache, load_encoder
from speechqe.errors import ConfigError, ItemError

from .config import FeatureSetSpec, LearnerSpec, StrongSpec, WhisperSpec, plain, validate
from .ssl_strong.model import StrongLearner
from .ssl_strong.train import predict_strong, tables, train_strong
from .weak.features import FeatureExtractor
from .weak.learners import Learner
from .whisper_mos.train import WhisperMOS, item_features, predict_whisper_mos, train_whisper_mos

__all__ = ["StrongComponent", "WhisperComponent", "WeakComponent", "StrongSpec", "WhisperSpec",
           "fit_learner"]


Signals = Callable[[Sequence[int]], list[np.ndarray]]


# ------------------------------------------------------------------------------------------
class StrongComponent:
    kind = "strong"

    def __init__(self, spec: StrongSpec, model: StrongLearner, domains: list[str], listeners: list[str]):
        self.spec = spec
        self.model = model
        self.domains = domains
        self.listeners = listeners

    @classmethod
    def fit(cls, spec: StrongSpec, items, signals: Callable[[int], np.ndarray], *, device: str,
            work_dir: Path | None = None, progress=None) -> "StrongComponent":
        from speechqe.encoders import load_encoder as _load

        ssl = _load(spec.encoder_spec(), device="cpu")
        domains, listeners = tables(items, spec.train.use_listeners)
        model = StrongLearner(ssl, spec.model, n_domains=len(domains), n_listeners=len(listeners))
        train_strong(model, items, signals, spec.train, domains=domains, listeners=listeners,
                     device=device, out_dir=work_dir, progress=progress)
        return cls(spec, model, domains, listeners)

    def predict(self, signals: list[np.ndarray], hashes: Sequence[str], texts=None, *, domain: str | None = None) -> np.ndarray:
        d = self.domains.index(domain) if domain in self.domains else 0
        return predict_strong(self.model, signals, domain=d, texts=texts)

    def save(self, folder: Path) -> dict:
        import torch

        folder.mkdir(parents=True, exist_ok=True)
        meta = {"type": self.kind, "spec": plain(self.spec), "ssl_arch": self.model.ssl.arch,
                "ssl_name": self.model.ssl.name, "domains": self.domains, "listeners": self.listeners}
        (folder / "config.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
        torch.save({k: v.detach().cpu() for k, v in self.model.state_dict().items()}, folder / "model.pt")
        return {"name": self.spec.name, "type": self.kind, "path": folder.name}

    @classmethod
    def load(cls, folder: Path, device: str = "cpu") -> "StrongComponent":
        import torch

        from speechqe.encoders.base import state_dict_fingerprint
        from speechqe.encoders.ssl import build_random

        meta = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        spec = validate(StrongSpec, meta["spec"], str(folder / "config.json"))
        ssl = build_random(meta["ssl_arch"], name=meta.get("ssl_name", "ssl"))
        model = StrongLearner(ssl, spec.model, n_domains=len(meta["domains"]), n_listeners=len(meta["listeners"]))
        state = torch.load(folder / "model.pt", map_location="cpu", weights_only=True)
        model.load_state_dict(state, strict=True)
        ssl._fingerprint = state_dict_fingerprint(ssl.module.state_dict())
        model.to(device).eval()
        return cls(spec, model, list(meta["domains"]), list(meta["listeners"]))


# ------------------------------------------------------------------------------------------
class WhisperComponent:
    kind = "whisper"

    def __init__(self, spec: WhisperSpec, model: WhisperMOS, encoder, cache: FeatureCache | None):
        self.spec = spec
        self.model = model
        self.encoder = encoder
        self.cache = cache

    @staticmethod
    def features(spec: WhisperSpec, encoder, signals: list[np.ndarray], hashes, cache):
        return item_features(encoder, spec.head, signals, hashes, cache)

    @classmethod
    def fit(cls, spec: WhisperSpec, encoder, feats, counts, targets, *, device: str, cache) -> "WhisperComponent":
        import torch

        torch.manual_seed(spec.train.seed)
        dim = feats[0].shape[-1]
        model = WhisperMOS(dim, spec.head, encoder if spec.head.finetune_blocks else None)
        train_whisper_mos(model, feats, counts, targets, spec.train, device=device)
        return cls(spec, model, encoder, cache)

    def predict(self, signals: list[np.ndarray], hashes: Sequence[str], texts=None, **_: Any) -> np.ndarray:
        feats = self.features(self.spec, self.encoder, signals, hashes, self.cache)
        return predict_whisper_mos(self.model, feats, [len(s) for s in signals])

    def save(self, folder: Path) -> dict:
        import torch

        folder.mkdir(parents=True, exist_ok=True)
        meta = {"type": self.kind, "spec": plain(self.spec), "encoder_id": self.encoder.encoder_id,
                "dim": int(self.model.head.norm.normalized_shape[0])}
        (folder / "config.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
        torch.save({k: v.detach().cpu() for k, v in self.model.state_dict().items()}, folder / "model.pt")
        return {"name": self.spec.name, "type": self.kind, "path": folder.name, "encoder_id": self.encoder.encoder_id}

    @classmethod
    def load(cls, folder: Path, device: str = "cpu", cache: FeatureCache | None = None) -> "WhisperComponent":
        import torch

        meta = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        spec = validate(WhisperSpec, meta["spec"], str(folder / "config.json"))
        encoder = load_encoder(spec.encoder_spec(), device=device)
        if encoder.encoder_id != meta["encoder_id"]:
            raise ConfigError(
                f"Whisper predictor '{spec.name}' was trained on encoder {meta['encoder_id']}, "
                f"but {encoder.encoder_id} was found (different weights or options)"
            )
        model = WhisperMOS(int(meta["dim"]), spec.head, encoder if spec.head.finetune_blocks else None)
        model.load_state_dict(torch.load(folder / "model.pt", map_location="cpu", weights_only=True), strict=True)
        model.to(device).eval()
        return cls(spec, model, encoder, cache)


# ------------------------------------------------------------------------------------------
class WeakComponent:
    """One feature set with its fitted learners: one stage-1 column per (block, learner),
    ``learners[column] = (block slice, Learner)``."""

    kind = "weak"

    def __init__(self, spec: FeatureSetSpec, extractor: FeatureExtractor,
                 learners: dict[str, tuple[slice, Learner]], probe: np.ndarray | None = None):
        self.spec = spec
        self.extractor = extractor
        self.learners = learners
        #: a few training feature rows, stored so that every learner is checked on load
        self.probe = probe

    def columns(self) -> list[str]:
        return list(self.learners)

    def matrix(self, signals: Callable[[int], np.ndarray], hashes: Sequence[str],
               progress=None) -> tuple[np.ndarray, list[ItemError | None]]:
        """``(n, d)`` feature rows (NaN rows for failed items) and each item's error."""
        vecs = self.extractor.vectors(signals, hashes, progress=progress)
        dims = {v.shape[0] for v in vecs if isinstance(v, np.ndarray)}
        if len(dims) > 1:
            raise RuntimeError(f"feature set '{self.spec.name}' gave vectors of sizes {sorted(dims)}")
        d = dims.pop() if dims else 0
        X = np.full((len(vecs), d), np.nan)
        errors: list[ItemError | None] = []
        for i, v in enumerate(vecs):
            if isinstance(v, np.ndarray):
                X[i] = v
                errors.append(None)
            else:
                errors.append(v)
        return X, errors

    def predict_columns(self, X: np.ndarray, names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        return {name: m.predict(X[:, sl]) for name, (sl, m) in self.learners.items()
                if names is None or name in names}

    def save(self, folder: Path) -> dict:
        """Write every learner, each with :attr:`probe` rows to re-predict on load."""
        folder.mkdir(parents=True, exist_ok=True)
        d = max((sl.stop for sl, _ in self.learners.values()), default=0)
        probe = self.probe if self.probe is not None else np.zeros((0, d))
        cols = {}
        for name, (sl, m) in self.learners.items():
            m.save(folder, name.replace("@", "_at_"), probe[:, sl])
            cols[name] = [sl.start, sl.stop]
        meta = {"type": self.kind, "spec": plain(self.spec), "feature_id": self.extractor.feature_id,
                "columns": cols}
        (folder / "config.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
        return {"name": self.spec.name, "type": self.kind, "path": folder.name,
                "feature_id": self.extractor.feature_id, "columns": list(self.learners)}

    @classmethod
    def load(cls, folder: Path, device: str = "cpu", cache: FeatureCache | None = None) -> "WeakComponent":
        meta = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        spec = validate(FeatureSetSpec, meta["spec"], str(folder / "config.json"))
        ext = FeatureExtractor(spec, device=device, cache=cache)
        if ext.feature_id != meta["feature_id"]:
            raise ConfigError(
                f"feature set '{spec.name}' was trained on {meta['feature_id']} but "
                f"{ext.feature_id} was found (different weights or options)"
            )
        learners = {name: (slice(*bounds), Learner.load(folder, name.replace("@", "_at_")))
                    for name, bounds in meta["columns"].items()}
        return cls(spec, ext, learners)


def fit_learner(spec: LearnerSpec, X: np.ndarray, y: np.ndarray, groups=None) -> Learner:
    return Learner(spec).fit(X, y, groups)
