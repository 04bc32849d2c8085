"""Memory and time of each metric on one long input: the figures behind each metric's declared
maximum duration (``MetricSpec.max_duration``, table in ``docs/metrics.md``).

    OMP_NUM_THREADS=1 python bench/bench_lengths.py [--metrics pesq,stoi,...] [--seconds 30,120]

Each (metric, length) runs in a process of its own: the metric is loaded and warmed on 3 s,
then one item of the given length (LibriSpeech test-other speech from ../shared/corpora,
concatenated, with white noise at 16 kHz, against the clean signal) is scored; printed is the
increase of the process's peak RSS over the warmed state (input arrays excluded) and the time.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

ROOT = Path(__file__).resolve().parents[1]
CORPORA = Path(os.environ.get("SPEECHQE_CORPORA", ROOT.parent / "shared" / "corpora"))
if not CORPORA.is_dir():
    CORPORA = Path("/work/shared/corpora")
DEFAULT = ("pesq,stoi,estoi,si_sdr,lsd,mcd:10,mcd:30,dnsmos,plcmos,distillmos:30,distillmos:60,"
           "speaker_sim,wer")


def one(name: str, seconds: float) -> None:
    import numpy as np
    import soundfile as sf

    from speechqe import plugins
    from speechqe.audio import LoadedAudio
    from speechqe.manifest import AudioItem
    from speechqe.metric import ScoringInput

    parts, n = [], 0
    for f in sorted((CORPORA / "librispeech-test-other-spk").glob("*/*.flac")):
        a, _ = sf.read(f, dtype="float32")
        parts.append(a)
        n += a.size
        if n >= seconds * 16000:
            break
    x = np.concatenate(parts)[: int(seconds * 16000)]
    d = (x + 0.05 * np.random.default_rng(0).standard_normal(x.size)).astype(np.float32)
    m = plugins.create(name)
    m.ensure_ready()
    item = AudioItem(id="a", path="/in-memory", system="s", sha256="a", ref_sha256="b",
                     text="a text for the asr metrics")
    warm = ScoringInput(item=item, audio=LoadedAudio.from_array(d[: 3 * 16000], 16000),
                        ref=LoadedAudio.from_array(x[: 3 * 16000], 16000))
    m.score_batch([warm])
    inp = ScoringInput(item=item, audio=LoadedAudio.from_array(d, 16000),
                       ref=LoadedAudio.from_array(x, 16000))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t = time.perf_counter()
    res = m.score_batch([inp])[0]
    dt = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    what = type(res).__name__ if not hasattr(res, "values") else "ok"
    print(f"| {name} | {seconds:g} s | +{peak - before:.0f} MB | {dt:.2f} s | {what} |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--metrics", default=DEFAULT, help="name or name:seconds, comma-separated")
    ap.add_argument("--seconds", default="30,120", help="lengths for entries without :seconds")
    ap.add_argument("--one", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        one(args.one[0], float(args.one[1]))
        return
    print(f"load {os.getloadavg()[0]:.2f}\n| metric | length | peak RSS increase | time | result |\n"
          "| --- | --- | --- | --- | --- |", flush=True)
    for entry in args.metrics.split(","):
        name, _, sec = entry.partition(":")
        for s in ([sec] if sec else args.seconds.split(",")):
            subprocess.run([sys.executable, __file__, "--one", name, s], check=False)


if __name__ == "__main__":
    main()
