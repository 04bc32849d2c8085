"""The runner's "decode once, resample once, share analyses" against the per-metric glue it
replaces, measured side by side in one process on the embedded demo set.

    OMP_NUM_THREADS=1 python bench/bench_runner.py [--items 12] [--workers 2]

* ``glue``: what a script around separate metric tools does (VERSA's loop is of this shape):
  for each metric, for each item, decode the file and its reference again, resample again, and
  compute the metric on its own — so MCD and F0 each run the WORLD analysis and DTW, and WER
  and CER each run ASR.
* ``speechqe``: ``runner.score`` — each item decoded once per chunk, each rate computed once,
  WORLD analysis + DTW shared by MCD and F0, one batched ASR pass shared by WER and CER.
* ``speechqe --workers N``: the same in N processes (on this 2-core machine N=2).

Both paths produce the same numbers (checked); the ratios are printed.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from speechqe import manifest
from speechqe.engine import runner
from speechqe.audio import LoadedAudio
from speechqe import plugins
from speechqe.metric import ScoringInput
from speechqe.store import Store

ROOT = Path(__file__).resolve().parents[1]
METRICS = ["pesq", "stoi", "estoi", "si_sdr", "lsd", "mcd", "f0", "wer", "cer", "dnsmos"]


def glue(sset, names) -> dict:
    out = {}
    for name in names:
        metric = plugins.create(name)
        metric.ensure_ready()
        for it in sset:
            inp = ScoringInput(
                item=it, audio=LoadedAudio.from_file(it.path), ref=LoadedAudio.from_file(it.ref_path)
            )
            res = metric.score_batch([inp])[0]
            for k, v in res.values.items():
                out[(it.id, k)] = v
    return out


def ours(sset, names, workers: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp, Store(Path(tmp) / "b.duckdb") as st:
        reqs = runner.requests_from([(n, {}) for n in names])
        res = runner.score(sset, reqs, st, workers=workers, chunk_size=4)
        return {(r["item_id"], r["metric"]): r["value"] for r in st.results(res.run_id)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=12)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    s = ROOT / "data" / "samples"
    sset = manifest.load_speech_set(s / "systems", ref_dir=s / "reference",
                                    text_file=s / "transcripts.tsv")
    sset = sset.replace_items(sset.items[: args.items])
    # warm both paths' imports and models once (not timed)
    warm = sset.replace_items(sset.items[:1])
    glue(warm, METRICS)
    ours(warm, METRICS, 1)

    t = time.perf_counter()
    a = glue(sset, METRICS)
    t_glue = time.perf_counter() - t
    t = time.perf_counter()
    b = ours(sset, METRICS, 1)
    t_ours = time.perf_counter() - t
    t = time.perf_counter()
    c = ours(sset, METRICS, args.workers)
    t_par = time.perf_counter() - t

    assert a.keys() == b.keys() == c.keys()
    worst = max(abs(a[k] - b[k]) for k in a)
    worst_par = max(abs(b[k] - c[k]) for k in b)
    differ = sorted({k[1] for k in b if b[k] != c[k]})
    print(f"{len(sset)} items x {len(METRICS)} metrics ({', '.join(METRICS)})")
    print(f"  per-metric glue            {t_glue:7.1f} s")
    print(f"  speechqe runner            {t_ours:7.1f} s   {t_glue / t_ours:4.2f}x faster than glue")
    print(f"  speechqe --workers {args.workers}       {t_par:7.1f} s   {t_glue / t_par:4.2f}x faster than glue"
          f" ({t_ours / t_par:4.2f}x over 1 worker)")
    print(f"  glue vs runner: max |difference| {worst:.1e}; 1 vs {args.workers} workers: "
          f"{worst_par:.1e}{' (in ' + ', '.join(differ) + ')' if differ else ''}")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
