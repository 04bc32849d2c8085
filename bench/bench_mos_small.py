"""Nested estimates of MOS stacking rules on listening-test-like sets (many seeds, two generators).

Builds the acceptance set of ``tests/predictors/test_acceptance_listening.py`` (16 sentences of
``../shared/corpora`` x 8 conditions, simulated 0-100 listener ratings) once per seed (label
noise, listeners, degradation noise and folds all change with it) and trains its members once
with :func:`~speechqe.predictors.synthetic.listening_test_config` (signal + pooled log-mel
features; ridge, SVR, kNN, GP; 4 folds grouped by sentence; nested estimate with 4 outer folds).
The members' stage-1 predictions are saved (``--stage-one DIR``, one ``.npz`` per generator and
seed, reused when present), and every stacking rule of :data:`RULES` is then re-estimated on
them, nested, without refitting a member.

Generators: ``a`` is the acceptance set (:data:`~speechqe.predictors.synthetic.
LISTENING_CONDITIONS`, multiplicative logistic/log/power impairments); ``b``
(:data:`~speechqe.predictors.synthetic.LISTENING_B`) has other conditions, an E-model-like
additive impairment with G.107's cubic, more rating noise and fewer ratings per clip. Rules are
chosen on ``a``; ``b`` only checks that the choice generalises.

Per rule: the nested ensemble's clip (utterance) SRCC minus the hindsight-best member's (the
member with the best pooled nested SRCC, chosen after seeing the outer folds' labels), its
mean, worst and how often it is within 0.01; minus the best member *chosen by CV* (each outer
fold takes the member ranked first by its inner out-of-fold SRCC: what a user can pick without
stacking); condition (system) SRCC; and the largest ensemble MSE over the labels' variance.
The hindsight best of several noisy, correlated estimates is biased upwards; the bench reports
``mean over seeds of max_j r_j - max_j mean over seeds of r_j`` as an estimate of that bias.

    python bench/bench_mos_small.py --generator a --seeds 0 1 2 3 4 5 6 7 8 9 10 11 \\
        --stage-one out/mos_small [--rules "mean-5;rank-mean-5"] [--per-seed RULE]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

#: The stacking rules compared (``StackingConfig`` overrides); the first is the code's default.
RULES: dict[str, dict] = {
    "default: equal average of best-member, convex, mean-5": {},
    "select one of best-member, convex, mean-5": {"stage3": "select"},
    "select one of all five built-ins": {"candidates": ["best-member", "convex", "mean", "rank-mean", "greedy"],
                                         "stage3": "select"},
    "convex shrunk towards best-member (share by CV)": {"candidates": ["best-member", "convex"], "shrink": "cv"},
    "default shrunk towards best-member (share by CV)": {"shrink": "cv"},
    "default, top 3 members": {"max_members": 3, "mean_members": 3},
    "convex stage 3 over best-member, convex, mean-5": {"stage3": "convex"},
    "mean-5": {"candidates": ["mean"]},
    "mean-3": {"candidates": ["mean"], "mean_members": 3},
    "rank-mean-5": {"candidates": ["rank-mean"]},
    "rank-mean-3": {"candidates": ["rank-mean"], "mean_members": 3},
    "equal average of best-member, convex, rank-mean-5": {"candidates": ["best-member", "convex", "rank-mean"]},
    "convex of 5 (super learner, sum-to-one NNLS)": {"candidates": ["convex"]},
    "convex of 3": {"candidates": ["convex"], "max_members": 3},
    "greedy (Caruana ensemble selection)": {"candidates": ["greedy"]},
    "best member chosen by CV (discrete super learner)": {"candidates": ["best-member"]},
}


def stage_one_for(gen: str, seed: int, clips, folder: Path | None) -> tuple:
    """The stage-one predictions and facts of one generated set (trained, or read back)."""
    from scipy.stats import spearmanr

    from speechqe.config import validate
    from speechqe.predictors.config import MOSTrainConfig
    from speechqe.predictors.nested import StageOne
    from speechqe.predictors.synthetic import LISTENING_B, listening_test, listening_test_config
    from speechqe.predictors.train import train_bundle

    npz = folder / f"{gen}-seed{seed}.npz" if folder else None
    facts_path = folder / f"{gen}-seed{seed}.json" if folder else None
    if npz is not None and npz.is_file() and facts_path.is_file():
        return StageOne.load(npz), json.loads(facts_path.read_text())
    kw = LISTENING_B if gen == "b" else {}
    got = []
    with tempfile.TemporaryDirectory() as tmp:
        csv_path = listening_test(clips, Path(tmp) / "set", seed=seed, **kw)
        cfg = validate(MOSTrainConfig, listening_test_config(csv_path, seed=seed), "bench")
        t0 = time.time()
        train_bundle(cfg, Path(tmp) / "bundle", say=lambda m: None, on_stage_one=got.append)
        secs = time.time() - t0
        rows = list(csv.DictReader(open(csv_path)))
    q = {r["sample_id"]: float(r["quality"]) for r in rows}
    lab: dict[str, list[float]] = {}
    for row in rows:
        lab.setdefault(row["sample_id"], []).append(float(row["score"]))
    ids = sorted(q)
    facts = {"oracle_srcc": float(spearmanr([np.mean(lab[i]) for i in ids], [q[i] for i in ids])[0]),
             "seconds": round(secs, 1), "load": round(os.getloadavg()[0], 1)}
    s1 = got[0]
    if npz is not None:
        folder.mkdir(parents=True, exist_ok=True)
        s1.save(npz)
        facts_path.write_text(json.dumps(facts))
    return s1, facts


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--generator", choices=("a", "b"), default="a")
    ap.add_argument("--seeds", type=int, nargs="+", default=list(range(12)))
    ap.add_argument("--corpora", default=os.environ.get("SPEECHQE_CORPORA", "../shared/corpora"))
    ap.add_argument("--stage-one", type=Path, default=None, help="folder of saved stage-one predictions")
    ap.add_argument("--rules", default="", help="rule names separated by ; (default: all)")
    ap.add_argument("--per-seed", default=next(iter(RULES)), help="print this rule's per-seed table")
    args = ap.parse_args()
    from speechqe.predictors.config import StackingConfig
    from speechqe.predictors.evaluate import scores
    from speechqe.predictors.nested import nested_predictions
    from speechqe.predictors.synthetic import corpus_clips

    clips = corpus_clips(args.corpora, ljspeech=8, librispeech_per_speaker=1, max_seconds=3.0)[:16]
    print(f"generator {args.generator}: {len(clips)} sentences x 8 conditions; load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    sets = []
    for seed in args.seeds:
        s1, facts = stage_one_for(args.generator, seed, clips, args.stage_one)
        sets.append((seed, s1, facts))
        print(f"  seed {seed}: {len(s1.y)} clips, {len(s1.columns)} members, trained in {facts['seconds']:.0f} s "
              f"(load {facts['load']})", flush=True)
    names = [r.strip() for r in args.rules.split(";") if r.strip()] or list(RULES)
    unknown = [r for r in names if r not in RULES]
    if unknown:
        ap.error(f"unknown rules {unknown}; known: {list(RULES)}")

    def cond_srcc(s1, p):
        from speechqe.predictors.evaluate import system_means

        _, t, q = system_means(list(s1.systems), s1.y, p)
        return scores(t, q)["SRCC"]

    # members: hindsight best and its bias
    per_member = []
    for seed, s1, facts in sets:
        res = nested_predictions(s1, StackingConfig(candidates=("best-member",)))
        r = {c: scores(s1.y, p)["SRCC"] for c, p in res.members.items()}
        per_member.append((r, scores(s1.y, res.cv_member)["SRCC"], cond_srcc(s1, res.cv_member)))
    cols = sets[0][1].columns
    mean_r = {c: float(np.mean([r[c] for r, _, _ in per_member])) for c in cols}
    hind = [max(r.values()) for r, _, _ in per_member]
    cvm = [c for _, c, _ in per_member]
    print(f"\nmembers' mean nested clip SRCC over {len(sets)} seeds: "
          + ", ".join(f"{c} {v:.3f}" for c, v in sorted(mean_r.items(), key=lambda kv: -kv[1])))
    print(f"hindsight best: mean {np.mean(hind):.3f}; best member on average ({max(mean_r, key=mean_r.get)}) "
          f"{max(mean_r.values()):.3f}; selection bias of the hindsight best "
          f"{np.mean(hind) - max(mean_r.values()):+.3f}; best member chosen by CV: mean {np.mean(cvm):.3f} "
          f"(hindsight minus CV-chosen {np.mean(hind) - np.mean(cvm):+.3f})")

    default = next(iter(RULES))
    if default not in names:
        names.insert(0, default)
    per_seed_rows, diffs, lines = {}, {}, {}
    for name in names:
        cfg = StackingConfig(**RULES[name])
        d, dcv, clip, cond, ratio, rows = [], [], [], [], [], []
        for (seed, s1, facts), (r, cv_r, cv_cond) in zip(sets, per_member):
            res = nested_predictions(s1, cfg)
            sc = scores(s1.y, res.ensemble)
            best = max(r, key=r.get)
            d.append(sc["SRCC"] - r[best])
            dcv.append(sc["SRCC"] - cv_r)
            clip.append(sc["SRCC"])
            cond.append(cond_srcc(s1, res.ensemble))
            ratio.append(sc["MSE"] / float(np.var(s1.y)))
            rows.append((seed, sc["SRCC"], best, r[best], d[-1], cv_r, cond[-1],
                         cond_srcc(s1, res.members[best]), facts["oracle_srcc"], float(np.var(s1.y)),
                         ratio[-1], facts["seconds"]))
        per_seed_rows[name], diffs[name] = rows, np.array(d)
        lines[name] = (f"{np.mean(d):+.3f} | {min(d):+.3f} | {sum(x >= -0.01 for x in d)}/{len(d)} | "
                       f"{np.mean(dcv):+.3f} | {np.mean(clip):.3f} | {np.mean(cond):.3f} | {max(ratio):.2f}")
    print("\n| rule | mean diff to hindsight best | worst | within 0.01 | mean diff to CV-chosen member | "
          "mean clip SRCC | mean condition SRCC | worst MSE / label variance | vs default (paired SE) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name in names:
        p = diffs[name] - diffs[default]
        se = float(np.std(p, ddof=1) / np.sqrt(len(p))) if len(p) > 1 else float("nan")
        vs = "" if name == default else f"{np.mean(p):+.3f} ({se:.3f})"
        print(f"| {name} | {lines[name]} | {vs} |")

    if args.per_seed in per_seed_rows:
        print(f"\nper seed, rule '{args.per_seed}':\n")
        print("| seed | ensemble clip SRCC | hindsight-best member (clip SRCC) | difference | CV-chosen member "
              "clip SRCC | ensemble condition SRCC | best member condition SRCC | oracle clip SRCC | "
              "label variance | ensemble MSE / variance | training seconds |")
        print("| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for (seed, e, best, rb, dd, cv_r, ec, bc, orc, var, ratio, secs) in per_seed_rows[args.per_seed]:
            print(f"| {seed} | {e:.3f} | {best} ({rb:.3f}) | {dd:+.3f} | {cv_r:.3f} | {ec:.3f} | {bc:.3f} | "
                  f"{orc:.3f} | {var:.0f} | {ratio:.2f} | {secs:.0f} |")


if __name__ == "__main__":
    main()
