"""Every configuration of ``speechqe mos train``, as models of speechqe's one typed config
system (:mod:`speechqe.config`: pydantic v2, unknown keys are errors, one error style).

This module is the only place where a MOS training default is written: the learners'
estimator parameters, hyper-parameter grids, PCA sizes and minimum training sizes
(:data:`LEARNER_DEFAULTS` ...), the stacking rule's settings, the heads' architectures and
optimisers. ``docs/mos.md`` carries the reference of every key generated from these models
(:func:`config_reference`; a test keeps the two equal). A field's docstring is its
description there.

Errors name the file and the key path, e.g.::

    mos.yaml: weak.learners.0.knd: unknown key 'knd' (known: kind, params, pca, tune)
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal, Union

from pydantic import ConfigDict, Field, field_validator, model_validator

from speechqe.config import StrictModel, load_file, plain, validate
from speechqe.devices import is_device_name

__all__ = [
    "DataSpec", "LearnerSpec", "FeatureSetSpec", "WeakConfig", "StackingConfig", "STACKING_CANDIDATES",
    "StrongModelConfig", "StrongTrainConfig", "StrongSpec", "WhisperHeadConfig",
    "WhisperTrainConfig", "WhisperSpec", "MOSTrainConfig", "LEARNER_KINDS", "LEARNER_DEFAULTS",
    "LEARNER_GRIDS", "LEARNER_PCA", "LEARNER_MIN_ITEMS", "POOLS", "load_train_config",
    "config_reference", "plain", "validate",
]

DOCS = "docs/mos.md#configuration-reference"


class _Config(StrictModel):
    """A strict config model whose field docstrings are its documentation."""

    model_config = ConfigDict(use_attribute_docstrings=True)


# ------------------------------------------------------------------------------------------
# Data
# ------------------------------------------------------------------------------------------
DATA_FORMATS = ("bvcc", "sheet", "nisqa", "jsonl", "folder")


class DataSpec(_Config):
    """A labelled (or, for prediction, unlabelled) data set."""

    format: Literal["bvcc", "sheet", "nisqa", "jsonl", "folder"]
    """``bvcc`` (VoiceMOS 2022 track folder), ``sheet`` (SHEET/MOS-Bench CSV), ``nisqa`` (NISQA corpus CSV), ``jsonl`` (speechqe manifest) or ``folder``."""
    path: str
    """The track folder, CSV, manifest or folder (relative paths: against the config's folder)."""
    split: Literal["train", "dev", "test"] = "train"
    """BVCC split."""
    audio_root: str = ""
    """Folder the CSV's audio paths are relative to (``sheet``, ``nisqa``; default: the CSV's folder)."""
    db: str = ""
    """NISQA database filter (``NISQA_TRAIN_SIM``...)."""
    domain: str = ""
    """Listening-test name given to every item (default: the reader's)."""


# ------------------------------------------------------------------------------------------
# Learners (weak learners and stage 2 of the stacking ensemble)
# ------------------------------------------------------------------------------------------
LEARNER_KINDS = ("ridge", "nnls", "svr", "knn", "rf", "gp", "lightgbm")

#: Estimator parameters of each learner kind (the only place they are set). ``svr``'s ``C``
#: and ``epsilon`` are in units of the label's standard deviation (the target is standardised
#: inside the learner), so they suit any score range; ``gp``'s ``length_scale`` is relative to
#: the square root of the input dimension (the typical distance of standardised points).
LEARNER_DEFAULTS: dict[str, dict[str, Any]] = {
    "ridge": {"alpha": 10.0},
    "nnls": {},
    "svr": {"C": 1.0, "epsilon": 0.1, "gamma": "scale"},
    "knn": {"n_neighbors": 10, "weights": "distance"},
    "rf": {"n_estimators": 200, "max_features": 0.33, "min_samples_leaf": 2, "random_state": 0},
    "gp": {"length_scale": 1.0, "length_scale_bounds": [0.05, 20.0], "noise_level": 0.3,
           "noise_level_bounds": [0.01, 10.0], "n_restarts_optimizer": 0, "random_state": 0},
    "lightgbm": {"n_estimators": 200, "learning_rate": 0.05, "num_leaves": 7, "min_child_samples": 5,
                 "subsample": 0.8, "subsample_freq": 1, "colsample_bytree": 0.5, "reg_lambda": 1.0,
                 "random_state": 0, "n_jobs": 1, "verbose": -1},
}

#: Hyper-parameter grids searched by inner grouped cross-validation inside every fit
#: (``tune: auto``). Learners whose own fit sets their hyper-parameters (``gp``: marginal
#: likelihood; ``nnls``) or that are insensitive at this size (``rf``) have none.
LEARNER_GRIDS: dict[str, dict[str, list[Any]]] = {
    "ridge": {"alpha": [0.1, 1.0, 10.0, 100.0, 1000.0, 10000.0]},
    "nnls": {},
    "svr": {"C": [0.3, 1.0, 3.0, 10.0], "epsilon": [0.1, 0.5]},
    "knn": {"n_neighbors": [3, 5, 10, 20]},
    "rf": {},
    "gp": {},
    "lightgbm": {"n_estimators": [50, 200]},
}

#: PCA inside each learner (``pca: auto``): components kept after standardisation (an int,
#: capped at the training size minus one), a variance fraction (a float below 1) or 0 (none).
#: Distance-based learners need few dimensions to find neighbours in 400-1000-d features.
LEARNER_PCA: dict[str, int | float] = {
    "ridge": 0, "nnls": 0, "svr": 32, "knn": 16, "rf": 0, "gp": 16, "lightgbm": 0,
}

#: The fewest training items a learner kind is fitted on (the smallest fold of training,
#: nested folds included, is checked before any work): below it, a fit is not meaningful.
LEARNER_MIN_ITEMS: dict[str, int] = {
    "ridge": 6, "nnls": 6, "svr": 10, "knn": 6, "rf": 15, "gp": 10, "lightgbm": 20,
}


class LearnerSpec(_Config):
    """A learner: ``kind`` plus overrides of its defaults."""

    kind: Literal["ridge", "nnls", "svr", "knn", "rf", "gp", "lightgbm"]
    """``ridge``, ``nnls`` (non-negative least squares), ``svr`` (RBF), ``knn``, ``rf`` (random forest), ``gp`` (Gaussian process: RBF + noise) or ``lightgbm``."""
    params: dict[str, Any] = Field(default_factory=dict)
    """Estimator parameters overriding the kind's defaults (see the table of learner defaults)."""
    pca: Union[Literal["auto"], int, float] = "auto"
    """PCA after standardisation: ``auto`` (the kind's default), 0 (none), N components, or a variance fraction below 1."""
    tune: Union[Literal["auto"], dict[str, list[Any]]] = "auto"
    """Hyper-parameter grid searched by inner grouped CV in every fit: ``auto`` (the kind's grid) or a mapping of parameter to values (``{}``: no search)."""

    @model_validator(mode="after")
    def _check(self) -> "LearnerSpec":
        known = LEARNER_DEFAULTS[self.kind]
        bad = sorted(set(self.params) - set(known))
        if bad:
            raise ValueError(f"unknown parameter(s) {bad} for learner '{self.kind}' "
                             f"(known: {', '.join(sorted(known)) or 'none'})")
        if isinstance(self.tune, dict):
            bad = sorted(set(self.tune) - set(known))
            if bad:
                raise ValueError(f"tune: unknown parameter(s) {bad} for learner '{self.kind}'")
            empty = [k for k, v in self.tune.items() if not v]
            if empty:
                raise ValueError(f"tune: give at least one value for {empty}")
        if isinstance(self.pca, bool) or (not isinstance(self.pca, str) and self.pca < 0):
            raise ValueError(f"pca must be auto, 0, a number of components or a fraction (got {self.pca!r})")
        return self

    def resolved(self) -> dict[str, Any]:
        """The estimator parameters: the kind's defaults with ``params`` over them."""
        return {**LEARNER_DEFAULTS[self.kind], **self.params}

    def grid(self) -> dict[str, list[Any]]:
        """The hyper-parameter grid (``{}``: none), without values fixed in ``params``."""
        g = LEARNER_GRIDS[self.kind] if self.tune == "auto" else self.tune
        if self.tune == "auto":
            g = {k: v for k, v in g.items() if k not in self.params}
        return {k: list(v) for k, v in g.items()}

    def pca_size(self) -> int | float:
        return LEARNER_PCA[self.kind] if self.pca == "auto" else self.pca

    def min_items(self) -> int:
        n = LEARNER_MIN_ITEMS[self.kind]
        if self.kind == "knn":
            n = max(n, int(self.resolved()["n_neighbors"]) + 1 if "n_neighbors" in self.params else n)
        if self.kind == "lightgbm":
            n = max(n, 2 * int(self.resolved()["min_child_samples"]) + 1)
        return n


def default_learners() -> tuple[LearnerSpec, ...]:
    return tuple(LearnerSpec(kind=k) for k in ("ridge", "svr", "knn", "rf", "gp", "lightgbm"))


# ------------------------------------------------------------------------------------------
# Feature sets (weak learners)
# ------------------------------------------------------------------------------------------
POOLS = ("mean", "std", "max", "min", "median", "p10", "p90", "dmean", "dstd")
FEATURE_SOURCES = ("encoder", "dnsmos", "distillmos", "metric", "signal")


class FeatureSetSpec(_Config):
    """A named set of utterance-level features that every weak learner is trained on."""

    name: str
    """Column prefix, e.g. ``ct2``, ``logmel``, ``signal`` (columns are ``NAME-LEARNER``)."""
    source: Literal["encoder", "dnsmos", "distillmos", "metric", "signal"] = "encoder"
    """``encoder`` (pooled hidden states), ``dnsmos`` / ``distillmos`` (the packaged predictors' outputs), ``metric`` (any registered non-intrusive metric) or ``signal`` (cheap signal descriptors: bandwidth, spectral flatness and tilt, SNR, clipping, voicing)."""
    encoder: dict[str, Any] | None = None
    """The encoder spec (``source: encoder``), e.g. ``{kind: whisper, source: whisper-tiny.en}`` (every block) or ``{kind: logmel}``; see docs/encoders.md."""
    layers: tuple[int, ...] | None = None
    """Hidden states to pool (``None``: all of them; negative counts from the top)."""
    layer_mode: Literal["concat", "each"] = "concat"
    """``concat``: one vector of all selected layers; ``each``: every layer its own block of columns (``NAME@LK-LEARNER``), whose non-negative stacking weights are learned layer weights."""
    pooling: tuple[Literal["mean", "std", "max", "min", "median", "p10", "p90", "dmean", "dstd"], ...] = ("mean", "std")
    """Statistics over frames, concatenated: ``mean``, ``std``, ``max``, ``min``, ``median``, ``p10``, ``p90`` and ``dmean`` / ``dstd`` (mean absolute / standard deviation of frame-to-frame differences)."""
    metric: str = ""
    """Registered metric name (``source: metric``)."""

    @model_validator(mode="after")
    def _check(self) -> "FeatureSetSpec":
        if not self.name or any(c in self.name for c in "/\\@"):
            raise ValueError(f"feature set name {self.name!r}: give a name without / \\ @")
        if self.source == "encoder":
            if not self.encoder:
                raise ValueError(f"feature set '{self.name}': an encoder feature set needs 'encoder'")
            from speechqe.encoders import EncoderSpec

            try:
                EncoderSpec.from_dict(dict(self.encoder))
            except Exception as exc:  # noqa: BLE001 - ConfigError of the encoder spec, reworded
                raise ValueError(str(exc)) from None  # names the encoder and its key
        if self.source == "metric" and not self.metric:
            raise ValueError(f"feature set '{self.name}': a metric feature set needs 'metric'")
        if not self.pooling:
            raise ValueError(f"feature set '{self.name}': give at least one pooling statistic")
        if self.layer_mode == "each" and self.source != "encoder":
            raise ValueError(f"feature set '{self.name}': layer_mode each needs an encoder")
        return self


class WeakConfig(_Config):
    """Weak learners: every learner is trained on every feature set."""

    features: tuple[FeatureSetSpec, ...] = ()
    """The feature sets."""
    learners: tuple[LearnerSpec, ...] = Field(default_factory=default_learners)
    """The learners (default: ridge, svr, knn, rf, gp, lightgbm)."""


# ------------------------------------------------------------------------------------------
# Stacking
# ------------------------------------------------------------------------------------------
#: The built-in stage-2 candidates of the stacking rule (see docs/mos.md, "The stacking rule").
STACKING_CANDIDATES = ("best-member", "convex", "mean", "rank-mean", "greedy")


class StackingConfig(_Config):
    """The ensemble over the members' out-of-fold predictions (see docs/mos.md, "The stacking rule")."""

    candidates: tuple[Literal["best-member", "convex", "mean", "rank-mean", "greedy"], ...] = (
        "best-member", "convex", "mean")
    """Built-in stage-2 candidates: ``best-member`` (the member with the best SRCC), ``convex`` (non-negative weights summing to one, least squares), ``mean`` (equal weights over the ``mean_members`` best), ``rank-mean`` (the mean of their ranks, mapped onto the ``mean`` candidate's scale), ``greedy`` (Caruana's forward ensemble selection on SRCC)."""
    stage2: tuple[LearnerSpec, ...] = ()
    """Extra stage-2 learners on the standardised out-of-fold columns of the kept members (``nnls``, ``ridge``, ``gp``...), candidates beside the built-in ones."""
    min_corr: float = Field(0.0, ge=-1.0, lt=1.0)
    """A member enters only when its out-of-fold Pearson correlation with the labels is above this (an undefined one never enters)."""
    max_members: int = Field(5, ge=1)
    """At most this many members enter, the best by out-of-fold SRCC."""
    mean_members: int = Field(5, ge=1)
    """The ``mean`` and ``rank-mean`` candidates average this many best members (chosen by out-of-fold SRCC)."""
    stage3: Literal["equal", "convex", "select"] = "equal"
    """How stage 3 weighs the candidates: ``equal`` (their mean), ``convex`` (least squares on their out-of-fold predictions) or ``select`` (the one with the best out-of-fold SRCC)."""
    shrink: Union[float, Literal["cv"]] = 0.0
    """Stage 3 weights are moved this share of the way towards ``best-member`` alone; ``cv``: the share (0, 0.25, 0.5, 0.75 or 1) with the best out-of-fold SRCC."""

    @field_validator("shrink")
    @classmethod
    def _shrink(cls, v):
        if not isinstance(v, str) and not 0.0 <= v <= 1.0:
            raise ValueError(f"shrink must be cv or a share in [0, 1] (got {v!r})")
        return v

    @model_validator(mode="after")
    def _check(self) -> "StackingConfig":
        if not self.candidates and not self.stage2:
            raise ValueError("give at least one candidate (candidates or stage2)")
        if len(set(self.candidates)) != len(self.candidates):
            raise ValueError(f"candidates repeated: {list(self.candidates)}")
        if self.shrink and "best-member" not in self.candidates:
            raise ValueError("shrink moves weights towards best-member: add it to candidates")
        return self


# ------------------------------------------------------------------------------------------
# Strong learner (SSL + BLSTM)
# ------------------------------------------------------------------------------------------
def _check_range(r: tuple[float, float]) -> tuple[float, float]:
    lo, hi = r
    if not (math.isfinite(lo) and math.isfinite(hi) and hi > lo):
        raise ValueError(f"score_range must be [low, high] with high > low (got {list(r)})")
    return r


class _Scaled(_Config):
    """A head predicting on ``[-1, 1]`` for labels on ``score_range``."""

    def normalise(self, mos):
        lo, hi = self.score_range  # type: ignore[attr-defined]
        return (mos - (lo + hi) / 2) / ((hi - lo) / 2)

    def denormalise(self, s):
        lo, hi = self.score_range  # type: ignore[attr-defined]
        return s * ((hi - lo) / 2) + (lo + hi) / 2


class StrongModelConfig(_Scaled):
    """Strong learner head (defaults: UTMOS22's ``strong/configs``)."""

    layer: Union[int, Literal["weighted"]] = -1
    """SSL hidden state fed to the head (``-1``: last, as UTMOS) or ``weighted`` (learned weighted sum of all)."""
    domain_dim: int = Field(128, ge=1)
    """Domain (listening test) embedding size."""
    listener_dim: int = Field(128, ge=1)
    """Listener embedding size."""
    blstm_hidden: int = Field(512, ge=1)
    """BLSTM units per direction."""
    proj_hidden: int = Field(2048, ge=1)
    """Hidden units of the projection."""
    dropout: float = Field(0.3, ge=0.0, lt=1.0)
    """Dropout in the projection."""
    phoneme: bool = False
    """Add the transcript-character encoder (UTMOS's phoneme encoder)."""
    phoneme_dim: int = Field(256, ge=1)
    """Its embedding/hidden size."""
    phoneme_layers: int = Field(3, ge=1)
    """Its BLSTM depth."""
    score_range: tuple[float, float] = (1.0, 5.0)
    """Set from the top-level ``score_range``."""

    @field_validator("score_range")
    @classmethod
    def _range(cls, v: tuple[float, float]) -> tuple[float, float]:
        return _check_range(v)


class StrongTrainConfig(_Config):
    """Strong learner optimisation (defaults: UTMOS22)."""

    steps: int = Field(15000, ge=1)
    """Optimiser steps per fit."""
    batch_size: int = Field(12, ge=1)
    """Examples per batch."""
    accumulate: int = Field(2, ge=1)
    """Gradient accumulation steps."""
    lr: float = Field(2e-5, gt=0)
    """Peak learning rate (Adam)."""
    head_lr: float = Field(0.0, ge=0)
    """Learning rate of the head (0: same as ``lr``)."""
    warmup_steps: int = Field(4000, ge=0)
    """Linear warm-up steps."""
    grad_clip: float = Field(1.0, ge=0)
    """Gradient norm clip (0: none)."""
    max_seconds: float = Field(10.0, gt=0)
    """Random crop length in training."""
    tau: float = Field(0.25, ge=0)
    """Clipped-MSE threshold on the [-1, 1] scale."""
    margin: float = Field(0.1, ge=0)
    """Contrastive loss margin."""
    contrastive_weight: float = Field(0.5, ge=0)
    """Weight of the contrastive loss."""
    use_listeners: bool = True
    """Train listener embeddings on per-listener ratings."""
    augment: bool = True
    """Speed and pitch augmentation."""
    speed_range: float = Field(0.1, ge=0)
    """Speed change range (+-)."""
    pitch_cents: float = Field(300.0, ge=0)
    """Pitch shift range in cents (+-)."""
    freeze_ssl: bool = False
    """Train the head only."""
    freeze_feature_extractor: bool = False
    """Keep the SSL convolutional front end frozen."""
    ssl_layer_drop: float = -1.0
    """SSL LayerDrop probability (< 0: the encoder's own)."""
    amp: Literal["auto", "bf16", "fp16", "none"] = "auto"
    """Mixed precision on GPUs."""
    checkpoint_every: int = Field(1000, ge=0)
    """Steps between resumable checkpoints (0: none)."""
    seed: int = 0
    """Seed of batches, crops, augmentation and dropout."""


def _encoder_spec(raw: dict[str, Any] | None, default: dict[str, Any], kinds: tuple[str, ...],
                  wrong_kind: str):
    """The :class:`EncoderSpec` of a learner's encoder setting (``default`` when unset), whose
    kind must be one of ``kinds`` (else a ConfigError saying ``wrong_kind``)."""
    from speechqe.encoders import EncoderSpec
    from speechqe.errors import ConfigError

    spec = EncoderSpec.from_dict(dict(raw or default))
    if spec.kind not in kinds:
        raise ConfigError(wrong_kind)
    return spec


class StrongSpec(_Config):
    """A strong learner (fine-tuned SSL encoder + BLSTM head, UTMOS)."""

    name: str = "strong"
    """Column name."""
    ssl: dict[str, Any] | None = None
    """Encoder spec of kind ``ssl`` (default: ``{kind: ssl, source: ssl-wav2vec2-base}``)."""
    model: StrongModelConfig = Field(default_factory=StrongModelConfig)
    """Head architecture."""
    train: StrongTrainConfig = Field(default_factory=StrongTrainConfig)
    """Optimisation."""

    def encoder_spec(self):
        return _encoder_spec(self.ssl, {"kind": "ssl", "source": "ssl-wav2vec2-base"}, ("ssl",),
                             f"strong learner '{self.name}': ssl.kind must be 'ssl'")


# ------------------------------------------------------------------------------------------
# Whisper predictor
# ------------------------------------------------------------------------------------------
class WhisperHeadConfig(_Scaled):
    """Whisper head (BLSTM + attention pooling, MOSA-Net+ style)."""

    layers: tuple[int, ...] = (-1,)
    """Encoder hidden states (negative from the top; several: a learned softmax-weighted sum). CTranslate2 has only ``-1``; ``{kind: whisper, source: whisper-tiny.en}`` has blocks 0-4."""
    finetune_blocks: int = Field(0, ge=0)
    """Top openai-whisper blocks trained with the head."""
    proj_dim: int = Field(256, ge=1)
    """Projection size."""
    blstm_hidden: int = Field(128, ge=1)
    """BLSTM units per direction."""
    attn_hidden: int = Field(128, ge=1)
    """Attention hidden size."""
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    """Dropout."""
    score_range: tuple[float, float] = (1.0, 5.0)
    """Set from the top-level ``score_range``."""

    @field_validator("score_range")
    @classmethod
    def _range(cls, v: tuple[float, float]) -> tuple[float, float]:
        return _check_range(v)

    @model_validator(mode="after")
    def _check(self) -> "WhisperHeadConfig":
        if not self.layers:
            raise ValueError("give at least one layer")
        if self.finetune_blocks and self.layers != (-1,):
            raise ValueError("fine-tuning the top blocks uses the last layer only: set layers: [-1]")
        return self


class WhisperTrainConfig(_Config):
    """Whisper head training (AdamW, shuffled epochs, clipped MSE + contrastive)."""

    epochs: int = Field(30, ge=1)
    """Epochs per fit."""
    batch_size: int = Field(16, ge=1)
    """Items per batch."""
    lr: float = Field(1e-3, gt=0)
    """Head learning rate."""
    finetune_lr: float = Field(1e-5, gt=0)
    """Learning rate of fine-tuned blocks."""
    weight_decay: float = Field(1e-4, ge=0)
    """AdamW weight decay."""
    tau: float = Field(0.0, ge=0)
    """Clipped-MSE threshold on the [-1, 1] scale."""
    margin: float = Field(0.1, ge=0)
    """Contrastive loss margin."""
    contrastive_weight: float = Field(0.5, ge=0)
    """Weight of the contrastive loss."""
    max_frames: int = Field(1500, ge=1)
    """Random crop in frames (50 per second)."""
    grad_clip: float = Field(1.0, ge=0)
    """Gradient norm clip (0: none)."""
    seed: int = 0
    """Seed."""


class WhisperSpec(_Config):
    """A Whisper-feature predictor."""

    name: str = "whisper"
    """Column name."""
    encoder: dict[str, Any] | None = None
    """Encoder spec, ``whisper`` or ``whisper-ct2`` (default: ``{kind: whisper-ct2}``, the packaged tiny.en)."""
    head: WhisperHeadConfig = Field(default_factory=WhisperHeadConfig)
    """Head architecture."""
    train: WhisperTrainConfig = Field(default_factory=WhisperTrainConfig)
    """Optimisation."""

    def encoder_spec(self):
        return _encoder_spec(self.encoder, {"kind": "whisper-ct2"}, ("whisper", "whisper-ct2"),
                             f"whisper predictor '{self.name}': encoder.kind must be whisper or whisper-ct2")


# ------------------------------------------------------------------------------------------
# The training config
# ------------------------------------------------------------------------------------------
class MOSTrainConfig(_Config):
    """A ``speechqe mos train`` configuration."""

    train: DataSpec
    """The labelled training data."""
    valid: DataSpec | None = None
    """Labelled data evaluated with the finished bundle (report only)."""
    score_range: tuple[float, float] = (1.0, 5.0)
    """The label scale ``[low, high]``; every prediction is clipped to it."""
    folds: int = Field(5, ge=2)
    """Grouped folds of the members' out-of-fold predictions (stacking's training signal)."""
    group_by: str = "system"
    """Fold groups: ``system``, ``speaker``, ``text``, ``item`` or an extra column every item has (``clip``, ``sentence``...). An item without it is an error."""
    nested_folds: Union[Literal["auto"], int] = "auto"
    """Outer folds of the nested estimate of the whole ensemble (0: off; ``auto``: ``folds`` when there is no strong learner and at most 2000 items, else off)."""
    seed: int = 0
    """Seed of the fold assignment."""
    device: str = "auto"
    """``auto`` (CUDA when present), ``cpu``, ``cuda`` or ``cuda:N``."""
    cache: str = ""
    """Feature cache folder (``""``: the speechqe cache; ``off``: none)."""
    strong: tuple[StrongSpec, ...] = ()
    """Strong learners."""
    whisper: tuple[WhisperSpec, ...] = ()
    """Whisper-feature predictors."""
    weak: WeakConfig = Field(default_factory=WeakConfig)
    """Feature sets x learners."""
    stacking: StackingConfig = Field(default_factory=StackingConfig)
    """The ensemble."""

    @field_validator("score_range")
    @classmethod
    def _range(cls, v: tuple[float, float]) -> tuple[float, float]:
        return _check_range(v)

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if not is_device_name(v):
            raise ValueError(f"device must be one of auto, cpu, cuda, cuda:N (got {v!r})")
        return v

    @field_validator("nested_folds")
    @classmethod
    def _nested(cls, v):
        if not isinstance(v, str) and (isinstance(v, bool) or v == 1 or v < 0):
            raise ValueError(f"nested_folds must be auto, 0 (off) or at least 2 (got {v!r})")
        return v

    @model_validator(mode="after")
    def _check(self) -> "MOSTrainConfig":
        names = ([s.name for s in self.strong] + [w.name for w in self.whisper]
                 + [f.name for f in self.weak.features])
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"component names must be unique; repeated: {dup}")
        if not names:
            raise ValueError("configure at least one learner (strong, whisper or weak.features)")
        if self.weak.features and not self.weak.learners:
            raise ValueError("weak.features given but weak.learners is empty")
        return self

    def with_score_range(self, spec):
        """A strong/Whisper spec with this config's label scale."""
        if isinstance(spec, StrongSpec):
            return spec.model_copy(update={"model": spec.model.model_copy(update={"score_range": self.score_range})})
        if isinstance(spec, WhisperSpec):
            return spec.model_copy(update={"head": spec.head.model_copy(update={"score_range": self.score_range})})
        return spec

    def nested_outer_folds(self, n_items: int) -> int:
        """The outer folds of the nested estimate this config asks for with ``n_items`` (0: off)."""
        if self.nested_folds == "auto":
            return self.folds if (not self.strong and n_items <= 2000) else 0
        return int(self.nested_folds)


