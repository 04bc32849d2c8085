"""MOS prediction metrics, computed as the VoiceMOS Challenge and SHEET compute them.

Utterance level, over all items: ``MSE = mean((true - pred)^2)``, ``LCC`` = Pearson's r
(``np.corrcoef``), ``SRCC`` = Spearman's rho (``scipy.stats.spearmanr``, average ranks for
ties), ``KTAU`` = Kendall's tau-b (``scipy.stats.kendalltau``'s default, tie-corrected).

System level: each system's true score and predicted score are reduced to one number, then
the same four statistics are computed over systems. The predicted system score is the mean of
the system's utterance predictions; the true one is the mean of its utterances' true MOS in
the evaluated set (SHEET) or, when given, the official system MOS over all of the system's
ratings (VoiceMOS 2022's ``mydata_system.csv``).

Confidence intervals are percentile bootstrap intervals: utterances resampled with replacement
for utterance-level metrics, systems for system-level ones (seeded, reproducible).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from speechqe.errors import ConfigError
from speechqe.stats import bootstrap_indices, percentile_ci

METRICS = ("MSE", "LCC", "SRCC", "KTAU")


def scores(true: Sequence[float], pred: Sequence[float]) -> dict[str, float]:
    """MSE, LCC, SRCC, KTAU of two aligned score vectors (NaN where undefined)."""
    from scipy import stats

    t = np.asarray(true, dtype=np.float64)
    p = np.asarray(pred, dtype=np.float64)
    if t.shape != p.shape or t.ndim != 1:
        raise ValueError(f"true and pred must be 1-D and aligned, got {t.shape} and {p.shape}")
    out = {"MSE": float(np.mean((t - p) ** 2)) if t.size else float("nan")}
    if t.size < 2 or np.ptp(t) == 0 or np.ptp(p) == 0:
        out.update(LCC=float("nan"), SRCC=float("nan"), KTAU=float("nan"))
        return out
    out["LCC"] = float(np.corrcoef(t, p)[0][1])
    out["SRCC"] = float(stats.spearmanr(t, p)[0])
    out["KTAU"] = float(stats.kendalltau(t, p)[0])
    return out


def system_means(
    systems: Sequence[str], true: Sequence[float], pred: Sequence[float],
    system_true: Mapping[str, float] | None = None,
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Per-system (true, predicted) means, systems in order of first appearance."""
    groups: "OrderedDict[str, list[int]]" = OrderedDict()
    for i, s in enumerate(systems):
        groups.setdefault(s, []).append(i)
    t = np.asarray(true, dtype=np.float64)
    p = np.asarray(pred, dtype=np.float64)
    names = list(groups)
    if system_true is not None:
        missing = [s for s in names if s not in system_true]
        if missing:
            raise ConfigError(f"no true system MOS for {missing[:5]} (of {len(missing)})")
        st = np.array([system_true[s] for s in names])
    else:
        st = np.array([t[idx].mean() for idx in groups.values()])
    sp = np.array([p[idx].mean() for idx in groups.values()])
    return names, st, sp


@dataclass
class Evaluation:
    """Utterance- and system-level metrics with bootstrap confidence intervals."""

    utterance: dict[str, float]
    system: dict[str, float]
    n_items: int
    n_systems: int
    ci: dict[str, dict[str, tuple[float, float]]] = field(default_factory=dict)
    confidence: float = 0.95

    def to_dict(self) -> dict:
        return {
            "n_items": self.n_items, "n_systems": self.n_systems,
            "utterance": self.utterance, "system": self.system,
            "confidence": self.confidence,
            "ci": {lvl: {k: list(v) for k, v in d.items()} for lvl, d in self.ci.items()},
        }


