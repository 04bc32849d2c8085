"""``speechqe mos train``: every learner, out-of-fold, then stacking, into one bundle.

Configured by a YAML file (see ``docs/mos.md``), read into :class:`MOSTrainConfig` (unknown
keys are errors). The flow:

1. read the labelled training set; items whose audio cannot be used are excluded and listed in
   the bundle's report (never silently);
2. grouped K-fold splits (``group_by``: system, speaker, text or item);
3. for every strong learner, Whisper predictor and (feature set x weak learner): out-of-fold
   predictions over the K folds, then a final fit on all items;
4. stage 2 and 3 of the stacking ensemble on the out-of-fold matrix;
5. the bundle, with a report of every learner's and the ensemble's out-of-fold metrics and,
   when a validation set is configured, metrics on it.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from speechqe.devices import is_cuda, is_device_name, resolve_device
from speechqe.encoders import FeatureCache, load_encoder
from speechqe.errors import ConfigError, ItemError

from .bundle import MOSBundle, bundle_hash, read_meta
from .components import (
    StrongComponent, StrongSpec, WeakComponent, WhisperComponent, WhisperSpec, fit_learner,
    with_score_range,
)
from .config import from_mapping, load_yaml, to_plain
from .data import AudioBank, DataSpec, domain_of, group_of, load_data
from .evaluate import evaluate
from .stacking import StackingConfig, fit_stack, make_folds, out_of_fold
from .weak.features import FeatureExtractor, FeatureSetSpec
from .weak.learners import KINDS, LearnerSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WeakConfig:
    """Feature sets x learners (every learner is trained on every feature set)."""

    features: tuple[FeatureSetSpec, ...] = ()
    learners: tuple[LearnerSpec, ...] = tuple(LearnerSpec(k) for k in KINDS)


@dataclass(frozen=True)
class MOSTrainConfig:
    """A ``speechqe mos train`` configuration.

    Attributes:
        train: the labelled training data.
        valid: optional labelled data evaluated with the finished bundle (report only).
        score_range: the label scale.
        folds, group_by, seed: the grouped K-fold splits of stacking (``group_by``: system,
            speaker, text, item or an ``extra`` field such as ``clip``).
        device: ``auto`` (CUDA when present), ``cpu`` or ``cuda``.
        cache: feature cache folder (``""``: the speechqe cache; ``off``: none).
        strong, whisper, weak, stacking: the learners.
    """

    train: DataSpec
    valid: DataSpec | None = None
    score_range: tuple[float, float] = (1.0, 5.0)
    folds: int = 5
    group_by: str = "system"
    seed: int = 0
    device: str = "auto"
    cache: str = ""
    strong: tuple[StrongSpec, ...] = ()
    whisper: tuple[WhisperSpec, ...] = ()
    weak: WeakConfig = WeakConfig()
    stacking: StackingConfig = StackingConfig()

    def __post_init__(self) -> None:
        names = [s.name for s in self.strong] + [w.name for w in self.whisper] + [f.name for f in self.weak.features]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ConfigError(f"component names must be unique; repeated: {sorted(dup)}")
        if not names:
            raise ConfigError("configure at least one learner (strong, whisper or weak.features)")
        if self.weak.features and not self.weak.learners:
            raise ConfigError("weak.features given but weak.learners is empty")
        if not is_device_name(self.device):
            raise ConfigError(f"device must be one of auto, cpu, cuda, cuda:N (got {self.device!r})")


#: Config keys that say how a bundle is trained or reported, not what it learns: a finished
#: bundle is reused whatever their values (the training data is compared by content hash).
_RUN_KEYS = ("train", "valid", "device", "cache")


def load_config(path: str | Path, *, device: str | None = None) -> MOSTrainConfig:
    """Read a training config (YAML); ``device`` overrides its ``device``."""
    cfg = from_mapping(MOSTrainConfig, load_yaml(path), "config")
    return replace(cfg, device=device) if device else cfg


def config_base(path: str | Path) -> Path:
    """The folder a config's relative data paths are resolved against: the config's own."""
    return Path(path).resolve().parent


def uses_gpu(cfg: MOSTrainConfig) -> bool:
    """Whether training ``cfg`` here will occupy a GPU (``auto`` resolved on this machine)."""
    return is_cuda(resolve_device(cfg.device))


def _cache(cfg: MOSTrainConfig, base: Path) -> FeatureCache | None:
    if cfg.cache == "off":
        return None
    if not cfg.cache:
        return FeatureCache()
    p = Path(cfg.cache)
    return FeatureCache(p if p.is_absolute() else base / p)


def train_bundle(
    cfg: MOSTrainConfig,
    out: str | Path,
    *,
    base: Path | None = None,
    train_set=None,
    validate: bool = True,
    say: Callable[[str], None] = lambda m: log.info(m),
) -> MOSBundle:
    """Train everything ``cfg`` describes and write the bundle to ``out``.

    ``train_set``: an already-built :class:`~speechqe.manifest.SpeechSet` instead of
    ``cfg.train`` (used by the degraded-corpus acceptance set). ``validate``: evaluate the
    finished bundle on ``cfg.valid`` (:func:`validate_bundle`) before returning; an
    orchestrator that runs that step on its own passes ``False``.
    """
    t_start = time.time()
    _say = say

    def say(msg: str) -> None:
        _say(f"[{time.time() - t_start:7.1f} s] {msg}")

    base = base or Path.cwd()
    out = Path(out)
    if (out / "bundle.json").exists():
        raise ConfigError(f"{out} already holds a bundle; choose a new folder")
    device = resolve_device(cfg.device)
    cache = _cache(cfg, base)
    sset = train_set if train_set is not None else load_data(cfg.train, base=base)
    bank = AudioBank(16000)

    # 1. usable, labelled items
    items, excluded = [], []
    for it in sset:
        if it.mos is None:
            excluded.append({"id": it.id, "reason": "no MOS label"})
            continue
        try:
            bank.get(it)
        except ItemError as exc:
            excluded.append({"id": it.id, "reason": f"{exc.code}: {exc}"})
            continue
        items.append(it)
    if len(items) < cfg.folds * 2:
        raise ConfigError(f"only {len(items)} usable labelled items for {cfg.folds} folds")
    say(f"training on {len(items)} items ({len(excluded)} excluded), device {device}")
    y = np.array([it.mos for it in items], dtype=np.float64)
    systems = [it.system for it in items]
    groups = [group_of(it, cfg.group_by) for it in items]
    folds = make_folds(groups, cfg.folds, cfg.seed)
    hashes = [it.sha256 for it in items]
    texts = [it.text for it in items]

    def sig(i: int) -> np.ndarray:
        return bank.get(items[i])

    columns: list[str] = []
    oof_cols: list[np.ndarray] = []
    bundle = MOSBundle(meta={})
    timings: dict[str, float] = {}

    # 2. strong learners (each fold's and the final training checkpoints under work_root, so
    # an interrupted run resumes; removed once the bundle is written)
    work_root = out.parent / f".{out.name}.work"
    for spec in cfg.strong:
        spec = with_score_range(spec, cfg.score_range)
        t0 = time.time()
        fold_no = iter(range(len(folds)))

        def fit_predict(tr, te, spec=spec):
            sub = [items[i] for i in tr]
            comp = StrongComponent.fit(spec, sub, lambda k, tr=tr: sig(int(tr[k])), device=device,
                                       work_dir=work_root / spec.name / f"fold{next(fold_no)}")
            return comp.predict([sig(i) for i in te], [hashes[i] for i in te], [texts[i] for i in te])

        oof = out_of_fold(fit_predict, len(items), folds)
        final = StrongComponent.fit(spec, items, sig, device=device, work_dir=work_root / spec.name / "final")
        bundle.strong.append(final)
        columns.append(spec.name)
        oof_cols.append(oof)
        timings[spec.name] = time.time() - t0
        say(f"strong learner {spec.name}: out-of-fold SRCC {_srcc(y, oof):.3f}")

    # 3. Whisper predictors
    for spec in cfg.whisper:
        spec = with_score_range(spec, cfg.score_range)
        t0 = time.time()
        encoder = load_encoder(spec.encoder_spec(), device=device)
        feats = WhisperComponent.features(spec, encoder, [sig(i) for i in range(len(items))], hashes, cache)
        counts = [len(sig(i)) for i in range(len(items))]

        def fit_predict(tr, te, spec=spec, encoder=encoder, feats=feats, counts=counts):
            comp = WhisperComponent.fit(spec, encoder, [feats[i] for i in tr], [counts[i] for i in tr],
                                        y[tr], device=device, cache=cache)
            from .whisper_mos.train import predict_whisper_mos

            return predict_whisper_mos(comp.model, [feats[i] for i in te], [counts[i] for i in te])

        oof = out_of_fold(fit_predict, len(items), folds)
        final = WhisperComponent.fit(spec, encoder, feats, counts, y, device=device, cache=cache)
        bundle.whisper.append(final)
        columns.append(spec.name)
        oof_cols.append(oof)
        timings[spec.name] = time.time() - t0
        say(f"whisper predictor {spec.name}: out-of-fold SRCC {_srcc(y, oof):.3f}")

    # 4. weak learners
    for fs in cfg.weak.features:
        t0 = time.time()
        ext = FeatureExtractor(fs, device=device, cache=cache)
        comp = WeakComponent(fs, ext, {})
        X, errs = comp.matrix(sig, hashes)
        bad = [items[i].id for i, e in enumerate(errs) if e is not None]
        if bad:
            raise ConfigError(f"feature set '{fs.name}' failed on {len(bad)} training items, e.g. {bad[:3]}")
        names = _column_names(fs.name, cfg.weak.learners)
        for name, lspec in zip(names, cfg.weak.learners):
            oof = out_of_fold(lambda tr, te, l=lspec: fit_learner(l, X[tr], y[tr]).predict(X[te]), len(items), folds)
            comp.learners[name] = fit_learner(lspec, X, y)
            columns.append(name)
            oof_cols.append(oof)
            say(f"weak learner {name}: out-of-fold SRCC {_srcc(y, oof):.3f}")
        bundle.weak.append(comp)
        timings[fs.name] = time.time() - t0

    # 5. stacking
    Z = np.column_stack(oof_cols)
    stack = fit_stack(Z, y, columns, folds, cfg.stacking)
    bundle.stack = stack
    report = {
        "oof": {c: evaluate(y, Z[:, j], systems, bootstrap=0).to_dict() for j, c in enumerate(columns)},
        "stage2_oof": {name: evaluate(y, stack.stage2_oof[:, j], systems, bootstrap=0).to_dict()
                       for j, (name, _) in enumerate(stack.stage2)},
        "excluded": excluded,
        "seconds": {**timings, "total": time.time() - t_start},
    }
    bundle.meta = {
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "speechqe_version": _version(),
        "training_data": {"name": sset.name, "source": sset.source, "content_hash": sset.content_hash(),
                          "n_items": len(items), "n_excluded": len(excluded)},
        "config": to_plain(replace(cfg)),
        "score_range": list(cfg.score_range),
        "columns": columns,
        "domains": sorted({domain_of(it) for it in items}),
        "report": report,
    }
    bundle.save(out)
    import shutil

    shutil.rmtree(work_root, ignore_errors=True)
    if validate and cfg.valid is not None:
        validate_bundle(cfg, out, base=base, bundle=bundle, say=say)
    say(f"bundle written to {out} ({bundle.bundle_id})")
    return bundle


def finished_bundle(cfg: MOSTrainConfig, out: str | Path, *, base: Path | None = None,
                    train_set=None) -> dict[str, Any] | None:
    """The metadata of the bundle already in ``out`` when it is what training ``cfg`` would
    write again, so training can be skipped; ``None`` when ``out`` holds no finished bundle
    (an interrupted run leaves none: the bundle is written last, its checkpoints resume).

    "The same" means the same training data (content hash over ids, audio hashes and labels,
    not paths) and the same learners, folds and stacking; ``device``, ``cache`` and the data
    paths may differ.

    Raises:
        ConfigError: ``out`` is a file, or holds a bundle trained on other data or with another
            configuration (bundles are never overwritten: choose a new folder).
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out} is a file, not a bundle folder")
    if not (out / "bundle.json").is_file():
        return None
    meta = read_meta(out)
    try:
        had_hash = meta["training_data"]["content_hash"]
        had_cfg = dict(meta["config"])
    except (KeyError, TypeError) as exc:
        raise ConfigError(f"{out}/bundle.json: no training record ({exc})") from None
    sset = train_set if train_set is not None else load_data(cfg.train, base=base or Path.cwd())
    if had_hash != sset.content_hash():
        raise ConfigError(
            f"{out} holds a bundle trained on other data (content hash {had_hash[:12]}, now "
            f"{sset.content_hash()[:12]}); choose a new folder for the new bundle"
        )
    now = json.loads(json.dumps(to_plain(cfg), default=str))
    diff = sorted(k for k in set(now) | set(had_cfg)
                  if k not in _RUN_KEYS and now.get(k) != had_cfg.get(k))
    if diff:
        raise ConfigError(
            f"{out} holds a bundle trained with another configuration (differs in "
            f"{', '.join(diff)}); choose a new folder for the new bundle"
        )
    return meta


