"""MOS predictors as scoring metrics (``--metrics mos_ensemble:BUNDLE`` and friends).

* ``mos_ensemble:BUNDLE``: the stacked ensemble of a trained bundle.
* ``mos_strong:BUNDLE``, ``mos_whisper:BUNDLE``, ``mos_weak:BUNDLE``: one component of it
  (``component`` parameter: a strong/whisper learner name or a weak column such as
  ``ct2-svr``; default: the first of its kind, for weak columns the one with the best
  out-of-fold SRCC in the bundle's report).
* ``utmos_strong``: the public UTMOS22 strong learner (asset ``utmos22-strong``, SpeechMOS
  layout) or ``utmos_strong:FILE`` for another checkpoint in that layout.

The model id of every stored score carries the bundle's content hash (or the checkpoint's
sha256) and the component, so scores of different bundles never mix. Predictions are made in
padded, length-bucketed batches whose scores equal batch size 1.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Sequence

import numpy as np

from speechqe.config import StrictModel
from speechqe.errors import ConfigError, MetricComputationError
from speechqe.metric import (
    ItemScore,
    Metric,
    MetricSpec,
    OutputSpec,
    ScoringInput,
    params_id,
)


def _spec(name: str, description: str, source: str,
          core: str = "speechqe.predictors.bundle") -> MetricSpec:
    return MetricSpec(
        name=name,
        version="1",
        outputs=(OutputSpec(name, higher_is_better=True, unit="MOS", regression_threshold=0.05,
                         description=description),),
        sample_rate=16000,
        device="cuda",
        batched=True,
        min_duration=0.1,
        kind="mos-predictor",
        description=description,
        source=source,
        core=core,
        licence="Apache-2.0 (speechqe); weights: see the bundle / asset",
        extra="models",
    )


class BundleParams(StrictModel):
    """``bundle``: the bundle folder (``--metrics mos_ensemble:PATH``); ``component``: which
    part (see the module docstring); ``domain``: the listening-test domain the strong learner
    conditions on (default: its first training domain)."""

    bundle: str = ""
    component: str = ""
    domain: str = ""


class _BundleMetric(Metric):
    Params = BundleParams
    positional: ClassVar[str] = "bundle"
    kind: ClassVar[str] = "ensemble"

    def __init__(self, params=None, device: str = "cpu"):
        super().__init__(params, device)
        self._hash: str | None = None
        self.bundle = None
        self.column = ""
        if self.params.bundle:
            self._path  # a bad bundle path stops the command before the set is read  # noqa: B018

    @property
    def _path(self) -> Path:
        """The bundle folder; a missing or wrong one is a :class:`ConfigError` (raised when the
        metric is first used, so listing metrics never needs a bundle)."""
        if not self.params.bundle:
            raise ConfigError(f"{self.spec.name} needs a bundle: --metrics {self.spec.name}:PATH")
        path = Path(self.params.bundle).expanduser().resolve()
        if not (path / "bundle.json").is_file():
            raise ConfigError(f"{self.spec.name}: no MOS bundle at {path} (bundle.json missing)")
        return path

    def model_id(self) -> str:
        if self._hash is None:
            from .bundle import bundle_hash

            self._hash = bundle_hash(self._path)
        return f"bundle-{self._hash}:{self._column_name()}:{params_id(BundleParams(domain=self.params.domain))}"

    def _column_name(self) -> str:
        import json

        meta = json.loads((self._path / "bundle.json").read_text(encoding="utf-8"))
        if self.kind == "ensemble":
            return "ensemble"
        comps = [c for c in meta["components"] if c["type"] == self.kind]
        if self.kind == "weak":
            cols = [col for c in comps for col in c["columns"]]
        else:
            cols = [c["name"] for c in comps]
        if not cols:
            raise ConfigError(f"bundle {self._path} has no {self.kind} component")
        if self.params.component:
            if self.params.component not in cols:
                raise ConfigError(f"bundle {self._path} has no {self.kind} component "
                                  f"'{self.params.component}'; it has {', '.join(cols)}")
            return self.params.component
        if self.kind == "weak":
            oof = meta.get("report", {}).get("oof", {})
            return max(cols, key=lambda c: oof.get(c, {}).get("utterance", {}).get("SRCC", -1.0))
        return cols[0]

    def setup(self) -> None:
        from speechqe.encoders import FeatureCache

        from .bundle import MOSBundle

        self.column = self._column_name()
        self.bundle = MOSBundle.load(self._path, device=self.device, cache=FeatureCache())

    def score_batch(self, inputs: Sequence[ScoringInput]):
        from speechqe.encoders import array_sha256

        out, ok = self.checked(inputs)
        if ok:
            sigs = [inputs[i].signal(16000) for i in ok]
            hashes = [inputs[i].item.sha256 or array_sha256(s, 16000) for i, s in zip(ok, sigs)]
            texts = [inputs[i].item.text for i in ok]
            ens = self.column == "ensemble"
            preds, errors = self.bundle.predict(sigs, hashes, texts, columns=None if ens else [self.column],
                                                ensemble=ens, domain=self.params.domain or None)
            col = preds[self.column]
            for j, i in enumerate(ok):
                if errors[j] is not None:
                    out[i] = errors[j]
                elif not np.isfinite(col[j]):
                    out[i] = MetricComputationError(f"{self.spec.name} produced no finite score")
                else:
                    out[i] = ItemScore({self.spec.name: float(col[j])}, {"component": self.column})
        return out



class MOSEnsemble(_BundleMetric):
    kind = "ensemble"
    spec = _spec("mos_ensemble", "stacked MOS ensemble of a trained speechqe bundle (UTMOS-style)",
                 "Saeki et al., UTMOS, Interspeech 2022 (stacking); speechqe mos train")


class MOSStrong(_BundleMetric):
    kind = "strong"
    spec = _spec("mos_strong", "a bundle's strong learner (fine-tuned SSL + BLSTM)",
                 "Saeki et al., UTMOS strong learner, Interspeech 2022")


class MOSWhisper(_BundleMetric):
    kind = "whisper"
    spec = _spec("mos_whisper", "a bundle's Whisper-feature MOS predictor (BLSTM + attention)",
                 "Zezario et al., Whisper for speech assessment (MOSA-Net+), ICME 2024")


class MOSWeak(_BundleMetric):
    kind = "weak"
    spec = _spec("mos_weak", "a bundle's weak learner on pooled encoder features",
                 "Saeki et al., UTMOS weak learners, Interspeech 2022")


class UTMOSParams(StrictModel):
    """``checkpoint``: a file in the SpeechMOS UTMOS22-strong layout (default: the
    ``utmos22-strong`` asset)."""

    checkpoint: str = ""


class UTMOSStrong(Metric):
    Params = UTMOSParams
    positional: ClassVar[str] = "checkpoint"
    spec = _spec("utmos_strong", "UTMOS22 strong learner (VoiceMOS 2022 main track), padding-safe",
                 "Saeki et al., UTMOS, Interspeech 2022; weights via tarepan/SpeechMOS",
                 core="speechqe.predictors.ssl_strong.utmos22")

    def __init__(self, params=None, device: str = "cpu"):
        super().__init__(params, device)
        self.model = None
        self._fp: str | None = None
        if self.params.checkpoint and not self._path().is_file():
            raise ConfigError(f"utmos_strong: no checkpoint file at {self._path()}")

    def _path(self) -> Path:
        from speechqe import assets

        if self.params.checkpoint:
            return Path(self.params.checkpoint).expanduser()
        return assets.get("utmos22-strong").file()

    def model_id(self) -> str:
        if self._fp is None:
            from speechqe import assets

            self._fp = assets.cached_sha256(self._path())[:12]
        return f"utmos22-{self._fp}"

    def setup(self) -> None:
        from .ssl_strong.utmos22 import load_utmos22_strong

        self.model = load_utmos22_strong(self._path()).to(self.device)

    def score_batch(self, inputs: Sequence[ScoringInput]):
        from .ssl_strong.train import predict_strong

        out, ok = self.checked(inputs)
        if ok:
            preds = predict_strong(self.model, [inputs[i].signal(16000) for i in ok])
            for j, i in enumerate(ok):
                out[i] = ItemScore({"utmos_strong": float(preds[j])})
        return out