def evaluate(
    true: Sequence[float],
    pred: Sequence[float],
    systems: Sequence[str],
    *,
    system_true: Mapping[str, float] | None = None,
    bootstrap: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> Evaluation:
    """All eight VoiceMOS metrics, with percentile bootstrap CIs (``bootstrap=0``: none)."""
    t = np.asarray(true, dtype=np.float64)
    p = np.asarray(pred, dtype=np.float64)
    if not (len(t) == len(p) == len(systems)):
        raise ValueError("true, pred and systems must be aligned")
    if not np.isfinite(t).all() or not np.isfinite(p).all():
        raise ValueError("true and predicted scores must be finite (drop failed items first)")
    utt = scores(t, p)
    names, st, sp = system_means(systems, t, p, system_true)
    sysm = scores(st, sp)
    ev = Evaluation(utt, sysm, len(t), len(names), confidence=confidence)
    if bootstrap > 0 and len(t) > 1:
        # the project's one resampling (speechqe.stats): true and predicted scores resampled
        # together (paired), utterances then systems
        rng = np.random.default_rng(seed)
        ev.ci["utterance"] = _intervals(t, p, bootstrap_indices(len(t), bootstrap, rng), confidence)
        if len(names) > 1:
            ev.ci["system"] = _intervals(st, sp, bootstrap_indices(len(names), bootstrap, rng),
                                         confidence)
    return ev


def _intervals(t: np.ndarray, p: np.ndarray, idx: np.ndarray, confidence: float
               ) -> dict[str, tuple[float, float]]:
    """Percentile intervals of every metric over the resamples ``idx`` ``(n_boot, n)``."""
    boot = {m: [] for m in METRICS}
    for row in idx:
        for m, v in scores(t[row], p[row]).items():
            boot[m].append(v)
    return {m: percentile_ci(np.asarray(v, dtype=np.float64), confidence) for m, v in boot.items()}


def read_predictions(path) -> dict[str, float]:
    """A predictions CSV: an id column (``sample_id``, ``id`` or ``item_id``) and a score column
    (``prediction``, ``pred``, ``predicted_mos`` or ``score``). Rows with an empty or non-finite
    score are kept out and counted by the caller as missing."""
    import csv
    from pathlib import Path

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"predictions file not found: {path}")
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        cols = reader.fieldnames or []
        id_col = next((c for c in ("sample_id", "id", "item_id") if c in cols), None)
        val_col = next((c for c in ("prediction", "pred", "predicted_mos", "score") if c in cols), None)
        if id_col is None or val_col is None:
            raise ConfigError(
                f"{path}: needs an id column (sample_id/id/item_id) and a score column "
                f"(prediction/pred/predicted_mos/score); found {cols}"
            )
        out = {}
        for row in reader:
            v = (row.get(val_col) or "").strip()
            try:
                x = float(v)
            except ValueError:
                continue
            if np.isfinite(x):
                out[row[id_col].strip()] = x
    return out


#: ``speechqe mos evaluate`` refuses predictions that cover fewer labelled items than this share.
MIN_MATCH = 0.5


def match_predictions(truth_ids: Sequence[str], preds: Mapping[str, float],
                      min_share: float = MIN_MATCH, source: str = "predictions") -> np.ndarray:
    """The prediction of every truth id (NaN where there is none), in ``truth_ids``' order.

    Raises:
        ConfigError: fewer than ``min_share`` of the truth ids have a prediction: the ids of
            the two files most likely differ in form (``snr00/LJ001-0008`` written by
            ``mos predict`` on a folder vs ``snr00-LJ001-0008`` in a CSV). The message shows
            examples of both forms and, when ``/`` vs ``-`` (or case, or an extension) is the
            only difference, says so.
    """
    ids = list(truth_ids)
    out = np.array([preds.get(i, np.nan) for i in ids], dtype=np.float64)
    if not ids:
        raise ConfigError("no labelled items to evaluate")
    matched = int(np.isfinite(out).sum())
    if matched >= min_share * len(ids) and matched > 0:
        return out

    def norm(s: str) -> str:
        s = s.strip().lower()
        for ext in (".wav", ".flac", ".mp3", ".ogg"):
            s = s[: -len(ext)] if s.endswith(ext) else s
        return s.replace("\\", "/").replace("/", "-").replace("_", "-")

    hint = ""
    by_norm = {norm(k): k for k in preds}
    near = sum(norm(i) in by_norm for i in ids)
    if near >= min_share * len(ids):
        hint = (f" {near} of them match once '/', '\\', '_' and '-', case and audio extensions are "
                "ignored: write the predictions with the truth's ids (speechqe mos predict on the "
                "labelled CSV keeps its sample_id), or rename them.")
    missing = [i for i, v in zip(ids, out) if not np.isfinite(v)]
    unused = [k for k in preds if k not in set(ids)]
    raise ConfigError(
        f"only {matched} of {len(ids)} labelled items have a prediction in {source} (at least "
        f"{min_share:.0%} must match, by exact id).{hint} Truth ids look like: "
        f"{', '.join(missing[:3])}; prediction ids look like: {', '.join(unused[:3]) or '(none)'}"
    )
