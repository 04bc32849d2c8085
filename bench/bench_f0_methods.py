"""F0 trackers against WORLD Harvest (the default of ``mcd`` and ``f0``) on real speech, side
by side in one process: speed, agreement of the contours, and what each does to the metrics.

    OMP_NUM_THREADS=1 python bench/bench_f0_methods.py [--clips 32] [--crepe-clips 4]

* Data: ljspeech-32 (one female speaker, 22.05 kHz, resampled to 16 kHz by speechqe's
  resampler), clean, and the same clips with white noise at 10 dB (seeded).
* Trackers: Harvest (``f0_method='harvest'``), DIO + StoneMask (``f0_method='dio'``), both
  pyworld at 5 ms frames, 71-800 Hz; and torchcrepe ``tiny`` (weights in its wheel; Viterbi
  decoding, periodicity > 0.21 voiced, 5 ms hop) on the first ``--crepe-clips`` clips, to
  show its CPU cost (it is not offered as an ``f0_method``).
* Contour agreement with Harvest, over all frames of all clips: voicing agreement; over frames
  voiced in both, gross pitch error (> 20% apart) and the median and RMS difference in cents.
* Metrics: ``f0`` and ``mcd`` of each noisy clip against its clean clip, computed with each
  method: the mean over clips, and the largest and mean |difference| to Harvest's values.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CORPORA = Path(os.environ.get("SPEECHQE_CORPORA", ROOT.parent / "shared" / "corpora"))
if not CORPORA.is_dir():
    CORPORA = Path("/work/shared/corpora")
SR = 16000


def crepe_f0(x: np.ndarray, n_frames: int) -> np.ndarray:
    import torch
    import torchcrepe

    torch.set_num_threads(1)
    f0, per = torchcrepe.predict(torch.from_numpy(x)[None], SR, hop_length=80, fmin=71.0,
                                 fmax=800.0, model="tiny", batch_size=512, device="cpu",
                                 return_periodicity=True, decoder=torchcrepe.decode.viterbi)
    f0 = f0[0].numpy().astype(np.float64)
    f0[per[0].numpy() < 0.21] = 0.0
    out = np.zeros(n_frames)
    out[: min(n_frames, f0.size)] = f0[:n_frames]
    return out


def agreement(ref: list[np.ndarray], other: list[np.ndarray]) -> dict[str, float]:
    a = np.concatenate([r[: min(r.size, o.size)] for r, o in zip(ref, other)])
    b = np.concatenate([o[: min(r.size, o.size)] for r, o in zip(ref, other)])
    va, vb = a > 0, b > 0
    both = va & vb
    cents = 1200 * np.log2(b[both] / a[both])
    return {"voicing_agreement": float(np.mean(va == vb)),
            "gpe_vs_harvest": float(np.mean(np.abs(b[both] / a[both] - 1) > 0.2)),
            "median_abs_cents": float(np.median(np.abs(cents))),
            "rms_cents": float(np.sqrt(np.mean(cents ** 2))),
            "frames": int(a.size), "voiced_both": int(both.sum())}


def main() -> None:
    from speechqe import degrade
    from speechqe.audio import LoadedAudio
    from speechqe.metrics.functional import world
    from speechqe.metrics.functional.f0 import f0_scores
    from speechqe.metrics.functional.mcd import dtw_path, mcd

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=32)
    ap.add_argument("--crepe-clips", type=int, default=4)
    args = ap.parse_args()
    wavs = sorted((CORPORA / "ljspeech-32" / "wavs").glob("*.wav"))[: args.clips]
    clean = [LoadedAudio.from_file(p).at(SR).astype(np.float64) for p in wavs]
    noisy = [degrade.add_noise(x.astype(np.float32), degrade.white_noise(x.size, k), 10.0)
             .astype(np.float64) for k, x in enumerate(clean)]
    seconds = sum(x.size for x in clean) / SR
    print(f"{len(clean)} ljspeech-32 clips, {seconds:.1f} s of speech at 16 kHz; "
          f"load {os.getloadavg()[0]:.2f}")

    params = {m: world.WorldParams(f0_method=m) for m in world.F0_METHODS}
    contours: dict[str, dict[str, list[np.ndarray]]] = {}
    for cond, sigs in (("clean", clean), ("noisy", noisy)):
        for m, p in params.items():
            t = time.perf_counter()
            contours.setdefault(m, {})[cond] = [world.f0_contour(x, SR, p)[0] for x in sigs]
            dt = time.perf_counter() - t
            print(f"  {m:8s} {cond}: {dt:6.1f} s ({dt / seconds:.3f} s per second of audio)")
    k = args.crepe_clips
    if k:
        sub = sum(x.size for x in clean[:k]) / SR
        t = time.perf_counter()
        crepe = [crepe_f0(x.astype(np.float32), h.size)
                 for x, h in zip(clean[:k], contours["harvest"]["clean"][:k])]
        dt = time.perf_counter() - t
        t = time.perf_counter()
        [world.f0_contour(x, SR, params["harvest"]) for x in clean[:k]]
        dh = time.perf_counter() - t
        print(f"  torchcrepe tiny (CPU) on {k} clips ({sub:.1f} s): {dt:.1f} s vs Harvest "
              f"{dh:.1f} s ({dt / dh:.1f}x Harvest's time)")
        print(f"  crepe-tiny vs harvest, clean: {agreement(contours['harvest']['clean'][:k], crepe)}")
    for cond in ("clean", "noisy"):
        print(f"  dio vs harvest, {cond}: "
              f"{agreement(contours['harvest'][cond], contours['dio'][cond])}")

    print("metrics of the noisy clips against the clean ones (mean over clips; |dio - harvest|)")
    vals: dict[str, dict[str, list[float]]] = {}
    for m, p in params.items():
        for x, y in zip(clean, noisy):
            fr, fd = world.analyse(x, SR, p), world.analyse(y, SR, p)
            pairs = dtw_path(fr.mcep, fd.mcep)
            s = f0_scores(fr.f0, fd.f0, pairs)
            row = {**s.values(), "mcd": mcd(fr.mcep, fd.mcep, pairs)}
            for name, v in row.items():
                vals.setdefault(name, {}).setdefault(m, []).append(float(v))
    for name, by in vals.items():
        h, d = np.array(by["harvest"]), np.array(by["dio"])
        diff = np.abs(d - h)
        r = float(np.corrcoef(h, d)[0, 1]) if h.std() > 0 and d.std() > 0 else float("nan")
        print(f"  {name:14s} harvest {h.mean():9.4f}  dio {d.mean():9.4f}  "
              f"|diff| mean {diff.mean():.4f} max {diff.max():.4f}  r {r:.3f}")


if __name__ == "__main__":
    main()