def validate_bundle(cfg: MOSTrainConfig, out: str | Path, *, base: Path | None = None,
                    bundle: MOSBundle | None = None,
                    say: Callable[[str], None] = lambda m: log.info(m)) -> dict[str, Any] | None:
    """Evaluate the bundle in ``out`` on ``cfg.valid`` and record the metrics in its
    ``bundle.json`` (``report.valid``, with the data's content hash in ``report.valid_data``).

    A bundle is validated once: when ``report.valid`` exists for the same validation data it
    is returned as recorded (a rerun does not predict again). Returns ``None`` without
    ``cfg.valid``.

    Raises:
        ConfigError: the recorded validation used other data (evaluate the bundle on the new
            data with ``speechqe mos evaluate``; its folder is not rewritten).
    """
    if cfg.valid is None:
        return None
    out = Path(out)
    base = base or Path.cwd()
    vset = load_data(cfg.valid, base=base)
    meta_path = out / "bundle.json"
    meta = read_meta(out)
    report = meta.setdefault("report", {})
    had = (report.get("valid_data") or {}).get("content_hash")
    if "valid" in report:
        if had is not None and had != vset.content_hash():
            raise ConfigError(
                f"{out} was validated on other data (content hash {had[:12]}); evaluate it on "
                "the new data with 'speechqe mos evaluate'"
            )
        return report["valid"]
    if bundle is None:
        bundle = MOSBundle.load(out, device=resolve_device(cfg.device), cache=_cache(cfg, base))
    ev = evaluate_bundle(bundle, vset, bank=AudioBank(16000))
    report["valid"] = ev
    report["valid_data"] = {"name": vset.name, "source": vset.source,
                            "content_hash": vset.content_hash(), "n_items": len(vset)}
    tmp = meta_path.with_name(meta_path.name + ".tmp")
    tmp.write_text(json.dumps(meta, indent=1, default=str), encoding="utf-8")
    tmp.replace(meta_path)
    bundle.meta = meta
    bundle.bundle_id = bundle_hash(out)
    say(f"validation ({len(vset)} items): ensemble utterance SRCC {ev['ensemble']['utterance']['SRCC']:.3f}")
    return ev


