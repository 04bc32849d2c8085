"""Benchmarks for the metric cores, each printing a ratio measured side by side in one process.

    OMP_NUM_THREADS=1 python bench/bench_metrics.py [--items 8]

* DNSMOS: all segments of ``--items`` clips in batched ONNX calls vs one call per segment
  (the original's way), same scores checked.
* DTW: our anti-diagonal numpy DTW vs ``librosa.sequence.dtw`` (first call, with numba's JIT,
  and warm), same total cost checked.
* STOI input rate: pystoi on 10 kHz input (what the adapter feeds) vs 16 kHz input (pystoi
  resamples internally).

Signals are synthetic (speech-shaped noise bursts), so the benchmark runs anywhere.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def _speechlike(seconds: float, sr: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = int(seconds * sr)
    x = np.convolve(rng.standard_normal(n), np.hanning(25), mode="same")
    env = np.repeat(rng.uniform(0.05, 1.0, n // 1600 + 1), 1600)[:n]  # 100 ms syllables
    return (0.05 * x * env).astype(np.float32)


def _time(fn, repeat: int = 1) -> tuple[float, object]:
    t = time.perf_counter()
    for _ in range(repeat):
        out = fn()
    return (time.perf_counter() - t) / repeat, out


def bench_dnsmos(items: int) -> None:
    from speechqe import assets
    from speechqe.metrics.dnsmos import onnx_session
    from speechqe.metrics.functional import dnsmos as F

    root = assets.get("dnsmos-p835").path()
    primary = onnx_session(root / "sig_bak_ovr.onnx", "bench")
    p808 = onnx_session(root / "model_v8.onnx", "bench")
    signals = [_speechlike(9.5 + (k % 3), 16000, k) for k in range(items)]
    F.dnsmos(signals[:1], primary, p808)  # warm-up (librosa, ONNX)
    t1, single = _time(lambda: F.dnsmos(signals, primary, p808, max_batch=1))
    tb, batched = _time(lambda: F.dnsmos(signals, primary, p808, max_batch=16))
    assert all(abs(a.ovrl - b.ovrl) < 1e-6 for a, b in zip(single, batched))
    n = sum(s.segments for s in single)
    print(f"dnsmos  {items} clips, {n} segments: batch 1 {t1 / n * 1000:.0f} ms/segment, "
          f"batch 16 {tb / n * 1000:.0f} ms/segment, speed-up x{t1 / tb:.2f}")


def bench_dtw() -> None:
    from speechqe.metrics.functional.dtw import dtw

    cost = np.random.default_rng(0).random((1500, 1300))
    t_ours, (total, _) = _time(lambda: dtw(cost), repeat=3)
    try:
        import librosa
    except ImportError:
        print(f"dtw     ours {t_ours * 1000:.0f} ms (librosa absent)")
        return
    t_first, (acc, _) = _time(lambda: librosa.sequence.dtw(C=cost))
    t_warm, _ = _time(lambda: librosa.sequence.dtw(C=cost), repeat=3)
    assert abs(acc[-1, -1] - total) < 1e-9 * total
    print(f"dtw     1500x1300: ours {t_ours * 1000:.0f} ms, librosa first call "
          f"{t_first * 1000:.0f} ms (x{t_first / t_ours:.1f}), warm {t_warm * 1000:.0f} ms "
          f"(x{t_warm / t_ours:.2f})")


def bench_stoi() -> None:
    from pystoi import stoi

    from speechqe.audio import resample

    x16 = _speechlike(8.0, 16000, 1)
    y16 = x16 + 0.01 * np.random.default_rng(2).standard_normal(x16.size).astype(np.float32)
    x10, y10 = resample(x16, 16000, 10000), resample(y16, 16000, 10000)
    t10, v10 = _time(lambda: stoi(x10, y10, 10000), repeat=3)
    t16, v16 = _time(lambda: stoi(x16, y16, 16000), repeat=3)
    print(f"stoi    8 s: 10 kHz input {t10 * 1000:.0f} ms, 16 kHz input {t16 * 1000:.0f} ms "
          f"(x{t16 / t10:.2f}); values {v10:.5f} vs {v16:.5f}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=8)
    args = ap.parse_args()
    bench_stoi()
    bench_dtw()
    bench_dnsmos(args.items)


if __name__ == "__main__":
    main()
