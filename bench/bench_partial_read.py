"""Benchmark: reading a cut of a long recording (seek + read the segment) vs decoding the
whole file and slicing it, side by side in one process, and the manifest cost of cuts.

Builds a long recording from the shared corpus (librispeech-test-other-spk, 16 kHz FLAC,
concatenated and written as FLAC and WAV), then for cuts of ``--cut`` seconds spread over it
times ``AudioItem.load()`` of the cut against ``audio.read`` of the whole file + slice, checks
that both give the same samples, and reports peak traced memory of each (tracemalloc: numpy
buffers are traced).

    python bench/bench_partial_read.py --corpus ../shared/corpora --minutes 20 --cut 3
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from speechqe import audio, manifest  # noqa: E402


def build(corpus: Path, minutes: float, folder: Path) -> dict[str, Path]:
    files = sorted((corpus / "librispeech-test-other-spk").rglob("*.flac"))
    parts, n = [], 0
    while n < minutes * 60 * 16000:
        for f in files:
            x, sr = sf.read(f, dtype="int16")
            parts.append(x)
            n += x.size
            if n >= minutes * 60 * 16000:
                break
    x = np.concatenate(parts)
    out = {}
    for ext, subtype in ((".flac", "PCM_16"), (".wav", "PCM_16")):
        p = folder / f"long{ext}"
        sf.write(p, x, 16000, subtype=subtype)
        out[ext] = p
    return out


def timed(fn, reps):
    best, peak = float("inf"), 0
    for _ in range(reps):
        tracemalloc.start()
        t = time.perf_counter()
        y = fn()
        best = min(best, time.perf_counter() - t)
        peak = max(peak, tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    return best, peak, y


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpus", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "corpora")
    ap.add_argument("--minutes", type=float, default=20.0)
    ap.add_argument("--cut", type=float, default=3.0)
    ap.add_argument("--cuts", type=int, default=5)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        files = build(args.corpus, args.minutes, Path(tmp))
        print(f"recording: {args.minutes:g} min at 16 kHz; cuts of {args.cut:g} s; best of {args.reps}")
        print("| file | variant | ms per cut | peak MiB | same samples |")
        print("| --- | --- | --- | --- | --- |")
        for ext, path in files.items():
            total = sf.info(path).duration
            offsets = np.linspace(0, total - args.cut - 1, args.cuts)
            t_part = t_full = 0.0
            m_part = m_full = 0
            same = True
            for off in offsets:
                item = manifest.describe_file(path, item_id="c", system="s",
                                              segment=(float(off), args.cut))
                tp, mp, a = timed(lambda: item.load().samples, args.reps)
                start, n = item.span()
                tf, mf, b = timed(lambda: audio.read(path)[0][start:start + n], args.reps)
                same &= bool(np.array_equal(a, b))
                t_part += tp
                t_full += tf
                m_part = max(m_part, mp)
                m_full = max(m_full, mf)
            k = len(offsets)
            print(f"| {ext} | seek + read the cut (AudioItem.load) | {1000 * t_part / k:.1f} | "
                  f"{m_part / 2**20:.1f} | {same} |")
            print(f"| {ext} | decode whole file + slice | {1000 * t_full / k:.1f} | "
                  f"{m_full / 2**20:.1f} | |")
            print(f"| {ext} | ratio | {t_full / t_part:.0f}x faster | "
                  f"{m_full / max(m_part, 1):.0f}x less | |")


if __name__ == "__main__":
    main()
