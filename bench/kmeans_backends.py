"""Mini-batch k-means backends side by side: scikit-learn's MiniBatchKMeans (CPU) vs our torch
implementation of the same update (CPU, and CUDA when present).

Same data, same k-means++ seeding, same batches and epochs; prints seconds, the final inertia
(mean squared distance per frame) and the ratios against sklearn, as one JSON line per setting.

    OMP_NUM_THREADS=1 python bench/kmeans_backends.py --frames 100000 --dim 384 --k 100 500
"""

from __future__ import annotations

import argparse
import json
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from speechqe.vocoders.units import KMeansConfig, fit_kmeans  # noqa: E402


def mixture(frames: int, dim: int, centres: int, seed: int) -> np.ndarray:
    """Gaussian mixture with anisotropic spread: a stand-in for SSL features."""
    g = np.random.default_rng(seed)
    mu = g.standard_normal((centres, dim)).astype(np.float32) * 2
    lab = g.integers(0, centres, frames)
    return mu[lab] + g.standard_normal((frames, dim)).astype(np.float32)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--k", type=int, nargs="+", default=[100, 500])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch", type=int, default=10_000)
    ap.add_argument("--chunk", type=int, default=5_000, help="frames per streamed chunk")
    ap.add_argument("--devices", nargs="+", default=None)
    a = ap.parse_args()
    import torch

    x = mixture(a.frames, a.dim, 300, 0)

    def stream():
        for s in range(0, x.shape[0], a.chunk):
            yield x[s:s + a.chunk]

    runs = [("sklearn", "cpu"), ("torch", "cpu")]
    devices = a.devices or (["cuda"] if torch.cuda.is_available() else [])
    runs += [("torch", d) for d in devices if d != "cpu"]
    for k in a.k:
        base = None
        for backend, device in runs:
            cfg = KMeansConfig(k=k, batch_size=a.batch, epochs=a.epochs, backend=backend,
                               device=device, seed=0)
            _, info = fit_kmeans(stream, cfg)
            row = {"k": k, "backend": backend, "device": device, "frames": a.frames,
                   "dim": a.dim, "epochs": a.epochs, "threads": torch.get_num_threads(),
                   "seconds": info["seconds"], "inertia": round(info["inertia"], 4),
                   "empty": info["empty"]}
            if base is None:
                base = row
            row["speedup_vs_sklearn"] = round(base["seconds"] / row["seconds"], 3)
            row["inertia_vs_sklearn"] = round(row["inertia"] / base["inertia"], 4)
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
