"""``speechqe mos train``: every member out of fold, the ensemble, its nested estimate, one bundle.

Configured by a YAML file (:class:`~speechqe.predictors.config.MOSTrainConfig`; every key and
default in ``docs/mos.md``). The steps:

1. read the labelled training set; items whose audio cannot be used are excluded and listed in
   the bundle's report (never silently);
2. grouped K-fold splits (``group_by``; an item without a group is an error);
3. features of every feature set and Whisper encoder, once per item (cached);
4. every *member* (strong learner, Whisper predictor, weak learner on a feature set or one of
   its layer blocks) is fit on every training set that the out-of-fold predictions and the
   nested estimate need (:class:`FitPlan`: a training set shared by both is fit once);
5. the ensemble (:func:`~speechqe.predictors.stacking.fit_stack`) on the members' out-of-fold
   predictions; every member is fit once more on all items for the bundle;
6. **the nested estimate**: the same procedure (stacking included) run inside outer grouped
   folds, each outer fold predicted by an ensemble that never saw it; reported beside every
   member's out-of-fold score, so a user sees whether stacking helped;
7. the bundle, with a report of all of it and, when a validation set is configured, metrics
   on it.

With ``nested_folds`` equal to ``folds`` (the default), the outer folds are the K folds
themselves and the inner folds of outer fold ``k`` are the other K-1, so each member is fit
``K (K - 1) / 2 + K + 1`` times instead of ``K + 1`` (16 instead of 6 for K = 5), and its
out-of-fold score *is* its nested score: the two columns of the table compare like with like.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from speechqe.devices import is_cuda, resolve_device
from speechqe.encoders import FeatureCache, load_encoder
from speechqe.errors import ConfigError, ItemError

from .bundle import MOSBundle, bundle_hash, read_meta
from .components import StrongComponent, WeakComponent, WhisperComponent
from .config import (
    DOCS, LearnerSpec, MOSTrainConfig, StackingConfig, load_train_config, plain,
)
from .data import AudioBank, domain_of, groups_of, load_data
from .evaluate import evaluate
from .stacking import BEST, Stack, fit_stack, make_folds
from .weak.features import FeatureExtractor
from .weak.learners import Learner

log = logging.getLogger(__name__)

#: Config keys that say how a bundle is trained or reported, not what it learns: a finished
#: bundle is reused whatever their values (the training data is compared by content hash).
_RUN_KEYS = ("train", "valid", "device", "cache")

Fold = tuple[np.ndarray, np.ndarray]


def load_config(path: str | Path, *, device: str | None = None,
                nested_folds: int | None = None) -> MOSTrainConfig:
    """Read a training config (YAML/JSON); ``device`` and ``nested_folds`` override its own."""
    cfg = load_train_config(path, device=device)
    if nested_folds is not None:
        from .config import validate

        cfg = validate(MOSTrainConfig, {**cfg.model_dump(), "nested_folds": nested_folds},
                       f"{path} (--nested-folds)")
    return cfg


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


# ------------------------------------------------------------------------------------------
# Fit plan: every (training set, test set) that out-of-fold and nested predictions need
# ------------------------------------------------------------------------------------------
def _key(idx: np.ndarray) -> str:
    return hashlib.sha1(np.sort(np.asarray(idx, dtype=np.int64)).tobytes()).hexdigest()[:16]


@dataclass
class NestedPlan:
    """Outer folds and, per outer fold, its inner folds (indices into the whole set)."""

    outer: list[Fold]
    inner: list[list[Fold]]


@dataclass
class FitPlan:
    """Training sets keyed by their content, each with the items it must predict.

    ``requests`` maps a (train, test) pair to the key of its training set; members fit once
    per key and predict the union of that key's test items.
    """

    n: int
    train: dict[str, np.ndarray] = field(default_factory=dict)
    test: dict[str, set[int]] = field(default_factory=dict)

    def add(self, tr: np.ndarray, te: np.ndarray) -> str:
        k = _key(tr)
        if k not in self.train:
            self.train[k] = np.sort(np.asarray(tr, dtype=np.int64))
            self.test[k] = set()
        self.test[k].update(int(i) for i in te)
        return k

    def smallest(self) -> int:
        return min(len(t) for t in self.train.values())


def nested_plan(folds: list[Fold], groups: Sequence[str], outer_folds: int, inner_folds: int,
                seed: int) -> NestedPlan:
    """The nested CV's folds: with ``outer_folds == len(folds)`` the outer folds are ``folds``
    and the inner folds of outer fold ``k`` are the other folds; otherwise fresh grouped
    outer folds, and ``inner_folds`` grouped folds inside each outer training part."""
    groups = np.asarray(groups)
    if outer_folds == len(folds):
        inner = []
        for k, (_, te_k) in enumerate(folds):
            inner.append([(np.setdiff1d(np.concatenate([te for _, te in folds]), np.concatenate([te_k, te_j])),
                           te_j) for j, (_, te_j) in enumerate(folds) if j != k])
        return NestedPlan(list(folds), inner)
    outer = make_folds(groups, outer_folds, seed + 1)
    inner = []
    for tr, _ in outer:
        n_g = len(np.unique(groups[tr]))
        sub = make_folds(groups[tr], min(inner_folds, n_g), seed)
        inner.append([(tr[a], tr[b]) for a, b in sub])
    return NestedPlan(outer, inner)


# ------------------------------------------------------------------------------------------
# Members
# ------------------------------------------------------------------------------------------
@dataclass
class Member:
    """One stage-1 column: ``fit_predict(train_idx, test_idx)`` -> predictions (label scale)."""

    name: str
    kind: str  # strong | whisper | weak
    fit_predict: Callable[[np.ndarray, np.ndarray], np.ndarray]
    min_items: int
    describe: str


def _run_member(m: Member, plan: FitPlan, score_range, say, progress_every: float = 10.0) -> dict[str, np.ndarray]:
    """Fit ``m`` on every training set of ``plan``; returns key -> predictions ``(n,)``
    (NaN outside the key's test items), clipped to the score range."""
    lo, hi = score_range
    out: dict[str, np.ndarray] = {}
    t0 = last = time.time()
    keys = list(plan.train)
    for i, k in enumerate(keys):
        te = np.array(sorted(plan.test[k]), dtype=np.int64)
        pred = np.full(plan.n, np.nan)
        p = np.asarray(m.fit_predict(plan.train[k], te), dtype=np.float64).reshape(-1)
        if p.shape[0] != te.shape[0]:
            raise RuntimeError(f"{m.name}: {p.shape[0]} predictions for {te.shape[0]} items")
        pred[te] = np.clip(p, lo, hi)
        out[k] = pred
        if time.time() - last > progress_every and i + 1 < len(keys):
            say(f"  {m.name}: fit {i + 1}/{len(keys)} ({time.time() - t0:.0f} s)")
            last = time.time()
    return out


def _throttled(say, label: str, every: float = 5.0):
    state = {"t": time.time(), "t0": time.time()}

    def progress(done: int, total: int) -> None:
        now = time.time()
        if done >= total or now - state["t"] >= every:
            say(f"  {label}: {done}/{total} items ({now - state['t0']:.0f} s)")
            state["t"] = now

    return progress


def _check_sizes(members: list[Member], stacking: StackingConfig, plan: FitPlan,
                 nested: NestedPlan | None, n_items: int, folds: int) -> None:
    """Refuse, before any work, a learner that the smallest training set is too small for."""
    smallest = plan.smallest()
    too_small = [(m.name, m.min_items) for m in members if smallest < m.min_items]
    if too_small:
        lst = ", ".join(f"{n} (needs {k})" for n, k in too_small)
        raise ConfigError(
            f"the smallest training fold has {smallest} items ({n_items} items, {folds} folds"
            f"{', nested' if nested else ''}), too few for: {lst}. Lower 'folds', turn the nested "
            f"estimate off (nested_folds: 0), remove those learners, or start from "
            f"docs/examples/mos-small-test.yaml (see {DOCS})"
        )
    # stage 2 is fit inside the folds of the data it is given (the inner part when nested)
    rows = [n_items] + ([len(np.concatenate([te for _, te in inner])) for inner in nested.inner] if nested else [])
    k = (len(nested.inner[0]) if nested else folds)
    stage2_smallest = int(min(rows) * (1 - 1 / max(k, 2)))
    bad = [(s.kind, s.min_items()) for s in stacking.stage2 if stage2_smallest < s.min_items()]
    if bad:
        raise ConfigError(
            f"stacking.stage2: its smallest training fold has about {stage2_smallest} items, too "
            f"few for {', '.join(f'{n} (needs {m})' for n, m in bad)}; use nnls or ridge (see {DOCS})"
        )


# ------------------------------------------------------------------------------------------
# Training
# ------------------------------------------------------------------------------------------
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
    ``cfg.train`` (used by the acceptance sets). ``validate``: evaluate the finished bundle on
    ``cfg.valid`` (:func:`validate_bundle`) before returning; an orchestrator that runs that
    step on its own passes ``False``.
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
    say(f"reading {len(sset)} items")
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
        raise ConfigError(f"only {len(items)} usable labelled items for {cfg.folds} folds "
                          f"(see {DOCS} and docs/examples/mos-small-test.yaml)")
    y = np.array([it.mos for it in items], dtype=np.float64)
    lo, hi = cfg.score_range
    if y.min() < lo or y.max() > hi:
        raise ConfigError(f"labels span {y.min():g}..{y.max():g}, outside score_range {list(cfg.score_range)}; "
                          "set score_range to your scale")
    systems = [it.system for it in items]
    groups = groups_of(items, cfg.group_by)
    folds = make_folds(groups, cfg.folds, cfg.seed)
    n = len(items)
    hashes = [it.sha256 for it in items]
    texts = [it.text for it in items]
    n_groups = len(set(groups))
    say(f"training on {n} items ({len(excluded)} excluded) in {n_groups} groups by {cfg.group_by}, "
        f"{cfg.folds} folds, device {device}")

    # 2. the fit plan: out-of-fold sets, then the nested ones
    plan = FitPlan(n)
    oof_keys = [plan.add(tr, te) for tr, te in folds]
    outer = cfg.nested_outer_folds(n)
    nested: NestedPlan | None = None
    nested_note = ""
    if outer:
        if outer == cfg.folds and cfg.folds < 3:
            nested_note = "skipped: the nested estimate needs folds >= 3 (its inner folds are the other folds)"
        elif outer > n_groups:
            nested_note = f"skipped: {outer} outer folds but only {n_groups} groups"
        else:
            nested = nested_plan(folds, groups, outer, cfg.folds, cfg.seed)
            nested_keys = [[plan.add(tr, te) for tr, te in inner] for inner in nested.inner]
            outer_keys = [plan.add(tr, te) for tr, te in nested.outer]
    else:
        nested_note = "off (nested_folds: 0" + (", auto with a strong learner or > 2000 items)" if cfg.nested_folds == "auto" else ")")

    def sig(i: int) -> np.ndarray:
        return bank.get(items[i])

    members: list[Member] = []
    finals: dict[str, Callable[[], Any]] = {}
    weak_parts: dict[str, tuple[WeakComponent, np.ndarray, dict[str, tuple[slice, LearnerSpec]]]] = {}
    work_root = out.parent / f".{out.name}.work"

    # 3a. strong learners (checkpoints under work_root: an interrupted run resumes)
    for spec in cfg.strong:
        spec = cfg.with_score_range(spec)

        def fit_predict(tr, te, spec=spec):
            comp = StrongComponent.fit(spec, [items[i] for i in tr], lambda k, tr=tr: sig(int(tr[k])),
                                       device=device, work_dir=work_root / spec.name / _key(tr))
            return comp.predict([sig(i) for i in te], [hashes[i] for i in te], [texts[i] for i in te])

        members.append(Member(spec.name, "strong", fit_predict, 2 * spec.train.batch_size, "strong learner"))
        finals[spec.name] = lambda spec=spec: StrongComponent.fit(
            spec, items, sig, device=device, work_dir=work_root / spec.name / "final")

    # 3b. Whisper predictors: encoder features once
    for spec in cfg.whisper:
        spec = cfg.with_score_range(spec)
        say(f"whisper predictor {spec.name}: encoding {n} items")
        encoder = load_encoder(spec.encoder_spec(), device=device)
        feats = WhisperComponent.features(spec, encoder, [sig(i) for i in range(n)], hashes, cache)
        counts = [len(sig(i)) for i in range(n)]

        def fit_predict(tr, te, spec=spec, encoder=encoder, feats=feats, counts=counts):
            from .whisper_mos.train import predict_whisper_mos

            comp = WhisperComponent.fit(spec, encoder, [feats[i] for i in tr], [counts[i] for i in tr],
                                        y[tr], device=device, cache=cache)
            return predict_whisper_mos(comp.model, [feats[i] for i in te], [counts[i] for i in te])

        members.append(Member(spec.name, "whisper", fit_predict, 8, "whisper predictor"))
        finals[spec.name] = lambda spec=spec, encoder=encoder, feats=feats, counts=counts: WhisperComponent.fit(
            spec, encoder, feats, counts, y, device=device, cache=cache)

    # 3c. weak learners: one feature matrix per feature set, one member per (block, learner)
    for fs in cfg.weak.features:
        t0 = time.time()
        say(f"features {fs.name} ({fs.source}): {n} items")
        ext = FeatureExtractor(fs, device=device, cache=cache)
        comp = WeakComponent(fs, ext, {})
        X, errs = comp.matrix(sig, hashes, progress=_throttled(say, f"features {fs.name}"))
        bad = [items[i].id for i, e in enumerate(errs) if e is not None]
        if bad:
            raise ConfigError(f"feature set '{fs.name}' failed on {len(bad)} training items, e.g. "
                              f"{bad[:3]}: {errs[[i for i, e in enumerate(errs) if e is not None][0]]}")
        say(f"features {fs.name}: {X.shape[1]} values per item ({time.time() - t0:.1f} s)")
        specs: dict[str, tuple[slice, LearnerSpec]] = {}
        for label, sl in ext.blocks(X.shape[1]):
            prefix = f"{fs.name}@{label}" if label else fs.name
            for name, lspec in zip(_column_names(prefix, cfg.weak.learners), cfg.weak.learners):
                specs[name] = (sl, lspec)

                def fit_predict(tr, te, sl=sl, lspec=lspec, X=X):
                    return Learner(lspec).fit(X[tr][:, sl], y[tr], np.asarray(groups)[tr]).predict(X[te][:, sl])

                members.append(Member(name, "weak", fit_predict, lspec.min_items(), f"{lspec.kind} on {prefix}"))
        weak_parts[fs.name] = (comp, X, specs)

    _check_sizes(members, cfg.stacking, plan, nested, n, cfg.folds)

    # 4. every member on every training set of the plan
    say(f"fitting {len(members)} members on {len(plan.train)} training sets each"
        + (f" (out-of-fold and nested, {outer} outer folds)" if nested else " (out-of-fold)"))
    preds: dict[str, dict[str, np.ndarray]] = {}
    info: dict[str, dict[str, Any]] = {}
    for m in members:
        t0 = time.time()
        try:
            preds[m.name] = _run_member(m, plan, cfg.score_range, say)
        except (KeyboardInterrupt, ConfigError, MemoryError):
            raise
        except Exception as exc:  # noqa: BLE001 - a failing member is reported and left out
            info[m.name] = {"kind": m.kind, "describe": m.describe, "status": "failed",
                            "reason": f"{type(exc).__name__}: {exc}", "seconds": round(time.time() - t0, 2)}
            say(f"{m.describe} {m.name}: FAILED ({type(exc).__name__}: {exc}); left out of the ensemble")
            continue
        oof = _assemble(preds[m.name], folds, oof_keys, n)
        info[m.name] = {"kind": m.kind, "describe": m.describe, "seconds": round(time.time() - t0, 2)}
        say(f"{m.describe} {m.name}: {len(plan.train)} fits in {time.time() - t0:.1f} s, "
            f"out-of-fold SRCC {_srcc(y, oof):.3f}")
    columns = [m.name for m in members if m.name in preds]
    if not columns:
        raise ConfigError("every member failed; see the messages above")
    Z = np.column_stack([_assemble(preds[c], folds, oof_keys, n) for c in columns])

    # 5. the ensemble, then the final members
    var_y = float(np.var(y))
    stack = fit_stack(Z, y, columns, folds, cfg.stacking, score_range=cfg.score_range, groups=groups)
    say(f"ensemble: {len(stack.used)} of {len(columns)} members enter (best: {stack.best}); stage 3 "
        + ", ".join(f"{k} {v:.2f}" for k, v in stack.weights.items()))
    nested_report = _nested(cfg, stack_cfg=cfg.stacking, nested=nested, note=nested_note, preds=preds,
                            columns=columns, nested_keys=nested_keys if nested else None,
                            outer_keys=outer_keys if nested else None, y=y, groups=groups,
                            systems=systems, say=say)

    bundle = MOSBundle(meta={})
    for m in members:
        if m.name not in preds:
            continue
        if m.kind == "strong":
            say(f"final fit of {m.name} on all {n} items")
            bundle.strong.append(finals[m.name]())
        elif m.kind == "whisper":
            say(f"final fit of {m.name} on all {n} items")
            bundle.whisper.append(finals[m.name]())
    for fs_name, (comp, X, specs) in weak_parts.items():
        for name, (sl, lspec) in specs.items():
            if name in preds:
                comp.learners[name] = (sl, Learner(lspec).fit(X[:, sl], y, groups))
        if comp.learners:
            comp.probe = X[: min(5, n)]  # rows re-predicted when the bundle is loaded
            bundle.weak.append(comp)
    bundle.stack = stack
    bundle.probe_Z = Z[: min(5, n)]

    for c in columns:
        info[c].update({k: stack.members[c][k] for k in ("status", "reason", "weight")})
    report = {
        "label_variance": var_y,
        "oof": {c: evaluate(y, Z[:, j], systems, bootstrap=0).to_dict() for j, c in enumerate(columns)},
        "members": info,
        "stage2_oof": {name: evaluate(y, p, systems, bootstrap=0).to_dict()
                       for name, p in stack.candidates_oof.items()},
        "candidates": stack.candidates,
        "nested": nested_report,
        "excluded": excluded,
        "seconds": {**{k: v["seconds"] for k, v in info.items()}, "total": round(time.time() - t_start, 1)},
    }
    bundle.meta = {
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "speechqe_version": _version(),
        "training_data": {"name": sset.name, "source": sset.source, "content_hash": sset.content_hash(),
                          "n_items": n, "n_excluded": len(excluded), "group_by": cfg.group_by,
                          "n_groups": n_groups},
        "config": plain(cfg),
        "score_range": list(cfg.score_range),
        "columns": columns,
        "domains": sorted({domain_of(it) for it in items}),
        "report": report,
    }
    bundle.save(out)
    shutil.rmtree(work_root, ignore_errors=True)
    if validate and cfg.valid is not None:
        validate_bundle(cfg, out, base=base, bundle=bundle, say=say)
    say(f"bundle written to {out} ({bundle.bundle_id})")
    return bundle


def _assemble(pred: dict[str, np.ndarray], folds: list[Fold], keys: list[str], n: int) -> np.ndarray:
    out = np.full(n, np.nan)
    for (_, te), k in zip(folds, keys):
        out[te] = pred[k][te]
    return out


def _nested(cfg: MOSTrainConfig, *, stack_cfg: StackingConfig, nested: NestedPlan | None, note: str,
            preds, columns, nested_keys, outer_keys, y, groups, systems, say) -> dict[str, Any]:
    """Run the stacking inside every outer fold and score its predictions of that fold."""
    if nested is None:
        return {"status": note}
    t0 = time.time()
    n = len(y)
    groups = np.asarray(groups)
    ens = np.full(n, np.nan)
    member_out = {c: np.full(n, np.nan) for c in columns}
    cand_out: dict[str, np.ndarray] = {}
    chosen = []
    for o, ((otr, ote), inner, keys, okey) in enumerate(zip(nested.outer, nested.inner, nested_keys, outer_keys)):
        pos = {int(i): p for p, i in enumerate(otr)}
        Zin = np.full((len(otr), len(columns)), np.nan)
        for (tr, te), k in zip(inner, keys):
            rows = [pos[int(i)] for i in te]
            for j, c in enumerate(columns):
                Zin[rows, j] = preds[c][k][te]
        local = [(np.array([pos[int(i)] for i in tr]), np.array([pos[int(i)] for i in te])) for tr, te in inner]
        try:
            st: Stack = fit_stack(Zin, y[otr], columns, local, stack_cfg, score_range=cfg.score_range,
                                  groups=groups[otr])
        except ConfigError as exc:
            return {"status": f"failed in outer fold {o + 1}: {exc}"}
        Zout = np.column_stack([preds[c][okey][ote] for c in columns])
        ens[ote] = st.predict(Zout)
        for j, c in enumerate(columns):
            member_out[c][ote] = Zout[:, j]
        for name, p in st.candidate_predict(Zout).items():
            cand_out.setdefault(name, np.full(n, np.nan))[ote] = p
        chosen.append({"best": st.best, "used": st.used, "weights": st.weights})
    ev = {c: evaluate(y, p, systems, bootstrap=0).to_dict() for c, p in member_out.items()}
    best = max(columns, key=lambda c: _nan_to(ev[c]["utterance"]["SRCC"], -2.0))
    ens_ev = evaluate(y, ens, systems, bootstrap=0).to_dict()
    cand_ev = {}
    for name, p in cand_out.items():
        ok = np.isfinite(p)
        if ok.all():
            cand_ev[name] = evaluate(y, p, systems, bootstrap=0).to_dict()
    delta = ens_ev["utterance"]["SRCC"] - ev[best]["utterance"]["SRCC"]
    say(f"nested estimate ({len(nested.outer)} outer folds, {len(nested.inner[0])} inner): ensemble "
        f"utterance SRCC {ens_ev['utterance']['SRCC']:.3f}, best member {best} "
        f"{ev[best]['utterance']['SRCC']:.3f} ({delta:+.3f}); system SRCC "
        f"{ens_ev['system']['SRCC']:.3f} vs {ev[best]['system']['SRCC']:.3f} ({time.time() - t0:.1f} s)")
    return {"status": "done", "outer_folds": len(nested.outer), "inner_folds": len(nested.inner[0]),
            "ensemble": ens_ev, "members": ev, "stage2": cand_ev, "best_member": best,
            "ensemble_minus_best_srcc": delta, "folds": chosen, "label_variance": float(np.var(y))}


def _nan_to(x, v):
    return v if x is None or not np.isfinite(x) else x


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
    now = json.loads(json.dumps(plain(cfg), default=str))
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
    """The metrics recorded in a bundle's report as rows: every member's out-of-fold metrics
    with its status and ensemble share, the stage-2 candidates' out-of-fold metrics, the
    ensemble's nested estimate, then the validation metrics (when validated). Keys: ``data``,
    ``learner``, ``status``, ``weight``, ``n_items`` and ``utt_MSE``, ``utt_LCC``,
    ``utt_SRCC``, ``utt_KTAU``, ``sys_SRCC``."""
    report = meta.get("report") or {}
    members = report.get("members") or {}
    rows = []

    def row(data, name, ev, status="", weight=None):
        u, s = ev["utterance"], ev["system"]
        rows.append({"data": data, "learner": name, "status": status, "weight": weight,
                     "n_items": ev.get("n_items"),
                     **{f"utt_{m}": u[m] for m in ("MSE", "LCC", "SRCC", "KTAU")}, "sys_SRCC": s["SRCC"]})

    for k, v in (report.get("oof") or {}).items():
        mi = members.get(k, {})
        row("train (out-of-fold)", k, v, mi.get("status", ""), mi.get("weight"))
    cands = report.get("candidates") or {}
    for k, v in (report.get("stage2_oof") or {}).items():
        ci = cands.get(k, {})
        row("train (out-of-fold)", f"stage 2 {k}", v, ci.get("status", ""), ci.get("weight"))
    nested = report.get("nested") or {}
    if nested.get("status") == "done":
        row("train (nested)", "ensemble", nested["ensemble"], "", None)
    for k, v in (report.get("valid") or {}).items():
        row("valid", k, v)
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
             "| data | learner | status | share | items | utt MSE | utt LCC | utt SRCC | utt KTAU | sys SRCC |",
             "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]

    def num(x):
        return "NaN" if x is None or not np.isfinite(x) else f"{x:.3f}"

    for r in report_rows(meta):
        name = r["learner"].replace("|", "\\|").replace("_", "\\_")
        share = "" if r["weight"] is None else f"{r['weight']:.2f}"
        lines.append(f"| {r['data']} | {name} | {r['status']} | {share} | {r['n_items'] if r['n_items'] is not None else ''} | "
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