def load_train_config(path: str | Path, *, device: str | None = None) -> MOSTrainConfig:
    """Read a training config (YAML/JSON); ``device`` overrides its ``device``.

    Raises:
        ConfigError: ``path: key.path: message`` for every bad key (see :data:`DOCS`).
    """
    from speechqe.errors import ConfigError

    try:
        cfg = load_file(MOSTrainConfig, path, "MOS training config")
    except ConfigError as exc:
        raise ConfigError(f"{exc} (every key and its default: {DOCS})") from None
    if device:
        cfg = validate(MOSTrainConfig, {**cfg.model_dump(), "device": device}, f"{path} (--device)")
    return cfg


# ------------------------------------------------------------------------------------------
# The reference in docs/mos.md
# ------------------------------------------------------------------------------------------
def _type_name(ann: Any) -> str:
    s = str(ann).replace("typing.", "").replace("<class '", "").replace("'>", "")
    s = s.replace("predictors.config.", "").replace("speechqe.", "")
    return s


def _default_repr(field) -> str:
    from pydantic_core import PydanticUndefined

    if field.default is PydanticUndefined and field.default_factory is None:
        return "required"
    value = field.default_factory() if field.default_factory is not None else field.default
    if isinstance(value, StrictModel):
        return "see below"
    if isinstance(value, tuple) and value and isinstance(value[0], StrictModel):
        return ", ".join(plain(v).get("kind", "?") if isinstance(v, LearnerSpec) else "..." for v in value)
    import json

    return json.dumps(plain(value))