def report_rows(meta: dict[str, Any]) -> list[dict[str, Any]]:
    """The metrics recorded in a bundle's report as rows: every learner's and stage-2
    learner's out-of-fold metrics on the training set, then the validation metrics of every
    column and the ensemble (when validated). Keys: ``data``, ``learner``, ``n_items`` and
    ``utt_MSE``, ``utt_LCC``, ``utt_SRCC``, ``utt_KTAU``, ``sys_SRCC``."""
    report = meta.get("report") or {}
    rows = []
    parts = [("train (out-of-fold)", k, v) for k, v in (report.get("oof") or {}).items()]
    parts += [("train (out-of-fold)", f"stage2 {k}", v) for k, v in (report.get("stage2_oof") or {}).items()]
    parts += [("valid", k, v) for k, v in (report.get("valid") or {}).items()]
    for data, name, ev in parts:
        u, s = ev["utterance"], ev["system"]
        rows.append({"data": data, "learner": name, "n_items": ev.get("n_items"),
                     **{f"utt_{m}": u[m] for m in ("MSE", "LCC", "SRCC", "KTAU")},
                     "sys_SRCC": s["SRCC"]})
    return rows


def report_markdown(meta: dict[str, Any], location: str | None = None) -> str:
    """A bundle's report (:func:`report_rows`) as a markdown table, headed by the bundle's
    training data and, when given, its ``location``."""
    td = meta.get("training_data") or {}
    lines = [f"### MOS bundle{f' `{location}`' if location else ''}", "",
             f"Trained {meta.get('created', '?')} on {td.get('n_items', '?')} items "
             f"({td.get('n_excluded', 0)} excluded) of `{td.get('name', '?')}` "
             f"(content hash `{str(td.get('content_hash', '?'))[:12]}`), speechqe "
             f"{meta.get('speechqe_version', '?')}.", "",
             "| data | learner | items | utt MSE | utt LCC | utt SRCC | utt KTAU | sys SRCC |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]

    def num(x):
        return "NaN" if x is None or not np.isfinite(x) else f"{x:.3f}"

    for r in report_rows(meta):
        name = r["learner"].replace("|", "\\|").replace("_", "\\_")
        lines.append(f"| {r['data']} | {name} | {r['n_items'] if r['n_items'] is not None else ''} | "
                     + " | ".join(num(r[k]) for k in ("utt_MSE", "utt_LCC", "utt_SRCC", "utt_KTAU", "sys_SRCC"))
                     + " |")
    return "\n".join(lines) + "\n"


def predict_set(bundle: MOSBundle, sset, *, bank: AudioBank | None = None, columns=None, ensemble=True):
    """Predict every item of a speech set. Returns (outputs by column, errors by position)."""
    bank = bank or AudioBank(16000)
    sigs, errors = [], []
    for it in sset:
        try:
            sigs.append(bank.get(it))
            errors.append(None)
        except ItemError as exc:
            sigs.append(None)
            errors.append(exc)
    ok = [i for i, s in enumerate(sigs) if s is not None]
    outs, errs = bundle.predict([sigs[i] for i in ok], [sset[i].sha256 for i in ok],
                                [sset[i].text for i in ok], columns=columns, ensemble=ensemble)
    full = {k: np.full(len(sset), np.nan) for k in outs}
    for k, v in outs.items():
        full[k][ok] = v
    for j, i in enumerate(ok):
        errors[i] = errs[j]
    return full, errors


def evaluate_bundle(bundle: MOSBundle, sset, *, bank: AudioBank | None = None, system_true=None,
                    bootstrap: int = 0) -> dict[str, Any]:
    """Metrics of every column and the ensemble on a labelled set (items without a usable
    prediction are left out and counted)."""
    outs, errors = predict_set(bundle, sset, bank=bank)
    y = np.array([it.mos if it.mos is not None else np.nan for it in sset])
    systems = [it.system for it in sset]
    res = {}
    for name, p in outs.items():
        ok = np.isfinite(p) & np.isfinite(y)
        ev = evaluate(y[ok], p[ok], [s for s, k in zip(systems, ok) if k], system_true=system_true,
                      bootstrap=bootstrap)
        res[name] = {**ev.to_dict(), "n_missing": int((~ok).sum())}
    return res


def _column_names(prefix: str, learners) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for spec in learners:
        seen[spec.kind] = seen.get(spec.kind, 0) + 1
        suffix = spec.kind if seen[spec.kind] == 1 else f"{spec.kind}{seen[spec.kind]}"
        out.append(f"{prefix}-{suffix}")
    return out


def _srcc(y, p) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(y, p)[0])


def _version() -> str:
    import speechqe

    return speechqe.__version__
