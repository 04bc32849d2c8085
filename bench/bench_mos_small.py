"""Nested estimates of the MOS ensemble on listening-test-like sets (several seeds).

Builds the acceptance set of ``tests/predictors/test_acceptance_listening.py`` (16 sentences of
``../shared/corpora`` x 8 conditions, simulated 0-100 listener ratings) once per seed (label
noise, listeners, degradation noise and folds all change with it), trains with
:func:`~speechqe.predictors.synthetic.listening_test_config` and prints, per seed: the nested
ensemble's clip (utterance) and condition (system) SRCC, the best member's, the difference,
the oracle (hidden condition quality + sentence offset) and the training time.

    python bench/bench_mos_small.py --seeds 0 1 2 3 4 [--features signal,logmel]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--corpora", default=os.environ.get("SPEECHQE_CORPORA", "../shared/corpora"))
    args = ap.parse_args()
    from scipy.stats import spearmanr

    from speechqe.config import validate
    from speechqe.predictors.config import MOSTrainConfig
    from speechqe.predictors.synthetic import corpus_clips, listening_test, listening_test_config
    from speechqe.predictors.train import train_bundle

    clips = corpus_clips(args.corpora, ljspeech=8, librispeech_per_speaker=1, max_seconds=3.0)[:16]
    print(f"{len(clips)} sentences x 8 conditions; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print("| seed | ensemble clip SRCC | best member (clip SRCC) | difference | ensemble condition SRCC | "
          "best member condition SRCC | oracle clip SRCC | label variance | seconds |")
    print("| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    deltas = []
    for seed in args.seeds:
        with tempfile.TemporaryDirectory() as tmp:
            csv_path = listening_test(clips, Path(tmp) / "set", seed=seed)
            cfg = validate(MOSTrainConfig, listening_test_config(csv_path, seed=seed), "bench")
            t0 = time.time()
            b = train_bundle(cfg, Path(tmp) / "bundle", say=lambda m: None)
            secs = time.time() - t0
            import csv

            rows = list(csv.DictReader(open(csv_path)))
            q = {r["sample_id"]: float(r["quality"]) for r in rows}
            r = b.meta["report"]
            n = r["nested"]
            ids = sorted(q)
            lab = {}
            for row in rows:
                lab.setdefault(row["sample_id"], []).append(float(row["score"]))
            oracle = spearmanr([np.mean(lab[i]) for i in ids], [q[i] for i in ids])[0]
        e, m = n["ensemble"], n["members"][n["best_member"]]
        deltas.append(n["ensemble_minus_best_srcc"])
        print(f"| {seed} | {e['utterance']['SRCC']:.3f} | {n['best_member']} ({m['utterance']['SRCC']:.3f}) | "
              f"{n['ensemble_minus_best_srcc']:+.3f} | {e['system']['SRCC']:.3f} | {m['system']['SRCC']:.3f} | "
              f"{oracle:.3f} | {r['label_variance']:.0f} | {secs:.0f} |", flush=True)
    print(f"mean difference {np.mean(deltas):+.3f}; seeds within 0.01: {sum(d >= -0.01 for d in deltas)}/{len(deltas)}")


if __name__ == "__main__":
    main()