def config_reference() -> str:
    """The markdown reference of every key of :class:`MOSTrainConfig` with its default and
    description, as ``docs/mos.md`` carries it between its ``config-reference`` markers."""
    sections = [
        ("top level", MOSTrainConfig), ("train / valid (data)", DataSpec),
        ("weak", WeakConfig), ("weak.features[]", FeatureSetSpec),
        ("weak.learners[], stacking.stage2[]", LearnerSpec), ("stacking", StackingConfig),
        ("whisper[]", WhisperSpec), ("whisper[].head", WhisperHeadConfig),
        ("whisper[].train", WhisperTrainConfig), ("strong[]", StrongSpec),
        ("strong[].model", StrongModelConfig), ("strong[].train", StrongTrainConfig),
    ]
    out = []
    for title, model in sections:
        out += [f"**{title}**", "", "| key | default | meaning |", "| --- | --- | --- |"]
        for name, f in model.model_fields.items():
            desc = (f.description or "").replace("|", "\\|").replace("\n", " ")
            out.append(f"| `{name}` | `{_default_repr(f)}` | {desc} |")
        out.append("")
    out += ["**learner defaults** (`params`, the `tune: auto` grid searched by inner grouped CV, "
            "`pca: auto`, the fewest training items)", "",
            "| kind | params | grid | pca | min items |", "| --- | --- | --- | --- | --- |"]
    import json

    for k in LEARNER_KINDS:
        out.append(f"| `{k}` | `{json.dumps(LEARNER_DEFAULTS[k])}` | `{json.dumps(LEARNER_GRIDS[k])}` | "
                   f"{LEARNER_PCA[k]} | {LEARNER_MIN_ITEMS[k]} |")
    return "\n".join(out) + "\n"
